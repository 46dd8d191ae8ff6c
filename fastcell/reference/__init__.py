"""Plain NumPy/OpenCV references of fastcell's kernels: the test oracles.

Slow and obvious on purpose, and independent of the compiled core ``fastcell._core``. The
benchmarks' baseline, a straightforward but competent NumPy/OpenCV pipeline, is
:mod:`fastcell.reference.baseline` (imported by name, not re-exported here).
"""

from fastcell.reference.boxes import box_iou, decode, gbciou_merge, nms, postprocess

__all__ = ["box_iou", "decode", "nms", "gbciou_merge", "postprocess"]
from fastcell.reference.image import letterbox, letterbox_batch, segment_cells  # noqa: E402

__all__ += ["letterbox", "letterbox_batch", "segment_cells"]
