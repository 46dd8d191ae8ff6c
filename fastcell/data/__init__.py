"""Training data: label readers (Pascal VOC, YOLO, COCO), augmentations, a cached torch Dataset.

``labels`` and ``augment`` need only NumPy/OpenCV; ``dataset`` needs torch.
"""

from fastcell.data.augment import Augment, letterbox_params, letterbox_uint8
from fastcell.data.labels import LabelIssue, LabelSet, Sample, load_labels, read_coco, read_voc, read_yolo

__all__ = ["Augment", "LabelIssue", "LabelSet", "Sample", "letterbox_params", "letterbox_uint8",
           "load_labels", "read_coco", "read_voc", "read_yolo"]
