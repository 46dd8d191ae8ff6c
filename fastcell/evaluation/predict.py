"""Run a torch AttentionNet over a labelled split and post-process like the deployed pipeline.

Evaluation must score what users get, so predictions go through ``fastcell.ops.postprocess``
(the C++ decode + NMS + GBCIOU that deployment runs). While that module is not built, a clearly
named NumPy stand-in, :func:`temporary_numpy_postprocess` (decode + per-class NMS, no GBCIOU), is
used instead and :func:`postprocess_backend` says so.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from fastcell.spec import HEAD_ANCHORS, Thresholds

__all__ = ["predict_dataset", "temporary_numpy_postprocess", "postprocess_backend", "postprocess_heads"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def temporary_numpy_postprocess(heads, params, *, strides, anchors, num_classes, score_threshold=0.25,
                                nms_iou=0.45, class_agnostic=False, max_detections=300, **_ignored):
    """TEMPORARY stand-in for ``fastcell.ops.postprocess`` (decode + NMS; GBCIOU merge not applied).

    Same inputs and outputs as the ops contract; boxes are mapped back to original pixels and
    clipped to the image.
    """
    results = []
    n = heads[0].shape[0]
    for i in range(n):
        all_boxes, all_scores, all_ids = [], [], []
        for head, stride, anc in zip(heads, strides, anchors):
            _, ch, h, w = head.shape
            p = head[i].reshape(3, num_classes + 5, h, w).transpose(0, 2, 3, 1).astype(np.float32)
            gy, gx = np.mgrid[0:h, 0:w]
            obj = _sigmoid(p[..., 4])
            cls = p[..., 5:]
            best = cls.argmax(-1)
            score = obj * _sigmoid(np.take_along_axis(cls, best[..., None], -1)[..., 0])
            sel = score >= score_threshold
            if not sel.any():
                continue
            a_idx, yy, xx = np.nonzero(sel)
            t = p[a_idx, yy, xx]
            cx = (_sigmoid(t[:, 0]) + gx[yy, xx]) * stride
            cy = (_sigmoid(t[:, 1]) + gy[yy, xx]) * stride
            bw = np.exp(t[:, 2]) * np.asarray(anc)[a_idx, 0]
            bh = np.exp(t[:, 3]) * np.asarray(anc)[a_idx, 1]
            all_boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
            all_scores.append(score[sel])
            all_ids.append(best[sel])
        if not all_boxes:
            results.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)))
            continue
        boxes = np.concatenate(all_boxes).astype(np.float32)
        scores = np.concatenate(all_scores).astype(np.float32)
        ids = np.concatenate(all_ids).astype(np.int32)
        offset = 0 if class_agnostic else ids[:, None].astype(np.float32) * 8192.0
        keep = _nms_numpy(boxes + offset, scores, nms_iou)[:max_detections]
        boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
        scale, pad_x, pad_y, width, height = (float(v) for v in params[i])
        boxes = (boxes - np.array([pad_x, pad_y, pad_x, pad_y], np.float32)) / scale
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        results.append((boxes.astype(np.float32), scores, ids))
    return results


def _deployed_postprocess():
    try:
        from fastcell.ops import postprocess  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return None
    return postprocess


def postprocess_backend() -> str:
    """``"fastcell.ops.postprocess"`` when the deployed one is available, else the stand-in's name."""
    return "fastcell.ops.postprocess" if _deployed_postprocess() else "temporary_numpy_postprocess"


def postprocess_heads(heads, params, anchors6: np.ndarray, num_classes: int, thresholds: Thresholds,
                      strides=(32, 16), use_deployed: bool = True):
    """Post-process raw head maps (numpy, output order) with the deployed settings."""
    anchors = [np.ascontiguousarray(anchors6[list(HEAD_ANCHORS[s])], np.float32) for s in strides]
    fn = _deployed_postprocess() if use_deployed else None
    kwargs = dict(strides=list(strides), anchors=anchors, num_classes=num_classes,
                  score_threshold=thresholds.score, nms_iou=thresholds.nms_iou,
                  class_agnostic=thresholds.class_agnostic_nms, max_detections=thresholds.max_detections)
    if fn is None:
        return temporary_numpy_postprocess(heads, params, **kwargs)
    return fn([np.ascontiguousarray(h, np.float32) for h in heads], np.ascontiguousarray(params, np.float32),
              merge=thresholds.merge, gbciou=thresholds.gbciou, merge_iou=thresholds.merge_iou, **kwargs)


def predict_dataset(model, dataset, anchors6: np.ndarray, thresholds: Thresholds,
                    batch_size: int = 16, progress: bool = True, autocast_bf16: bool = False,
                    channels_last: bool = True, use_deployed: bool = True):
    """Predictions for every image of a (non-augmented) DetectionDataset, in original pixels.

    Returns ``(predictions, ground_truth)`` lists suitable for
    :func:`fastcell.evaluation.metrics.evaluate_detections`.
    """
    import torch
    from torch.utils.data import DataLoader

    from fastcell.data.dataset import collate

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    predictions = []
    for images, _, params, _ in tqdm(loader, desc="predict", disable=not progress, leave=False):
        x = images.float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
            heads = model(x)
        heads = [h.float().contiguous().numpy() for h in heads]
        predictions += postprocess_heads(heads, params.numpy(), anchors6, getattr(model, "num_classes"),
                                         thresholds, use_deployed=use_deployed)
    ground_truth = [(s.boxes, s.class_ids) for s in dataset.labels.samples]
    return predictions, ground_truth
