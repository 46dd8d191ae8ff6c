"""GIoU (Algorithm 2) by hand and against the paper's formula; YOLOv3 target assignment and ignore."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastcell.model.loss import YoloLoss, giou  # noqa: E402
from fastcell.spec import HEAD_ANCHORS  # noqa: E402

ANCHORS = np.array([[20, 20], [40, 40], [60, 60], [90, 90], [140, 140], [250, 250]], np.float32)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 0, 2, 2), (0, 0, 2, 2), 1.0),  # identical
        ((0, 0, 1, 1), (2, 0, 3, 1), -1 / 3),  # disjoint: IoU 0, C = 3, U = 2
        ((0, 0, 4, 4), (1, 1, 3, 3), 0.25),  # nested: IoU 4/16, C = U
        ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),  # touching: IoU 0, C = U = 2
        ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7 - 2 / 9),  # overlapping: I 1, U 7, C 9
        ((0, 0, 1, 1), (99, 99, 100, 100), 2 / 10000 - 1),  # far apart → close to -1
    ],
)
def test_giou_hand_computed(a, b, expected):
    value = giou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    assert value.item() == pytest.approx(expected, abs=1e-9)


def paper_giou_loss(bp, bg):
    """Algorithm 2 of the paper, line by line, in plain Python."""
    x1p, y1p, x2p, y2p = bp
    x1g, y1g, x2g, y2g = bg
    x1p, x2p = min(x1p, x2p), max(x1p, x2p)  # 1: order the predicted corners
    y1p, y2p = min(y1p, y2p), max(y1p, y2p)
    area_g = (x2g - x1g) * (y2g - y1g)  # 2
    area_p = (x2p - x1p) * (y2p - y1p)  # 3
    x1i, x2i, y1i, y2i = max(x1p, x1g), min(x2p, x2g), max(y1p, y1g), min(y2p, y2g)  # 4
    inter = (x2i - x1i) * (y2i - y1i) if x2i > x1i and y2i > y1i else 0.0
    x1c, x2c, y1c, y2c = min(x1p, x1g), max(x2p, x2g), min(y1p, y1g), max(y2p, y2g)  # 5
    area_c = (x2c - x1c) * (y2c - y1c)
    union = area_p + area_g - inter  # 6
    iou = inter / union
    g = iou - (area_c - union) / area_c  # 7
    return 1 - g  # 8: L_GIoU


def test_giou_matches_the_papers_algorithm_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (500, 2, 2))
    wh = rng.uniform(1, 60, (500, 2, 2))
    boxes = np.concatenate([xy, xy + wh], -1)  # (500, 2, 4) ordered boxes
    ours = 1 - giou(torch.from_numpy(boxes[:, 0]), torch.from_numpy(boxes[:, 1])).numpy()
    paper = np.array([paper_giou_loss(p, g) for p, g in boxes])
    np.testing.assert_allclose(ours, paper, rtol=1e-9, atol=1e-9)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _empty_heads(batch: int = 1, classes: int = 2, size: int = 416):
    w = 3 * (classes + 5)
    p5 = torch.zeros(batch, w, size // 32, size // 32)
    p4 = torch.zeros(batch, w, size // 16, size // 16)
    for p in (p5, p4):
        p.view(batch, 3, classes + 5, *p.shape[-2:])[:, :, 4] = -12.0  # confident background
    return p5, p4


def _encode(p, stride, anchor, a_local, box, cls, classes=2):
    """Write head values that decode exactly to ``box`` (x1y1x2y2) for one anchor of one head."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    gi, gj = int(cx // stride), int(cy // stride)
    v = p.view(p.shape[0], 3, classes + 5, *p.shape[-2:])
    v[0, a_local, 0, gj, gi] = _logit(cx / stride - gi)
    v[0, a_local, 1, gj, gi] = _logit(cy / stride - gj)
    v[0, a_local, 2, gj, gi] = float(np.log(w / anchor[0]))
    v[0, a_local, 3, gj, gi] = float(np.log(h / anchor[1]))
    v[0, a_local, 4, gj, gi] = 12.0
    v[0, a_local, 5:, gj, gi] = -12.0
    v[0, a_local, 5 + cls, gj, gi] = 12.0
    return gj, gi


def test_perfect_prediction_has_almost_no_loss_and_a_wrong_one_more():
    loss_fn = YoloLoss(ANCHORS, 2, assign_iou=1.0, obj_target="one")
    box = (100.0, 120.0, 240.0, 262.0)  # 140×142: best anchor 4 → 13×13 head, local index 1
    target = torch.tensor([[0, 1, *box]])
    p5, p4 = _empty_heads()
    _encode(p5, 32, ANCHORS[4], HEAD_ANCHORS[32].index(4), box, 1)
    loss, parts = loss_fn((p5, p4), target)
    assert parts[0].item() < 1e-6  # GIoU = 1
    assert parts[3].item() < 1e-3
    p5_bad, p4_bad = _empty_heads()
    _encode(p5_bad, 32, ANCHORS[4], HEAD_ANCHORS[32].index(4), (130.0, 150.0, 210.0, 230.0), 0)
    _, bad = loss_fn((p5_bad, p4_bad), target)
    assert bad[0] > 0.01 and bad[2] > 0.1


def test_yolov3_assignment_trains_only_the_best_anchor_cell():
    # A 64×56 box: best anchor 2 (60²) → the 26×26 head (stride 16), local anchor 2, its centre's cell.
    loss_fn = YoloLoss(ANCHORS, 2, assign_iou=1.0)
    target = torch.tensor([[0, 0, 172.0, 92.0, 236.0, 148.0]])  # centre (204, 120) → row 7, column 12
    p5, p4 = _empty_heads()
    p5.requires_grad_(True)
    p4.requires_grad_(True)
    loss, _ = loss_fn((p5, p4), target)
    loss.backward()
    g4 = p4.grad.view(1, 3, 7, 26, 26)
    g5 = p5.grad.view(1, 3, 7, 13, 13)
    box_grad4 = g4[0, :, :4].abs().sum(1)  # (3, 26, 26)
    assert torch.nonzero(box_grad4).tolist() == [[2, 7, 12]]
    assert g5[0, :, :4].abs().sum() == 0  # the other head gets no box loss


def test_assign_iou_adds_similar_anchors_on_both_heads():
    loss_fn = YoloLoss(ANCHORS, 2, assign_iou=0.3)
    target = torch.tensor([[0, 0, 150.0, 150.0, 225.0, 225.0]])  # 75×75: IoU 0.64 with 60², 0.69 with 90²
    p5, p4 = _empty_heads()
    p5.requires_grad_(True)
    p4.requires_grad_(True)
    loss_fn((p5, p4), target)[0].backward()
    heads4 = torch.nonzero(p4.grad.view(1, 3, 7, 26, 26)[0, :, :4].abs().sum((1, 2, 3))).flatten().tolist()
    heads5 = torch.nonzero(p5.grad.view(1, 3, 7, 13, 13)[0, :, :4].abs().sum((1, 2, 3))).flatten().tolist()
    # shape IoU of 75²: 40² 0.28 (out), 60² 0.64 (in), 90² 0.69 (best), 140² 0.29 (out)
    assert heads4 == [2]  # anchor 2 = local 2 of the 26×26 head
    assert heads5 == [0]  # anchor 3 = local 0 of the 13×13 head


def test_ignore_threshold_spares_good_non_responsible_predictions():
    box = (100.0, 120.0, 240.0, 262.0)
    target = torch.tensor([[0, 1, *box]])
    p5, p4 = _empty_heads()
    # a non-responsible 26×26 prediction that covers the box well (IoU ≈ 0.9), objectness 0
    near = (104.0, 124.0, 236.0, 258.0)
    gj, gi = _encode(p4, 16, ANCHORS[2], 2, near, 1)
    p4.view(1, 3, 7, 26, 26)[0, 2, 4, gj, gi] = 0.0
    p4.requires_grad_(True)
    for ignore, spared in ((0.7, True), (0.95, False)):
        p4.grad = None
        YoloLoss(ANCHORS, 2, ignore_iou=ignore, assign_iou=1.0)((p5, p4), target)[0].backward()
        obj_grad = p4.grad.view(1, 3, 7, 26, 26)[0, 2, 4, gj, gi].item()
        assert (obj_grad == 0) is spared
