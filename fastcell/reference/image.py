"""Plain NumPy/OpenCV references of the image kernels: letterbox and circle/HSV segmentation.

The straightforward way to do each job with OpenCV: ``cv2.resize`` + a padded canvas + ``/ 255`` +
HWC→CHW for the letterbox; ``cv2.cvtColor`` + ``cv2.inRange`` + ``cv2.ellipse`` masks for the
segmentation. They are the oracles of tests/test_ops_image.py and the baselines of the benchmarks.
Independent of the compiled core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from fastcell import defaults as D  # the settings' defaults; the algorithms here stay independent

__all__ = ["letterbox_geometry", "letterbox", "letterbox_batch", "hsv_mask", "disc_mask", "segment_cells"]


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, int, int, int, int]:
    """``(scale, new_w, new_h, pad_x, pad_y)`` of the ops contract; sizes rounded half up, in [1, size]."""
    scale = min(size / width, size / height)
    new_w = min(max(math.floor(width * scale + 0.5), 1), size)
    new_h = min(max(math.floor(height * scale + 0.5), 1), size)
    return scale, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def letterbox(image: np.ndarray, size: int = D.INPUT_SIZE, pad_value: float = D.PAD_VALUE) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`fastcell.ops.letterbox`: cv2.resize(INTER_LINEAR) onto a padded canvas."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    height, width = image.shape[:2]
    scale, new_w, new_h, pad_x, pad_y = letterbox_geometry(width, height, size)
    full_scale = 65535.0 if image.dtype == np.uint16 else 255.0
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        rgb = np.repeat(resized[:, :, None], 3, axis=2)
    else:
        rgb = resized[:, :, 2::-1]  # BGR(A) → RGB, alpha dropped
    canvas = np.full((size, size, 3), pad_value / 255.0, dtype=np.float32)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = rgb.astype(np.float32) / full_scale
    params = np.array([scale, pad_x, pad_y, width, height], dtype=np.float32)
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), params


def letterbox_batch(
    images: Sequence[np.ndarray], size: int = D.INPUT_SIZE, pad_value: float = D.PAD_VALUE
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`fastcell.ops.letterbox_batch`: :func:`letterbox` in a loop, stacked."""
    pairs = [letterbox(image, size, pad_value) for image in images]
    if not pairs:
        return np.zeros((0, 3, size, size), np.float32), np.zeros((0, 5), np.float32)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def hsv_mask(image: np.ndarray, hsv_low: Sequence[int], hsv_high: Sequence[int]) -> np.ndarray:
    """cv2.inRange on the full-frame HSV image (bool (H, W)); a hue range with low > high wraps through 0."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    (lh, ls, lv), (hh, hs, hv) = hsv_low, hsv_high
    if lh <= hh:
        mask = cv2.inRange(hsv, (lh, ls, lv), (hh, hs, hv))
    else:
        mask = cv2.inRange(hsv, (lh, ls, lv), (255, hs, hv)) | cv2.inRange(hsv, (0, ls, lv), (hh, hs, hv))
    return mask > 0


def _disc_params(box: np.ndarray, disc: str) -> tuple[float, float, float, float] | None:
    """Centre and semi-axes (float64) of a box's disc; None for an empty, inverted or non-finite box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if not (w > 0 and h > 0 and all(math.isfinite(v) for v in (x1, y1, x2, y2, w, h))):
        return None
    a, b = (0.5 * min(w, h),) * 2 if disc == "circle" else (0.5 * w, 0.5 * h)
    return 0.5 * (x1 + x2), 0.5 * (y1 + y2), a, b


def disc_mask(shape: tuple[int, int], box: np.ndarray, disc: str = "circle", draw: str = "opencv") -> np.ndarray:
    """The disc of one box as a bool (H, W) mask.

    ``draw="exact"`` applies the pixel rule of :func:`fastcell.ops.segment_cells` with NumPy:
    centre ``(x + 0.5, y + 0.5)`` inside the disc, in float64, with the same operations in the same
    order. ``draw="opencv"`` draws a filled ``cv2.ellipse`` (4 fractional bits): OpenCV rasterises
    its outline as well as the interior, which adds about half a pixel all round, so the semi-axes
    are drawn half a pixel smaller (measured: this halves the disagreement with the exact rule).
    """
    mask = np.zeros(shape, dtype=bool)
    params = _disc_params(box, disc)
    if params is None:
        return mask
    cx, cy, a, b = params
    if draw == "exact":
        ys, xs = np.ogrid[: shape[0], : shape[1]]
        dx = xs + 0.5 - cx
        dy = ys + 0.5 - cy
        return dx * dx * b * b + dy * dy * a * a <= a * a * b * b
    shift = 4
    one = 1 << shift
    # OpenCV's pixel (x, y) has its centre at integer (x, y), half a pixel left/up of ours.
    canvas = np.zeros(shape, dtype=np.uint8)
    centre = (round((cx - 0.5) * one), round((cy - 0.5) * one))
    axes = (round(max(a - 0.5, 0.0) * one), round(max(b - 0.5, 0.0) * one))
    cv2.ellipse(canvas, centre, axes, 0, 0, 360, 1, thickness=-1, lineType=cv2.LINE_8, shift=shift)
    return canvas > 0


def segment_cells(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    hsv_low: Sequence[int] | None = None,
    hsv_high: Sequence[int] | None = None,
    disc: str = "circle",
    fill: Sequence[int] = (0, 0, 0),
    draw: str = "opencv",
) -> tuple[np.ndarray, np.ndarray]:
    """Reference of :func:`fastcell.ops.segment_cells`: full-frame cvtColor + inRange, one mask per box.

    Masks are painted from the lowest score up (equal scores: the higher index first), so the
    highest score, then the lowest index, wins where they overlap. ``draw`` picks the disc
    rasteriser (see :func:`disc_mask`).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    height, width = image.shape[:2]
    in_range = np.ones((height, width), bool) if hsv_low is None else hsv_mask(image, hsv_low, hsv_high)
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((-np.arange(len(scores)), ranked))  # ascending score, then descending index
    labels = np.zeros((height, width), dtype=np.int32)
    for i in order:
        labels[disc_mask((height, width), boxes[i], disc, draw) & in_range] = i + 1
    segmented = np.where(labels[:, :, None] > 0, image, np.asarray(fill, dtype=np.uint8)).astype(np.uint8)
    return labels, segmented
