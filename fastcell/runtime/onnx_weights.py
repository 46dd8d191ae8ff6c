"""The shipped ``model.onnx``'s weights as a PyTorch AttentionNet (for the cuda backend).

fastcell's exporter folds every BatchNorm into its convolution (:func:`fastcell.model.fold_batchnorm`),
so the ONNX graph is Conv (+ bias) → LeakyReLU(0.1), MaxPool, Slice, Resize and Concat only, and
each Conv reads its weight and bias from initializers named after the folded network's own
parameters (``layers.0.conv.weight`` ...; weights may be stored as float16 behind a Cast). Reading
those initializers into the folded network gives the very model ONNX Runtime runs, so the GPU path
needs no training checkpoint. Anything else in the graph — another op, another LeakyReLU slope, a
missing or extra weight, a shape that does not fit — is refused with a ValueError that says what
differs: the torch network would otherwise compute something other than the ONNX file.

Needs ``torch`` and ``onnx`` (``pip install "fastcell[cuda]"``); imported only by the backends that
run torch, never by the CPU inference path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fastcell.runtime._base import require
from fastcell.spec import ModelSpec

__all__ = ["onnx_tensors", "attentionnet_from_onnx"]

#: the ops a folded AttentionNet exports to; anything else means another network
_OPS = {"Conv", "LeakyRelu", "MaxPool", "Slice", "Resize", "Concat", "Constant", "Cast", "Identity"}
_SLOPE = 0.1


def onnx_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every Conv weight and bias of a fastcell ONNX model, by name, as float32 arrays.

    Parameters
    ----------
    path : path
        The ``model.onnx`` file.

    Returns
    -------
    dict of str to ndarray of float32
        ``{"layers.0.conv.weight": (16, 3, 3, 3) array, ...}``: the Conv inputs 1 and 2, with a
        Cast from a float16 initializer resolved.

    Raises
    ------
    ValueError
        When the graph holds an op a folded AttentionNet does not export to, a LeakyReLU whose
        slope is not 0.1, or a Conv whose weight is not a constant.
    """
    onnx = require("onnx", "cuda", "reading model.onnx's weights")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    values: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    wanted: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type not in _OPS:
            raise ValueError(f"{path}: op {node.op_type!r} ({node.name or node.output[0]}) is not part of a "
                             f"folded AttentionNet (expected only {sorted(_OPS)}); export it with fastcell export")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Cast" and node.input[0] in values:  # a float16-stored weight
            values[node.output[0]] = values[node.input[0]].astype(np.float32)
        elif node.op_type == "Constant" and "value" in attrs:
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
        elif node.op_type == "LeakyRelu" and abs(float(attrs.get("alpha", 0.01)) - _SLOPE) > 1e-6:
            raise ValueError(f"{path}: LeakyRelu {node.output[0]} has slope {attrs.get('alpha', 0.01)}, "
                             f"AttentionNet uses {_SLOPE}")
        elif node.op_type == "Conv":
            for name in node.input[1:3]:
                if name not in values:
                    raise ValueError(f"{path}: Conv {node.output[0]} reads {name!r}, which is not a constant "
                                     "(expected the weights as initializers)")
                wanted[name] = np.array(values[name], np.float32, order="C", copy=True)  # writable, for torch
            if len(node.input) < 3 or not node.input[2]:
                raise ValueError(f"{path}: Conv {node.output[0]} has no bias; a folded AttentionNet's have one")
    return wanted


def attentionnet_from_onnx(spec: ModelSpec, path: str | Path | None = None) -> Any:
    """The folded AttentionNet (fp32, CPU, eval mode) carrying ``model.onnx``'s weights.

    Parameters
    ----------
    spec : ModelSpec
        Classes and input size of the model.
    path : path, optional
        The ONNX file; default ``spec.model_path``.

    Returns
    -------
    fastcell.model.AttentionNet
        BatchNorms folded (Identity), every Conv with a bias, outputs ``(p5, p4)``.

    Raises
    ------
    ValueError
        When the file's weights are not exactly the folded network's (names listed, or the first
        shape that differs).
    """
    torch = require("torch", "cuda", "the cuda backend")
    from fastcell.model import AttentionNet, fold_batchnorm

    path = Path(path) if path is not None else spec.model_path
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    tensors = onnx_tensors(path)
    model = fold_batchnorm(AttentionNet(spec.num_classes, spec.input_size))
    expected = model.state_dict()
    missing_keys = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing_keys or extra:
        raise ValueError(f"{path} does not hold a folded AttentionNet with {spec.num_classes} classes: "
                         f"missing {missing_keys[:4]}{' ...' if len(missing_keys) > 4 else ''}, "
                         f"unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}")
    for name, value in expected.items():
        if tuple(value.shape) != tensors[name].shape:
            raise ValueError(f"{path}: {name} is {tensors[name].shape}, the network with "
                             f"{spec.num_classes} classes needs {tuple(value.shape)}")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model.eval()
