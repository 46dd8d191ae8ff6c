"""A straightforward NumPy/OpenCV post-processing pipeline, as a skilled user would write it.

This is the fair baseline of ``benchmarks/bench_postprocess.py``, not an oracle: the oracles
(:mod:`fastcell.reference.boxes`, :mod:`fastcell.reference.image`) follow fastcell's arithmetic step by
step and are slow on purpose; this module is what one would write to ship the paper's method without
fastcell — whole-array float32 NumPy for the YOLO decode, the classic vectorised greedy NMS loop per
class, GBCIOU merging as a short Python loop, and OpenCV for the masks (one ``cvtColor`` to HSV, one
``inRange``, every disc filled into one label canvas). Its results agree with :mod:`fastcell.ops` up to
float32 rounding (boxes) and disc-edge pixels (masks); tests/test_baseline.py checks how closely.

The functions take the arguments of their :mod:`fastcell.ops` twins, so a benchmark can swap them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from fastcell import defaults as D  # the settings' defaults; the algorithms here stay independent
from fastcell.reference.boxes import MAX_LOG_SCALE

__all__ = ["letterbox", "decode", "nms", "gbciou_merge", "postprocess", "segment_cells"]

_MAX_LOG_SCALE = np.float32(MAX_LOG_SCALE)  # as fastcell: a box at most 62.5 × its anchor


def letterbox(image: np.ndarray, size: int = D.INPUT_SIZE, pad_value: int = D.PAD_VALUE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 BGR → ``(3, size, size)`` float32 RGB in [0, 1] and the ops' ``params``: ``cv2.resize``,
    ``cv2.copyMakeBorder``, then the planes split and stacked in RGB order and scaled (the fastest of
    the usual ways here: ``cv2.dnn.blobFromImage`` takes ~10× longer, a strided NumPy transpose more)."""
    from fastcell.reference.image import letterbox_geometry

    height, width = image.shape[:2]
    scale, new_w, new_h, pad_x, pad_y = letterbox_geometry(width, height, size)
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(resized, pad_y, size - new_h - pad_y, pad_x, size - new_w - pad_x,
                                cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    blue, green, red = cv2.split(padded)
    chw = np.stack([red, green, blue]).astype(np.float32) * np.float32(1 / 255)
    return chw, np.array([scale, pad_x, pad_y, width, height], np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-x) overflows to inf for very negative logits, which gives the right limit, 0
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def decode(heads, strides, anchors, num_classes: int, score_threshold: float):
    """Vectorised YOLOv3 decode: per image ``(boxes (K, 4), scores (K,), class_ids (K,))``, input pixels."""
    per_image: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(len(heads[0]))]
    for head, stride, anchor in zip(heads, strides, anchors):
        n, _, h, w = head.shape
        anchor = np.asarray(anchor, np.float32)
        # (N, A·(C+5), H, W) → (N, A, H, W, C+5): one row of outputs per (anchor, cell)
        p = head.reshape(n, len(anchor), num_classes + 5, h, w).transpose(0, 1, 3, 4, 2)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        cx = (_sigmoid(p[..., 0]) + gx) * stride
        cy = (_sigmoid(p[..., 1]) + gy) * stride
        bw = np.exp(np.minimum(p[..., 2], _MAX_LOG_SCALE)) * anchor[None, :, None, None, 0]
        bh = np.exp(np.minimum(p[..., 3], _MAX_LOG_SCALE)) * anchor[None, :, None, None, 1]
        best = p[..., 5:].argmax(-1)
        scores = _sigmoid(p[..., 4]) * _sigmoid(p[..., 5:].max(-1))
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
        for i in range(n):
            keep = scores[i] >= score_threshold
            per_image[i].append((boxes[i][keep], scores[i][keep], best[i][keep]))
    return [(np.concatenate([p[0] for p in parts]).astype(np.float32),
             np.concatenate([p[1] for p in parts]).astype(np.float32),
             np.concatenate([p[2] for p in parts]).astype(np.int32)) for parts in per_image]


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """The classic vectorised loop (Fast R-CNN's py_cpu_nms, without its +1 pixel convention)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms(boxes, scores, iou_threshold: float, class_ids=None) -> np.ndarray:
    """Greedy NMS, per class when ``class_ids`` is given: kept indices by descending score."""
    if class_ids is None:
        return _greedy_nms(boxes, scores, iou_threshold)
    keep = [np.flatnonzero(class_ids == c) for c in np.unique(class_ids)]
    keep = [idx[_greedy_nms(boxes[idx], scores[idx], iou_threshold)] for idx in keep]
    kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")]


def gbciou_merge(boxes, scores, class_ids, threshold: float = 0.5, mode: str = "multi", merge_iou: float = 0.5):
    """The paper's Algorithm 3 with the true enclosing box; modes as :func:`fastcell.ops.gbciou_merge`."""
    out_boxes: list[np.ndarray] = []
    out_index: list[int] = []
    for k in np.argsort(-scores, kind="stable"):
        a = boxes[k]
        match = 0 if out_boxes and mode == "single" else None
        if out_boxes and mode == "multi":
            kept = np.asarray(out_boxes)
            w = np.maximum(0.0, np.minimum(kept[:, 2], a[2]) - np.maximum(kept[:, 0], a[0]))
            h = np.maximum(0.0, np.minimum(kept[:, 3], a[3]) - np.maximum(kept[:, 1], a[1]))
            inter = w * h
            union = (kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1]) + (a[2] - a[0]) * (a[3] - a[1]) - inter
            hits = np.flatnonzero(inter / union > merge_iou)
            match = int(hits[0]) if hits.size else None  # the highest-scoring overlapping cell
        if match is None:
            out_boxes.append(a.copy())
            out_index.append(int(k))
            continue
        b = out_boxes[match]
        enclosing = np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], np.float32)
        inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-16
        area_e = (enclosing[2] - enclosing[0]) * (enclosing[3] - enclosing[1]) + 1e-16
        if (area_e - union) / area_e < threshold:
            out_boxes[match] = enclosing
    idx = np.asarray(out_index, dtype=np.int64)
    return np.asarray(out_boxes, np.float32).reshape(-1, 4), scores[idx], class_ids[idx]


def postprocess(heads, params, *, strides, anchors, num_classes: int, score_threshold: float = D.SCORE,
                nms_iou: float = D.NMS_IOU, merge: str = D.MERGE, gbciou: float = D.GBCIOU,
                merge_iou: float = D.MERGE_IOU, class_agnostic: bool = False,
                max_detections: int | None = D.MAX_DETECTIONS):
    """decode → NMS → GBCIOU → undo the letterbox → clip → drop empty → cap (:func:`fastcell.ops.postprocess`)."""
    params = np.asarray(params, np.float32).reshape(-1, 5)
    out = []
    for (boxes, scores, class_ids), (scale, pad_x, pad_y, width, height) in zip(
            decode(heads, strides, anchors, num_classes, score_threshold), params):
        keep = nms(boxes, scores, nms_iou, None if class_agnostic else class_ids)
        boxes, scores, class_ids = gbciou_merge(boxes[keep], scores[keep], class_ids[keep], gbciou, merge, merge_iou)
        boxes = (boxes - [pad_x, pad_y, pad_x, pad_y]) / scale
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        alive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out.append((boxes[alive][:max_detections], scores[alive][:max_detections], class_ids[alive][:max_detections]))
    return out


def segment_cells(image: np.ndarray, boxes, scores, hsv_low: Sequence[int] | None = None,
                  hsv_high: Sequence[int] | None = None, disc: str = "circle", fill: Sequence[int] = (0, 0, 0)):
    """Discs filled into one label canvas, cut by one full-frame ``inRange``: ``(labels, segmented)``.

    The discs are drawn with 4 fractional bits at OpenCV's pixel-centre convention (pixel x centred at
    x, not x + 0.5) and half a pixel smaller, because a filled ``cv2.ellipse`` also paints its outline:
    integer centres and radii would move about 2 % of the mask pixels, this leaves about 0.3 %.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.zeros(image.shape[:2], np.int32)
    # paint the lowest score first, so the highest score (ties: the lowest index) ends on top
    for i in np.argsort(-scores, kind="stable")[::-1]:
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        w, h = x2 - x1, y2 - y1
        if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
            continue
        a, b = (min(w, h) / 2,) * 2 if disc == "circle" else (w / 2, h / 2)
        centre = (round((x1 + x2 - 1) * 8), round((y1 + y2 - 1) * 8))  # 16 · (centre − 0.5)
        axes = (round(max(a - 0.5, 0) * 16), round(max(b - 0.5, 0) * 16))
        cv2.ellipse(labels, centre, axes, 0, 0, 360, int(i) + 1, thickness=-1, lineType=cv2.LINE_8, shift=4)
    if hsv_low is not None:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        (lh, ls, lv), (hh, hs, hv) = hsv_low, hsv_high
        if lh <= hh:
            in_range = cv2.inRange(hsv, (lh, ls, lv), (hh, hs, hv))
        else:  # a hue range wrapping through 0 (reds)
            in_range = cv2.inRange(hsv, (lh, ls, lv), (180, hs, hv)) | cv2.inRange(hsv, (0, ls, lv), (hh, hs, hv))
        labels[in_range == 0] = 0
    # np.where, not segmented[labels == 0] = fill: a boolean-mask assignment of a colour is ~3× slower
    segmented = np.where(labels[:, :, None] > 0, image, np.asarray(fill, np.uint8))
    return labels, segmented
