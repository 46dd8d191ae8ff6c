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
}
_ALIASES = {"ov": "openvino", "ort": "onnxruntime", "pytorch": "torch"}
#: what ``device="auto"`` tries, fastest first (see the table above)
AUTO_ORDER = ("openvino", "onnxruntime")


def available_backends() -> list[str]:
    """Backends whose engine package is importable here (without importing it)."""
    return [name for name, (_, _, pkg) in BACKENDS.items() if importlib.util.find_spec(pkg) is not None]


def open_backend(spec: ModelSpec, device: str = "auto", precision: str | None = None,
                 **options) -> Backend:
    """Build the backend for ``spec`` named by ``device``.

    Parameters
    ----------
    spec : ModelSpec
        The model (its ``model.onnx`` sits beside the JSON it was read from).
    device : {"auto", "cpu", "openvino", "onnxruntime", "torch"}
        ``"auto"``/``"cpu"``: the fastest CPU backend present (OpenVINO, else ONNX Runtime).
    precision : {None, "fp32", "bf16", "int8"}
        ``None``: the backend's default (OpenVINO: bf16 where the CPU has it).
    **options
        Passed to the backend class (``throughput=True``, ``num_threads=``, ``checkpoint=`` ...).

    Returns
    -------
    Backend
    """
    name = _ALIASES.get(device, device)
    if name in ("auto", "cpu"):
        present = available_backends()
        choices = [b for b in AUTO_ORDER if b in present]
        if not choices:
            raise ImportError('no CPU inference engine is installed: pip install openvino (or onnxruntime)')
        if precision == "bf16" and "openvino" not in choices:
            raise ValueError("precision='bf16' needs OpenVINO, which is not installed: pip install openvino")
        name = choices[0]
        if name != "openvino":
            options.pop("throughput", None)  # an OpenVINO-only option
    if name not in BACKENDS:
        raise ValueError(f"unknown device {device!r}; expected one of 'auto', 'cpu', {', '.join(map(repr, BACKENDS))}")
    module_name, class_name, package = BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        extra = "train" if name == "torch" else None
        raise missing(package, extra, f"the {name} backend")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend = cls(spec, precision=precision, **options)
    log.info("fastcell: model %r on %s (%s)", spec.name, backend.name, backend.precision)
    return backend
