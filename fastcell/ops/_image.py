"""Image kernels: letterbox and circle segmentation with HSV refinement (single and batch), and the
COCO run-length encoding of a label image.

Thin numpy-in numpy-out wrappers over ``fastcell._core``; the compiled functions validate their
arrays (dtype, shape, layout), so the docstrings here carry the contract. Images are never cast:
a float image is refused rather than silently rescaled. Strided, cropped, flipped and
Fortran-ordered images are accepted (read in place or copied); inputs are never modified.
Plain NumPy/OpenCV twins live in :mod:`fastcell.reference.image`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastcell._core_loader import core as _core
from fastcell.defaults import INPUT_SIZE, PAD_VALUE

__all__ = ["letterbox", "letterbox_batch", "segment_cells", "segment_cells_batch", "coco_rle"]

HsvBound = Sequence[int] | None


def letterbox(image: np.ndarray, size: int = INPUT_SIZE, pad_value: float = PAD_VALUE) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image into the network's square input, keeping its aspect, and pad the rest.

    Parameters
    ----------
    image : (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) ndarray of uint8 or uint16
        Gray, BGR or BGRA (alpha ignored), at least 1×1. 16-bit values are scaled by 1/65535,
        never truncated to their high byte.
    size : int, default :data:`fastcell.defaults.INPUT_SIZE`
        Side S of the square output, in [1, 16384].
    pad_value : float, default :data:`fastcell.defaults.PAD_VALUE`
        Padding level in 8-bit units (0–255); the output holds ``pad_value / 255``.

    Returns
    -------
    chw : (3, S, S) ndarray of float32
        Planar RGB in [0, 1]. The image is resized to ``new_w = round(W · scale)``,
        ``new_h = round(H · scale)`` (half rounded up, kept within [1, S]) with
        ``scale = min(S / W, S / H)``, by bilinear interpolation on cv2.resize's grid
        (INTER_LINEAR, half-pixel centres, edge pixels replicated), equal to
        ``cv2.resize(image, (new_w, new_h)) / 255`` within 1/255; it sits at
        ``(pad_x, pad_y) = ((S - new_w) // 2, (S - new_h) // 2)``.
    params : (5,) ndarray of float32
        ``[scale, pad_x, pad_y, W, H]``. A network-input point ``(xn, yn)`` maps back to the
        original image as ``((xn - pad_x) / scale, (yn - pad_y) / scale)``.

    Raises
    ------
    TypeError
        Not an ndarray, or a dtype other than uint8/uint16.
    ValueError
        Another shape, an empty image, or size / pad_value out of range.
    """
    return _core.letterbox(image, size, pad_value)


def letterbox_batch(
    images: Sequence[np.ndarray] | np.ndarray,
    out: np.ndarray | None = None,
    size: int = INPUT_SIZE,
    pad_value: float = PAD_VALUE,
) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox several images into one batch array, e.g. the buffer an inference engine binds.

    Parameters
    ----------
    images : sequence of ndarray, or ndarray
        N images, each as accepted by :func:`letterbox` (sizes and dtypes may differ). An ndarray
        is read as a stack along its first axis: (N, H, W), (N, H, W, 3) or (N, H, W, 4).
    out : (N, 3, S, S) ndarray of float32, optional
        C-contiguous, writeable buffer to fill in place (it is also returned). Allocated when None.
    size : int, default :data:`fastcell.defaults.INPUT_SIZE`
        Side S of each square.
    pad_value : float, default :data:`fastcell.defaults.PAD_VALUE`
        Padding level in 8-bit units (0–255).

    Returns
    -------
    out : (N, 3, S, S) ndarray of float32
        ``out[i]`` equals ``letterbox(images[i], size, pad_value)[0]``.
    params : (N, 5) ndarray of float32
        One ``[scale, pad_x, pad_y, W, H]`` row per image.

    Raises
    ------
    TypeError
        An image that is not a uint8/uint16 ndarray, or ``out`` not float32.
    ValueError
        A badly shaped image, or ``out`` of the wrong shape, not C-contiguous or read-only.
    """
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise ValueError(
                "images as one ndarray must be a stack (N, H, W), (N, H, W, 3) or (N, H, W, 4), "
                f"got {images.shape} {images.dtype}"
            )
        images = list(images)
    elif not isinstance(images, Sequence):
        images = list(images)
    return _core.letterbox_batch(images, out, size, pad_value)


def _float32_array(values: object, name: str, shape_hint: str) -> np.ndarray:
    """Real-valued array_like → float32 ndarray; refuses strings, complex numbers and objects."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real-valued {shape_hint} array, got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def segment_cells(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    hsv_low: HsvBound = None,
    hsv_high: HsvBound = None,
    disc: str = "circle",
    fill: Sequence[int] | int = (0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Circle segmentation with HSV refinement: one mask per detection, and their union.

    Each box becomes the disc at its centre with radius ``min(w, h) / 2`` (``disc="circle"``) or
    the ellipse inscribed in it (``disc="ellipse"``). Pixel ``(x, y)`` belongs to it when its
    centre ``(x + 0.5, y + 0.5)`` satisfies ``((x + 0.5 - cx) / a)² + ((y + 0.5 - cy) / b)² <= 1``,
    so every mask pixel's centre lies inside its box. The mask is then intersected with the HSV
    test ``hsv_low <= cv2.cvtColor(image, COLOR_BGR2HSV) <= hsv_high``, evaluated only inside the
    discs.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        BGR image.
    boxes : (K, 4) array_like of float
        Corner boxes ``(x1, y1, x2, y2)`` in image pixels (pixel ``x`` covers ``[x, x + 1)``).
        Boxes may extend past the image (their masks are clipped); boxes with ``x2 <= x1``,
        ``y2 <= y1`` or a NaN/inf coordinate have an empty mask.
    scores : (K,) array_like of float
        Confidence of each box; decides overlaps. NaN ranks below every number.
    hsv_low, hsv_high : sequence of 3 int, optional
        Inclusive HSV bounds in OpenCV units: H in 0–179 (180 accepted as an upper bound),
        S and V in 0–255. ``hsv_low[0] > hsv_high[0]`` selects the hue range that wraps through 0
        (``h >= low or h <= high``). Both None (default): no refinement, the disc alone.
    disc : {"circle", "ellipse"}, default "circle"
        Shape of the mask inside each box.
    fill : sequence of 3 int or int, default (0, 0, 0)
        BGR colour of the pixels outside every mask in ``segmented``.

    Returns
    -------
    labels : (H, W) ndarray of int32
        0 for background, ``i + 1`` where detection ``i``'s mask holds. Where masks overlap the
        higher score wins; equal scores go to the lower index.
    segmented : (H, W, 3) ndarray of uint8
        ``image`` inside the union of all masks (``labels > 0``), ``fill`` elsewhere.

    Raises
    ------
    TypeError
        A non-uint8 image, non-numeric boxes/scores, or non-integer bounds.
    ValueError
        Wrong shapes, K mismatch between boxes and scores, bounds out of range, only one of
        ``hsv_low``/``hsv_high`` given, or an unknown ``disc``.
    """
    boxes_f, scores_f = _boxes_and_scores(boxes, scores)
    return _core.segment_cells(image, boxes_f, scores_f, hsv_low, hsv_high, disc, _fill_triple(fill))


def _boxes_and_scores(boxes: object, scores: object, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
    boxes_f = _float32_array(boxes, "boxes" + suffix, "(K, 4)")
    if boxes_f.size == 0 and boxes_f.ndim == 1:  # [] → no boxes
        boxes_f = boxes_f.reshape(0, 4)
    return boxes_f, _float32_array(scores, "scores" + suffix, "(K,)")


def _fill_triple(fill: Sequence[int] | int) -> Sequence[int]:
    return (int(fill),) * 3 if isinstance(fill, (int, np.integer)) else fill


def segment_cells_batch(
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    hsv_low: HsvBound | Sequence[HsvBound] = None,
    hsv_high: HsvBound | Sequence[HsvBound] = None,
    disc: str = "circle",
    fill: Sequence[int] | int = (0, 0, 0),
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`segment_cells` for every frame of a batch, in one compiled call.

    Parameters
    ----------
    images : sequence of N (H_i, W_i, 3) ndarray of uint8
        BGR frames; their sizes may differ.
    boxes : sequence of N (K_i, 4) array_like of float
        Each frame's corner boxes, as for :func:`segment_cells` (``[]`` for none).
    scores : sequence of N (K_i,) array_like of float
        Each frame's scores.
    hsv_low, hsv_high : sequence of 3 int, or sequence of N (sequence of 3 int or None), optional
        One inclusive HSV range (OpenCV units, as for :func:`segment_cells`) for every frame, or one
        per frame: a bound whose entries are sequences or None is read per frame, and a frame whose
        two entries are None gets no refinement. Both None (default): no refinement anywhere.
    disc : {"circle", "ellipse"}, default "circle"
        Shape of the mask inside each box.
    fill : sequence of 3 int or int, default (0, 0, 0)
        BGR colour of the pixels outside every mask.

    Returns
    -------
    list of N (labels, segmented)
        ``labels`` (H_i, W_i) int32 and ``segmented`` (H_i, W_i, 3) uint8, element ``i`` equal to
        ``segment_cells(images[i], boxes[i], scores[i], ...)`` with frame ``i``'s HSV range.
        An empty batch gives ``[]``.

    Raises
    ------
    TypeError
        As :func:`segment_cells`, naming the frame (``boxes[2]``).
    ValueError
        As :func:`segment_cells`, naming the frame; or sequences of different lengths.
    """
    images, boxes, scores = list(images), list(boxes), list(scores)
    if not len(images) == len(boxes) == len(scores):
        raise ValueError("images, boxes and scores must have one entry per frame, got "
                         f"{len(images)}, {len(boxes)} and {len(scores)}")
    pairs = [_boxes_and_scores(b, s, f"[{i}]") for i, (b, s) in enumerate(zip(boxes, scores))]
    return _core.segment_cells_batch(images, [p[0] for p in pairs], [p[1] for p in pairs],
                                     hsv_low, hsv_high, disc, _fill_triple(fill))


def coco_rle(labels: np.ndarray, count: int) -> tuple[list[str], np.ndarray]:
    """COCO run-length encoding of every instance of a label image, in one compiled pass.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Instance label image as :func:`segment_cells` returns it: 0 background, ``i + 1``
        instance ``i``. Values outside ``1..count`` count as background. Integer dtypes other
        than int32 are converted (values must fit in int32).
    count : int
        Number of instances (>= 0).

    Returns
    -------
    counts : list of str
        For instance ``i``, pycocotools' compressed RLE string of ``labels == i + 1`` (column-major
        runs, background first), so that ``{"size": [H, W], "counts": counts[i]}`` decodes with
        ``pycocotools.mask.decode`` to exactly that mask. An instance with no pixels gets the
        all-background string.
    areas : (count,) ndarray of int64
        Pixels of each instance.

    Raises
    ------
    TypeError
        A non-integer label image.
    ValueError
        Not 2-D, values outside int32, or a negative count.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be an (H, W) integer array, got dtype {arr.dtype}")
    if arr.dtype != np.int32:
        info = np.iinfo(np.int32)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(f"labels must fit in int32, got values in [{arr.min()}, {arr.max()}]")
        arr = arr.astype(np.int32)
    if int(count) < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return _core.instance_rles(arr, int(count))
