"""The backend protocol: a float32 batch in, the model's raw head outputs out.

Every backend reads the same exported model (``model.onnx`` + ``model.json``) and returns the heads
in ``spec.heads`` order, so pre- and post-processing never know which engine ran.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from fastcell.spec import ModelSpec

__all__ = ["Backend", "require", "missing", "check_batch", "PRECISIONS"]

#: the precisions each backend runs, its default (``precision=None``) first. OpenVINO's default is
#: bf16 only on CPUs with bf16 (fp32 elsewhere); TensorRT's engines are built by
#: :mod:`fastcell.export.tensorrt`, which reads its list here.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "openvino": ("bf16", "fp32", "int8"),
    "onnxruntime": ("fp32", "int8"),
    "torch": ("fp32", "bf16"),
    "tensorrt": ("fp16", "int8", "fp32"),
    "cuda": ("fp16", "bf16", "fp32"),
}


@runtime_checkable
class Backend(Protocol):
    """What the Annotator needs from an inference engine.

    Attributes
    ----------
    name : str
        ``"openvino"``, ``"onnxruntime"`` or ``"torch"``.
    precision : str
        The arithmetic the engine actually runs: ``"fp32"``, ``"bf16"`` or ``"int8"``.
    spec : ModelSpec
        The model this backend runs.
    """

    name: str
    precision: str
    spec: ModelSpec

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the network.

        Parameters
        ----------
        batch : (N, 3, S, S) ndarray of float32
            RGB in [0, 1], ``S = spec.input_size``, C-contiguous.

        Returns
        -------
        list of ndarray of float32
            One ``(N, 3(C+5), S/stride, S/stride)`` array per head, in ``spec.heads`` order. The
            arrays belong to the caller (never reused by the next call).
        """
        ...

    def close(self) -> None:
        """Release the engine (idempotent)."""
        ...


def require(module: str, extra: str | None = None, what: str = "") -> ModuleType:
    """Import an optional dependency, or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # pybind11 modules turn an exception during their initialisation into ImportError: a
        # Ctrl-C that lands there is an interrupt, not a missing package.
        if isinstance(err.__cause__, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise missing(module, extra, what) from err


def missing(module: str, extra: str | None = None, what: str = "") -> ImportError:
    """The ImportError for an absent optional dependency, naming the pip command that installs it."""
    hint = f'pip install "fastcell[{extra}]"' if extra else f"pip install {module}"
    return ImportError(f"{what or module} needs the Python package {module!r}, which is not installed: {hint}")


def check_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """Refuse anything but an (N, 3, size, size) float32 batch; make it C-contiguous.

    Raises
    ------
    TypeError
        When ``batch`` is not a float32 ndarray.
    ValueError
        When its shape is not ``(N >= 1, 3, size, size)``.
    """
    expected = f"batch must be (N>=1, 3, {size}, {size}) float32"
    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
        got = f"{batch.shape} {batch.dtype}" if isinstance(batch, np.ndarray) else type(batch).__name__
        raise TypeError(f"{expected}, got {got}")
    if batch.ndim != 4 or batch.shape[1:] != (3, size, size) or batch.shape[0] < 1:
        raise ValueError(f"{expected}, got {batch.shape} {batch.dtype}")
    return np.ascontiguousarray(batch)
