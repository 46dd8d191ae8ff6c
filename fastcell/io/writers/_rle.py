"""COCO run-length encoding of masks, written here so that inference never needs pycocotools.

The format is pycocotools' (``maskApi.c``): the mask is read in column-major (Fortran) order, the
counts alternate background/foreground run lengths starting with background (so a mask whose
first pixel is set starts with a 0 count), and the compressed string stores each count — minus
the count two places before it, from the fourth on — as a LEB128-like sequence of 5-bit groups,
each group + 48 as one ASCII character, bit 0x20 meaning "more groups follow".
"""

from __future__ import annotations

import numpy as np

__all__ = ["rle_counts", "instance_counts", "compress_counts", "compress_many", "encode_mask"]


def _counts(starts: np.ndarray, ends: np.ndarray, total: int) -> list[int]:
    """Alternating run lengths from the sorted foreground runs ``[starts, ends)`` of ``total`` pixels."""
    if starts.size == 0:
        return [total]
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = total - ends[-1]
    # pycocotools ends with the last run that exists: no zero-length background after a mask
    # that reaches the last pixel (a zero-length first run, however, is kept).
    return counts[:-1].tolist() if counts[-1] == 0 else counts.tolist()


def _runs(positions: np.ndarray, total: int) -> list[int]:
    """Alternating run lengths of the set pixels at sorted flat ``positions`` in ``total`` pixels."""
    if positions.size == 0:
        return [total]
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.concatenate(([positions[0]], positions[breaks + 1]))
    ends = np.concatenate((positions[breaks] + 1, [positions[-1] + 1]))  # exclusive
    return _counts(starts, ends, total)


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a 2-D boolean mask.

    Parameters
    ----------
    mask : (H, W) ndarray of bool (or anything whose non-zero pixels are the mask)

    Returns
    -------
    list of int
        Run lengths in column-major order, background first (0 when the first pixel is set);
        they sum to ``H * W``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    positions = np.flatnonzero(mask.ravel(order="F"))
    return _runs(positions, mask.size)


def instance_counts(labels: np.ndarray, n: int) -> list[tuple[list[int], int]]:
    """Uncompressed counts and pixel area of every instance ``1..n`` of a label image, in one pass.

    The label image is read once in column-major order and cut where the label changes; each
    instance's runs are then its own foreground runs, everything between them its background.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        0 = background, ``i + 1`` = instance ``i``; values above ``n`` are ignored.
    n : int
        Number of instances.

    Returns
    -------
    list of (counts, area)
        One per instance, ``counts`` as :func:`rle_counts` of ``labels == i + 1``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    flat = labels.ravel(order="F")
    total = flat.size
    if total == 0:
        return [([0], 0) for _ in range(n)]
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    ends = np.append(starts[1:], total)
    values = flat[starts]
    keep = (values > 0) & (values <= n)
    starts, ends, values = starts[keep], ends[keep], values[keep]
    order = np.argsort(values, kind="stable")  # stable: each instance's runs stay in pixel order
    starts, ends, values = starts[order], ends[order], values[order]
    bounds = np.searchsorted(values, np.arange(1, n + 2))
    out = []
    for i in range(n):
        s, e = starts[bounds[i]:bounds[i + 1]], ends[bounds[i]:bounds[i + 1]]
        out.append((_counts(s, e, total), int((e - s).sum())))
    return out


def compress_counts(counts: list[int]) -> str:
    """pycocotools' compressed string for uncompressed ``counts`` (``rleToString`` in maskApi.c)."""
    return compress_many([counts])[0]


def compress_many(all_counts: list[list[int]]) -> list[str]:
    """:func:`compress_counts` of many masks in one vectorised pass.

    Each value — from a mask's 4th count on, minus the count two places before it — is cut into
    5-bit groups, least significant first, and ends at the first group after which the rest of
    the value is its sign extension (0, or -1 when the group's bit 0x10 is set): the C loop's
    stopping rule. Each group + 48 is one character; 0x20 marks "more groups follow".
    """
    if not all_counts:
        return []
    lengths = np.array([len(c) for c in all_counts], dtype=np.int64)
    x = np.fromiter((v for c in all_counts for v in c), dtype=np.int64, count=int(lengths.sum()))
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    local = np.arange(x.size) - first  # position within its own mask's counts
    delta = x.copy()
    later = local > 2
    delta[later] -= x[np.flatnonzero(later) - 2]
    shifts = np.arange(0, 65, 5, dtype=np.int64)  # 13 groups cover any int64
    rest = delta[:, None] >> shifts[None, :]  # arithmetic shift, as for the C long
    groups = rest & 0x1F
    after = np.concatenate([rest[:, 1:], delta[:, None] >> 63], axis=1)
    ends = np.where(groups & 0x10, after == -1, after == 0)
    n_groups = np.argmax(ends, axis=1) + 1  # the first group after which nothing more is needed
    column = np.arange(shifts.size)[None, :]
    chars = (groups | ((column < (n_groups - 1)[:, None]) * 0x20)) + 48
    text = chars[column < n_groups[:, None]].astype(np.uint8).tobytes().decode("ascii")
    per_mask = np.add.reduceat(n_groups, np.cumsum(lengths) - lengths) if x.size else np.zeros(0, np.int64)
    cuts = np.concatenate(([0], np.cumsum(per_mask)))
    return [text[cuts[i]:cuts[i + 1]] for i in range(len(all_counts))]


def encode_mask(mask: np.ndarray, compressed: bool = True) -> dict:
    """A COCO RLE object ``{"size": [H, W], "counts": ...}`` for a 2-D mask.

    ``counts`` is pycocotools' compressed string when ``compressed``, else the list of run lengths
    (the "uncompressed RLE" that pycocotools accepts through ``frPyObjects``).
    """
    counts = rle_counts(mask)
    h, w = np.asarray(mask).shape
    return {"size": [int(h), int(w)], "counts": compress_counts(counts) if compressed else counts}
