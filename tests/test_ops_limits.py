"""The numeric limits of the box kernels (issue 9, item 9), hand-computed at and just past each limit.

box_iou once returned inf for sides past ~2e19 (``w·h`` overflowed float32), decode with a 3e38 anchor
returned non-finite boxes, and ``num_classes=2**31-1`` overflowed int (a negative channel count in the
message). Coordinates are now limited to ±2**62, anchors to 2**56 and num_classes to 2**31 - 6, each
refused past its limit with a message saying so, and exact at it.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastcell import ops
from fastcell import reference as ref

LIMIT = np.float32(2.0**62)
PAST = np.nextafter(LIMIT, np.float32(np.inf))
OUT_OF_RANGE = r"boxes must lie within ±4.61168602e\+18 pixels \(2\^62: past it box areas overflow float32\)"


def test_limits_are_the_documented_powers_of_two():
    assert ops.MAX_COORDINATE == 2.0**62 and ops.MAX_ANCHOR == 2.0**56 and ops.MAX_CLASSES == 2**31 - 6


def test_box_iou_at_the_limit_hand_computed():
    whole = [-LIMIT, -LIMIT, LIMIT, LIMIT]
    a = np.array([whole], np.float32)
    b = np.array([whole, [-LIMIT, -LIMIT, 0, LIMIT], [0, 0, LIMIT, LIMIT], [0, 0, LIMIT / 2, LIMIT / 2],
                  [LIMIT, LIMIT, LIMIT, LIMIT]], np.float32)
    # itself; half; a quarter; a sixteenth; an empty box at the corner
    np.testing.assert_array_equal(ops.box_iou(a, b), [[1.0, 0.5, 0.25, 0.0625, 0.0]])
    # The issue's example: 3e19-pixel sides gave inf; the same shapes at 2**61 give the true IoU.
    side = np.float32(2.0**61)
    np.testing.assert_array_equal(ops.box_iou([[0, 0, side, side]], [[0, 0, side, side], [0, 0, side / 3, side]]),
                                  ref.box_iou([[0, 0, 6, 6]], [[0, 0, 6, 6], [0, 0, 2, 6]]))


@pytest.mark.parametrize("value", [PAST, -PAST, np.float32(3e19), np.float32(3.4e38)])
def test_every_box_kernel_refuses_coordinates_past_the_limit(value):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    boxes[1, 2] = value
    scores = np.array([0.9, 0.8], np.float32)
    where = r".*\(row 1, column 2\)"
    for call in (lambda: ops.box_iou(boxes, boxes[:1]), lambda: ops.box_iou(boxes[:1], boxes),
                 lambda: ops.nms(boxes, scores, 0.5), lambda: ops.nms(boxes, scores, 0.5, [0, 1]),
                 lambda: ops.gbciou_merge(boxes, scores, None)):
        with pytest.raises(ValueError, match=OUT_OF_RANGE + where):
            call()


def test_nms_and_merging_at_the_limit_equal_the_reference():
    boxes = np.array([[-LIMIT, -LIMIT, LIMIT, LIMIT], [-LIMIT, -LIMIT, 0, LIMIT], [0, 0, LIMIT, LIMIT]], np.float32)
    scores = np.array([0.5, 0.9, 0.7], np.float32)
    for threshold in (0.2, 0.3, 0.6):
        np.testing.assert_array_equal(ops.nms(boxes, scores, threshold), ref.nms(boxes, scores, threshold))
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.3), [1, 2])  # IoU(1, 0) = 0.5 > 0.3; (2, 1) = 0
    for got, want in zip(ops.gbciou_merge(boxes, scores, None, mode="single"),
                         ref.gbciou_merge(boxes, scores, None, mode="single")):
        np.testing.assert_array_equal(got, want)


def _head(tw: float, side: int = 2) -> np.ndarray:
    head = np.zeros((1, 6, side, side), np.float32)  # 1 anchor, 1 class
    head[0, 2:4] = tw  # size logit (clamped to log 62.5)
    head[0, 4:6] = 60.0  # objectness and class: sigmoid = 1
    return head


def test_decode_refuses_the_issues_huge_anchor_and_keeps_the_largest_allowed_one_finite():
    with pytest.raises(ValueError, match=r"anchors\[0\] must be positive, finite and at most 7.2057594e\+16 pixels "
                                         r"\(2\^56.*got 3.00000001e\+38 at row 0"):
        ops.decode([_head(0.0)], [32], [np.full((1, 2), 3e38, np.float32)], 1, 0.5)
    past = np.nextafter(np.float32(2.0**56), np.float32(np.inf))
    with pytest.raises(ValueError, match=r"anchors\[0\]"):
        ops.decode([_head(0.0)], [32], [np.array([[1.0, past]], np.float32)], 1, 0.5)
    # At the limit, with the largest size logit: a box 62.5 × 2**56 wide, centred on its cell.
    (boxes, scores, _), = ops.decode([_head(1000.0)], [32], [np.full((1, 2), 2.0**56, np.float32)], 1, 0.5)
    assert np.all(np.isfinite(boxes)) and np.all(np.abs(boxes) <= LIMIT) and scores.tolist() == [1.0] * 4
    half = np.float32(2.0**56 * 1000 / 16 / 2)
    np.testing.assert_array_equal(boxes[0], [-half, -half, half, half])  # centre 16, lost to rounding at 2**61
    iou = ops.box_iou(boxes, boxes)
    assert np.all((iou >= 0) & (iou <= 1)) and np.all(np.diag(iou) == 1)


def test_decode_refuses_strides_whose_grid_leaves_the_range():
    # A 2-cell head reaches stride · 2 pixels: the stride may be up to 2**61 / 2 = 2**60.
    (boxes, _, _), = ops.decode([_head(0.0)], [2.0**60], [np.ones((1, 2), np.float32)], 1, 0.5)
    np.testing.assert_array_equal(boxes[3, :2], np.float32(1.5 * 2.0**60))  # cell (1, 1): centre 1.5 strides
    past = float(np.nextafter(np.float32(2.0**60), np.float32(np.inf)))
    with pytest.raises(ValueError, match=r"strides\[0\] must be positive, finite and at most 1.1529215e\+18 pixels "
                                         r"for a head 2 cells wide"):
        ops.decode([_head(0.0)], [past], [np.ones((1, 2), np.float32)], 1, 0.5)
    with pytest.raises(ValueError, match=r"strides\[0\] must be positive.*got 3.00000001e\+38"):
        ops.decode([_head(0.0)], [3e38], [np.ones((1, 2), np.float32)], 1, 0.5)


@pytest.mark.parametrize("num_classes", [0, -1, 2**31 - 5, 2**31 - 1, 2**31, 2**63 - 1])
def test_decode_num_classes_out_of_range_is_a_clear_value_error(num_classes):
    # 2**31 - 1 once overflowed int in A·(C+5) and printed a negative channel count; 2**31 was a
    # TypeError from pybind11 ("incompatible function arguments").
    with pytest.raises(ValueError, match=rf"num_classes must be in \[1, 2147483642\], got {num_classes}$"):
        ops.decode([_head(0.0)], [32], [np.ones((1, 2), np.float32)], num_classes, 0.5)


def test_decode_num_classes_at_the_limit_reports_the_channels_without_overflow():
    with pytest.raises(ValueError, match=r"heads\[0\] has 6 channels, expected 1 anchors × \(2147483642 classes \+ 5\) "
                                         r"= 2147483647$"):
        ops.decode([_head(0.0)], [32], [np.ones((1, 2), np.float32)], 2**31 - 6, 0.5)


def test_nms_cost_is_documented_for_direct_callers():
    # The quadratic worst case (10**6 disjoint boxes: minutes) and how to cap it are part of the contract.
    doc = ops.nms.__doc__
    assert "O(N²)" in doc and "np.argsort(-scores" in doc
    # The documented cap keeps exactly what NMS of the best-scoring subset keeps.
    rng = np.random.default_rng(0)
    boxes = np.concatenate([xy := rng.uniform(0, 500, (2000, 2)), xy + rng.uniform(1, 30, (2000, 2))], 1)
    boxes, scores = boxes.astype(np.float32), rng.random(2000).astype(np.float32)
    top = np.argsort(-scores, kind="stable")[:300]
    np.testing.assert_array_equal(top[ops.nms(boxes[top], scores[top], 0.45)],
                                  top[ref.nms(boxes[top], scores[top], 0.45)])
