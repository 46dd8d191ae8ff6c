"""Plain NumPy references of the box kernels: obvious, slow, independent of the C++ core.

They are the oracle of the tests and the baseline of ``benchmarks/bench_postprocess.py``. Each one
spells out the contract of its twin in :mod:`fastcell.ops` with whole-array NumPy and simple loops;
the arithmetic (float32 IoU, float64 decode and GBCIOU penalty) follows the same steps in the same
order, so thresholds decide identically. Nothing here imports ``fastcell._core``.
"""

from __future__ import annotations

import numpy as np

from fastcell import defaults as D  # the settings' defaults; the algorithms here stay independent

__all__ = ["box_iou", "decode", "encode_heads", "nms", "gbciou_merge", "postprocess", "MAX_LOG_SCALE"]

#: tw, th are clamped to this before exp (detectron2's bbox_xform_clip): a box <= 62.5 × its anchor.
MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


def _boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _area(b: np.ndarray) -> np.ndarray:
    return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)


def box_iou(a, b) -> np.ndarray:
    """(N, M) float32 IoU of corner boxes; 0 where both boxes are empty."""
    a, b = _boxes(a), _boxes(b)
    w = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    h = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = w * h
    union = (_area(a)[:, None] + _area(b)[None, :]) - inter
    return (inter / np.where(union > 0, union, np.float32(1))).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -709 gives the right limit, 0
        return 1.0 / (1.0 + np.exp(-x))


def decode(heads, strides, anchors, num_classes: int, score_threshold: float):
    """Per image ``(boxes (K, 4) float32, scores (K,) float32, class_ids (K,) int32)``.

    Order: head by head, anchor by anchor, cells row-major. score = sigmoid(obj) · sigmoid(best
    class logit) in float64, kept when ``>= score_threshold``.
    """
    batch = np.asarray(heads[0]).shape[0]
    found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(batch)]
    for head, stride, anchor in zip(heads, strides, anchors):
        head = np.asarray(head, dtype=np.float32).astype(np.float64)
        anchor = np.asarray(anchor, dtype=np.float32).astype(np.float64)
        stride = float(np.float32(stride))
        n, _, height, width = head.shape
        blocks = head.reshape(n, len(anchor), num_classes + 5, height, width)
        gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
        for i in range(n):
            for a, (anchor_w, anchor_h) in enumerate(anchor):
                t = blocks[i, a]
                best = np.argmax(t[5:], axis=0)
                best_logit = np.take_along_axis(t[5:], best[None], axis=0)[0]
                score = _sigmoid(t[4]) * _sigmoid(best_logit)
                keep = (score >= score_threshold).ravel()
                cx = (_sigmoid(t[0]) + gx) * stride
                cy = (_sigmoid(t[1]) + gy) * stride
                w = np.exp(np.minimum(t[2], MAX_LOG_SCALE)) * anchor_w
                h = np.exp(np.minimum(t[3], MAX_LOG_SCALE)) * anchor_h
                box = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).reshape(-1, 4)
                found[i].append((box[keep], score.ravel()[keep], best.ravel()[keep]))
    out = []
    for parts in found:
        out.append((
            np.concatenate([p[0] for p in parts]).astype(np.float32).reshape(-1, 4),
            np.concatenate([p[1] for p in parts]).astype(np.float32),
            np.concatenate([p[2] for p in parts]).astype(np.int32),
        ))
    return out


def encode_heads(images, *, num_classes: int, strides, anchors, shapes, background: float = -10.0):
    """The inverse of :func:`decode`: head outputs that decode to given boxes (synthetic model output).

    Parameters
    ----------
    images : list of dict, one per image
        ``boxes`` (K, 4) corner boxes in network-input pixels, ``class_ids`` (K,), ``objectness`` (K,)
        logits, and the slot of each box: ``head`` (K,) and ``anchor`` (K,) indices. A box goes to the
        cell holding its centre; a later box in the same slot overwrites an earlier one.
    num_classes, strides, anchors
        As for :func:`decode`.
    shapes : list of (H, W)
        Grid size of each head.
    background : float
        Objectness logit of every empty slot (class logits 0, offsets 0).

    Returns
    -------
    list of (N, A·(C+5), H, W) ndarray of float32
    """
    per_anchor = num_classes + 5
    heads = []
    for (height, width), anchor in zip(shapes, anchors):
        head = np.zeros((len(images), len(anchor) * per_anchor, height, width), np.float32)
        head[:, 4::per_anchor] = background
        heads.append(head)
    for n, image in enumerate(images):
        boxes = np.asarray(image["boxes"], np.float64).reshape(-1, 4)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            h, a = int(image["head"][k]), int(image["anchor"][k])
            stride = float(strides[h])
            anchor_w, anchor_h = (float(v) for v in np.asarray(anchors[h])[a])
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            rows, cols = heads[h].shape[2:]
            gx, gy = min(max(int(cx), 0), cols - 1), min(max(int(cy), 0), rows - 1)
            fx, fy = np.clip([cx - gx, cy - gy], 1e-4, 1 - 1e-4)
            channels = np.zeros(per_anchor)
            channels[:4] = np.log(fx / (1 - fx)), np.log(fy / (1 - fy)), np.log((x2 - x1) / anchor_w), np.log((y2 - y1) / anchor_h)
            channels[4] = image["objectness"][k]
            channels[5:] = -6.0
            channels[5 + int(image["class_ids"][k])] = 6.0
            heads[h][n, a * per_anchor:(a + 1) * per_anchor, gy, gx] = channels
    return heads


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by score descending, equal scores by index ascending."""
    return np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")


def nms(boxes, scores, iou_threshold: float, class_ids=None) -> np.ndarray:
    """Greedy NMS: kept indices (int64) by descending score; IoU ``> iou_threshold`` suppresses."""
    boxes = _boxes(boxes)
    threshold = np.float32(iou_threshold)
    order = _score_order(scores)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        suppressed = box_iou(boxes[best:best + 1], boxes[rest])[0] > threshold
        if class_ids is not None:
            suppressed &= np.asarray(class_ids)[rest] == np.asarray(class_ids)[best]
        order = rest[~suppressed]
    return np.asarray(keep, dtype=np.int64)


def gbciou_penalty(a, b) -> float:
    """(E - Union) / E of the paper's Algorithm 3 with the true enclosing box, in float64."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    area_a = max(ax2 - ax1, 0.0) * max(ay2 - ay1, 0.0)
    area_b = max(bx2 - bx1, 0.0) * max(by2 - by1, 0.0)
    inter = max(min(ax2, bx2) - max(ax1, bx1), 0.0) * max(min(ay2, by2) - max(ay1, by1), 0.0)
    union = area_a + area_b - inter + 1e-16
    enclosing = max(max(ax2, bx2) - min(ax1, bx1), 0.0) * max(max(ay2, by2) - min(ay1, by1), 0.0) + 1e-16
    return (enclosing - union) / enclosing


def _enclose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])], dtype=np.float32)


def gbciou_merge(boxes, scores, class_ids, threshold: float = 0.5, mode: str = "multi", merge_iou: float = 0.5):
    """GBCIOU merging (see :func:`fastcell.ops.gbciou_merge` for the contract), one pair at a time."""
    if mode not in ("none", "single", "multi"):
        raise ValueError(f"merge mode must be 'multi', 'single' or 'none', got {mode!r}")
    boxes = _boxes(boxes)
    scores = np.asarray(scores, dtype=np.float32)
    class_ids = np.zeros(len(boxes), np.int32) if class_ids is None else np.asarray(class_ids, dtype=np.int32)
    order = _score_order(scores)
    kept_boxes: list[np.ndarray] = []
    kept_index: list[int] = []
    for k in order:
        a = boxes[k]
        if mode == "none" or not kept_boxes:
            kept_boxes.append(a.copy())
            kept_index.append(k)
            continue
        if mode == "single":
            match = 0
        else:
            overlapping = np.flatnonzero(box_iou(np.asarray(kept_boxes), a)[:, 0] > np.float32(merge_iou))
            match = int(overlapping[0]) if overlapping.size else None  # the highest-scoring overlapping cell
            if match is None:
                kept_boxes.append(a.copy())
                kept_index.append(k)
                continue
        if gbciou_penalty(kept_boxes[match], a) < threshold:
            kept_boxes[match] = _enclose(kept_boxes[match], a)
    idx = np.asarray(kept_index, dtype=np.int64)
    return (np.asarray(kept_boxes, dtype=np.float32).reshape(-1, 4), scores[idx], class_ids[idx])


def _map_back(boxes: np.ndarray, params) -> np.ndarray:
    scale, pad_x, pad_y, width, height = (float(v) for v in np.asarray(params, dtype=np.float32))
    b = boxes.astype(np.float64)
    b[:, [0, 2]] = np.clip((b[:, [0, 2]] - pad_x) / scale, 0, width)
    b[:, [1, 3]] = np.clip((b[:, [1, 3]] - pad_y) / scale, 0, height)
    return b.astype(np.float32)


def postprocess(heads, params, *, strides, anchors, num_classes: int, score_threshold: float = D.SCORE,
                nms_iou: float = D.NMS_IOU, merge: str = D.MERGE, gbciou: float = D.GBCIOU,
                merge_iou: float = D.MERGE_IOU, class_agnostic: bool = False,
                max_detections: int | None = D.MAX_DETECTIONS):
    """decode → NMS → GBCIOU → letterbox mapping → clip → drop empty → cap, image by image."""
    params = np.asarray(params, dtype=np.float32).reshape(-1, 5)
    out = []
    for (boxes, scores, class_ids), p in zip(decode(heads, strides, anchors, num_classes, score_threshold), params):
        keep = nms(boxes, scores, nms_iou, None if class_agnostic else class_ids)
        boxes, scores, class_ids = gbciou_merge(boxes[keep], scores[keep], class_ids[keep], gbciou, merge, merge_iou)
        boxes = _map_back(boxes, p)
        alive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, class_ids = boxes[alive], scores[alive], class_ids[alive]
        cap = len(boxes) if max_detections is None else max_detections
        out.append((boxes[:cap], scores[:cap], class_ids[:cap]))
    return out
