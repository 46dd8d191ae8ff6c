"""Making the deployment artefacts: ONNX + ``model.json``, the int8 model, TensorRT engines.

* :mod:`fastcell.export.onnx` — a training checkpoint → ``model.onnx`` + ``model.json`` (needs torch).
* :mod:`fastcell.export.int8` — ``model_int8.onnx`` calibrated on real images, named in
  ``model.json["int8"]["file"]`` (needs ``onnx``).
* :mod:`fastcell.export.tensorrt` — a TensorRT engine for this GPU, cached and checked (needs
  ``fastcell[tensorrt]``); the TensorRT backend asks it for an engine on first use.

The names below are imported on first use, so importing one submodule (the TensorRT backend
imports :mod:`fastcell.export.tensorrt`) never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Sequence

from fastcell.defaults import IMAGE_EXTENSIONS

__all__ = ["export_onnx", "quantize_int8", "export_engine", "calibration_images"]

_LAZY = {"export_onnx": "fastcell.export.onnx", "quantize_int8": "fastcell.export.int8",
         "export_engine": "fastcell.export.tensorrt"}


def calibration_images(sources: Sequence[str | Path], limit: int = 512) -> list[Path]:
    """Image files named by ``sources`` (files, or folders searched for images), sorted, at most ``limit``.

    Raises
    ------
    FileNotFoundError
        For a source that is neither a file nor a folder.
    """
    found: list[Path] = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"calibration source {p} is neither an image nor a folder")
    return found[:limit]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastcell.export' has no attribute {name!r}")
