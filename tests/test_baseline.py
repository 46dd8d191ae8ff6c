"""The benchmark baseline (fastcell.reference.baseline) computes what fastcell computes.

A baseline that disagreed with fastcell would make the benchmark's ratios meaningless, so it is held to
the same results on real BCCD frames: boxes within 1e-3 px after NMS and merging, masks equal except
for disc-edge pixels (under 0.5 % of the mask pixels).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell import ops
from fastcell.reference import baseline
from fastcell.reference.boxes import encode_heads
from fastcell.spec import HEAD_ANCHORS, Segmentation, Thresholds

C = 3
ANCHORS6 = np.array([[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32)
STRIDES = [32, 16]
KW = dict(strides=STRIDES, anchors=[ANCHORS6[list(HEAD_ANCHORS[s])] for s in STRIDES], num_classes=C)
SHAPES = [(13, 13), (26, 26)]
CLASSES = ("RBC", "WBC", "Platelets")
DEFAULTS = Thresholds()  # the shipped defaults


def thresholds(t: Thresholds = DEFAULTS) -> dict:
    return dict(score_threshold=t.score, nms_iou=t.nms_iou, merge=t.merge, gbciou=t.gbciou, merge_iou=t.merge_iou,
                class_agnostic=t.class_agnostic, max_detections=t.max_detections)


def bccd_truth(bccd_dir, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, boxes, class_ids) of one BCCD frame, zero-size boxes dropped."""
    root = ET.parse(bccd_dir / "Annotations" / f"{name}.xml").getroot()
    objects = list(root.iter("object"))
    boxes = np.array([[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
                      for o in objects], np.float32).reshape(-1, 4)
    class_ids = np.array([CLASSES.index(o.find("name").text) for o in objects], np.int32)
    real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return cv2.imread(str(bccd_dir / "JPEGImages" / f"{name}.jpg")), boxes[real], class_ids[real]


def model_like_heads(rng, truths, params) -> list[np.ndarray]:
    """Heads a trained model might give: each true cell in three slots (jittered, so NMS and GBCIOU
    have work), over background objectness noise that lets a few stray candidates through."""
    images = []
    for (_, gt, cls), (scale, px, py, _, _) in zip(truths, params):
        net = gt * scale + [px, py, px, py]
        k = len(net)
        small = (np.sqrt((net[:, 2] - net[:, 0]) * (net[:, 3] - net[:, 1])) < 60).astype(int)
        images.append(dict(boxes=np.concatenate([net + rng.normal(0, s, net.shape) for s in (0.0, 1.5, 3.0)]),
                           class_ids=np.tile(cls, 3), objectness=rng.uniform(-1, 5, 3 * k),
                           head=np.concatenate([small, small, 1 - small]), anchor=np.repeat([0, 1, 2], k)))
    heads = encode_heads(images, shapes=SHAPES, **KW)
    for head in heads:
        obj = head[:, 4::C + 5]
        noise = obj == -10.0  # empty slots
        obj[noise] = rng.normal(-4, 1.5, int(noise.sum()))
        head[:, 4::C + 5] = obj
    return heads


def letterbox_params(width: int, height: int, size: int = 416) -> np.ndarray:
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    return np.array([scale, (size - new_w) // 2, (size - new_h) // 2, width, height], np.float32)


def assert_same_detections(got, want) -> None:
    """The same boxes, compared as sets: the baseline scores in float32, fastcell in float64, so two
    scores one ulp apart may come out in either order."""
    assert len(got) == len(want)
    for (gb, gs, gc), (wb, ws, wc) in zip(got, want):
        assert gb.shape == wb.shape and np.all(np.diff(gs) <= 0) and np.all(np.diff(ws) <= 0)
        g, w = np.lexsort((gb[:, 1], gb[:, 0])), np.lexsort((wb[:, 1], wb[:, 0]))
        np.testing.assert_allclose(gb[g], wb[w], atol=1e-3)
        np.testing.assert_allclose(gs[g], ws[w], rtol=1e-5)
        np.testing.assert_array_equal(gc[g], wc[w])


@pytest.fixture(scope="module")
def truths(bccd_dir):
    names = (bccd_dir / "ImageSets" / "Main" / "test.txt").read_text().split()[:8]
    return [bccd_truth(bccd_dir, n) for n in names]


@pytest.mark.parametrize("options", [{}, dict(merge="single"), dict(merge="none", class_agnostic=True),
                                     dict(score_threshold=0.05, max_detections=None)])
def test_postprocess_agrees_on_bccd(truths, options):
    rng = np.random.default_rng(1)
    params = np.stack([letterbox_params(img.shape[1], img.shape[0]) for img, _, _ in truths])
    heads = model_like_heads(rng, truths, params)
    args = {**KW, **thresholds(), **options}
    got = ops.postprocess(heads, params, **args)
    # real work: BCCD frames hold ~14 cells each ("single" folds each frame into one box)
    assert sum(len(g[0]) for g in got) >= (len(truths) if options.get("merge") == "single" else 50)
    assert_same_detections(baseline.postprocess(heads, params, **args), got)


@pytest.mark.parametrize("seed", range(3))
def test_postprocess_agrees_on_dense_candidates(seed):
    rng = np.random.default_rng(seed)
    heads = [rng.normal(0, 1.5, (2, 3 * (C + 5), h, w)).astype(np.float32) for h, w in SHAPES]
    for head in heads:
        head[:, 4::C + 5] -= 1.0  # hundreds of candidates per image
    params = np.stack([letterbox_params(640, 480)] * 2)
    args = {**KW, **thresholds(), "max_detections": None}
    got = ops.postprocess(heads, params, **args)
    assert min(len(g[0]) for g in got) > 100
    assert_same_detections(baseline.postprocess(heads, params, **args), got)


@pytest.mark.parametrize("per_class", [True, False])
def test_nms_keeps_the_same_boxes(per_class):
    rng = np.random.default_rng(4)
    centres = np.repeat(rng.uniform(0, 400, (60, 2)), 8, axis=0) + rng.normal(0, 4, (480, 2))
    sizes = np.repeat(rng.uniform(15, 60, (60, 2)), 8, axis=0)
    boxes = np.hstack([centres - sizes / 2, centres + sizes / 2]).astype(np.float32)
    scores = rng.random(480).astype(np.float32)
    class_ids = rng.integers(0, C, 480).astype(np.int32) if per_class else None
    np.testing.assert_array_equal(baseline.nms(boxes, scores, 0.45, class_ids), ops.nms(boxes, scores, 0.45, class_ids))


def near_disc_edges(shape, boxes, disc) -> np.ndarray:
    """Pixels whose centre is within one pixel of some box's disc edge."""
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    near = np.zeros(shape, bool)
    for x1, y1, x2, y2 in boxes.astype(np.float64):
        a, b = ((min(x2 - x1, y2 - y1) / 2,) * 2) if disc == "circle" else ((x2 - x1) / 2, (y2 - y1) / 2)
        rho = np.sqrt(((xs + 0.5 - (x1 + x2) / 2) / a) ** 2 + ((ys + 0.5 - (y1 + y2) / 2) / b) ** 2)
        near |= np.abs(rho - 1) * min(a, b) <= 1.0
    return near


@pytest.mark.parametrize("settings", [Segmentation(), Segmentation(disc="circle", hsv_low=None, hsv_high=None),
                                      Segmentation(disc="circle", hsv_low=(150, 20, 0), hsv_high=(20, 255, 255))])
def test_segment_cells_agrees_on_bccd(truths, settings):
    rng = np.random.default_rng(2)
    differ = total = 0
    for image, boxes, _ in truths:
        scores = rng.random(len(boxes)).astype(np.float32)
        args = (settings.hsv_low, settings.hsv_high, settings.disc, (7, 8, 9))
        labels, segmented = ops.segment_cells(image, boxes, scores, *args)
        base_labels, base_segmented = baseline.segment_cells(image, boxes, scores, *args)
        mismatch = labels != base_labels
        assert not (mismatch & ~near_disc_edges(image.shape[:2], boxes, settings.disc)).any()
        same = ~mismatch
        np.testing.assert_array_equal(segmented[same], base_segmented[same])
        differ, total = differ + int(mismatch.sum()), total + int((labels > 0).sum())
    assert total > 0 and differ / total < 0.005


@pytest.mark.parametrize("size", [(640, 480), (333, 251), (200, 420)])
def test_letterbox_agrees_within_one_step(size):
    image = cv2.resize(cv2.imread(str(Path(__file__).parent / "data" / "bccd" / "BloodImage_00007.jpg")), size)
    ours, ours_params = ops.letterbox(image)
    theirs, theirs_params = baseline.letterbox(image)
    np.testing.assert_array_equal(ours_params, theirs_params)
    # cv2 rounds the resized pixels to uint8 before scaling; fastcell keeps them in float
    assert np.abs(ours - theirs).max() <= 1 / 255 + 1e-6
