"""Evaluation: COCO-exact AP/mAP, P/R/F1, confusion matrix, the paper's Table 2 rates, segmentation IoU."""

from fastcell.evaluation.metrics import DetectionMetrics, evaluate_detections

__all__ = ["DetectionMetrics", "evaluate_detections"]
