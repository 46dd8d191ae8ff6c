"""decode and the one-call postprocess of fastcell.ops against the NumPy references, on random heads,
heads encoding real BCCD boxes, hand-computed and edge cases, bad input, layouts and threads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fastcell import ops
from fastcell._core_loader import core as _core
from fastcell import reference as ref
from fastcell.reference.boxes import encode_heads
from fastcell.spec import HEAD_ANCHORS

C = 3  # BCCD: RBC, WBC, Platelets
ANCHORS6 = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)
STRIDES = [32, 16]
ANCHORS = [ANCHORS6[list(HEAD_ANCHORS[s])] for s in STRIDES]
SHAPES = [(13, 13), (26, 26)]
KW = dict(strides=STRIDES, anchors=ANCHORS, num_classes=C)


def random_heads(rng, batch=2, obj_mean=-4.0):
    """Head outputs of an untrained-looking model: random logits, objectness mostly low."""
    heads = []
    for h, w in SHAPES:
        head = rng.normal(0, 1.5, (batch, 3 * (C + 5), h, w)).astype(np.float32)
        head[:, 4::C + 5] += obj_mean
        heads.append(head)
    return heads


def letterbox_params(width, height, size=416):
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    return np.array([scale, (size - new_w) // 2, (size - new_h) // 2, width, height], np.float32)


def assert_close_detections(got, want):
    """Boxes equal to float32 rounding (exp/sigmoid may differ by an ulp between libm and NumPy)."""
    assert len(got) == len(want)
    for (gb, gs, gc), (wb, ws, wc) in zip(got, want):
        assert gb.dtype == np.float32 and gs.dtype == np.float32 and gc.dtype == np.int32
        assert gb.shape == wb.shape and gb.shape[1:] == (4,)
        np.testing.assert_allclose(gb, wb, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(gs, ws, rtol=1e-6)
        np.testing.assert_array_equal(gc, wc)


# --- decode ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.25, 0.6])
def test_decode_equals_reference(seed, threshold):
    heads = random_heads(np.random.default_rng(seed))
    got = ops.decode(heads, STRIDES, ANCHORS, C, threshold)
    assert_close_detections(got, ref.decode(heads, STRIDES, ANCHORS, C, threshold))
    if threshold == 0.0:
        assert all(len(b) == 3 * (13 * 13 + 26 * 26) for b, _, _ in got)
    assert all(np.all(s >= threshold) for _, s, _ in got)


def test_decode_hand_computed_cell():
    head = np.zeros((1, 3 * (C + 5), 13, 13), np.float32)
    head[0, 4::C + 5] = -30  # every slot empty …
    a = 1  # … except anchor 1 of cell (gx=3, gy=5): tx=ty=0 → centre (3.5, 5.5)·32; tw=log 2 → 2·anchor_w
    block = head[0, a * (C + 5):(a + 1) * (C + 5)]
    block[2, 5, 3], block[3, 5, 3] = np.log(2.0), 0.0
    block[4, 5, 3] = 0.0                            # sigmoid(obj) = 0.5
    block[5:, 5, 3] = [-1.0, 40.0, 40.0]            # classes 1 and 2 tie: the lower wins; sigmoid(40) = 1.0
    anchors = np.array([[10, 10], [20, 30], [40, 40]], np.float32)
    (boxes, scores, class_ids), = ops.decode([head], [32], [anchors], C, 0.5)
    np.testing.assert_allclose(boxes, [[112 - 20, 176 - 15, 112 + 20, 176 + 15]], rtol=1e-6)
    assert scores.tolist() == [0.5] and class_ids.tolist() == [1]
    # score exactly at the threshold is kept (>=); just above the score it is not
    (boxes, _, _), = ops.decode([head], [32], [anchors], C, float(np.nextafter(0.5, 1)))
    assert boxes.shape == (0, 4)


def test_decode_clamps_wild_sizes():
    head = np.full((1, 3 * (C + 5), 13, 13), -30, np.float32)
    head[0, 2, 0, 0], head[0, 3, 0, 0], head[0, 4, 0, 0], head[0, 5, 0, 0] = 500.0, 500.0, 10.0, 10.0
    (boxes, _, _), = ops.decode([head], [32], [ANCHORS[0]], C, 0.5)
    assert np.all(np.isfinite(boxes))
    np.testing.assert_allclose(boxes[0, 2] - boxes[0, 0], 1000 / 16 * ANCHORS[0][0, 0], rtol=1e-6)


def test_decode_nothing_above_threshold():
    got = ops.decode(random_heads(np.random.default_rng(0), batch=3), STRIDES, ANCHORS, C, 1.5)
    assert len(got) == 3
    for b, s, c in got:
        assert b.shape == (0, 4) and s.shape == (0,) and c.shape == (0,)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("channel", [0, 4, 7])
def test_decode_refuses_non_finite_heads(value, channel):
    heads = random_heads(np.random.default_rng(1), obj_mean=-40)  # NaN in a background cell too
    heads[1][1, channel, 20, 9] = value
    with pytest.raises(ValueError, match=rf"heads\[1\] contains NaN or infinity \(image 1, channel {channel}, y 20, x 9\)"):
        ops.decode(heads, STRIDES, ANCHORS, C, 0.25)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ops.postprocess(heads, np.tile(letterbox_params(640, 480), (2, 1)), **KW)


# --- postprocess ----------------------------------------------------------------------------------------
def dense_heads(rng, batch, cells=10, per_cell=6):
    """Heads holding `cells` objects, each seen by `per_cell` (head, anchor) slots with jitter."""
    images = []
    for _ in range(batch):
        centre = rng.uniform(20, 396, (cells, 2))
        size = rng.uniform(20, 120, (cells, 2))
        c = np.repeat(centre, per_cell, axis=0) + rng.normal(0, 2, (cells * per_cell, 2))
        s = np.repeat(size, per_cell, axis=0) * rng.uniform(0.9, 1.1, (cells * per_cell, 2))
        images.append(dict(boxes=np.concatenate([c - s / 2, c + s / 2], 1), class_ids=rng.integers(0, C, cells * per_cell),
                           objectness=rng.uniform(-1, 4, cells * per_cell), head=np.tile(np.repeat([0, 1], 3), cells),
                           anchor=np.tile([0, 1, 2], 2 * cells)))
    return encode_heads(images, shapes=SHAPES, **KW)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("options", [
    {},
    dict(merge="single"),
    dict(merge="none", class_agnostic=True, max_detections=5),
    dict(score_threshold=0.12, nms_iou=0.3, gbciou=0.3, merge_iou=0.2),
    dict(score_threshold=0.5, nms_iou=0.7, merge="multi", max_detections=None),
])
def test_postprocess_equals_reference(seed, options):
    rng = np.random.default_rng(seed)
    params = np.stack([letterbox_params(640, 480), letterbox_params(120, 120), letterbox_params(300, 900)])
    for heads in (random_heads(rng, batch=3), dense_heads(rng, batch=3)):
        got = ops.postprocess(heads, params, **KW, **options)
        want = ref.postprocess(heads, params, **KW, **options)
        assert_close_detections(got, want)
        for (boxes, scores, _), (_, _, _, w, h) in zip(got, params):
            assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= w) and np.all(boxes[:, [1, 3]] <= h)
            assert np.all(boxes[:, 2:] > boxes[:, :2]) and np.all(np.diff(scores) <= 0)


def bccd_frame(xml):
    root = ET.parse(xml).getroot()
    names = ["RBC", "WBC", "Platelets"]
    objects = list(root.iter("object"))
    boxes = np.array([[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects])
    size = root.find("size")
    return boxes.reshape(-1, 4), np.array([names.index(o.find("name").text) for o in objects]), \
        int(size.find("width").text), int(size.find("height").text)


def test_postprocess_recovers_bccd_boxes(bccd_dir):
    """Real BCCD ground truth → letterbox → heads (each box in 2 slots, jittered) → postprocess: the
    boxes come back in original pixels, and equal to the reference."""
    rng = np.random.default_rng(5)
    names = (bccd_dir / "ImageSets" / "Main" / "test.txt").read_text().split()[:12]
    frames = [bccd_frame(bccd_dir / "Annotations" / f"{n}.xml") for n in names]
    params = np.stack([letterbox_params(w, h) for _, _, w, h in frames])
    images = []
    for (gt, cls, _, _), (scale, px, py, _, _) in zip(frames, params):
        real = (gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])  # BCCD has zero-size boxes: no cell there
        gt, cls = gt[real], cls[real]
        net = gt * scale + [px, py, px, py]
        side = np.sqrt((net[:, 2] - net[:, 0]) * (net[:, 3] - net[:, 1]))
        head = (side < 60).astype(int)  # small cells on the 26×26 head, like a trained model
        k = len(net)
        images.append(dict(boxes=np.concatenate([net, net + rng.normal(0, 1.0, net.shape)]),  # box + a duplicate
                           class_ids=np.tile(cls, 2), objectness=np.repeat([5.0, 1.0], k),
                           head=np.tile(head, 2), anchor=np.repeat([0, 1], k), gt=gt))
    heads = encode_heads(images, shapes=SHAPES, **KW)
    got = ops.postprocess(heads, params, **KW)
    assert_close_detections(got, ref.postprocess(heads, params, **KW))
    found = total = 0
    for (boxes, _, _), image in zip(got, images):
        gt = image["gt"]
        total += len(gt)
        found += int((ops.box_iou(gt.astype(np.float32), boxes).max(axis=1, initial=0) > 0.8).sum())
    assert found >= 0.9 * total  # the rest share a grid slot with a neighbour (a YOLO limit, not ours)


def test_postprocess_padding_and_outside_boxes():
    params = letterbox_params(640, 480)  # scale 0.65, pad_y 52: rows 0–51 of the input are padding
    images = [dict(boxes=np.array([[100, 5, 140, 45],     # wholly in the top padding → dropped
                                   [300, 30, 380, 110],   # straddles the padding edge → clipped at y = 0
                                   [150, 150, 250, 250]]),  # inside
                   class_ids=[0, 1, 2], objectness=[4.0, 3.0, 2.0], head=[0, 0, 0], anchor=[0, 1, 2])]
    heads = encode_heads(images, shapes=SHAPES, **KW)
    (boxes, scores, class_ids), = ops.postprocess(heads, params, **KW)
    assert class_ids.tolist() == [1, 2]
    assert boxes[0, 1] == 0.0
    np.testing.assert_allclose(boxes[1], np.array([150, 98, 250, 198]) / 0.65, rtol=1e-4)
    assert_close_detections([(boxes, scores, class_ids)], ref.postprocess(heads, params, **KW))
    (capped, _, _), = ops.postprocess(heads, params, max_detections=1, **KW)
    np.testing.assert_array_equal(capped, boxes[:1])


def test_postprocess_no_candidates_and_single_row_params():
    heads = random_heads(np.random.default_rng(0), batch=1, obj_mean=-40)
    (boxes, scores, class_ids), = ops.postprocess(heads, letterbox_params(640, 480), **KW)
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32 and scores.shape == (0,) and class_ids.shape == (0,)


@pytest.mark.parametrize("change, error, message", [
    (dict(params=np.zeros((2, 4), np.float32)), ValueError, r"params must be \(2, 5\) float32"),
    (dict(params=np.array([[0.0, 0, 0, 640, 480]] * 2, np.float32)), ValueError, r"params\[0\].*positive"),
    (dict(strides=[32]), ValueError, "one entry per head"),
    (dict(num_classes=2), ValueError, r"heads\[0\] has 24 channels, expected 3 anchors"),
    (dict(num_classes=0), ValueError, r"num_classes must be in \[1, 2147483642\], got 0"),
    # 2**31 - 1 once overflowed int in A·(C+5) and printed a negative channel count.
    (dict(num_classes=2**31 - 1), ValueError, r"num_classes must be in \[1, 2147483642\], got 2147483647"),
    (dict(num_classes=2**40), ValueError, r"num_classes must be in \[1, 2147483642\], got 1099511627776"),
    (dict(num_classes=2**31 - 6), ValueError, r"expected 3 anchors × \(2147483642 classes \+ 5\) = 6442450941"),
    (dict(anchors=[ANCHORS[0][:, :1], ANCHORS[1]]), ValueError, r"anchors\[0\] must be \(A, 2\)"),
    (dict(anchors=[-ANCHORS[0], ANCHORS[1]]), ValueError, "positive, finite"),
    (dict(strides=[0, 16]), ValueError, r"strides\[0\] must be positive"),
    (dict(max_detections=0), ValueError, "max_detections must be >= 1"),
    (dict(merge="chain"), ValueError, "'multi', 'single' or 'none'"),
    (dict(score_threshold=float("nan")), ValueError, "score_threshold must be a finite number"),
    (dict(heads=5), TypeError, "heads must be a list"),
    (dict(heads=[np.zeros((2, 24, 13), np.float32)] * 2), ValueError, r"heads\[0\] must be .* got \(2, 24, 13\) float32"),
    (dict(heads=[np.zeros((2, 24, 13, 13), np.float32), np.zeros((1, 24, 26, 26), np.float32)]), ValueError, "batch size"),
    (dict(heads=[np.zeros((2, 24, 13, 13), np.complex64)] * 2), TypeError, "complex64"),
])
def test_postprocess_bad_input(change, error, message):
    rng = np.random.default_rng(0)
    args = dict(heads=random_heads(rng), params=np.tile(letterbox_params(640, 480), (2, 1)), **KW)
    args.update(change)
    with pytest.raises(error, match=message):
        ops.postprocess(args.pop("heads"), args.pop("params"), **args)


@pytest.mark.parametrize("call", [
    lambda: ops.postprocess([], np.zeros((0, 5), np.float32), strides=[], anchors=[], num_classes=C),
    lambda: _core.postprocess([], np.zeros((0, 5), np.float32), [], [], C, 0.25, 0.45, "multi", 0.5, 0.5, False, 300),
    lambda: ops.decode([], [], [], C, 0.25),
    lambda: _core.decode([], [], [], C, 0.25),
])
def test_no_heads_is_a_value_error_not_a_crash(call):
    # The batch size comes from heads[0]; an empty list must be refused before anything reads it.
    with pytest.raises(ValueError, match="heads must hold at least one head output, got an empty list"):
        call()


def test_empty_batches_and_grids():
    empty = [np.zeros((0, 3 * (C + 5), h, w), np.float32) for h, w in SHAPES]
    assert ops.postprocess(empty, np.zeros((0, 5), np.float32), **KW) == []
    assert ops.decode(empty, STRIDES, ANCHORS, C, 0.25) == []
    no_cells = [np.zeros((1, 3 * (C + 5), 0, 0), np.float32)] * 2  # a 0×0 grid: nothing to decode
    (boxes, scores, class_ids), = ops.postprocess(no_cells, letterbox_params(640, 480), **KW)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and class_ids.shape == (0,)
    with pytest.raises(ValueError, match=r"params must be \(1, 5\) float32"):
        ops.postprocess(random_heads(np.random.default_rng(0), batch=1), np.zeros((0, 5), np.float32), **KW)
    with pytest.raises(ValueError, match=r"anchors\[0\] must be \(A, 2\)"):
        ops.decode([np.zeros((1, 0, 13, 13), np.float32)], [32], [np.zeros((0, 2), np.float32)], C, 0.25)
    with pytest.raises(TypeError, match=r"strides\[0\] must be a number, got None"):
        ops.postprocess(empty, np.zeros((0, 5), np.float32), strides=[None, 16], anchors=ANCHORS, num_classes=C)


def test_layouts_and_views_give_the_same_answer():
    rng = np.random.default_rng(3)
    heads = dense_heads(rng, batch=2)
    params = np.tile(letterbox_params(640, 480), (2, 1))
    want = ops.postprocess(heads, params, **KW)
    wide = [np.zeros(h.shape[:3] + (2 * h.shape[3],), np.float64) for h in heads]
    for w, h in zip(wide, heads):
        w[..., ::2] = h
    for variant in ([np.asfortranarray(h) for h in heads], [w[..., ::2] for w in wide], tuple(heads)):
        assert_close_detections(ops.postprocess(variant, np.asfortranarray(params), **KW), want)
    flipped = [h[::-1] for h in heads]  # negative stride over the batch: image order reverses
    assert_close_detections(ops.postprocess(flipped, params, **KW), want[::-1])
    assert_close_detections(ops.decode(flipped, STRIDES, ANCHORS, C, 0.25)[::-1], ops.decode(heads, STRIDES, ANCHORS, C, 0.25))


def test_inputs_not_modified_and_threads_agree():
    rng = np.random.default_rng(4)
    batches = [dense_heads(rng, batch=2) for _ in range(6)]
    params = np.tile(letterbox_params(640, 480), (2, 1))
    copies = [[h.copy() for h in heads] for heads in batches]
    serial = [ops.postprocess(heads, params, **KW) for heads in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(lambda heads: ops.postprocess(heads, params, **KW), batches * 4))
    for i, got in enumerate(threaded):
        for (gb, gs, gc), (sb, ss, sc) in zip(got, serial[i % 6]):
            np.testing.assert_array_equal(gb, sb)
            np.testing.assert_array_equal(gs, ss)
            np.testing.assert_array_equal(gc, sc)
    for before, heads in zip(copies, batches):
        for b, h in zip(before, heads):
            np.testing.assert_array_equal(b, h)
