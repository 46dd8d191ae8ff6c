"""Evaluation: COCO-exact AP/mAP, P/R/F1, confusion matrix, the paper's Table 2 rates, segmentation IoU.

``metrics``, ``frames`` and ``segmentation`` need only NumPy/OpenCV. Models are evaluated through
the :class:`~fastcell.annotator.Annotator` on a runtime backend, reading images as ``fastcell
annotate`` does (:mod:`fastcell.evaluation.predict`): an exported model on ONNX Runtime fp32 unless
told otherwise, a ``.pt`` checkpoint on the torch backend (needs torch).
"""

from fastcell.evaluation.frames import FrameRates, frame_rates
from fastcell.evaluation.metrics import DetectionMetrics, evaluate_detections
from fastcell.evaluation.segmentation import mask_iou_dice

__all__ = ["DetectionMetrics", "FrameRates", "evaluate_detections", "frame_rates", "mask_iou_dice"]
