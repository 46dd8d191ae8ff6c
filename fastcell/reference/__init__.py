"""Plain NumPy/OpenCV references of fastcell's kernels: the test oracles and benchmark baselines.

Slow and obvious on purpose, and independent of the compiled core ``fastcell._core``.
"""

from fastcell.reference.boxes import box_iou, decode, gbciou_merge, nms, postprocess

__all__ = ["box_iou", "decode", "nms", "gbciou_merge", "postprocess"]
from fastcell.reference.image import letterbox, letterbox_batch, segment_cells  # noqa: E402

__all__ += ["letterbox", "letterbox_batch", "segment_cells"]
