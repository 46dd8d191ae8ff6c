"""OpenVINO on the CPU: the fastest CPU engine here (bf16 on CPUs that have it), with a throughput mode.

Precision is OpenVINO's ``INFERENCE_PRECISION_HINT``: ``None`` takes the device's default (bf16 on
CPUs with AVX512-BF16 or AMX, else fp32); ``"fp32"`` forces exact float arithmetic; ``"int8"`` runs
the calibrated QDQ model named by ``model.json["int8"]["file"]`` (see
:func:`fastcell.export.int8.quantize_int8`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from fastcell.runtime._base import check_batch, require
from fastcell.spec import ModelSpec

__all__ = ["OpenVINOBackend", "int8_model"]

_HINTS = {"fp32": "f32", "bf16": "bf16"}


def int8_model(spec: ModelSpec) -> Path:
    """The calibrated int8 (QDQ) model of ``spec``, as ``model.json["int8"]["file"]`` names it.

    Raises
    ------
    FileNotFoundError
        When the JSON names none, or the file it names is missing; the message says how to make it.
    """
    path = spec.int8_path
    make = ("create it with `fastcell export CHECKPOINT --out DIR --calib IMAGES` or "
            "fastcell.export.quantize_int8(spec, images) (calibration on real images)")
    if path is None:
        raise FileNotFoundError(f"precision='int8' needs a calibrated model, and {spec.path} names none "
                                f"(no \"int8\": {{\"file\": ...}} entry); {make}")
    if not path.is_file():
        raise FileNotFoundError(f"precision='int8': {spec.path} names the int8 model {path.name}, which is missing; "
                                f"{make}")
    return path


def _precision_of(compiled, int8: bool) -> str:
    if int8:
        return "int8"
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"


class OpenVINOBackend:
    """Run a fastcell ONNX model with OpenVINO on the CPU.

    Parameters
    ----------
    spec : ModelSpec
        The model (read from its ``model.json``; the ONNX file sits beside it).
    precision : {None, "fp32", "bf16", "int8"}
        ``None``: the CPU's default (bf16 when the CPU supports it). ``"bf16"`` on a CPU without
        bf16 support raises ValueError, ``"int8"`` without a calibrated model FileNotFoundError.
    throughput : bool
        Use two asynchronous infer requests (OpenVINO's THROUGHPUT hint) and split each batch
        between them: more images/s for batches of two or more, a little more latency per image.
    num_threads : int, optional
        Cap the CPU threads OpenVINO uses (default: all cores).
    """

    name = "openvino"

    def __init__(self, spec: ModelSpec, precision: str | None = None, *, throughput: bool = False,
                 num_threads: int | None = None) -> None:
        ov = require("openvino", what="the OpenVINO backend")
        if precision not in (None, "fp32", "bf16", "int8"):
            raise ValueError(f"the openvino backend runs precision None, 'fp32', 'bf16' or 'int8', got "
                             f"{precision!r}")
        self.spec = spec
        self._core = ov.Core()
        model_path = spec.model_path
        config: dict[str, object] = {"PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
        if precision == "int8":
            model_path = int8_model(spec)
            config["INFERENCE_PRECISION_HINT"] = "f32"  # int8 layers stay int8; the rest exact
        elif precision is not None:
            caps = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if precision == "bf16" and "BF16" not in caps:
                raise ValueError(f"precision='bf16' needs a CPU with bf16 support; this one offers {caps}")
            config["INFERENCE_PRECISION_HINT"] = _HINTS[precision]
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        if not model_path.is_file():
            raise FileNotFoundError(f"no ONNX model at {model_path} (named by {spec.path})")
        self._compiled = self._core.compile_model(self._core.read_model(str(model_path)), "CPU", config)
        self.precision = _precision_of(self._compiled, precision == "int8")
        self.throughput = throughput
        self._outputs = [self._compiled.output(h.output) for h in spec.heads]
        self._request = self._compiled.create_infer_request()
        self._queue = ov.AsyncInferQueue(self._compiled, 2) if throughput else None
        self._lock = threading.Lock()  # one infer at a time per backend: requests are not re-entrant

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = check_batch(batch, self.spec.input_size)
        with self._lock:
            if self._request is None:
                raise RuntimeError("this OpenVINO backend is closed")
            if self._queue is None or batch.shape[0] < 2:
                return self._run(self._request, batch)
            return self._run_split(batch)

    def _run(self, request, batch: np.ndarray) -> list[np.ndarray]:
        request.infer({0: batch}, share_inputs=True)
        # .data is a view into the request's own memory, reused by the next call: copy it out
        return [request.get_tensor(o).data.copy() for o in self._outputs]

    def _run_split(self, batch: np.ndarray) -> list[np.ndarray]:
        half = (batch.shape[0] + 1) // 2
        chunks = [batch[:half], batch[half:]]
        parts: list[list[np.ndarray] | None] = [None, None]

        def done(request, index: int) -> None:
            parts[index] = [request.get_tensor(o).data.copy() for o in self._outputs]

        self._queue.set_callback(done)
        for i, chunk in enumerate(chunks):
            self._queue.start_async({0: np.ascontiguousarray(chunk)}, userdata=i)
        self._queue.wait_all()
        return [np.concatenate([parts[0][k], parts[1][k]]) for k in range(len(self._outputs))]

    def close(self) -> None:
        """Release the compiled model (idempotent); waits for a running :meth:`infer` to return."""
        with self._lock:
            self._queue = None
            self._request = None
            self._compiled = None

    def __repr__(self) -> str:
        mode = ", throughput" if self.throughput else ""
        return f"OpenVINOBackend({self.spec.name!r}, precision={self.precision!r}{mode})"
