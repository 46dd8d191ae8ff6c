"""Scale-aware inference: frames rescaled so that their cells appear at the model's training scale.

Frames do not say their magnification. The letterbox maps a whole frame onto the network input,
so a 120×120 single-cell frame is magnified 3.5× and its cell is far larger than anything the
model learned. ``cell_size`` (the typical cell diameter in the frame's pixels) fixes that: the
frame is placed on a grey canvas at the scale that makes its cells ``train_cell_size`` input
pixels across (the model's ``model.json``), and the results are mapped back to frame pixels.

* A number: that scale for every frame. Only ever a *smaller* scale than the letterbox's: a frame
  whose cells are already small at the letterbox scale is letterboxed as usual (no tiling).
* ``"auto"``: every frame is first letterboxed as usual; when its confident cells come out much
  larger than the training scale (median side > :data:`AUTO_RATIO` × ``train_cell_size``), or
  when nothing is found at all (a frame filled by one cell), the frame is run once more at the
  scale its own cells (or, with none, its short side) suggest. Ordinary smears pay nothing.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["AUTO_RATIO", "AUTO_MIN_SCORE", "input_scale", "place_on_canvas", "estimate_cell_size",
           "needs_rescale"]

#: "auto" re-runs a frame whose median confident cell is this many times the training scale
AUTO_RATIO = 1.6
#: the detections that count for "auto" (of the model's score scale)
AUTO_MIN_SCORE = 0.4


def input_scale(width: int, height: int, size: int, cell_size: float, train_cell_size: float) -> float | None:
    """The frame → input scale that puts ``cell_size`` at ``train_cell_size``, or None when the
    letterbox's own scale is already as small or smaller (then the plain letterbox is used)."""
    fit = min(size / width, size / height)
    scale = train_cell_size / cell_size
    return scale if scale < fit * 0.999 else None


def place_on_canvas(frame: np.ndarray, scale: float, size: int, pad_value: int) -> tuple[np.ndarray, int, int]:
    """The frame centred on a square canvas (pad colour) whose letterbox has scale ≈ ``scale``.

    Returns ``(canvas, x0, y0)``: the frame's top-left corner on the canvas.
    """
    h, w = frame.shape[:2]
    side = max(w, h, math.ceil(size / scale))
    fill = pad_value * 257 if frame.dtype == np.uint16 else pad_value
    canvas = np.full((side, side) + frame.shape[2:], fill, frame.dtype)
    if frame.ndim == 3 and frame.shape[2] == 4:
        canvas[:, :, 3] = np.iinfo(frame.dtype).max  # opaque
    x0, y0 = (side - w) // 2, (side - h) // 2
    canvas[y0:y0 + h, x0:x0 + w] = frame
    return canvas, x0, y0


def canvas_params(params: np.ndarray, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Letterbox params of a canvas turned into params of the frame placed on it at (x0, y0)."""
    out = np.array(params, np.float32, copy=True)
    out[1] += x0 * out[0]
    out[2] += y0 * out[0]
    out[3], out[4] = width, height
    return out


def estimate_cell_size(boxes: np.ndarray, scores: np.ndarray, min_score: float = AUTO_MIN_SCORE) -> float | None:
    """Median side (the larger of width and height) of the confident boxes, in their pixels."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep = np.asarray(scores).reshape(-1) >= min_score
    if not keep.any():
        return None
    b = boxes[keep]
    return float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))


def needs_rescale(boxes: np.ndarray, scores: np.ndarray, params: Sequence[float], train_cell_size: float,
                  size: int) -> float | None:
    """For ``"auto"``: the cell size to run the frame again with, or None when the pass was right.

    ``params`` are the first pass's letterbox params ``[scale, pad_x, pad_y, width, height]``.
    """
    scale, _, _, width, height = (float(v) for v in params)
    found = estimate_cell_size(boxes, scores)
    if found is None:
        if len(np.asarray(scores).reshape(-1)):
            return None  # cells, just not confident ones: a second look at another scale won't help
        guess = 0.6 * min(width, height)  # nothing at all: maybe one cell fills the frame
        return guess if input_scale(int(width), int(height), size, guess, train_cell_size) else None
    if found * scale <= AUTO_RATIO * train_cell_size:
        return None
    return found if input_scale(int(width), int(height), size, found, train_cell_size) else None
