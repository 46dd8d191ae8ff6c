"""Anchor boxes by K-means++ — the paper's Algorithm 1. NumPy only (no torch).

The ground-truth box sizes ``(w, h)``, scaled to the network input the way inference letterboxes
the images, are clustered into ``k`` anchors: K-means++ seeding (each new centre drawn with
probability proportional to D², the squared distance to the nearest centre chosen so far) followed
by Lloyd iterations (assign every box to its nearest centre, move every centre to the mean of its
boxes) until no assignment changes.

Two distances: ``"iou"`` (default), ``d = 1 − IoU`` of two boxes sharing a centre, which is what
matters for anchor matching and does not let large boxes dominate; ``"euclidean"``, the plain
distance in (w, h) that the paper's wording describes.
"""

from __future__ import annotations

import numpy as np

from fastcell.defaults import INPUT_SIZE

__all__ = ["wh_iou", "kmeans_anchors", "mean_best_iou", "YOLOV3_TINY_COCO_ANCHORS", "scaled_box_sizes"]

#: The stock YOLOv3-tiny anchors (trained on COCO, 416×416), for the paper's Figure 7 comparison.
YOLOV3_TINY_COCO_ANCHORS = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes and anchors placed on the same centre: ``(N, 2), (K, 2) → (N, K)``."""
    wh = np.asarray(wh, np.float64)[:, None, :]
    anchors = np.asarray(anchors, np.float64)[None, :, :]
    inter = np.minimum(wh, anchors).prod(2)
    return inter / (wh.prod(2) + anchors.prod(2) - inter)


def _distance(wh: np.ndarray, centres: np.ndarray, metric: str) -> np.ndarray:
    if metric == "iou":
        return 1.0 - wh_iou(wh, centres)
    if metric == "euclidean":
        return np.sqrt(((wh[:, None, :] - centres[None, :, :]) ** 2).sum(2))
    raise ValueError(f"metric must be 'iou' or 'euclidean', got {metric!r}")


def kmeans_anchors(wh: np.ndarray, k: int = 6, metric: str = "iou", seed: int = 0,
                   max_iter: int = 300, n_init: int = 10) -> np.ndarray:
    """Cluster box sizes into ``k`` anchors with K-means++ seeding and Lloyd iterations.

    Parameters
    ----------
    wh : (N, 2) array
        Box widths and heights in network-input pixels, ``N >= k``, all positive.
    k : int
        Number of anchors (6: three per head).
    metric : {"iou", "euclidean"}
        ``1 − IoU`` (default) or Euclidean distance in (w, h).
    seed : int
        Seed of the D² sampling; the result is deterministic for a given seed.
    max_iter : int
        Cap on the Lloyd iterations of one run (they normally converge in tens).
    n_init : int
        Independent seedings; the run with the smallest total distance of the boxes to their
        centres wins (Lloyd only finds a local optimum, and one unlucky seeding can put two
        centres in one cluster).

    Returns
    -------
    (k, 2) ndarray of float32
        Anchors ``(w, h)`` sorted by area, smallest first (the first three go to the 26×26 head).
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if len(wh) < k:
        raise ValueError(f"need at least k={k} boxes to cluster, got {len(wh)}")
    if (wh <= 0).any() or not np.isfinite(wh).all():
        raise ValueError("box widths and heights must be finite and > 0")
    _distance(wh[:1], wh[:1], metric)  # refuse an unknown metric before any work
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(max(1, n_init)):
        centres = _kmeans_once(wh, k, metric, rng, max_iter)
        cost = _distance(wh, centres, metric).min(1).sum()
        if cost < best_cost - 1e-12:
            best, best_cost = centres, cost
    order = np.argsort(best.prod(1), kind="stable")
    return best[order].astype(np.float32)


def _kmeans_once(wh: np.ndarray, k: int, metric: str, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    """One run of Algorithm 1: D² seeding, then Lloyd until no assignment changes."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d2 = _distance(wh, np.array(centres), metric).min(1) ** 2
        total = d2.sum()
        probs = d2 / total if total > 0 else np.full(len(wh), 1.0 / len(wh))
        centres.append(wh[rng.choice(len(wh), p=probs)])
    centres_arr = np.array(centres)
    assign = None
    for _ in range(max_iter):
        new_assign = _distance(wh, centres_arr, metric).argmin(1)
        if assign is not None and (new_assign == assign).all():
            break
        assign = new_assign
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centres_arr[j] = members.mean(0)
            else:  # an empty cluster restarts at the box worst served by the current centres
                far = _distance(wh, centres_arr, metric).min(1).argmax()
                centres_arr[j] = wh[far]
    return centres_arr


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best-matching anchor (shared centre)."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    if not len(wh):
        return float("nan")
    return float(wh_iou(wh, anchors).max(1).mean())


def scaled_box_sizes(labels, input_size: int = INPUT_SIZE) -> np.ndarray:
    """(w, h) of every ground-truth box of a LabelSet, scaled by each image's letterbox scale."""
    sizes = []
    for sample in labels.samples:
        if len(sample.boxes):
            scale = min(input_size / sample.width, input_size / sample.height)
            sizes.append((sample.boxes[:, 2:] - sample.boxes[:, :2]) * scale)
    return np.concatenate(sizes).astype(np.float32) if sizes else np.zeros((0, 2), np.float32)
