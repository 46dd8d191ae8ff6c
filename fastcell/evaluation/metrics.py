"""Detection metrics with COCO semantics, in NumPy (no torch, no pycocotools at run time).

AP follows pycocotools' ``COCOeval`` exactly (area range "all", no crowd boxes): per image and
class, detections in descending score (stable order), at most ``max_dets`` of them, are greedily
matched to the unmatched ground truth of highest IoU ``>= t``; over the data set the
precision/recall curve is made monotone and sampled at the 101 recall points 0, 0.01, …, 1; AP is
the mean of those samples. mAP is the mean over the classes that have ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["COCO_IOUS", "RECALL_POINTS", "iou_matrix", "match_image", "DetectionMetrics", "evaluate_detections",
           "confusion_matrix", "f1_curve", "best_score_threshold"]

COCO_IOUS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of x1y1x2y2 boxes ``(N, 4), (M, 4) → (N, M)`` float64 (areas without a +1 pixel)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
    """COCO greedy matching of score-sorted detections of one image and class.

    Returns ``(T, D)`` int: the index of the matched ground truth per threshold, or -1.
    """
    t_count, d_count, g_count = len(iou_thresholds), len(det_boxes), len(gt_boxes)
    matches = np.full((t_count, d_count), -1, np.int64)
    if not d_count or not g_count:
        return matches
    ious = iou_matrix(det_boxes, gt_boxes)
    for ti, t in enumerate(iou_thresholds):
        taken = np.zeros(g_count, bool)
        for d in range(d_count):
            # pycocotools: best IoU among unmatched gts, starting from min(t, 1 - 1e-10)
            best, best_iou = -1, min(t, 1 - 1e-10)
            for g in range(g_count):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best_iou, best = ious[d, g], g
            if best >= 0:
                taken[best] = True
                matches[ti, d] = best
    return matches


@dataclass
class DetectionMetrics:
    """AP and operating-point figures of a detector on a labelled set.

    ap : (C, T) AP per class at each IoU threshold (NaN for a class without ground truth)
    precision : (C, T, 101) interpolated precision at the 101 recall points
    p, r, f1 : (C,) precision, recall and F1 at ``score`` and IoU 0.5
    confusion : (C+1, C+1) counts at ``score`` and IoU 0.5; rows = predicted class
        (last row: missed ground truth), columns = true class (last column: background)
    """

    classes: tuple[str, ...]
    iou_thresholds: np.ndarray
    ap: np.ndarray
    precision: np.ndarray
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    confusion: np.ndarray
    score: float
    num_gt: np.ndarray
    extra: dict = field(default_factory=dict)

    def _col(self, iou: float) -> int:
        return int(np.argmin(np.abs(self.iou_thresholds - iou)))

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, self._col(0.5)]

    @property
    def map50(self) -> float:
        return float(np.nanmean(self.ap50)) if np.isfinite(self.ap50).any() else float("nan")

    @property
    def map50_95(self) -> float:
        per_class = np.nanmean(self.ap, 1) if np.isfinite(self.ap).any() else self.ap[:, 0]
        return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")

    def to_dict(self) -> dict:
        def f(x):
            return None if not np.isfinite(x) else round(float(x), 4)

        return {
            "mAP50": f(self.map50),
            "mAP50_95": f(self.map50_95),
            "score": self.score,
            "per_class": {
                c: {"AP50": f(self.ap50[i]),
                    "AP50_95": f(np.nanmean(self.ap[i])) if np.isfinite(self.ap[i]).any() else None,
                    "precision": f(self.p[i]), "recall": f(self.r[i]), "f1": f(self.f1[i]),
                    "ground_truth": int(self.num_gt[i])}
                for i, c in enumerate(self.classes)
            },
            "precision": f(np.nanmean(self.p)), "recall": f(np.nanmean(self.r)), "f1": f(np.nanmean(self.f1)),
            "confusion_matrix": {"rows_predicted_cols_true": self.confusion.astype(int).tolist(),
                                 "labels": [*self.classes, "background"]},
            **self.extra,
        }


def evaluate_detections(predictions, ground_truth, classes, iou_thresholds=COCO_IOUS, max_dets: int = 100, *,
                        score: float) -> DetectionMetrics:
    """Evaluate detections against ground truth.

    Parameters
    ----------
    predictions : list over images of ``(boxes (K, 4), scores (K,), class_ids (K,))``
        x1y1x2y2 in the same pixel frame as the ground truth.
    ground_truth : list over images of ``(boxes (G, 4), class_ids (G,))``
    classes : sequence of str
    iou_thresholds : (T,) array
        0.5:0.95 by default; AP@0.5 is its first column.
    max_dets : int
        Per image and class, as COCOeval's ``maxDets[-1]``.
    score : float
        Operating point for P, R, F1 and the confusion matrix (detections with score ``>=`` it).
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction sets for {len(ground_truth)} images")
    classes = tuple(classes)
    nc, thresholds = len(classes), np.asarray(iou_thresholds, np.float64)
    ap = np.full((nc, len(thresholds)), np.nan)
    prec = np.full((nc, len(thresholds), len(RECALL_POINTS)), np.nan)
    num_gt = np.zeros(nc, np.int64)
    op_tp = np.zeros(nc)
    op_fp = np.zeros(nc)
    for c in range(nc):
        scores_all, tp_all = [], []
        for (pb, ps, pc), (gb, gc) in zip(predictions, ground_truth):
            pb, ps, pc = np.asarray(pb).reshape(-1, 4), np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1)
            gb, gc = np.asarray(gb).reshape(-1, 4), np.asarray(gc).reshape(-1)
            g = gb[gc == c]
            sel = pc == c
            d, s = pb[sel], ps[sel]
            order = np.argsort(-s, kind="mergesort")[:max_dets]
            d, s = d[order], s[order]
            m = match_image(d, g, thresholds)
            num_gt[c] += len(g)
            scores_all.append(s)
            tp_all.append(m >= 0)
            keep = s >= score
            col = int(np.argmin(np.abs(thresholds - 0.5)))
            op_tp[c] += (m[col][keep] >= 0).sum()
            op_fp[c] += (m[col][keep] < 0).sum()
        if num_gt[c] == 0:
            continue
        scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
        tps = np.concatenate(tp_all, 1) if tp_all else np.zeros((len(thresholds), 0), bool)
        order = np.argsort(-scores, kind="mergesort")
        tps = tps[:, order]
        for ti in range(len(thresholds)):
            tp = np.cumsum(tps[ti]).astype(np.float64)
            fp = np.cumsum(~tps[ti]).astype(np.float64)
            recall = tp / num_gt[c]
            precision = tp / np.maximum(tp + fp, np.spacing(1))
            # monotone (non-increasing) precision envelope, as COCOeval
            precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
            idx = np.searchsorted(recall, RECALL_POINTS, side="left")
            sampled = np.zeros(len(RECALL_POINTS))
            valid = idx < len(precision)
            sampled[valid] = precision[idx[valid]]
            prec[c, ti] = sampled
            ap[c, ti] = sampled.mean()
    p = np.where(op_tp + op_fp > 0, op_tp / np.maximum(op_tp + op_fp, 1), 0.0)
    r = np.where(num_gt > 0, op_tp / np.maximum(num_gt, 1), np.nan)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    confusion = confusion_matrix(predictions, ground_truth, nc, score=score)
    return DetectionMetrics(classes, thresholds, ap, prec, p, r, f1, confusion, score, num_gt)


def confusion_matrix(predictions, ground_truth, num_classes: int, *, score: float,
                     iou_threshold: float = 0.5) -> np.ndarray:
    """Class-agnostic greedy matching (by score) at IoU ``>= iou_threshold`` → ``(C+1, C+1)`` counts.

    Rows are predicted classes (last row: ground truth nobody detected), columns true classes
    (last column: a detection that matched no ground truth).
    """
    cm = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for (pb, ps, pc), (gb, gc) in zip(predictions, ground_truth):
        pb, ps, pc = np.asarray(pb).reshape(-1, 4), np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1)
        gb, gc = np.asarray(gb).reshape(-1, 4), np.asarray(gc).reshape(-1)
        keep = ps >= score
        pb, ps, pc = pb[keep], ps[keep], pc[keep]
        order = np.argsort(-ps, kind="mergesort")
        ious = iou_matrix(pb[order], gb)
        taken = np.zeros(len(gb), bool)
        for row, d in enumerate(order):
            cand = np.where(~taken & (ious[row] >= iou_threshold))[0] if len(gb) else np.zeros(0, int)
            if len(cand):
                g = cand[np.argmax(ious[row, cand])]
                taken[g] = True
                cm[int(pc[d]), int(gc[g])] += 1
            else:
                cm[int(pc[d]), num_classes] += 1
        for g in np.where(~taken)[0]:
            cm[num_classes, int(gc[g])] += 1
    return cm


def f1_curve(predictions, ground_truth, num_classes: int, thresholds: np.ndarray | None = None,
             iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per-class F1 against the score threshold, at IoU ``iou``: ``(thresholds (S,), f1 (S, C))``.

    Matching is COCO's greedy one in score order, so a detection's match does not depend on the
    detections below it and one matching at the lowest score serves every threshold.
    """
    thresholds = np.round(np.arange(0.05, 0.96, 0.01), 2) if thresholds is None else np.asarray(thresholds)
    scores = [[] for _ in range(num_classes)]
    hits = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes)
    for (pb, ps, pc), (gb, gc) in zip(predictions, ground_truth):
        pb, ps, pc = np.asarray(pb).reshape(-1, 4), np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1)
        gb, gc = np.asarray(gb).reshape(-1, 4), np.asarray(gc).reshape(-1)
        for c in range(num_classes):
            sel = pc == c
            order = np.argsort(-ps[sel], kind="mergesort")
            d, s = pb[sel][order], ps[sel][order]
            scores[c].append(s)
            hits[c].append(match_image(d, gb[gc == c], np.array([iou]))[0] >= 0)
            num_gt[c] += (gc == c).sum()
    f1 = np.zeros((len(thresholds), num_classes))
    for c in range(num_classes):
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        h = np.concatenate(hits[c]) if hits[c] else np.zeros(0, bool)
        for i, t in enumerate(thresholds):
            keep = s >= t
            tp, fp = (h & keep).sum(), (~h & keep).sum()
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / num_gt[c] if num_gt[c] else 0.0
            f1[i, c] = 2 * p * r / (p + r) if p + r else 0.0
    return thresholds, f1


def best_score_threshold(predictions, ground_truth, num_classes: int) -> tuple[float, float]:
    """The score threshold that maximises the class-mean F1 at IoU 0.5, and that F1."""
    thresholds, f1 = f1_curve(predictions, ground_truth, num_classes)
    mean = f1.mean(1)
    best = int(np.argmax(mean))
    return float(thresholds[best]), float(mean[best])
