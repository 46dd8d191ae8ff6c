"""The detection loss: GIoU for boxes (the paper's Algorithm 2), BCE for objectness and class.

Target assignment follows YOLOv3: a ground-truth box goes to the grid cell that holds its centre,
on the head and anchor whose shape fits it best (IoU of the two sizes on a shared centre); every
other anchor whose shape IoU exceeds ``assign_iou`` is also made responsible (as Darknet's
``iou_thresh`` does — more positives, faster training on a small data set). A prediction that is
not responsible for a box but already overlaps one with IoU > ``ignore_iou`` is not punished as
background (YOLOv3's ignore threshold).

Head layout, decode and head → anchor indices are the deployed ones: channel ``a·(C+5)+k`` with
``k`` = tx, ty, tw, th, obj, cls...; ``x = (σ(tx) + gx)·stride``, ``w = exp(tw)·anchor_w``; anchors
per head from :data:`fastcell.spec.HEAD_ANCHORS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fastcell.spec import HEAD_ANCHORS

__all__ = ["giou", "box_iou_xyxy", "LossWeights", "YoloLoss", "decode_head"]


def giou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Generalised IoU of paired boxes (Algorithm 2): ``IoU − (C − U) / C``.

    Parameters
    ----------
    a, b : (..., 4) tensors, x1 y1 x2 y2 with x1 <= x2, y1 <= y2
        ``C`` is the area of the smallest box enclosing both, ``U`` the area of their union.

    Returns
    -------
    (...) tensor in [-1, 1]: 1 for identical boxes, → −1 for tiny boxes far apart.
    """
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    union = area_a + area_b - inter
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    enclosing = cw * ch
    return inter / (union + eps) - (enclosing - union) / (enclosing + eps)


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU matrix ``(..., N, 4), (..., M, 4) → (..., N, M)``."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter + eps)


def decode_head(p: torch.Tensor, anchors: torch.Tensor, stride: int,
                num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reshape one head to ``(N, 3, H, W, C+5)`` and decode its boxes to x1y1x2y2 input pixels.

    ``anchors`` is ``(3, 2)`` in pixels. ``tw``/``th`` are clamped at 6 (×403) before ``exp`` to
    keep early training finite; the deployed decode has no clamp and never needs one.
    """
    n, _, h, w = p.shape
    p = p.view(n, 3, num_classes + 5, h, w).permute(0, 1, 3, 4, 2).float()
    gy, gx = torch.meshgrid(torch.arange(h, device=p.device), torch.arange(w, device=p.device), indexing="ij")
    cx = (p[..., 0].sigmoid() + gx) * stride
    cy = (p[..., 1].sigmoid() + gy) * stride
    bw = p[..., 2].clamp(max=6).exp() * anchors[:, 0].view(1, 3, 1, 1)
    bh = p[..., 3].clamp(max=6).exp() * anchors[:, 1].view(1, 3, 1, 1)
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    return p, boxes


@dataclass(frozen=True)
class LossWeights:
    """Gains of the three terms, and per-stride balance of the objectness term.

    The defaults are YOLOv5's (box 0.05, obj 1.0, cls 0.5) rescaled for two heads at 416 px; the
    26×26 head carries more objectness weight than the coarse 13×13 one, as in YOLOv5.
    """

    box: float = 0.075
    obj: float = 0.65
    cls: float = 0.15
    balance: tuple[tuple[int, float], ...] = ((32, 0.4), (16, 1.0))


class YoloLoss(nn.Module):
    """GIoU + BCE loss of AttentionNet's two heads.

    Parameters
    ----------
    anchors : (6, 2) array-like
        The six anchors (w, h) in input pixels, sorted by area.
    num_classes : int
    strides : tuple of int
        Strides of the model outputs in output order, ``(32, 16)``.
    ignore_iou : float
        YOLOv3's ignore threshold: a non-responsible prediction with IoU > this against any
        ground truth of its image gets no objectness loss.
    assign_iou : float
        Besides the best anchor, every anchor with shape IoU > this is responsible too
        (``1.0`` gives YOLOv3's single best anchor).
    unlabelled_obj : float
        In an image whose source leaves some classes unlabelled (``labelled`` in ``forward``), a
        prediction that matches no box is *not* taught as background when the model itself already
        calls it a cell (objectness > this) of one of those classes (its class argmax): it may be
        an unlabelled platelet or white cell. Fully labelled images are unaffected.
    obj_target : {"iou", "one"}
        Objectness target of responsible predictions: their (detached) GIoU-free IoU with the
        box, clamped to [0, 1] (calibrated scores, as YOLOv5), or 1 (as YOLOv3).

    ``forward(outputs, targets, labelled=None)`` takes the model outputs ``(p5, p4)``, targets
    ``(M, 6)`` ``[image_index, class, x1, y1, x2, y2]`` in input pixels and optionally the ``(N, C)``
    bool mask of the classes each image's source labels; returns ``(loss, parts)`` where
    ``loss`` is the batch-size-scaled sum and ``parts`` a detached ``(4,)`` tensor
    ``[box, obj, cls, total]`` per image.
    """

    def __init__(self, anchors, num_classes: int, strides: tuple[int, ...] = (32, 16), ignore_iou: float = 0.7,
                 assign_iou: float = 0.3, obj_target: str = "iou", weights: LossWeights = LossWeights(),
                 unlabelled_obj: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).reshape(6, 2))
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.ignore_iou = ignore_iou
        self.assign_iou = assign_iou
        if obj_target not in ("iou", "one"):
            raise ValueError(f"obj_target must be 'iou' or 'one', got {obj_target!r}")
        self.obj_target = obj_target
        self.weights = weights
        self.unlabelled_obj = unlabelled_obj

    def _responsible(self, targets: torch.Tensor) -> torch.Tensor:
        """``(M, 6)`` boolean: is anchor j responsible for target i (best, or shape IoU > assign_iou)."""
        wh = (targets[:, 4:6] - targets[:, 2:4]).clamp(min=1e-6)
        inter = torch.minimum(wh[:, None], self.anchors[None]).prod(2)
        iou = inter / (wh.prod(1)[:, None] + self.anchors.prod(1)[None] - inter)
        best = F.one_hot(iou.argmax(1), 6).bool()
        return best | (iou > self.assign_iou)

    def forward(self, outputs: tuple[torch.Tensor, ...], targets: torch.Tensor,
                labelled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        device = outputs[0].device
        batch = outputs[0].shape[0]
        targets = targets.to(device=device, dtype=torch.float32)
        unlabelled = None
        if labelled is not None:
            unlabelled = ~labelled.to(device=device, dtype=torch.bool).reshape(batch, self.num_classes)
            if not bool(unlabelled.any()):
                unlabelled = None
        responsible = self._responsible(targets) if len(targets) else torch.zeros(0, 6, dtype=torch.bool, device=device)
        balance = dict(self.weights.balance)
        # Ground truths padded per image, for the ignore test: (N, G, 4).
        counts = torch.zeros(batch, dtype=torch.long, device=device)
        if len(targets):
            counts = torch.bincount(targets[:, 0].long(), minlength=batch)
        gmax = int(counts.max()) if batch else 0
        gt_pad = torch.zeros(batch, max(gmax, 1), 4, device=device)
        if len(targets):
            order = torch.argsort(targets[:, 0], stable=True)
            sorted_t = targets[order]
            img = sorted_t[:, 0].long()
            first = torch.cumsum(counts, 0) - counts
            slot = torch.arange(len(sorted_t), device=device) - first[img]
            gt_pad[img, slot] = sorted_t[:, 2:6]
        gt_valid = torch.arange(max(gmax, 1), device=device)[None] < counts[:, None]

        l_box = torch.zeros((), device=device)
        l_obj = torch.zeros((), device=device)
        l_cls = torch.zeros((), device=device)
        for p, stride in zip(outputs, self.strides):
            anchor_ids = list(HEAD_ANCHORS[stride])
            anchors = self.anchors[anchor_ids]
            p, boxes = decode_head(p, anchors, stride, self.num_classes)
            n, _, h, w, _ = p.shape
            obj_target = torch.zeros(p.shape[:4], device=device)
            obj_weight = torch.ones(p.shape[:4], device=device)
            # ignore: predictions that already overlap some ground truth well
            with torch.no_grad():
                iou = box_iou_xyxy(boxes.reshape(n, -1, 4), gt_pad)  # (N, 3HW, G)
                iou = iou.masked_fill(~gt_valid[:, None, :], 0).amax(2).view(n, 3, h, w)
                obj_weight[iou > self.ignore_iou] = 0.0
                if unlabelled is not None:
                    # maybe a cell of a class this image's source does not label: no verdict
                    cls_pred = p[..., 5:].argmax(-1)  # (N, 3, H, W)
                    img = torch.arange(n, device=device).view(n, 1, 1, 1).expand_as(cls_pred)
                    maybe = unlabelled[img, cls_pred] & (p[..., 4].sigmoid() > self.unlabelled_obj)
                    obj_weight[maybe] = 0.0
            if len(targets):
                t_idx, a_local = responsible[:, anchor_ids].nonzero(as_tuple=True)
                if len(t_idx):
                    t = targets[t_idx]
                    b = t[:, 0].long()
                    centre = (t[:, 2:4] + t[:, 4:6]) / 2
                    gi = (centre[:, 0] / stride).long().clamp(0, w - 1)
                    gj = (centre[:, 1] / stride).long().clamp(0, h - 1)
                    pred_boxes = boxes[b, a_local, gj, gi]
                    g = giou(pred_boxes, t[:, 2:6])
                    l_box = l_box + (1.0 - g).mean()
                    if self.obj_target == "iou":
                        target_value = box_iou_xyxy(pred_boxes.detach()[:, None], t[:, None, 2:6])[:, 0, 0].clamp(0, 1)
                    else:
                        target_value = torch.ones(len(t), device=device)
                    obj_target[b, a_local, gj, gi] = target_value
                    obj_weight[b, a_local, gj, gi] = 1.0
                    cls_target = F.one_hot(t[:, 1].long(), self.num_classes).float()
                    l_cls = l_cls + F.binary_cross_entropy_with_logits(p[b, a_local, gj, gi, 5:], cls_target)
            bce = F.binary_cross_entropy_with_logits(p[..., 4], obj_target, reduction="none")
            l_obj = l_obj + balance.get(stride, 1.0) * (bce * obj_weight).sum() / obj_weight.sum().clamp(min=1)
        l_box = l_box * self.weights.box
        l_obj = l_obj * self.weights.obj
        l_cls = l_cls * self.weights.cls
        total = l_box + l_obj + l_cls
        parts = torch.stack([l_box, l_obj, l_cls, total]).detach()
        return total * batch, parts
