"""Training checkpoints → a model and its description (what export, evaluation and the torch backend read).

A fastcell training checkpoint (``best.pt`` / ``last.pt`` from :mod:`fastcell.train`) holds the
weights (``"model"``, and their moving average ``"ema"``), the class names, the six anchors and the
input size. It also holds the optimiser and random states for resuming, which include NumPy arrays,
so it is read with ``weights_only=False``: load only checkpoints you (or your training job) wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcell.defaults import INPUT_SIZE
from fastcell.model.attentionnet import AttentionNet
from fastcell.spec import ModelSpec

__all__ = ["read_checkpoint", "load_checkpoint_model", "checkpoint_spec"]


def read_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """The state dict of a fastcell training checkpoint.

    Raises
    ------
    ValueError
        When the file is not a fastcell training checkpoint (no classes, or no weights).
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "classes" not in state or ("ema" not in state and "model" not in state):
        raise ValueError(f"{checkpoint} is not a fastcell training checkpoint (expected a dict with 'classes' and "
                         "'model' or 'ema' weights, as fastcell train writes)")
    return state


def checkpoint_spec(state: dict[str, Any], name: str = "fastcell") -> ModelSpec:
    """The :class:`~fastcell.spec.ModelSpec` of a checkpoint: its classes, anchors and input size, and
    the default thresholds and segmentation (a checkpoint has not been tuned; export sets those)."""
    return ModelSpec(classes=tuple(state["classes"]), anchors=np.asarray(state["anchors"], np.float32).reshape(6, 2),
                     input_size=int(state.get("input_size", INPUT_SIZE)), name=name)


def load_checkpoint_model(checkpoint: str | Path | dict[str, Any], use_ema: bool = True) -> tuple[AttentionNet, dict]:
    """Rebuild the model of a training checkpoint (EMA weights by default), in eval mode, and its state.

    Parameters
    ----------
    checkpoint : path or dict
        The checkpoint file, or its state as :func:`read_checkpoint` returns it.
    use_ema : bool
        Take the moving-average weights (what training validated and saved as best) when present.
    """
    state = read_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    model = AttentionNet(len(state["classes"]), int(state.get("input_size", INPUT_SIZE)))
    model.load_state_dict(state["ema"] if use_ema and "ema" in state else state["model"])
    return model.eval(), state
