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
second per process); ``benchmarks/bench_pipeline.py`` re-checks the ranking. PyTorch on the CPU is never
chosen automatically: it needs a training checkpoint and torch, which the inference path avoids.

On an NVIDIA GPU, ``"auto"`` tries TensorRT (where ``tensorrt`` is installed), then the torch-CUDA
backend (``"cuda"``: torch with CUDA, the ONNX file's weights, fp16 CUDA graphs), then the CPU
backends; a GPU backend that cannot start (a CPU-only torch, say) is logged and skipped. Whether a
GPU is there is asked of the CUDA driver (through ``fastcell._core`` or ``libcuda``), never of
torch, so the CPU path still never imports it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys

from fastcell.runtime._base import PRECISIONS, Backend, missing
from fastcell.spec import ModelSpec

__all__ = ["Backend", "open_backend", "available_backends", "available_precisions", "gpu_count", "BACKENDS",
           "AUTO_ORDER", "PRECISIONS"]

log = logging.getLogger("fastcell")

#: device name → (module holding the class, class name, the package it needs)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "openvino": ("fastcell.runtime.openvino_backend", "OpenVINOBackend", "openvino"),
    "onnxruntime": ("fastcell.runtime.onnxruntime_backend", "OnnxRuntimeBackend", "onnxruntime"),
    "torch": ("fastcell.runtime.torch_backend", "TorchBackend", "torch"),
    "tensorrt": ("fastcell.runtime.tensorrt_backend", "TensorRTBackend", "tensorrt"),
    "cuda": ("fastcell.runtime.cuda_backend", "CudaBackend", "torch"),
}
_ALIASES = {"ov": "openvino", "ort": "onnxruntime", "pytorch": "torch", "torch-cuda": "cuda"}
#: what ``device="auto"`` tries, fastest first (see the table above); the GPU ones only with a GPU
AUTO_ORDER = ("tensorrt", "cuda", "openvino", "onnxruntime")
_GPU_BACKENDS = ("tensorrt", "cuda")
#: the optional extra that installs each backend's package (None: a plain ``pip install``)
_EXTRAS = {"torch": "train", "tensorrt": "tensorrt", "cuda": "cuda"}


def _gpu_ready() -> bool:
    """TensorRT and cuda-python importable and a CUDA device visible (cheap; imports cuda-python only)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    from fastcell.runtime import _cuda

    return _cuda.device_count() > 0


def gpu_count() -> int:
    """NVIDIA GPUs the CUDA driver shows this process (0 without a driver); never imports torch.

    Asks ``fastcell._core`` when it was built with the CUDA kernels, else the driver library itself.
    """
    from fastcell._core_loader import core

    if core.has_cuda():
        return int(core.cuda_device_count())
    try:
        driver = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def _cuda_ready() -> bool:
    """torch and onnx importable and a GPU visible (imports neither)."""
    return all(importlib.util.find_spec(p) is not None for p in ("torch", "onnx")) and gpu_count() > 0


def available_backends() -> list[str]:
    """Backends whose engine package is importable here (without importing it); the GPU ones only
    where a GPU is visible."""
    ready = {"tensorrt": _gpu_ready, "cuda": _cuda_ready}
    return [name for name, (_, _, pkg) in BACKENDS.items()
            if importlib.util.find_spec(pkg) is not None and (name not in ready or ready[name]())]


def available_precisions(spec: ModelSpec | None = None) -> dict[str, list[str]]:
    """The precisions each backend available here can run here, for ``fastcell info``.

    OpenVINO's bf16 is listed only on a CPU that has bf16 (this starts OpenVINO, a fraction of a
    second). CPU int8 needs a calibrated model: with ``spec``, int8 is listed for OpenVINO and ONNX
    Runtime only when its ``model.json`` names one that exists; without, it is not checked.
    """
    out = {}
    for name in available_backends():
        precisions = list(PRECISIONS[name])
        if name == "openvino":
            import openvino

            if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
                precisions.remove("bf16")
        if name in ("openvino", "onnxruntime") and spec is not None:
            int8 = spec.int8_path
            if int8 is None or not int8.is_file():
                precisions.remove("int8")
        out[name] = precisions
    return out


def open_backend(spec: ModelSpec, device: str = "auto", precision: str | None = None,
                 **options) -> Backend:
    """Build the backend for ``spec`` named by ``device``.

    Parameters
    ----------
    spec : ModelSpec
        The model (its ``model.onnx`` sits beside the JSON it was read from).
    device : {"auto", "cpu", "gpu", "openvino", "onnxruntime", "torch", "tensorrt", "cuda"}
        ``"auto"``: on an NVIDIA GPU, TensorRT where installed, else the torch-CUDA backend; else
        (or when neither can start: logged) the fastest CPU backend. ``"cpu"``: the fastest CPU
        backend present (OpenVINO, else ONNX Runtime). ``"gpu"``: TensorRT where installed, else
        ``"cuda"``. ``"tensorrt"``, ``"cuda"``: that GPU backend, or its error.
    precision : {None, "fp32", "bf16", "int8", "fp16"}
        ``None``: the backend's default (OpenVINO: bf16 where the CPU has it; TensorRT and cuda:
        fp16). ``"fp16"`` is the GPU backends' only: the CPU backends refuse it with a ValueError.
    **options
        Passed to the backend class (``num_threads=``, ``checkpoint=``, ``max_batch=`` ...).
        ``throughput=True`` (OpenVINO's two-request mode) is dropped for every other backend.

    Returns
    -------
    Backend
    """
    name = _ALIASES.get(device, device)
    if name == "gpu":
        name = "tensorrt" if importlib.util.find_spec("tensorrt") is not None else "cuda"
    if name in ("auto", "cpu"):
        present = available_backends()
        choices = [b for b in AUTO_ORDER if b in present and (name == "auto" or b not in _GPU_BACKENDS)]
        if precision == "bf16" and "tensorrt" in choices:
            choices.remove("tensorrt")  # TensorRT runs fp16/int8/fp32 here; bf16 is OpenVINO's or cuda's
        if precision == "int8" and "cuda" in choices:
            choices.remove("cuda")  # the torch-CUDA backend has no int8 model
        if not any(b not in _GPU_BACKENDS for b in choices):
            raise ImportError('no CPU inference engine is installed: pip install openvino (or onnxruntime)')
        if precision == "bf16" and not {"openvino", "cuda"} & set(choices):
            raise ValueError("precision='bf16' needs OpenVINO, which is not installed: pip install openvino")
        for gpu in [b for b in choices if b in _GPU_BACKENDS]:
            try:
                return _open(gpu, spec, precision, dict(options))
            except (ImportError, RuntimeError) as err:  # a GPU that is there but cannot be used
                log.warning("fastcell: the %s backend cannot start (%s); trying the next backend", gpu, err)
        name = next(b for b in choices if b not in _GPU_BACKENDS)
    if name not in BACKENDS:
        raise ValueError(f"unknown device {device!r}; expected one of 'auto', 'cpu', 'gpu', "
                         f"{', '.join(map(repr, BACKENDS))}")
    return _open(name, spec, precision, options)


def _open(name: str, spec: ModelSpec, precision: str | None, options: dict) -> Backend:
    if name != "openvino":
        options.pop("throughput", None)  # an OpenVINO-only option: the others have no such mode
    gpu_only = {"tensorrt": ("compile",), "cuda": ()}.get(name, ("max_batch", "cuda_graphs", "compile"))
    for option in gpu_only:  # GPU-backend options, dropped where they mean nothing
        options.pop(option, None)
    if precision == "fp16" and name not in _GPU_BACKENDS:  # said once here, for every CPU backend
        raise ValueError("precision='fp16' needs the tensorrt backend or the cuda backend (an NVIDIA GPU with "
                         "fastcell[tensorrt] or fastcell[cuda]); the CPU backends run fp32, bf16 (OpenVINO) or int8")
    module_name, class_name, package = BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        raise missing(package, _EXTRAS.get(name), f"the {name} backend")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend = cls(spec, precision=precision, **options)
    log.info("fastcell: model %r on %s (%s)", spec.name, backend.name, backend.precision)
    return backend
