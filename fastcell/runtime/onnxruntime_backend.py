"""ONNX Runtime on the CPU: the portable fallback (always installed), fp32, or the calibrated int8 model."""

from __future__ import annotations

import threading

import numpy as np

from fastcell.runtime._base import check_batch, require
from fastcell.runtime.openvino_backend import int8_model
from fastcell.spec import ModelSpec

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend:
    """Run a fastcell ONNX model with ONNX Runtime's CPU execution provider.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    precision : {None, "fp32", "int8"}
        ``None`` and ``"fp32"`` run the float model; ``"int8"`` the calibrated model that
        ``model.json["int8"]["file"]`` names (FileNotFoundError when there is none).
        ONNX Runtime has no bf16 CPU kernels for this network, so ``"bf16"`` raises ValueError, as
        does ``"fp16"`` (a GPU precision: the tensorrt backend's).
    num_threads : int, optional
        Intra-op threads (default: ONNX Runtime's choice, all cores).
    """

    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, precision: str | None = None, *,
                 num_threads: int | None = None) -> None:
        ort = require("onnxruntime", what="the ONNX Runtime backend")
        if precision not in (None, "fp32", "int8"):
            needs = " (bf16 needs the openvino backend)" if precision == "bf16" else ""
            raise ValueError(f"the onnxruntime backend runs precision None, 'fp32' or 'int8', got "
                             f"{precision!r}{needs}")
        self.spec = spec
        model_path = int8_model(spec) if precision == "int8" else spec.model_path
        if not model_path.is_file():
            raise FileNotFoundError(f"no ONNX model at {model_path} (named by {spec.path})")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [h.output for h in spec.heads]
        self.precision = "int8" if precision == "int8" else "fp32"
        self._lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = check_batch(batch, self.spec.input_size)
        with self._lock:
            if self._session is None:
                raise RuntimeError("this ONNX Runtime backend is closed")
            return list(self._session.run(self._outputs, {self._input: batch}))

    def close(self) -> None:
        """Release the session (idempotent); waits for a running :meth:`infer` to return."""
        with self._lock:
            self._session = None

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.spec.name!r}, precision={self.precision!r})"
