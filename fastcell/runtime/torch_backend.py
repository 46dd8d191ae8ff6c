"""PyTorch eager: runs a training checkpoint or an in-memory model (never chosen by ``device="auto"``).

What evaluation of a checkpoint (``fastcell val --model best.pt``) and validation during training
run, so they score what the Annotator makes of the network's outputs. torch is imported when this
backend is constructed, never by the rest of the inference path.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from fastcell.runtime._base import check_batch, require
from fastcell.spec import ModelSpec

__all__ = ["TorchBackend", "load_state_dict"]


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read model weights from a checkpoint: a bare state dict or a dict holding one under
    ``"model"``, ``"state_dict"`` or ``"ema"``."""
    torch = require("torch", "train", "the torch backend")
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("ema", "model", "state_dict"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            return ckpt[key]
    if isinstance(ckpt, dict) and all(hasattr(v, "shape") for v in ckpt.values()):
        return ckpt
    raise ValueError(f"{path} holds no model weights (expected a state dict, or one under "
                     f"'model'/'state_dict'/'ema'; found keys {list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__})")


class TorchBackend:
    """Run AttentionNet in PyTorch eager mode on the CPU (fp32, or bf16 autocast).

    Parameters
    ----------
    spec : ModelSpec
        The model description (classes, input size, head order).
    checkpoint : path, optional
        Weights to load. Default: ``spec.extra["checkpoint"]`` (relative to the JSON) or
        ``model.pt`` beside ``model.json``.
    model : torch.nn.Module, optional
        An already built network returning the heads in ``spec.heads`` order (wins over
        ``checkpoint``). It runs on the device its weights are on (a GPU during GPU training):
        batches go there and the heads come back to host memory.
    precision : {None, "fp32", "bf16"}
        ``None`` is ``"fp32"``; ``"bf16"`` runs under ``torch.autocast`` (what training validates
        with on CPUs that have bf16; outputs are float32 either way).
    channels_last : bool
        Run in channels-last memory format (faster on CPU, same results up to rounding).
    """

    name = "torch"

    def __init__(self, spec: ModelSpec, checkpoint: str | Path | None = None, *, model: Any = None,
                 precision: str | None = None, channels_last: bool = True) -> None:
        torch = require("torch", "train", "the torch backend")
        if precision not in (None, "fp32", "bf16"):
            raise ValueError(f"the torch backend runs precision None, 'fp32' or 'bf16', got {precision!r}")
        self.spec = spec
        self.precision = precision or "fp32"
        if model is None:
            from fastcell.model import AttentionNet

            model = AttentionNet(spec.num_classes, spec.input_size)
            model.load_state_dict(load_state_dict(self._checkpoint_path(spec, checkpoint)))
        self._torch = torch
        self._channels_last = channels_last
        self._model = model.eval().to(memory_format=torch.channels_last) if channels_last else model.eval()
        self._device = next(self._model.parameters()).device
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, precision: str | None = None, *, use_ema: bool = True,
                        channels_last: bool = True) -> "TorchBackend":
        """The backend of a fastcell training checkpoint, with the spec it implies.

        The spec has the checkpoint's classes, anchors and input size and the default thresholds and
        segmentation (see :func:`fastcell.model.checkpoint.checkpoint_spec`); ``use_ema`` takes the
        moving-average weights, as training validated them.
        """
        require("torch", "train", "the torch backend")
        from fastcell.model.checkpoint import checkpoint_spec, load_checkpoint_model

        model, state = load_checkpoint_model(checkpoint, use_ema)
        return cls(checkpoint_spec(state, Path(checkpoint).stem), model=model, precision=precision,
                   channels_last=channels_last)

    @staticmethod
    def _checkpoint_path(spec: ModelSpec, checkpoint: str | Path | None) -> Path:
        if checkpoint is not None:
            return Path(checkpoint)
        if spec.path is None:
            raise ValueError("no checkpoint given and the spec was not read from a file")
        path = spec.path.parent / str(spec.extra.get("checkpoint", "model.pt"))
        if not path.is_file():
            raise FileNotFoundError(f"the torch backend needs a checkpoint; none at {path}")
        return path

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = check_batch(batch, self.spec.input_size)
        torch = self._torch
        with self._lock, torch.inference_mode(), \
                torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self._model is None:
                raise RuntimeError("this torch backend is closed")
            x = torch.from_numpy(batch).to(self._device)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            heads = self._model(x)
            return [np.ascontiguousarray(h.float().cpu().numpy()) for h in heads]

    def close(self) -> None:
        """Release the model (idempotent); waits for a running :meth:`infer` to return."""
        with self._lock:
            self._model = None

    def __repr__(self) -> str:
        return f"TorchBackend({self.spec.name!r}, precision={self.precision!r})"
