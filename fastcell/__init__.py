"""fastcell: real-time cell detection, circle/HSV segmentation and annotation (AttentionNet).

The data flows one way — source → preprocess → backend → postprocess → writers::

    import fastcell
    annotator = fastcell.load()                  # the shipped default model, fastest CPU backend
    for result in fastcell.stream("frames/"):    # folder, glob, video, camera index, URL, iterable
        print(result.frame_index, result.boxes, result.class_names)

The inference path never imports torch; training, evaluation and export do (``fastcell[train]``).
"""

from __future__ import annotations

import importlib
from typing import Any

from fastcell._version import __version__

# Public names → the module that defines them; imported on first use so `import fastcell` is cheap.
_LAZY = {
    "load": "fastcell.annotator",
    "Annotator": "fastcell.annotator",
    "Result": "fastcell.results",
    "stream": "fastcell.pipeline",
    "Stream": "fastcell.pipeline",
    "ModelSpec": "fastcell.spec",
    "sys_info": "fastcell._info",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastcell' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
