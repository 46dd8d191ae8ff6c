"""COCO run-length encoding of masks, written here so that inference never needs pycocotools.

The format is pycocotools' (``maskApi.c``): the mask is read in column-major (Fortran) order, the
counts alternate background/foreground run lengths starting with background (so a mask whose
first pixel is set starts with a 0 count), and the compressed string stores each count — minus
the count two places before it, from the fourth on — as a LEB128-like sequence of 5-bit groups,
each group + 48 as one ASCII character, bit 0x20 meaning "more groups follow".
"""

from __future__ import annotations

import numpy as np

__all__ = ["rle_counts", "rle_counts_in_box", "compress_counts", "encode_mask"]


def _runs(positions: np.ndarray, total: int) -> list[int]:
    """Alternating run lengths of the set pixels at sorted flat ``positions`` in ``total`` pixels."""
    if positions.size == 0:
        return [total]
    breaks = np.flatnonzero(np.diff(positions) != 1)
    starts = np.concatenate(([positions[0]], positions[breaks + 1]))
    ends = np.concatenate((positions[breaks] + 1, [positions[-1] + 1]))  # exclusive
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = total - ends[-1]
    # pycocotools ends with the last run that exists: no zero-length background after a mask
    # that reaches the last pixel (a zero-length first run, however, is kept).
    return counts[:-1].tolist() if counts[-1] == 0 else counts.tolist()


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


def rle_counts_in_box(labels: np.ndarray, value: int, box: tuple[int, int, int, int]) -> tuple[list[int], int]:
    """Counts and area of ``labels == value`` when every such pixel lies inside ``box``.

    Looking only inside the detection's box makes the cost proportional to the cell, not the frame.

    Parameters
    ----------
    labels : (H, W) ndarray of int
    value : int
        The label to encode.
    box : (x1, y1, x2, y2) int
        Pixel bounds, ``x2``/``y2`` exclusive; pixels with ``value`` outside it are not counted.

    Returns
    -------
    counts : list of int
        As :func:`rle_counts` for the full ``(H, W)`` frame.
    area : int
        Number of pixels in the mask.
    """
    height, width = labels.shape
    x1, y1, x2, y2 = box
    roi = labels[y1:y2, x1:x2] == value
    # nonzero of the transposed ROI lists pixels column by column, rows ascending: the
    # frame's column-major order, where pixel (y, x) has flat index x * H + y.
    cols, rows = np.nonzero(roi.T)
    positions = (cols.astype(np.int64) + x1) * height + (rows.astype(np.int64) + y1)
    return _runs(positions, height * width), int(positions.size)


def compress_counts(counts: list[int]) -> str:
    """pycocotools' compressed string for uncompressed ``counts`` (``rleToString`` in maskApi.c).

    Vectorised over the counts: each value is cut into 5-bit groups, least significant first, and
    ends at the first group after which the rest of the value is its sign extension (0, or -1
    when the group's bit 0x10 is set) — the C loop's stopping rule.
    """
    x = np.asarray(counts, dtype=np.int64)
    if x.size == 0:
        return ""
    x = x.copy()
    x[3:] -= np.asarray(counts[1:-2], dtype=np.int64)  # from the 4th on: minus the count 2 before
    shifts = np.arange(0, 65, 5, dtype=np.int64)  # 13 groups cover any int64
    rest = x[:, None] >> shifts[None, :]  # arithmetic shift, as for the C long
    groups = rest & 0x1F
    after = np.concatenate([rest[:, 1:], (x[:, None] >> 63)], axis=1)
    ends = np.where(groups & 0x10, after == -1, after == 0)
    n_groups = np.argmax(ends, axis=1) + 1  # the first group after which nothing more is needed
    keep = np.arange(shifts.size)[None, :] < n_groups[:, None]
    more = np.arange(shifts.size)[None, :] < (n_groups - 1)[:, None]
    chars = (groups | (more * 0x20)) + 48
    return chars[keep].astype(np.uint8).tobytes().decode("ascii")


def encode_mask(mask: np.ndarray, compressed: bool = True) -> dict:
    """A COCO RLE object ``{"size": [H, W], "counts": ...}`` for a 2-D mask.

    ``counts`` is pycocotools' compressed string when ``compressed``, else the list of run lengths
    (the "uncompressed RLE" that pycocotools accepts through ``frPyObjects``).
    """
    counts = rle_counts(mask)
    h, w = np.asarray(mask).shape
    return {"size": [int(h), int(w)], "counts": compress_counts(counts) if compressed else counts}
