"""fastcell's kernels as numpy-in numpy-out functions over the compiled core ``fastcell._core``.

Each function documents its contract (shapes, dtypes, box format, threshold semantics, output
order); a plain NumPy twin of each lives in :mod:`fastcell.reference`. Inputs are never modified,
and "nothing found" is an empty ``(0, 4)``/``(0,)`` array, never None.
"""

from fastcell.ops._boxes import MAX_ANCHOR, MAX_CLASSES, MAX_COORDINATE, box_iou, decode, gbciou_merge, nms, postprocess

__all__ = ["box_iou", "decode", "nms", "gbciou_merge", "postprocess", "MAX_COORDINATE", "MAX_ANCHOR", "MAX_CLASSES"]
# Each area appends its import and its names below (``__all__ += [...]``).
from fastcell.ops._image import coco_rle, letterbox, letterbox_batch, segment_cells, segment_cells_batch  # noqa: E402

__all__ += ["letterbox", "letterbox_batch", "segment_cells", "segment_cells_batch", "coco_rle"]
