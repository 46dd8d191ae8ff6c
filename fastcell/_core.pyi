"""Type stubs of the compiled core. Use :mod:`fastcell.ops` (documented wrappers), not this module."""

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

_Detections = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int32]]

# --- build facts (register_info.cpp) ------------------------------------------------------------------
__version__: str

def has_cuda() -> bool: ...
def compiler() -> str: ...
def cpu_simd() -> Literal["avx512", "avx2", "portable"]: ...
def simd() -> Literal["avx512", "avx2", "portable"]: ...
def set_simd_limit(limit: Literal["avx512", "avx2", "portable"]) -> None: ...

# --- box kernels (register_boxes.cpp) ---------------------------------------------------------------------
MAX_COORDINATE: float
MAX_ANCHOR: float
MAX_CLASSES: int

def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float32]: ...
def decode(
    heads: Sequence[npt.ArrayLike],
    strides: Sequence[float],
    anchors: Sequence[npt.ArrayLike],
    num_classes: int,
    score_threshold: float,
) -> list[_Detections]: ...
def nms(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float, class_ids: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]: ...
def gbciou_merge(
    boxes: npt.ArrayLike,
    scores: npt.ArrayLike,
    class_ids: npt.ArrayLike | None,
    threshold: float,
    mode: str,
    merge_iou: float,
) -> _Detections: ...
def postprocess(
    heads: Sequence[npt.ArrayLike],
    params: npt.ArrayLike,
    strides: Sequence[float],
    anchors: Sequence[npt.ArrayLike],
    num_classes: int,
    score_threshold: float,
    nms_iou: float,
    merge: str,
    gbciou: float,
    merge_iou: float,
    class_agnostic: bool,
    max_detections: int | None,
) -> list[_Detections]: ...

# --- image kernels (csrc/bindings/register_image.cpp) -------------------------------------------
def letterbox(
    image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], size: int, pad_value: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def letterbox_batch(
    images: Sequence[npt.NDArray[np.uint8] | npt.NDArray[np.uint16]],
    out: npt.NDArray[np.float32] | None,
    size: int,
    pad_value: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def instance_rles(labels: npt.NDArray[np.int32], count: int) -> tuple[list[str], npt.NDArray[np.int64]]: ...
def _pooled_bytes() -> int: ...
def segment_cells(
    image: npt.NDArray[np.uint8],
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    hsv_low: Sequence[int] | None = None,
    hsv_high: Sequence[int] | None = None,
    disc: str = "circle",
    fill: Sequence[int] = (0, 0, 0),
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]: ...
def segment_cells_batch(
    images: Sequence[npt.NDArray[np.uint8]],
    boxes: Sequence[npt.NDArray[np.float32]],
    scores: Sequence[npt.NDArray[np.float32]],
    hsv_low: Sequence[int] | Sequence[Sequence[int] | None] | None = None,
    hsv_high: Sequence[int] | Sequence[Sequence[int] | None] | None = None,
    disc: str = "circle",
    fill: Sequence[int] = (0, 0, 0),
) -> list[tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]]: ...
