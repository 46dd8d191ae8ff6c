"""Letterbox and augmentations for training, on uint8 BGR images and x1y1x2y2 pixel boxes.

Microscopy has no "up": flips and 90° rotations are free label-preserving augmentations. Stain
and illumination vary between slides, so hue/saturation/value jitter stands in for them. Scale and
translation (and optionally mosaic) vary the cell size and position on the 416×416 input.

The letterbox geometry is the deployed one (see :func:`letterbox_params`): the same scale, the same
rounding, the same centred padding with grey 114, so train and deploy see the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fastcell.data.photometric import camera, hed_jitter, white_balance_gamma
from fastcell.defaults import INPUT_SIZE, PAD_VALUE

__all__ = ["Augment", "letterbox_params", "letterbox_uint8", "augment_sample", "mosaic", "single_cell_crop"]


def letterbox_params(width: int, height: int, size: int) -> tuple[float, int, int, int, int]:
    """The deployed letterbox rule (``fastcell.ops.letterbox``): ``(scale, new_w, new_h, pad_x, pad_y)``.

    ``scale = min(S/w, S/h)``, ``new = round(w·scale), round(h·scale)`` with halves rounded up and
    kept in [1, S], ``pad = (S - new) // 2``.
    """
    scale = min(size / width, size / height)
    new_w = min(max(math.floor(width * scale + 0.5), 1), size)
    new_h = min(max(math.floor(height * scale + 0.5), 1), size)
    return scale, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2


def letterbox_uint8(image: np.ndarray, size: int = INPUT_SIZE, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox a uint8 BGR image to ``(S, S, 3)`` uint8; returns it and the params row.

    The params row is ``[scale, pad_x, pad_y, width, height]`` float32, as ``fastcell.ops.letterbox``.
    """
    h, w = image.shape[:2]
    scale, new_w, new_h, pad_x, pad_y = letterbox_params(w, h, size)
    out = np.full((size, size, 3), pad_value, np.uint8)
    resized = image if (new_w, new_h) == (w, h) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return out, np.array([scale, pad_x, pad_y, w, h], np.float32)


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (probabilities and ranges). ``Augment.none()`` turns everything off."""

    mosaic: float = 0.5  # probability of a 4-image mosaic
    scale: float = 0.3  # random zoom in [1 - scale, 1 + scale]
    translate: float = 0.1  # random shift, fraction of the input size
    flip_lr: float = 0.5
    flip_ud: float = 0.5
    rot90: bool = True  # uniform k·90°
    hsv_h: float = 0.015  # hue gain (fraction of the full hue circle)
    hsv_s: float = 0.5
    hsv_v: float = 0.3
    min_visible: float = 0.35  # drop a box when less than this share of it stays in the image
    # other labs (see fastcell.data.photometric); 0 turns each off
    zoom: tuple[float, float] | None = None  # log-uniform zoom range; replaces ``scale`` when set
    stain: float = 0.0  # HED optical-density jitter
    white_balance: float = 0.0  # per-channel gain range
    gamma: float = 0.0  # log-gamma range
    blur: float = 0.0  # probability of a defocus blur
    noise: float = 0.0  # max sensor-noise sigma (grey levels)
    jpeg: float = 0.0  # probability of JPEG re-encoding
    single_cell: float = 0.0  # probability of a cell-centred crop (an analyser frame)
    cell_range: tuple[float, float] = (10.0, 360.0)  # a zoom never takes the median cell outside

    @classmethod
    def none(cls) -> "Augment":
        return cls(mosaic=0.0, scale=0.0, translate=0.0, flip_lr=0.0, flip_ud=0.0, rot90=False,
                   hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)

    def draw_zoom(self, rng: np.random.Generator) -> float:
        if self.zoom is not None:
            lo, hi = self.zoom
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(1 - self.scale, 1 + self.scale)) if self.scale else 1.0


def _affine(canvas: np.ndarray, boxes: np.ndarray, centre: tuple[float, float], size: int,
            aug: Augment, rng: np.random.Generator, pad_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Zoom about ``centre`` of ``canvas`` and shift, producing an ``(S, S)`` image; boxes follow."""
    s = aug.draw_zoom(rng)
    if aug.zoom is not None and len(boxes):
        # a zoom that makes the cells smaller or larger than anything the detector can see teaches
        # nothing: keep the median cell side within cell_range
        median = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
        if median > 0:
            s = float(np.clip(s, min(1.0, aug.cell_range[0] / median), max(1.0, aug.cell_range[1] / median)))
    tx = rng.uniform(-aug.translate, aug.translate) * size if aug.translate else 0.0
    ty = rng.uniform(-aug.translate, aug.translate) * size if aug.translate else 0.0
    m = np.array([[s, 0, size / 2 + tx - s * centre[0]], [0, s, size / 2 + ty - s * centre[1]]], np.float32)
    out = cv2.warpAffine(canvas, m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(pad_value,) * 3)
    if len(boxes):
        boxes = boxes * s + np.array([m[0, 2], m[1, 2], m[0, 2], m[1, 2]], np.float32)
    return out, boxes.astype(np.float32)


def _clip_boxes(boxes: np.ndarray, ids: np.ndarray, size: int, min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image and drop boxes that are mostly outside or smaller than 2 pixels."""
    if not len(boxes):
        return boxes.reshape(0, 4), ids
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    clipped = boxes.clip(0, size)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (w > 2) & (h > 2) & (w * h >= min_visible * np.maximum(area, 1e-6))
    return clipped[keep], ids[keep]


def _flip_rotate(image: np.ndarray, boxes: np.ndarray, aug: Augment,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    if aug.flip_lr and rng.random() < aug.flip_lr:
        image = image[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    if aug.flip_ud and rng.random() < aug.flip_ud:
        image = image[::-1]
        boxes = np.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], 1)
    if aug.rot90:
        for _ in range(int(rng.integers(4))):
            # np.rot90 turns counter-clockwise: (x, y) → (y, S - x)
            image = np.rot90(image)
            boxes = np.stack([boxes[:, 1], size - boxes[:, 2], boxes[:, 3], size - boxes[:, 0]], 1)
    return np.ascontiguousarray(image), boxes.reshape(-1, 4).astype(np.float32)


def _hsv_jitter(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """Random hue shift and saturation/value gains through lookup tables (fast on uint8)."""
    if not (aug.hsv_h or aug.hsv_s or aug.hsv_v):
        return image
    gain_h, gain_s, gain_v = rng.uniform(-1, 1, 3) * (aug.hsv_h, aug.hsv_s, aug.hsv_v) + (0, 1, 1)
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x + gain_h * 180) % 180).astype(np.uint8)
    lut_s = np.clip(x * gain_s, 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gain_v, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def augment_sample(image: np.ndarray, boxes: np.ndarray, ids: np.ndarray, size: int, aug: Augment,
                   rng: np.random.Generator, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Letterbox one uint8 BGR image to ``(S, S, 3)`` and apply the geometric + colour augmentations.

    ``boxes`` are x1y1x2y2 pixels of ``image``; the returned boxes are network-input pixels.
    """
    canvas, params = letterbox_uint8(image, size, pad_value)
    boxes = boxes * params[0] + np.array([params[1], params[2]] * 2, np.float32)
    if aug.scale or aug.translate or aug.zoom:
        canvas, boxes = _affine(canvas, boxes, (size / 2, size / 2), size, aug, rng, pad_value)
    return _finish(canvas, boxes, ids, size, aug, rng)


def mosaic(images: list[np.ndarray], boxes: list[np.ndarray], ids: list[np.ndarray], size: int, aug: Augment,
           rng: np.random.Generator, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four images (each at its letterbox scale) around a random centre of a 2S×2S canvas, then
    zoom/shift to ``(S, S)``: cells keep the size they have at inference, in new surroundings."""
    canvas = np.full((2 * size, 2 * size, 3), pad_value, np.uint8)
    xc, yc = (float(v) for v in rng.uniform(0.5 * size, 1.5 * size, 2))
    all_boxes, all_ids = [], []
    for k, (image, b, c) in enumerate(zip(images, boxes, ids)):
        h, w = image.shape[:2]
        scale, new_w, new_h, _, _ = letterbox_params(w, h, size)
        im = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (w, h) else image
        # corner of this image on the canvas: top-left, top-right, bottom-left, bottom-right of the centre
        x0 = int(xc) - new_w if k in (0, 2) else int(xc)
        y0 = int(yc) - new_h if k in (0, 1) else int(yc)
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + new_w, 2 * size), min(y0 + new_h, 2 * size)
        canvas[cy0:cy1, cx0:cx1] = im[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        all_boxes.append(b * scale + np.array([x0, y0, x0, y0], np.float32))
        all_ids.append(c)
    b = np.concatenate(all_boxes).astype(np.float32)
    c = np.concatenate(all_ids)
    # clip to the canvas region that is filled, so the affine sees honest boxes
    b, c = _clip_boxes(b, c, 2 * size, aug.min_visible)
    canvas, b = _affine(canvas, b, (xc, yc), size, aug, rng, pad_value)
    return _finish(canvas, b, c, size, aug, rng)


def _finish(canvas: np.ndarray, boxes: np.ndarray, ids: np.ndarray, size: int, aug: Augment,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, ids = _clip_boxes(boxes.reshape(-1, 4), ids, size, aug.min_visible)
    canvas, boxes = _flip_rotate(canvas, boxes, aug, rng)
    canvas = _hsv_jitter(canvas, aug, rng)
    canvas = hed_jitter(canvas, aug.stain, rng)
    canvas = white_balance_gamma(canvas, aug.white_balance, aug.gamma, rng)
    canvas = camera(canvas, aug.blur, aug.noise, aug.jpeg, rng)
    return canvas, boxes, ids


def single_cell_crop(image: np.ndarray, boxes: np.ndarray, ids: np.ndarray, rng: np.random.Generator,
                     prefer: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A square crop centred (with jitter) on one cell, 1.3–3× its size, with its neighbours cut
    at the border, as an analyser's single-cell frame shows it; ``None`` when there is no cell.

    ``prefer``: a class index picked, when present, with probability 0.7 (white cells are what
    single-cell analysers frame). Boxes are returned in crop pixels (not yet clipped).
    """
    if not len(boxes):
        return None
    choices = np.flatnonzero(ids == prefer) if prefer is not None else np.zeros(0, np.int64)
    pool = choices if len(choices) and rng.random() < 0.7 else np.arange(len(boxes))
    x1, y1, x2, y2 = boxes[int(rng.choice(pool))]
    side = max(x2 - x1, y2 - y1) * rng.uniform(1.3, 3.0)
    cx = (x1 + x2) / 2 + rng.uniform(-0.15, 0.15) * side
    cy = (y1 + y2) / 2 + rng.uniform(-0.15, 0.15) * side
    h, w = image.shape[:2]
    left = int(np.clip(round(cx - side / 2), 0, max(w - 1, 0)))
    top = int(np.clip(round(cy - side / 2), 0, max(h - 1, 0)))
    right, bottom = min(w, int(round(left + side))), min(h, int(round(top + side)))
    if right - left < 8 or bottom - top < 8:
        return None
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    return crop, (boxes - np.array([left, top, left, top], np.float32)).astype(np.float32), ids
