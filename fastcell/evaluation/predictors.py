"""Predictions on original images through the deployed preprocessing and post-processing.

A predictor turns a batch of letterboxed inputs ``(N, 3, S, S)`` float32 into the raw head maps
``[p5, p4]``. Three are provided: :class:`OnnxPredictor` (the shipped artefact through ONNX Runtime
fp32, the reference), :class:`BackendPredictor` (any runtime backend and precision — OpenVINO bf16,
int8 — to measure what a precision costs) and :class:`TorchPredictor` (a training checkpoint, for
evaluating before export).
:func:`predict_images` letterboxes with ``fastcell.ops.letterbox_batch`` and post-processes with
``fastcell.ops.postprocess`` (see :mod:`fastcell.evaluation.predict`), so the figures are those of
the deployed pipeline.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fastcell.spec import ModelSpec, Thresholds

__all__ = ["OnnxPredictor", "BackendPredictor", "TorchPredictor", "load_predictor", "predict_images", "read_image"]


def read_image(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return image


class OnnxPredictor:
    """Runs ``spec.model_path`` with ONNX Runtime on the CPU."""

    def __init__(self, spec: ModelSpec) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.session = ort.InferenceSession(str(spec.model_path), providers=["CPUExecutionProvider"])
        self.outputs = [h.output for h in spec.heads]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {"images": np.ascontiguousarray(batch, np.float32)})


class BackendPredictor:
    """Runs ``spec`` through :func:`fastcell.runtime.open_backend` (``device``, ``precision``)."""

    def __init__(self, spec: ModelSpec, device: str = "auto", precision: str | None = None) -> None:
        from fastcell.runtime import open_backend

        self.spec = spec
        self.backend = open_backend(spec, device, precision)

    @property
    def name(self) -> str:
        return f"{self.backend.name} {self.backend.precision}"

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.backend.infer(np.ascontiguousarray(batch, np.float32))


class TorchPredictor:
    """Runs a training checkpoint's EMA weights in PyTorch (float32, channels_last)."""

    def __init__(self, checkpoint: str | Path, use_ema: bool = True) -> None:
        import torch

        from fastcell.export import load_checkpoint_model

        self._torch = torch
        model, state = load_checkpoint_model(checkpoint, use_ema)
        self.model = model.to(memory_format=torch.channels_last).eval()
        self.spec = ModelSpec(classes=tuple(state["classes"]), anchors=np.asarray(state["anchors"], np.float32),
                              input_size=int(state.get("input_size", 416)), name=Path(checkpoint).stem)

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).contiguous(memory_format=torch.channels_last)
            return [h.float().contiguous().numpy() for h in self.model(x)]


def load_predictor(model: str | Path, device: str | None = None, precision: str | None = None):
    """A ``.pt`` checkpoint → :class:`TorchPredictor`; anything else (name, folder, json, onnx) →
    :class:`OnnxPredictor`, or :class:`BackendPredictor` when ``device`` or ``precision`` is given."""
    if str(model).endswith(".pt"):
        if device not in (None, "torch") or precision not in (None, "fp32"):
            raise ValueError("a .pt checkpoint runs in PyTorch fp32 only; export it to choose a backend or precision")
        return TorchPredictor(model)
    from fastcell.spec import find_model

    spec = ModelSpec.load(find_model(model))
    if device is None and precision is None:
        return OnnxPredictor(spec)
    return BackendPredictor(spec, device or "auto", precision)


def predict_images(predictor, images, thresholds: Thresholds | None = None, batch_size: int = 8,
                   progress: bool = True, desc: str = "predict"):
    """Detections for a list of image paths or BGR arrays, in original pixels.

    Returns a list of ``(boxes (K, 4) float32, scores (K,) float32, class_ids (K,) int32)``.
    """
    from fastcell.evaluation.predict import postprocess_heads
    from fastcell.ops import letterbox_batch

    spec = predictor.spec
    thresholds = thresholds or spec.thresholds
    strides = tuple(h.stride for h in spec.heads)
    results = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = [read_image(p) if isinstance(p, (str, Path)) else p for p in images[start:start + batch_size]]
        batch, params = letterbox_batch(chunk, size=spec.input_size, pad_value=spec.pad_value)
        heads = predictor(batch)
        results += postprocess_heads(heads, params, np.asarray(spec.anchors, np.float32), spec.num_classes,
                                     thresholds, strides=strides)
    return results
