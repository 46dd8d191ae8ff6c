"""Run a torch AttentionNet over a labelled split and post-process like the deployed pipeline.

Evaluation must score what users get, so predictions go through ``fastcell.ops.postprocess``
(the C++ decode + NMS + GBCIOU that deployment runs).
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from fastcell.ops import postprocess
from fastcell.spec import HEAD_ANCHORS, Thresholds

__all__ = ["predict_dataset", "postprocess_heads", "POSTPROCESS"]

POSTPROCESS = "fastcell.ops.postprocess"  # named in reports: what scored the predictions


def postprocess_heads(heads, params, anchors6: np.ndarray, num_classes: int, thresholds: Thresholds,
                      strides=(32, 16)):
    """Post-process raw head maps (numpy, output order) with the deployed settings."""
    anchors = [np.ascontiguousarray(anchors6[list(HEAD_ANCHORS[s])], np.float32) for s in strides]
    kwargs = dict(strides=list(strides), anchors=anchors, num_classes=num_classes,
                  score_threshold=thresholds.score, nms_iou=thresholds.nms_iou,
                  class_agnostic=thresholds.class_agnostic_nms, max_detections=thresholds.max_detections)
    return postprocess([np.ascontiguousarray(h, np.float32) for h in heads], np.ascontiguousarray(params, np.float32),
                       merge=thresholds.merge, gbciou=thresholds.gbciou, merge_iou=thresholds.merge_iou, **kwargs)


def predict_dataset(model, dataset, anchors6: np.ndarray, thresholds: Thresholds,
                    batch_size: int = 16, progress: bool = True, autocast_bf16: bool = False,
                    channels_last: bool = True, device=None):
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
    for images, _, params, *_ in tqdm(loader, desc="predict", disable=not progress, leave=False):
        x = images.to(device or "cpu").float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            heads = model(x)
        heads = [h.float().contiguous().cpu().numpy() for h in heads]
        predictions += postprocess_heads(heads, params.numpy(), anchors6, getattr(model, "num_classes"),
                                         thresholds)
    ground_truth = [(s.boxes, s.class_ids) for s in dataset.labels.samples]
    return predictions, ground_truth
