"""box_iou, nms and gbciou_merge of fastcell.ops against the NumPy references, hand-computed cases,
edge cases, hypothesis properties, bad input, memory layouts and threads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastcell import ops
from fastcell import reference as ref

MODES = ("none", "single", "multi")


def random_boxes(rng: np.random.Generator, n: int, size: float = 416.0, max_wh: float = 80.0) -> np.ndarray:
    """Random corner boxes on a coarse grid (so exact ties and touching edges happen), some degenerate."""
    xy = np.round(rng.uniform(-20, size, (n, 2)) * 2) / 2
    wh = np.round(rng.uniform(0, max_wh, (n, 2)) * 2) / 2
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    flip = rng.random(n) < 0.05  # a few inverted boxes: x2 < x1
    boxes[flip] = boxes[flip][:, [2, 1, 0, 3]]
    return boxes


def random_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.integers(0, 40, n) / 40).astype(np.float32)  # coarse: many equal scores


def clustered(rng: np.random.Generator, clusters: int, per_cluster: int, size: float = 416.0):
    """Candidates as a detector emits them: several jittered boxes around each object."""
    centres = rng.uniform(30, size - 30, (clusters, 2))
    sizes = rng.uniform(15, 60, (clusters, 2))
    c = np.repeat(centres, per_cluster, axis=0) + rng.normal(0, 3, (clusters * per_cluster, 2))
    s = np.repeat(sizes, per_cluster, axis=0) * rng.uniform(0.85, 1.15, (clusters * per_cluster, 2))
    boxes = np.concatenate([c - s / 2, c + s / 2], axis=1).astype(np.float32)
    return boxes, rng.random(len(boxes)).astype(np.float32), rng.integers(0, 3, len(boxes)).astype(np.int32)


def assert_same_detections(got, want):
    assert len(got) == len(want) == 3
    for g, w, dtype in zip(got, want, (np.float32, np.float32, np.int32)):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, w)


# --- box_iou -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_box_iou_equals_reference(seed):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 37), random_boxes(rng, 23)
    got = ops.box_iou(a, b)
    assert got.shape == (37, 23) and got.dtype == np.float32
    np.testing.assert_array_equal(got, ref.box_iou(a, b))


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 5], [5, 5, 15, 15], [10, 0, 20, 10], [3, 3, 3, 8], [8, 8, 2, 2]], np.float32)
    # half overlap; 25 / 175; touching edges; zero-width box; inverted box
    np.testing.assert_allclose(ops.box_iou(a, b)[0], [0.5, 25 / 175, 0, 0, 0], rtol=1e-7)
    # two empty boxes: union 0 → IoU 0, not NaN
    e = np.array([[1, 1, 1, 1]], np.float32)
    assert ops.box_iou(e, e)[0, 0] == 0.0


def test_box_iou_empty_inputs():
    assert ops.box_iou(np.zeros((0, 4), np.float32), random_boxes(np.random.default_rng(0), 3)).shape == (0, 3)
    assert ops.box_iou(np.zeros((2, 4), np.float32), np.zeros((0, 4), np.float32)).shape == (2, 0)


finite_boxes = hnp.arrays(np.float32, st.tuples(st.integers(0, 12), st.just(4)),
                          elements=st.floats(-1e4, 1e4, width=32))


@settings(max_examples=60, deadline=None)
@given(finite_boxes, finite_boxes)
def test_box_iou_symmetric_in_unit_interval(a, b):
    ab, ba = ops.box_iou(a, b), ops.box_iou(b, a)
    np.testing.assert_array_equal(ab, ba.T)
    assert np.all((ab >= 0) & (ab <= 1))


# --- nms ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.45, 0.7])
def test_nms_equals_reference(seed, threshold):
    rng = np.random.default_rng(seed)
    boxes, scores = random_boxes(rng, 120), random_scores(rng, 120)
    classes = rng.integers(0, 3, 120)
    for class_ids in (None, classes):
        got = ops.nms(boxes, scores, threshold, class_ids)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref.nms(boxes, scores, threshold, class_ids))


@pytest.mark.parametrize("seed", range(3))
def test_nms_equals_reference_on_clustered_candidates(seed):
    boxes, scores, class_ids = clustered(np.random.default_rng(seed), 10, 6)
    for ids in (None, class_ids):
        np.testing.assert_array_equal(ops.nms(boxes, scores, 0.45, ids), ref.nms(boxes, scores, 0.45, ids))


def test_nms_threshold_is_strict():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5), [0, 1])  # IoU == threshold: kept
    just_below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    np.testing.assert_array_equal(ops.nms(boxes, scores, just_below), [0])  # IoU > threshold: suppressed
    np.testing.assert_array_equal(ref.nms(boxes, scores, just_below), [0])


def test_nms_ties_broken_by_index_and_classes_respected():
    box = [10, 10, 50, 50]
    boxes = np.array([box, box, box, box], np.float32)
    scores = np.array([0.5, 0.7, 0.7, 0.5], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5), [1])
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.5, np.array([0, 1, 1, 0])), [1, 0])
    np.testing.assert_array_equal(ops.nms(boxes, scores, 1.0), [1, 2, 0, 3])  # IoU 1 is not > 1


def test_nms_degenerate_boxes_never_suppress():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 0, 10], [10, 10, 0, 0], [5, 5, 5, 5]], np.float32)
    scores = np.array([0.1, 0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.0), [1, 2, 3, 0])


def test_nms_negative_threshold_keeps_one_box_per_class():
    rng = np.random.default_rng(3)
    boxes, scores = random_boxes(rng, 50), random_scores(rng, 50)
    class_ids = rng.integers(0, 4, 50)
    kept = ops.nms(boxes, scores, -0.1, class_ids)
    assert sorted(class_ids[kept]) == sorted(set(class_ids))
    np.testing.assert_array_equal(kept, ref.nms(boxes, scores, -0.1, class_ids))


def test_nms_no_candidates():
    kept = ops.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    assert kept.shape == (0,) and kept.dtype == np.int64


def test_nms_huge_input_equals_reference():
    boxes, scores, class_ids = clustered(np.random.default_rng(7), 400, 25, size=4000)
    np.testing.assert_array_equal(ops.nms(boxes, scores, 0.45, class_ids), ref.nms(boxes, scores, 0.45, class_ids))


scored_boxes = st.integers(0, 40).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float32, (n, 4), elements=st.floats(0, 200, width=32)),
    hnp.arrays(np.float32, (n,), elements=st.floats(0, 1, width=32)),
    hnp.arrays(np.int32, (n,), elements=st.integers(0, 2)),
))


@settings(max_examples=80, deadline=None)
@given(scored_boxes, st.floats(0, 1))
def test_nms_properties(data, threshold):
    boxes, scores, class_ids = data
    kept = ops.nms(boxes, scores, threshold, class_ids)
    assert len(set(kept.tolist())) == len(kept) and np.all((kept >= 0) & (kept < len(boxes)))  # a subset
    assert np.all(np.diff(scores[kept]) <= 0)  # by descending score
    again = ops.nms(boxes[kept], scores[kept], threshold, class_ids[kept])
    np.testing.assert_array_equal(again, np.arange(len(kept)))  # idempotent
    np.testing.assert_array_equal(kept, ref.nms(boxes, scores, threshold, class_ids))


# --- gbciou_merge --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", MODES)
def test_gbciou_equals_reference(seed, mode):
    rng = np.random.default_rng(seed)
    boxes, scores, class_ids = clustered(rng, 8, 5)
    for threshold, merge_iou in ((0.5, 0.5), (0.2, 0.3), (0.9, 0.1)):
        got = ops.gbciou_merge(boxes, scores, class_ids, threshold, mode, merge_iou)
        assert_same_detections(got, ref.gbciou_merge(boxes, scores, class_ids, threshold, mode, merge_iou))


def test_gbciou_hand_computed_pair():
    b = [0, 0, 10, 10]
    # A shifted by 5 in x and y: I = 25, Union = 175, E = 15·15 = 225, penalty = 50/225 ≈ 0.22.
    boxes = np.array([b, [5, 5, 15, 15]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    merged, s, c = ops.gbciou_merge(boxes, scores, np.array([1, 2]), threshold=0.5, mode="single")
    np.testing.assert_array_equal(merged, [[0, 0, 15, 15]])
    assert s.tolist() == [np.float32(0.9)] and c.tolist() == [1]  # B's confidence and class
    merged, _, _ = ops.gbciou_merge(boxes, scores, None, threshold=0.2, mode="single")
    np.testing.assert_array_equal(merged, [b])  # penalty >= threshold: B wins
    # multi: IoU 25/175 is under the floor, so these are two cells and both stay
    merged, _, _ = ops.gbciou_merge(boxes, scores, None, threshold=0.5, mode="multi", merge_iou=0.5)
    np.testing.assert_array_equal(merged, boxes)


def test_gbciou_uses_true_enclosing_box():
    # B and A side by side, 20 px apart: E = 40·10 = 400 with the true box (max x2 - min x1); the
    # paper's max - max would give 0 width, penalty < 0 and always merge. True penalty is exactly
    # (400 - 200) / 400 = 0.5, and merging needs penalty < threshold.
    boxes = np.array([[0, 0, 10, 10], [30, 0, 40, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    merged, _, _ = ops.gbciou_merge(boxes, scores, None, threshold=0.5, mode="single")
    np.testing.assert_array_equal(merged, [[0, 0, 10, 10]])
    merged, _, _ = ops.gbciou_merge(boxes, scores, None, threshold=float(np.nextafter(0.5, 1)), mode="single")
    np.testing.assert_array_equal(merged, [[0, 0, 40, 10]])
    assert ref.boxes.gbciou_penalty(boxes[0], boxes[1]) == 0.5


def test_gbciou_multi_merge_floor_is_strict():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5, penalty 0
    scores = np.array([0.9, 0.8], np.float32)
    merged, _, _ = ops.gbciou_merge(boxes, scores, None, mode="multi", merge_iou=0.5)
    assert len(merged) == 2
    merged, _, _ = ops.gbciou_merge(boxes, scores, None, mode="multi",
                                    merge_iou=float(np.nextafter(np.float32(0.5), np.float32(0))))
    np.testing.assert_array_equal(merged, [[0, 0, 10, 10]])


def test_gbciou_multi_keeps_separate_cells_single_folds_them():
    rng = np.random.default_rng(0)
    cells = np.array([[10, 10, 40, 40], [100, 10, 130, 40], [10, 100, 40, 130]], np.float32)
    dupes = np.repeat(cells, 4, axis=0) + rng.normal(0, 1.0, (12, 4)).astype(np.float32)
    boxes = np.concatenate([cells, dupes])
    scores = np.concatenate([np.full(3, 0.9), rng.uniform(0.3, 0.8, 12)]).astype(np.float32)
    multi, _, _ = ops.gbciou_merge(boxes, scores, None, mode="multi")
    assert len(multi) == 3
    # each cell's box grew into the enclosing box of its duplicates: it holds the cell, a bit larger
    assert np.all(ops.box_iou(multi, cells).max(axis=1) > 0.75)
    assert np.all((multi[:, :2] <= cells[:, :2]) & (multi[:, 2:] >= cells[:, 2:]))
    assert len(ops.gbciou_merge(boxes, scores, None, mode="single")[0]) == 1
    assert len(ops.gbciou_merge(boxes, scores, None, mode="none")[0]) == 15


@pytest.mark.parametrize("mode", MODES)
def test_gbciou_no_candidates(mode):
    b, s, c = ops.gbciou_merge(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), mode=mode)
    assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,) and c.dtype == np.int32


@settings(max_examples=60, deadline=None)
@given(scored_boxes, st.sampled_from(MODES), st.floats(0, 1), st.floats(0, 1))
def test_gbciou_never_returns_more_boxes(data, mode, threshold, merge_iou):
    boxes, scores, class_ids = data
    got = ops.gbciou_merge(boxes, scores, class_ids, threshold, mode, merge_iou)
    assert len(got[0]) <= len(boxes)
    if mode == "single":
        assert len(got[0]) == min(1, len(boxes))
    assert np.all(np.diff(got[1]) <= 0)
    assert_same_detections(got, ref.gbciou_merge(boxes, scores, class_ids, threshold, mode, merge_iou))


# --- BCCD: what single and multi mode do on real frames ------------------------------------------------
def bccd_boxes(xml: Path) -> np.ndarray:
    root = ET.parse(xml).getroot()
    return np.array([[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
                     for o in root.iter("object")], np.float32).reshape(-1, 4)


def jittered_candidates(gt: np.ndarray, rng: np.random.Generator, copies: int = 3):
    """Ground truth (score 0.9) plus `copies` duplicates of each box jittered by ~3 % of its size."""
    size = np.maximum(gt[:, 2:] - gt[:, :2], 1)
    dupes = np.repeat(gt, copies, axis=0) + rng.normal(0, 0.03, (len(gt) * copies, 4)) * np.tile(np.repeat(size, copies, axis=0), 2)
    boxes = np.concatenate([gt, dupes]).astype(np.float32)
    scores = np.concatenate([np.full(len(gt), 0.9), rng.uniform(0.3, 0.85, len(dupes))]).astype(np.float32)
    return boxes, scores


def gbciou_bccd_summary(bccd_dir: Path, split: str = "test", seed: int = 0) -> dict[str, float]:
    """Mean boxes per image: ground truth, candidates in, and out of each merge mode (the README figure)."""
    rng = np.random.default_rng(seed)
    names = (bccd_dir / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    counts = {"images": len(names), "gt": 0.0, "in": 0.0, **{m: 0.0 for m in MODES}, "multi_recall": 0.0}
    for name in names:
        gt = bccd_boxes(bccd_dir / "Annotations" / f"{name}.xml")
        boxes, scores = jittered_candidates(gt, rng)
        counts["gt"] += len(gt)
        counts["in"] += len(boxes)
        for mode in MODES:
            out, _, _ = ops.gbciou_merge(boxes, scores, None, mode=mode)
            counts[mode] += len(out)
            if mode == "multi":  # ground-truth boxes found again (IoU > 0.5 with a merged box)
                counts["multi_recall"] += float((ops.box_iou(gt, out).max(axis=1, initial=0) > 0.5).sum())
    counts["multi_recall"] /= counts["gt"]
    return {k: (v if k in ("images", "multi_recall") else v / len(names)) for k, v in counts.items()}


def test_gbciou_on_bccd_equals_reference(bccd_dir):
    rng = np.random.default_rng(1)
    names = (bccd_dir / "ImageSets" / "Main" / "test.txt").read_text().split()[:8]
    for name in names:
        boxes, scores = jittered_candidates(bccd_boxes(bccd_dir / "Annotations" / f"{name}.xml"), rng)
        for mode in MODES:
            assert_same_detections(ops.gbciou_merge(boxes, scores, None, mode=mode),
                                   ref.gbciou_merge(boxes, scores, None, mode=mode))


def test_gbciou_modes_on_bccd(bccd_dir):
    s = gbciou_bccd_summary(bccd_dir)
    assert s["single"] == 1.0  # the paper's setting folds every frame into one box
    assert s["none"] == s["in"] == 4 * s["gt"]
    # multi removes the duplicates but keeps separate (even touching) cells
    assert abs(s["multi"] - s["gt"]) < 0.05 * s["gt"]
    assert s["multi_recall"] > 0.97


# --- bad input -----------------------------------------------------------------------------------------
BOXES = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
SCORES = np.array([0.9, 0.8], np.float32)


@pytest.mark.parametrize("call, error, message", [
    (lambda: ops.box_iou(np.zeros((5, 3)), BOXES), ValueError, r"a must be \(N, 4\) float32, got \(5, 3\) float64"),
    (lambda: ops.box_iou(BOXES, np.zeros(4, np.float32)), ValueError, r"b must be \(N, 4\) float32, got \(4,\) float32"),
    (lambda: ops.box_iou(BOXES.astype(np.complex64), BOXES), TypeError, "complex64"),
    (lambda: ops.box_iou(BOXES.astype(bool), BOXES), TypeError, "bool"),
    (lambda: ops.box_iou([["a", "b", "c", "d"]], BOXES), TypeError, "<U1"),
    (lambda: ops.box_iou(np.array([[0, 0, np.nan, 1]], np.float32), BOXES), ValueError, "NaN"),
    (lambda: ops.nms(BOXES, SCORES[:1], 0.5), ValueError, r"scores must be \(2,\) float32"),
    (lambda: ops.nms(BOXES, np.array([0.9, np.inf], np.float32), 0.5), ValueError, r"scores contain NaN or infinity \(index 1\)"),
    (lambda: ops.nms(BOXES, SCORES, float("nan")), ValueError, "iou_threshold must be a finite number"),
    (lambda: ops.nms(BOXES, SCORES, 0.5, np.array([0.0, 1.0])), TypeError, "class_ids must be"),
    (lambda: ops.nms(BOXES, SCORES, 0.5, np.array([0, 2**40])), ValueError, "does not fit in int32"),
    (lambda: ops.nms(BOXES, SCORES, 0.5, np.array([0, 1, 2])), ValueError, r"class_ids must be \(2,\) int32"),
    (lambda: ops.nms(BOXES[None], SCORES, 0.5), ValueError, r"got \(1, 2, 4\) float32"),
    (lambda: ops.gbciou_merge(BOXES, SCORES, None, mode="chain"), ValueError, "'multi', 'single' or 'none'"),
    (lambda: ops.gbciou_merge(BOXES, SCORES, None, threshold=float("inf")), ValueError, "threshold must be a finite"),
    (lambda: ops.gbciou_merge(np.array([[0, 0, 1, np.inf]] * 2, np.float32), SCORES, None), ValueError, "row 0, column 3"),
    (lambda: ops.nms(object(), SCORES, 0.5), TypeError, "boxes must be"),
])
def test_bad_input_raises_useful_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_empty_lists_mean_no_boxes():
    # [] arrives as a (0,) float64 array; like segment_cells, the box kernels read it as no boxes.
    assert ops.box_iou([], BOXES).shape == (0, 2) and ops.box_iou(BOXES, []).shape == (2, 0)
    for class_ids in (None, [], np.zeros(0, np.int32)):
        kept = ops.nms([], [], 0.5, class_ids)
        assert kept.shape == (0,) and kept.dtype == np.int64
        boxes, scores, ids = ops.gbciou_merge([], [], class_ids, mode="single")
        assert boxes.shape == (0, 4) and scores.shape == (0,) and ids.shape == (0,) and ids.dtype == np.int32
    with pytest.raises(ValueError, match=r"scores must be \(0,\) float32"):
        ops.nms([], [0.5], 0.5)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) float32, got \(4,\) float32"):
        ops.nms(np.zeros(4, np.float32), [0.5], 0.5)  # a lone box without its row axis is still refused
    with pytest.raises(TypeError, match="class_ids must be"):
        ops.nms(BOXES, SCORES, 0.5, [0.0, 1.0])  # the empty-list allowance is for empty lists only


# --- layouts, inputs untouched, threads ------------------------------------------------------------------
def test_views_and_layouts_give_the_same_answer():
    rng = np.random.default_rng(11)
    boxes, scores, class_ids = clustered(rng, 10, 6)
    want_keep = ref.nms(boxes, scores, 0.45, class_ids)
    want_merge = ref.gbciou_merge(boxes, scores, class_ids)
    big = np.zeros((len(boxes), 9), np.float64)
    big[:, 1:9:2] = boxes  # a strided float64 view
    variants = [np.asfortranarray(boxes), big[:, 1:9:2], boxes[::-1][::-1], boxes.tolist()]
    for b in variants:
        np.testing.assert_array_equal(ops.nms(b, scores, 0.45, class_ids), want_keep)
        assert_same_detections(ops.gbciou_merge(b, scores, class_ids), want_merge)
    # negative strides: the reversed arrays are other inputs, and agree with the reference on them
    rb, rs, rc = boxes[::-1], scores[::-1], class_ids[::-1]
    np.testing.assert_array_equal(ops.nms(rb, rs, 0.45, rc), ref.nms(rb, rs, 0.45, rc))
    np.testing.assert_array_equal(ops.box_iou(rb, boxes[:, ::-1]), ref.box_iou(rb, boxes[:, ::-1]))
    np.testing.assert_array_equal(ops.nms(boxes, scores.astype(np.float64), 0.45, class_ids.astype(np.uint8)), want_keep)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(12)
    boxes, scores, class_ids = clustered(rng, 10, 6)
    copies = [boxes.copy(), scores.copy(), class_ids.copy()]
    ops.box_iou(boxes, boxes)
    ops.nms(boxes, scores, 0.45, class_ids)
    for mode in MODES:
        ops.gbciou_merge(boxes, scores, class_ids, mode=mode)
    for before, after in zip(copies, (boxes, scores, class_ids)):
        np.testing.assert_array_equal(before, after)


def test_many_threads_same_answer_as_one():
    inputs = [clustered(np.random.default_rng(s), 20, 10) for s in range(16)]

    def work(data):
        boxes, scores, class_ids = data
        return ops.nms(boxes, scores, 0.45, class_ids), ops.gbciou_merge(boxes, scores, class_ids)

    serial = [work(d) for d in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(work, inputs * 4))
    for i, (keep, merged) in enumerate(threaded):
        np.testing.assert_array_equal(keep, serial[i % 16][0])
        assert_same_detections(merged, serial[i % 16][1])
