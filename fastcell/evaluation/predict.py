"""Predictions for evaluation, made exactly as ``fastcell annotate`` makes them.

Images are read by :func:`fastcell.io.sources.read_image` (as stored: 8/16-bit, gray/colour) and
annotated by an :class:`~fastcell.annotator.Annotator` on a runtime backend, so the boxes scored are
the boxes a user gets from the same model, backend and settings. A training checkpoint runs on the
torch backend (:meth:`fastcell.runtime.torch_backend.TorchBackend.from_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from fastcell.annotator import Annotator
from fastcell.io.sources import read_image
from fastcell.runtime import Backend, open_backend
from fastcell.spec import ModelSpec, find_model

__all__ = ["open_backend_for", "open_annotator", "predict_images", "Detections"]

#: per image: boxes (K, 4) float32 in original pixels, scores (K,) float32, class ids (K,) int32
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def open_backend_for(model: str | Path, device: str | None = None, precision: str | None = None) -> Backend:
    """The backend evaluation runs ``model`` on.

    Parameters
    ----------
    model : str or path
        A training checkpoint ``.pt`` (the torch backend), or a shipped model name, model folder,
        ``model.json`` or ``model.onnx`` (see :func:`fastcell.spec.find_model`).
    device, precision : str, optional
        As for :func:`fastcell.runtime.open_backend`. With neither, an exported model runs on ONNX
        Runtime fp32 (the reference the model card's figures were measured on); with only a
        precision, on the fastest backend that has it.

    Raises
    ------
    ValueError
        For a checkpoint with a device other than torch or a precision other than fp32/bf16.
    """
    if str(model).endswith(".pt"):
        if device not in (None, "torch", "pytorch"):
            raise ValueError(f"a .pt checkpoint runs on the torch backend, not {device!r}; export it "
                             "(fastcell export) to run it on another backend")
        from fastcell.runtime.torch_backend import TorchBackend

        return TorchBackend.from_checkpoint(model, precision)
    spec = ModelSpec.load(find_model(model))
    if device is None:
        device = "onnxruntime" if precision is None else "auto"
    return open_backend(spec, device, precision)


def open_annotator(model: str | Path, device: str | None = None, precision: str | None = None, *,
                   max_batch: int = 8, segment: bool = False, **overrides: Any) -> Annotator:
    """An Annotator for evaluation: boxes only by default, frames not kept.

    Parameters
    ----------
    model, device, precision
        See :func:`open_backend_for`.
    max_batch : int
        Frames per backend call.
    segment : bool
        Also compute the circle/HSV masks.
    **overrides
        Post-processing settings (:data:`fastcell.postprocess.OVERRIDABLE`), e.g. ``score=0.001``.
    """
    backend = open_backend_for(model, device, precision)
    return Annotator(backend, segment=segment, keep_image=False, max_batch=max_batch, **overrides)


def predict_images(annotator: Annotator, images: Sequence[str | Path | np.ndarray], *, progress: bool = True,
                   desc: str = "predict") -> list[Detections]:
    """Detections for image files (read as ``fastcell annotate`` reads them) or frames.

    Parameters
    ----------
    annotator : Annotator
        The model, backend and settings (its ``max_batch`` frames are read and annotated at a time).
    images : sequence of path or ndarray
        Image files, or frames as accepted by :func:`fastcell.frames.check_frame`.

    Returns
    -------
    list of (boxes, scores, class_ids)
        One per image, in order: boxes (K, 4) float32 in original pixels, scores (K,) float32,
        class ids (K,) int32, by descending score.
    """
    step = annotator.max_batch
    out: list[Detections] = []
    for start in tqdm(range(0, len(images), step), desc=desc, disable=not progress, leave=False):
        frames = [image if isinstance(image, np.ndarray) else _read(image) for image in images[start:start + step]]
        out += [(r.boxes, r.scores, r.class_ids) for r in annotator.batch(frames)]
    return out


def _read(path: str | Path) -> np.ndarray:
    try:
        return read_image(path)
    except ValueError as err:  # evaluation needs every labelled image: say which one failed
        raise ValueError(f"{path}: {err}") from None
