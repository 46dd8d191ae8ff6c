"""Inference backends behind one small protocol (:class:`Backend`), and the choice among them.

``device="auto"`` (or ``"cpu"``) picks OpenVINO when it imports, else ONNX Runtime. The rule comes
from measurement on this project's 2-core CPU (AMD EPYC, AVX-512 with bf16 and VNNI, no AMX),
AttentionNet at 416×416, one image per call (``python benchmarks/bench_pipeline.py`` prints them):

=============================  ===========
backend / precision            ms / image
=============================  ===========
OpenVINO bf16 (its default)    ≈ 13–15
OpenVINO fp32                  ≈ 25
ONNX Runtime fp32              ≈ 29
PyTorch eager fp32             ≈ 40+
=============================  ===========

On CPUs with AMX (Sapphire Rapids and later) OpenVINO's bf16 is ≈ 4.5 ms/image, ~4× ONNX Runtime.
OpenVINO wins on every CPU measured, so "auto" does not re-measure at start-up (that would cost a
second per process); ``benchmarks/bench_pipeline.py`` re-checks the ranking. PyTorch is never
chosen automatically: it needs a training checkpoint and torch, which the inference path avoids.
"""

from __future__ import annotations

import importlib.util
import logging

from fastcell.runtime._base import Backend, missing
from fastcell.spec import ModelSpec

__all__ = ["Backend", "open_backend", "available_backends", "BACKENDS", "AUTO_ORDER"]

log = logging.getLogger("fastcell")

#: device name → (module holding the class, class name, the package it needs)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "openvino": ("fastcell.runtime.openvino_backend", "OpenVINOBackend", "openvino"),
    "onnxruntime": ("fastcell.runtime.onnxruntime_backend", "OnnxRuntimeBackend", "onnxruntime"),
    "torch": ("fastcell.runtime.torch_backend", "TorchBackend", "torch"),
    "tensorrt": ("fastcell.runtime.tensorrt_backend", "TensorRTBackend", "tensorrt"),
}
_ALIASES = {"ov": "openvino", "ort": "onnxruntime", "pytorch": "torch", "cuda": "tensorrt", "gpu": "tensorrt"}
#: what ``device="auto"`` tries, fastest first (see the table above); "tensorrt" only with a GPU
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")
#: the optional extra that installs each backend's package (None: a plain ``pip install``)
_EXTRAS = {"torch": "train", "tensorrt": "tensorrt"}


def _gpu_ready() -> bool:
    """TensorRT and cuda-python importable and a CUDA device visible (cheap; imports cuda-python only)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from fastcell.runtime import _cuda

    return _cuda.device_count() > 0


def available_backends() -> list[str]:
    """Backends whose engine package is importable here (without importing it)."""
    return [name for name, (_, _, pkg) in BACKENDS.items()
            if importlib.util.find_spec(pkg) is not None and (name != "tensorrt" or _gpu_ready())]


def open_backend(spec: ModelSpec, device: str = "auto", precision: str | None = None,
                 **options) -> Backend:
    """Build the backend for ``spec`` named by ``device``.

    Parameters
    ----------
    spec : ModelSpec
        The model (its ``model.onnx`` sits beside the JSON it was read from).
    device : {"auto", "cpu", "openvino", "onnxruntime", "torch", "tensorrt"}
        ``"auto"``: TensorRT when an NVIDIA GPU, ``tensorrt`` and ``cuda-python`` are present, else
        the fastest CPU backend. ``"cpu"``: the fastest CPU backend present (OpenVINO, else ONNX
        Runtime). ``"tensorrt"`` (aliases ``"cuda"``, ``"gpu"``): the GPU path.
    precision : {None, "fp32", "bf16", "int8", "fp16"}
        ``None``: the backend's default (OpenVINO: bf16 where the CPU has it; TensorRT: fp16).
        ``"fp16"`` is TensorRT's only: the CPU backends refuse it with a ValueError.
    **options
        Passed to the backend class (``num_threads=``, ``checkpoint=`` ...). ``throughput=True``
        (OpenVINO's two-request mode) is dropped for every other backend.

    Returns
    -------
    Backend
    """
    name = _ALIASES.get(device, device)
    if name in ("auto", "cpu"):
        present = available_backends()
        choices = [b for b in AUTO_ORDER if b in present and (name == "auto" or b != "tensorrt")]
        if not choices:
            raise ImportError('no CPU inference engine is installed: pip install openvino (or onnxruntime)')
        if choices[0] == "tensorrt" and precision == "bf16":
            choices.remove("tensorrt")  # TensorRT runs fp16/int8/fp32 here; bf16 is OpenVINO's
        if precision == "bf16" and "openvino" not in choices:
            raise ValueError("precision='bf16' needs OpenVINO, which is not installed: pip install openvino")
        name = choices[0]
    if name != "openvino":
        options.pop("throughput", None)  # an OpenVINO-only option: the others have no such mode
    if name not in BACKENDS:
        raise ValueError(f"unknown device {device!r}; expected one of 'auto', 'cpu', {', '.join(map(repr, BACKENDS))}")
    if precision == "fp16" and name != "tensorrt":  # said once here, for every CPU backend
        raise ValueError("precision='fp16' needs the tensorrt backend (an NVIDIA GPU with "
                         "fastcell[tensorrt]); the CPU backends run fp32, bf16 (OpenVINO) or int8")
    module_name, class_name, package = BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        raise missing(package, _EXTRAS.get(name), f"the {name} backend")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend = cls(spec, precision=precision, **options)
    log.info("fastcell: model %r on %s (%s)", spec.name, backend.name, backend.precision)
    return backend
