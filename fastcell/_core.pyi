"""Type stubs of the compiled core ``fastcell._core`` (use :mod:`fastcell.ops`, not this module)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

# --- image kernels (csrc/bindings/register_image.cpp) -------------------------------------------
def letterbox(
    image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], size: int = 416, pad_value: float = 114.0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def letterbox_batch(
    images: Sequence[npt.NDArray[np.uint8] | npt.NDArray[np.uint16]],
    out: npt.NDArray[np.float32] | None = None,
    size: int = 416,
    pad_value: float = 114.0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def segment_cells(
    image: npt.NDArray[np.uint8],
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    hsv_low: Sequence[int] | None = None,
    hsv_high: Sequence[int] | None = None,
    disc: str = "circle",
    fill: Sequence[int] = (0, 0, 0),
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]: ...
