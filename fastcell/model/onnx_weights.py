"""AttentionNet from a shipped ``model.onnx``: to run it with torch (the cuda backend) or to
fine-tune it on new data (``fastcell train --init``).

fastcell's exporter folds every BatchNorm into its convolution (:func:`fastcell.model.fold_batchnorm`),
so the ONNX graph is Conv (+ bias) → LeakyReLU(0.1), MaxPool, Slice, Resize and Concat only, and
each Conv reads its weight and bias from initializers named after the folded network's own
parameters (``layers.0.conv.weight`` ...; weights may be stored as float16 behind a Cast). Reading
those initializers into the folded network gives the very model ONNX Runtime runs, so neither
path needs a training checkpoint. Anything else in the graph — another op, another LeakyReLU
slope, a missing or extra weight, a shape that does not fit — is refused with a ValueError that
says what differs: the torch network would otherwise compute something other than the ONNX file.

Needs ``torch`` and ``onnx`` (the ``cuda`` or ``train`` extra); never imported by the CPU inference
path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fastcell.spec import ModelSpec

__all__ = ["onnx_tensors", "attentionnet_from_onnx", "load_onnx_weights", "calibrate_batchnorm"]

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
    import onnx
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
    import torch

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


def load_onnx_weights(model: Any, path: str | Path) -> Any:
    """Copy ``path``'s folded weights into an (unfolded) AttentionNet ``model``, in place, for training.

    Each ConvBN gets the folded kernel and its BatchNorm the identity plus the folded bias (running
    mean 0, variance 1 − eps, scale 1): in eval mode the model computes exactly the ONNX graph.
    Before training, :func:`calibrate_batchnorm` makes the training-mode BatchNorms agree too.
    """
    import torch

    from fastcell.model.attentionnet import ConvBN

    spec = ModelSpec(classes=tuple(str(i) for i in range(model.num_classes)), anchors=np.zeros((6, 2), np.float32),
                     input_size=model.input_size)
    folded = attentionnet_from_onnx(spec, path).state_dict()
    with torch.no_grad():
        for index, module in enumerate(model.layers):
            if isinstance(module, ConvBN):
                module.conv.weight.copy_(folded[f"layers.{index}.conv.weight"])
                bn = module.bn
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)  # (x − 0) / sqrt(var + eps) = x
                bn.weight.fill_(1.0)
                bn.bias.copy_(folded[f"layers.{index}.conv.bias"])
            elif isinstance(module, torch.nn.Conv2d):  # a head
                module.weight.copy_(folded[f"layers.{index}.weight"])
                module.bias.copy_(folded[f"layers.{index}.bias"])
    return model


def calibrate_batchnorm(model: Any, batches) -> Any:
    """Re-parametrise the BatchNorms of a model loaded by :func:`load_onnx_weights` for training.

    After loading, a BatchNorm in *training* mode would normalise with the batch's statistics and
    undo what the folded kernels learned. Measuring each convolution's output mean μ and variance
    σ² over ``batches`` (float tensors ``(N, 3, S, S)`` in [0, 1]) and setting running mean μ,
    running variance σ², scale √(σ² + eps) and shift μ + bias keeps the computed function the same
    in eval mode exactly and in training mode up to the batch's deviation from μ, σ.

    Call it right after :func:`load_onnx_weights` (it measures the function that left behind).
    """
    import torch

    from fastcell.model.attentionnet import ConvBN

    stats: dict[Any, list[Any]] = {}

    def hook(module, inputs, output):
        y = output.float()
        stats.setdefault(module, []).append(torch.stack([y.mean((0, 2, 3)), (y * y).mean((0, 2, 3))]))

    convbns = [m for m in model.layers if isinstance(m, ConvBN)]
    handles = [m.conv.register_forward_hook(hook) for m in convbns]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    with torch.no_grad():
        _reparametrise(convbns, stats)
    return model


def _reparametrise(convbns: list, stats: dict) -> None:
    import torch

    for module in convbns:
        mean, square = torch.stack(stats[module.conv]).mean(0)
        var = (square - mean * mean).clamp(min=0)
        bn = module.bn
        bias = bn.bias.clone()  # the folded bias, as load_onnx_weights left it
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean + bias)
