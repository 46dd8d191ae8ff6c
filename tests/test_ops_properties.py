"""Property-based tests (hypothesis) of the public ops against the NumPy references in fastcell.reference.

Every public kernel of :mod:`fastcell.ops` gets arbitrary input within its contract — the whole
float32 coordinate range the box kernels accept, empty and degenerate boxes, ties, any threshold — and
must equal its reference (or, where libm and NumPy may round exp differently, agree to an ulp), or
refuse out-of-contract input with a ValueError. Bounded in time: each test runs at most
``max_examples`` examples of at most ``deadline`` each; the file takes seconds (more under the
sanitizers, where ``FASTCELL_SANITIZE`` lifts the deadline: ASan slows the core several-fold).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastcell import ops
from fastcell import reference as ref

bounded = settings(
    max_examples=int(os.environ.get("FASTCELL_PBT_EXAMPLES", "60")),
    deadline=None if os.environ.get("FASTCELL_SANITIZE") else 2000,  # ms per example
    suppress_health_check=[HealthCheck.too_slow],
)

LIMIT = np.float32(ops.MAX_COORDINATE)  # 2**62, exactly a float32
PAST = np.nextafter(LIMIT, np.float32(np.inf))

# Coordinates from every scale the kernels accept, tiny to the limit, including exact ties: many
# boxes share a few values, so touching edges, equal boxes and empty boxes are common.
coordinate = st.one_of(
    st.integers(-8, 8).map(float),
    st.floats(-1e4, 1e4, width=32),
    st.floats(-float(LIMIT), float(LIMIT), width=32),
)


def boxes_of(n: int, elements=coordinate):
    return hnp.arrays(np.float32, (n, 4), elements=elements)


@st.composite
def scored_boxes(draw, max_n: int = 30, elements=coordinate):
    n = draw(st.integers(0, max_n))
    boxes = draw(boxes_of(n, elements))
    score = st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0]) | st.floats(0, 1, width=32)  # ties are common
    scores = draw(hnp.arrays(np.float32, (n,), elements=score))
    class_ids = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, 2)))
    return boxes, scores, class_ids


# --- box_iou, nms, gbciou_merge: exactly the reference, over the whole accepted range --------------------
@bounded
@given(st.integers(0, 12).flatmap(boxes_of), st.integers(0, 12).flatmap(boxes_of))
def test_box_iou_equals_reference_in_unit_interval(a, b):
    got = ops.box_iou(a, b)
    np.testing.assert_array_equal(got, ref.box_iou(a, b))
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_array_equal(ops.box_iou(b, a), got.T)


@bounded
@given(st.integers(1, 12).flatmap(boxes_of), st.integers(0, 47), st.integers(0, 3), st.booleans())
def test_box_iou_refuses_exactly_the_coordinates_past_the_limit(a, row, column, negative):
    row %= len(a)
    bad = a.copy()
    bad[row, column] = -PAST if negative else PAST
    with pytest.raises(ValueError, match=rf"within ±4.61168602e\+18 pixels .*\(row {row}, column {column}\)"):
        ops.box_iou(a[:0], bad)  # refused even when there is nothing to pair it with
    with pytest.raises(ValueError, match=rf"\(row {row}, column {column}\)"):
        ops.nms(bad, np.zeros(len(bad), np.float32), 0.5)


@bounded
@given(st.integers(0, 10).flatmap(lambda n: boxes_of(n, st.integers(-64, 64).map(float))),
       st.integers(0, 10).flatmap(lambda n: boxes_of(n, st.integers(-64, 64).map(float))),
       st.integers(0, 56))
def test_box_iou_is_scale_invariant_up_to_the_limit(a, b, k):
    # Scaling by a power of two is exact, and so is every step of the float32 IoU after it, as long as
    # nothing overflows: the kernels must give the unscaled reference's value up to |x| = 2**62.
    scale = np.float32(2.0**k)
    np.testing.assert_array_equal(ops.box_iou(a * scale, b * scale), ref.box_iou(a, b))


@bounded
@given(scored_boxes(), st.sampled_from([-0.1, 0.0, 0.3, 0.5, 1.0]) | st.floats(-1, 2, width=32), st.booleans())
def test_nms_equals_reference(data, threshold, per_class):
    boxes, scores, class_ids = data
    ids = class_ids if per_class else None
    kept = ops.nms(boxes, scores, threshold, ids)
    np.testing.assert_array_equal(kept, ref.nms(boxes, scores, threshold, ids))
    assert np.all(np.diff(scores[kept]) <= 0)
    again = ops.nms(boxes[kept], scores[kept], threshold, None if ids is None else ids[kept])
    np.testing.assert_array_equal(again, np.arange(len(kept)))  # idempotent


@bounded
@given(scored_boxes(), st.sampled_from(["multi", "single", "none"]), st.floats(-0.5, 1.5), st.floats(0, 1, width=32))
def test_gbciou_merge_equals_reference(data, mode, threshold, merge_iou):
    boxes, scores, class_ids = data
    got = ops.gbciou_merge(boxes, scores, class_ids, threshold, mode, merge_iou)
    want = ref.gbciou_merge(boxes, scores, class_ids, threshold, mode, merge_iou)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert len(got[0]) <= len(boxes) and np.all(np.abs(got[0]) <= LIMIT)  # merged boxes stay in range


# --- decode and postprocess --------------------------------------------------------------------------------
@st.composite
def heads_and_settings(draw, values):
    """1-2 heads of 1-3 anchors over C classes, grids up to 5×5, values drawn from `values`."""
    classes = draw(st.integers(1, 3))
    batch = draw(st.integers(0, 2))
    heads, strides, anchors = [], [], []
    for _ in range(draw(st.integers(1, 2))):
        a = draw(st.integers(1, 3))
        shape = (batch, a * (classes + 5), draw(st.integers(0, 5)), draw(st.integers(0, 5)))
        heads.append(draw(hnp.arrays(np.float32, shape, elements=values)))
        strides.append(draw(st.sampled_from([8.0, 16.0, 32.0]) | st.floats(0.5, 100, width=32)))
        anchors.append(draw(hnp.arrays(np.float32, (a, 2), elements=st.floats(1, 500, width=32))))
    return heads, strides, anchors, classes


@bounded
@given(heads_and_settings(st.floats(-12, 12, width=32)), st.floats(0, 1))
def test_decode_equals_reference(case, threshold):
    heads, strides, anchors, classes = case
    got = ops.decode(heads, strides, anchors, classes, threshold)
    want = ref.decode(heads, strides, anchors, classes, threshold)
    # libm's exp and NumPy's may differ in the last bit: keep scores off the threshold by a margin.
    every = ref.decode(heads, strides, anchors, classes, 0.0)
    assume(all(not np.any(np.abs(s.astype(np.float64) - threshold) < 1e-6) for _, s, _ in every))
    assert len(got) == len(want) == (heads[0].shape[0])
    for (gb, gs, gc), (wb, ws, wc) in zip(got, want):
        np.testing.assert_allclose(gb, wb, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(gs, ws, rtol=1e-6)
        np.testing.assert_array_equal(gc, wc)


# Logits whose sigmoid and exp are exact in both libm and NumPy (sigmoid(0) = 0.5, sigmoid(±60) = 1 or
# ~1e-26, exp(0) = 1): every decoded box and score is then bit-identical, so NMS and merging decide
# identically and the whole postprocess can be compared exactly.
exact_logits = st.sampled_from([0.0, 60.0, -60.0])


@bounded
@given(heads_and_settings(exact_logits), st.sampled_from([0.2, 0.3, 0.6]), st.floats(0, 1, width=32),
       st.sampled_from(["multi", "single", "none"]), st.booleans(), st.sampled_from([None, 1, 5]))
def test_postprocess_equals_reference(case, score, nms_iou, merge, class_agnostic, max_detections):
    heads, strides, anchors, classes = case
    batch = heads[0].shape[0]
    params = np.tile(np.array([0.65, 0.0, 52.0, 640.0, 480.0], np.float32), (batch, 1))
    kw = dict(strides=strides, anchors=anchors, num_classes=classes, score_threshold=score, nms_iou=nms_iou,
              merge=merge, class_agnostic=class_agnostic, max_detections=max_detections)
    got, want = ops.postprocess(heads, params, **kw), ref.postprocess(heads, params, **kw)
    assert len(got) == len(want) == batch
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


@bounded
@given(st.floats(1, 2**60, width=32), st.floats(-200, 200, width=32), st.integers(1, 5))
def test_decode_boxes_stay_in_range_or_are_refused(anchor, tw, side):
    # Any anchor the check accepts decodes, even with the largest size logit, to boxes within ±2**62,
    # where box_iou stays in [0, 1]; any larger one is refused.
    head = np.zeros((1, 6, side, side), np.float32)
    head[0, 2:4] = tw
    head[0, 4:6] = 60.0
    anchors = [np.full((1, 2), anchor, np.float32)]
    if anchor > ops.MAX_ANCHOR:
        with pytest.raises(ValueError, match=r"anchors\[0\] must be positive, finite and at most 7.2057594e\+16"):
            ops.decode([head], [32.0], anchors, 1, 0.5)
        return
    (boxes, _, _), = ops.decode([head], [32.0], anchors, 1, 0.5)
    assert len(boxes) == side * side and np.all(np.abs(boxes) <= LIMIT)
    iou = ops.box_iou(boxes, boxes)
    non_empty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # a tiny box may round to empty
    assert np.all((iou >= 0) & (iou <= 1)) and np.all(np.diag(iou) == non_empty)


# --- image kernels -----------------------------------------------------------------------------------------
@bounded
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]))),
       st.integers(1, 64), st.integers(0, 255))
def test_letterbox_equals_reference(image, size, pad):
    chw, params = ops.letterbox(image, size, pad)
    want, want_params = ref.letterbox(image, size, pad)
    np.testing.assert_array_equal(params, want_params)
    assert chw.shape == want.shape == (3, size, size)
    assert np.abs(chw - want).max() <= 1.0 / 255.0  # one 8-bit level (resampling rounding)


hsv_bound = st.tuples(st.integers(0, 180), st.integers(0, 255), st.integers(0, 255))


@bounded
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30), st.just(3))),
       st.integers(0, 6).flatmap(lambda n: boxes_of(n, st.floats(-10, 40, width=32))),
       st.none() | st.tuples(hsv_bound, hsv_bound), st.sampled_from(["circle", "ellipse"]))
def test_segment_cells_equals_reference(image, boxes, hsv, disc):
    scores = np.linspace(1, 0.1, len(boxes)).astype(np.float32)
    low, high = hsv if hsv else (None, None)
    labels, segmented = ops.segment_cells(image, boxes, scores, low, high, disc=disc, fill=(1, 2, 3))
    want_labels, want_segmented = ref.segment_cells(image, boxes, scores, low, high, disc=disc, fill=(1, 2, 3),
                                                    draw="exact")
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(segmented, want_segmented)


@pytest.mark.filterwarnings(  # pycocotools 2.0.x vs NumPy 2 (see test_writers.py)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
@bounded
@given(hnp.arrays(np.int32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(-1, 4)),
       st.integers(0, 5))
def test_coco_rle_decodes_to_each_instance(labels, count):
    # (At least 1×1: pycocotools' decode of a 0×0 mask warns under NumPy 2.)
    mask = pytest.importorskip("pycocotools.mask")
    strings, areas = ops.coco_rle(labels, count)
    assert len(strings) == len(areas) == count
    for i, counts in enumerate(strings):
        want = labels == i + 1
        got = mask.decode({"size": list(labels.shape), "counts": counts.encode()})
        np.testing.assert_array_equal(got.astype(bool), want)
        assert areas[i] == want.sum()
