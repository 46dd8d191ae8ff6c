"""AttentionNet: the paper's Table 1 (a YOLOv3-tiny detector) in PyTorch.

The network is written as a layer table so that it reads like Table 1 of "All you need is cell
attention". Every ``conv`` row is Conv(k×k, no bias) → BatchNorm → LeakyReLU(0.1); the two ``head``
rows are plain 1×1 convolutions with bias and ``3·(classes+5)`` outputs.

Outputs, in this order (the ONNX contract, see :data:`fastcell.spec.HEAD_ANCHORS`):

* ``p5``: ``(N, 3(C+5), S/32, S/32)`` — 13×13 at 416, stride 32, anchors 3, 4, 5;
* ``p4``: ``(N, 3(C+5), S/16, S/16)`` — 26×26 at 416, stride 16, anchors 0, 1, 2.

Per anchor ``a`` the channel block is ``[tx, ty, tw, th, obj, cls...]`` at channel ``a·(C+5)+k``.

With one class at 416×416 the model has 8,669,876 parameters (8.67 M) and 5.44 GFLOPs, counting
a multiply-add as two FLOPs (the Darknet convention, ``2·MACs``; convolutions only).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from fastcell.defaults import INPUT_SIZE

__all__ = ["AttentionNet", "LAYERS", "fold_batchnorm", "count_parameters", "conv_flops"]


@dataclass(frozen=True)
class Layer:
    """One row of Table 1. ``kind`` is conv, max, route, upsample or head."""

    kind: str
    filters: int = 0
    size: int = 0
    stride: int = 1
    routes: tuple[int, ...] = ()


# Table 1, row by row. Shapes are for a 416×416 input. Indices equal Darknet's layer numbers up to
# 15; Darknet's weightless "yolo" rows (16 and 23) are left out, so rows after 15 are one lower.
LAYERS: tuple[Layer, ...] = (
    Layer("conv", 16, 3, 1),            # 0  416×416×16
    Layer("max", size=2, stride=2),     # 1  208×208
    Layer("conv", 32, 3, 1),            # 2  208×208×32
    Layer("max", size=2, stride=2),     # 3  104×104
    Layer("conv", 64, 3, 1),            # 4  104×104×64
    Layer("max", size=2, stride=2),     # 5  52×52
    Layer("conv", 128, 3, 1),           # 6  52×52×128
    Layer("max", size=2, stride=2),     # 7  26×26
    Layer("conv", 256, 3, 1),           # 8  26×26×256   ← routed to the 26×26 head
    Layer("max", size=2, stride=2),     # 9  13×13
    Layer("conv", 512, 3, 1),           # 10 13×13×512
    Layer("max", size=2, stride=1),     # 11 13×13 (stride-1 maxpool, padded right/bottom)
    Layer("conv", 1024, 3, 1),          # 12 13×13×1024
    Layer("conv", 256, 1, 1),           # 13 13×13×256   ← routed to the 26×26 branch
    Layer("conv", 512, 3, 1),           # 14 13×13×512
    Layer("head", size=1),              # 15 13×13×3(C+5)   → p5 (stride 32)
    Layer("route", routes=(13,)),       # 16 13×13×256 (Darknet's 17: route -4)
    Layer("conv", 128, 1, 1),           # 17 13×13×128
    Layer("upsample", stride=2),        # 18 26×26×128
    Layer("route", routes=(18, 8)),     # 19 26×26×384
    Layer("conv", 256, 3, 1),           # 20 26×26×256
    Layer("head", size=1),              # 21 26×26×3(C+5)   → p4 (stride 16)
)


class ConvBN(nn.Module):
    """Conv(k×k, stride 1, 'same' padding, no bias) → BatchNorm → LeakyReLU(0.1).

    After :func:`fold_batchnorm` the BN is an ``Identity`` and the conv carries a bias.
    """

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, 1, k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.03)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MaxPoolSame(nn.Module):
    """Darknet's maxpool: size 2; the stride-1 variant keeps 13×13 by padding right/bottom.

    Darknet pads the far side with -inf: ``y[i] = max(x[i], x[i+1])`` with ``x[n] = -inf``. That is
    ``MaxPool2d(2, 1, padding=1)`` (implicit -inf on both sides, ``n + 1`` outputs) without its
    first row and column — a form that exports to ONNX as one MaxPool and one constant Slice.
    """

    def __init__(self, size: int, stride: int) -> None:
        super().__init__()
        self.stride_one = stride == 1
        self.pool = nn.MaxPool2d(size, stride, padding=1 if self.stride_one else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        return y[:, :, 1:, 1:] if self.stride_one else y


class AttentionNet(nn.Module):
    """The AttentionNet detector (Table 1).

    Parameters
    ----------
    num_classes : int
        Number of object classes C; each head has ``3·(C+5)`` output channels.
    input_size : int
        Square input side in pixels, a multiple of 32 (416 in the paper). Only used to check the
        input and to report FLOPs; the convolutions work at any multiple of 32.

    Notes
    -----
    ``forward(images)`` takes ``(N, 3, S, S)`` float32 RGB in [0, 1] and returns the tuple
    ``(p5, p4)`` of raw head maps (no sigmoid, no decoding). It works with ``channels_last``
    inputs and weights (``model.to(memory_format=torch.channels_last)``), oneDNN's preferred
    layout on CPU; training uses it together with bf16 autocast.
    """

    def __init__(self, num_classes: int, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if input_size % 32 or input_size <= 0:
            raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)
        self.head_width = 3 * (self.num_classes + 5)
        self.layers = nn.ModuleList()
        channels: list[int] = []  # output channels of every layer, for routes
        c = 3
        for layer in LAYERS:
            if layer.kind == "conv":
                module: nn.Module = ConvBN(c, layer.filters, layer.size)
                c = layer.filters
            elif layer.kind == "max":
                module = MaxPoolSame(layer.size, layer.stride)
            elif layer.kind == "upsample":
                module = nn.Upsample(scale_factor=layer.stride, mode="nearest")
            elif layer.kind == "route":
                module = nn.Identity()
                c = sum(channels[i] for i in layer.routes)
            elif layer.kind == "head":
                module = nn.Conv2d(c, self.head_width, 1, 1, 0, bias=True)
                c = self.head_width
            else:  # pragma: no cover - the table is fixed
                raise ValueError(layer.kind)
            self.layers.append(module)
            channels.append(c)
        self._init_head_bias()

    def _init_head_bias(self) -> None:
        """Start objectness low (p≈0.01) so the first steps are not swamped by background loss."""
        for index in (15, 21):
            head = self.layers[index]
            assert isinstance(head, nn.Conv2d)
            with torch.no_grad():
                bias = head.bias.view(3, self.num_classes + 5)
                bias[:, 4] = -4.6  # log(0.01 / 0.99)
                bias[:, 5:] = 0.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs: list[torch.Tensor | None] = []
        heads: list[torch.Tensor] = []
        # Keep only the outputs a later route needs; the rest are dropped to save memory.
        keep = {8, 13, 18}
        for index, (layer, module) in enumerate(zip(LAYERS, self.layers)):
            if layer.kind == "route":
                parts = [outputs[i] for i in layer.routes]
                x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # type: ignore[arg-type]
            else:
                x = module(x)
            if layer.kind == "head":
                heads.append(x)
            outputs.append(x if index in keep else None)
        return heads[0], heads[1]

    @property
    def strides(self) -> tuple[int, int]:
        """Strides of the outputs, in output order (p5, p4)."""
        return (32, 16)


def fold_batchnorm(model: AttentionNet) -> AttentionNet:
    """Return a copy of ``model`` with every BatchNorm folded into the preceding conv.

    The result has identical eval-mode outputs (up to float rounding) and no BN layers, so the
    exported graph is conv + bias + LeakyReLU only. The input model is not modified.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, ConvBN) and isinstance(module.bn, nn.BatchNorm2d):
            conv, bn = module.conv, module.bn
            std = torch.sqrt(bn.running_var + bn.eps)
            scale = bn.weight / std
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, bias=True).to(conv.weight.device)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            module.conv = fused
            module.bn = nn.Identity()
    return folded


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def conv_flops(model: AttentionNet, input_size: int | None = None) -> int:
    """FLOPs of one forward pass at ``input_size``: ``2 × multiply-adds`` of all convolutions.

    This is the convention Darknet prints (``BFLOPs``) and the one the paper's 5.44 GFLOPs uses.
    BN, activations, pooling and upsampling are not counted.
    """
    size = input_size or model.input_size
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * k * output.numel() // output.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total
