"""sys_info(): what a bug report needs — versions, compiled features, backends and precisions, the default model."""

from __future__ import annotations

import importlib.metadata
import platform


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def sys_info(as_dict: bool = False) -> str | dict:
    """Versions of fastcell and its dependencies, the compiled core's features, the CPU, the backends
    available here with the precisions each runs, and the default model.

    Parameters
    ----------
    as_dict : bool
        Return a dict instead of a printable string.
    """
    from fastcell._version import __version__
    from fastcell._core_loader import core

    info = {
        "fastcell": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "core.compiler": core.compiler(),
        "core.cuda": core.has_cuda(),
        "core.simd": core.simd(),
    }
    if core.has_cuda():  # the CUDA twins were compiled in: which runtime, and does this machine have a GPU
        info["core.cuda_runtime"] = core.cuda_runtime_version()
        info["core.cuda_devices"] = core.cuda_device_count()
    for dist in ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "openvino",
                 "tensorrt", "cuda-bindings", "cuda-python", "torch"):
        v = _version(dist)
        if v is not None:
            info[dist] = v
    info.update(_models_and_backends())
    if as_dict:
        return info
    width = max(map(len, info))
    return "\n".join(f"{k:<{width}} : {v}" for k, v in info.items())


def _models_and_backends() -> dict:
    """The default model and, for it, each available backend's precisions; what failed, said instead."""
    from fastcell.runtime import available_precisions
    from fastcell.spec import ModelSpec, find_model

    info: dict = {}
    spec = None
    try:
        path = find_model("default")
        spec = ModelSpec.load(path)
        info["default model"] = f"{spec.name} ({path})"
    except (OSError, ValueError) as err:  # no shipped model, or a broken one: say so, list backends anyway
        info["default model"] = f"none ({err})"
    for name, precisions in available_precisions(spec).items():
        info[f"backend.{name}"] = ", ".join(precisions)
    return info
