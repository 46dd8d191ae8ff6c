"""AttentionNet weights from a shipped ``model.onnx`` (BatchNorm folded, weights maybe float16).

The exported graph is Conv (+bias) → LeakyReLU per row of Table 1, its convolutions in the order
of :data:`~fastcell.model.attentionnet.LAYERS` (export traces ``forward``, which walks the table).
Loading them back gives a torch model that computes what the ONNX model computes — to fine-tune
a shipped model on new data, or to run it with torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastcell.model.attentionnet import AttentionNet, ConvBN

__all__ = ["onnx_conv_weights", "load_onnx_weights", "calibrate_batchnorm"]


def onnx_conv_weights(path: str | Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``(weight, bias)`` of every Conv node of an ONNX model in graph order, as float32.

    Initializers stored as float16 behind a ``Cast`` (fastcell's export) are followed to their data.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    tensors = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # Cast(fp16 initializer) → float32 name
        if node.op_type == "Cast" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = tensors.get(node.input[1])
        if weight is None:
            raise ValueError(f"{path}: Conv {node.name!r} has a weight that is not a constant")
        bias = tensors.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        convs.append((weight.astype(np.float32), None if bias is None else bias.astype(np.float32)))
    return convs


def load_onnx_weights(model: AttentionNet, path: str | Path) -> AttentionNet:
    """Copy the folded weights of ``path`` into ``model`` (in place) and return it.

    Each ConvBN gets the folded kernel, and its BatchNorm is set to the identity plus the folded
    bias (running mean 0, variance 1 − eps, scale 1): in eval mode the model then computes
    exactly the ONNX graph; in training the BatchNorm learns from there on.
    """
    convs = onnx_conv_weights(path)
    targets = [m for m in model.layers if isinstance(m, (ConvBN, nn.Conv2d))]
    if len(convs) != len(targets):
        raise ValueError(f"{path} has {len(convs)} convolutions, AttentionNet has {len(targets)}")
    with torch.no_grad():
        for (weight, bias), module in zip(convs, targets):
            conv = module.conv if isinstance(module, ConvBN) else module
            if tuple(conv.weight.shape) != weight.shape:
                raise ValueError(f"{path}: a convolution of shape {weight.shape} where AttentionNet has "
                                 f"{tuple(conv.weight.shape)} (another class count or network?)")
            conv.weight.copy_(torch.from_numpy(weight))
            b = torch.from_numpy(bias) if bias is not None else torch.zeros(weight.shape[0])
            if isinstance(module, ConvBN):
                bn = module.bn
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)  # (x − 0) / sqrt(var + eps) = x
                bn.weight.fill_(1.0)
                bn.bias.copy_(b)
            else:
                conv.bias.copy_(b)
    return model


@torch.no_grad()
def calibrate_batchnorm(model: AttentionNet, batches) -> AttentionNet:
    """Re-parametrise the BatchNorms of a model loaded by :func:`load_onnx_weights` for training.

    After loading, a BatchNorm in *training* mode would normalise with the batch's statistics and
    undo what the folded kernels learned. Measuring each convolution's output mean μ and variance
    σ² over ``batches`` (float tensors ``(N, 3, S, S)`` in [0, 1]) and setting running mean μ,
    running variance σ², scale √(σ² + eps) and shift μ + bias keeps the computed function the same
    in eval mode exactly and in training mode up to the batch's deviation from μ, σ.
    """
    stats: dict[nn.Module, list[torch.Tensor]] = {}

    def hook(module, inputs, output):
        y = output.float()
        stats.setdefault(module, []).append(torch.stack([y.mean((0, 2, 3)), (y * y).mean((0, 2, 3))]))

    convbns = [m for m in model.layers if isinstance(m, ConvBN)]
    handles = [m.conv.register_forward_hook(hook) for m in convbns]
    training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    for module in convbns:
        mean, square = torch.stack(stats[module.conv]).mean(0)
        var = (square - mean * mean).clamp(min=0)
        bn = module.bn
        bias = bn.bias.clone()  # the folded bias, as load_onnx_weights left it
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean + bias)
    return model
