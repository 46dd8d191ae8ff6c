"""Import the compiled core with a message that says how to build it when it is missing."""

from __future__ import annotations

try:
    from fastcell import _core as core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "fastcell's compiled extension fastcell._core is missing or failed to load "
        f"({exc}). Install the package so that it is built: `pip install .` (or "
        "`pip install --no-build-isolation -e .` in a checkout), which needs a C++17 compiler and CMake."
    ) from exc

__all__ = ["core"]
