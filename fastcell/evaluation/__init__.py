"""Evaluation: COCO-exact AP/mAP, P/R/F1, confusion matrix, the paper's Table 2 rates, segmentation IoU.

``metrics``, ``frames`` and ``segmentation`` need only NumPy/OpenCV; evaluating an exported model
(``report.evaluate_model`` with an engine) runs ONNX Runtime, a ``.pt`` checkpoint needs torch.
"""

from fastcell.evaluation.frames import FrameRates, frame_rates
from fastcell.evaluation.metrics import DetectionMetrics, evaluate_detections
from fastcell.evaluation.segmentation import mask_iou_dice

__all__ = ["DetectionMetrics", "FrameRates", "evaluate_detections", "frame_rates", "mask_iou_dice"]
