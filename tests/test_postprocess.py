"""fastcell.postprocess: head outputs → Results, with the model's settings or overrides.

Real frames: the repo's BCCD samples; head outputs encoded from their VOC boxes, so the boxes that come
back are real cells.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import voc_objects
from fastcell import ops
from fastcell.annotator import Annotator
from fastcell.postprocess import Postprocessor, apply_overrides
from fastcell.frames import check_frame
from fastcell.reference import image as ref
from fastcell.reference.boxes import encode_heads
from fastcell.spec import ModelSpec, Segmentation, Thresholds

SAMPLES = Path(__file__).resolve().parent / "data" / "bccd"
CLASSES = ("RBC", "WBC", "Platelets")
SPEC = ModelSpec(classes=CLASSES, anchors=np.array(
    [[10, 14], [23, 27], [37, 58], [81, 82], [135, 169], [344, 319]], np.float32))
SHAPES = [(13, 13), (26, 26)]  # the output sizes of SPEC.heads (strides 32, 16) at 416


def sample(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BCCD sample k: (BGR image, boxes, class_ids)."""
    path = sorted(SAMPLES.glob("*.jpg"))[k]
    boxes, names = voc_objects(path.with_suffix(".xml"))
    return cv2.imread(str(path)), boxes, np.array([CLASSES.index(name) for name in names])


def heads_for(frames: list[np.ndarray], truths: list[tuple[np.ndarray, np.ndarray]], spec: ModelSpec = SPEC):
    """Letterbox params of the frames and head outputs that decode to their true boxes."""
    params = np.stack([ops.letterbox(f)[1] for f in frames])
    images = []
    for (boxes, class_ids), (scale, px, py, _, _) in zip(truths, params):
        net = boxes * scale + [px, py, px, py]
        small = (np.sqrt((net[:, 2] - net[:, 0]) * (net[:, 3] - net[:, 1])) < 60).astype(int)
        images.append(dict(boxes=net, class_ids=class_ids, objectness=np.full(len(net), 4.0),
                           head=small, anchor=np.zeros(len(net), int)))
    heads = encode_heads(images, num_classes=spec.num_classes, strides=[h.stride for h in spec.heads],
                         anchors=[spec.head_anchors(h) for h in spec.heads], shapes=SHAPES)
    return heads, params


def test_a_batch_is_one_call_for_boxes_and_one_for_masks(monkeypatch):
    frames, truths = [], []
    for k in range(3):
        image, boxes, class_ids = sample(k)
        if k == 1:
            image, boxes = cv2.resize(image, (320, 240)), boxes / 2
        frames.append(image)
        truths.append((boxes, class_ids))
    heads, params = heads_for(frames, truths)
    calls = {"postprocess": 0, "segment_cells_batch": 0}
    for name in calls:
        original = getattr(ops, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(ops, name, counted)
    monkeypatch.setattr(ops, "segment_cells", None)  # per-frame calls would fail
    results = Postprocessor(SPEC)(heads, params, frames)
    assert calls == {"postprocess": 1, "segment_cells_batch": 1}
    s = SPEC.segmentation
    for frame, (boxes, _), r in zip(frames, truths, results):
        assert len(r) >= 0.8 * len(boxes) and r.labels.shape == frame.shape[:2]
        want = ops.segment_cells_batch([frame], [r.boxes], [r.scores], s.hsv_low, s.hsv_high, s.disc, s.fill)[0]
        np.testing.assert_array_equal(r.labels, want[0])
        np.testing.assert_array_equal(r.segmented, want[1])


def test_gray_frames_get_only_the_value_bounds():
    image, boxes, class_ids = sample(0)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray_bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    spec = SPEC.replace(segmentation=Segmentation(disc="ellipse", hsv_low=(0, 10, 30), hsv_high=(179, 255, 200)))
    s = spec.segmentation
    # The problem: a gray pixel has S = 0, so the colour range (S >= 10) rejects every one of them.
    r = ops.segment_cells(gray_bgr, boxes, np.ones(len(boxes), np.float32), s.hsv_low, s.hsv_high, s.disc)
    assert not r[0].any()
    # a mixed batch, checked as the Annotator does ((H, W, 1) → (H, W)); the colour frame keeps its range
    frames = [check_frame(f) for f in (gray, gray[:, :, None], image, gray.astype(np.uint16) * 257)]
    heads, params = heads_for(frames, [(boxes, class_ids)] * 4, spec)
    results = Postprocessor(spec)(heads, params, frames)
    value_only = ((0, 0, 30), (180, 255, 200))
    assert spec.segmentation.bounds(gray=True) == value_only and spec.segmentation.bounds() == (s.hsv_low, s.hsv_high)
    for k, (frame, r) in enumerate(zip(frames, results)):
        bgr = image if k == 2 else gray_bgr
        low, high = (s.hsv_low, s.hsv_high) if k == 2 else value_only
        labels, segmented = ref.segment_cells(bgr, r.boxes, r.scores, low, high, s.disc, s.fill, draw="exact")
        assert (r.labels > 0).mean() > 0.2  # non-empty: most of a BCCD field is cells
        np.testing.assert_array_equal(r.labels, labels)
        np.testing.assert_array_equal(r.segmented, segmented)
    # V still cuts: the brightest background (V > 200) is outside every gray mask
    assert not (gray[results[0].labels > 0] > 200).any() and (gray > 200).any()


def test_max_detections_none_means_no_limit():
    rng = np.random.default_rng(0)
    heads = [rng.normal(0, 1.5, (1, SPEC.head_width, h, w)).astype(np.float32) for h, w in SHAPES]
    for head in heads:
        head[:, 4::SPEC.num_classes + 5] -= 1.0  # an untrained model: hundreds of candidates
    frame = np.zeros((480, 640, 3), np.uint8)
    params = ops.letterbox(frame)[1][None]
    capped = Postprocessor(SPEC, segment=False)(heads, params, [frame])[0]
    unlimited_spec = apply_overrides(SPEC, {"max_detections": None})
    unlimited = Postprocessor(unlimited_spec, segment=False)(heads, params, [frame])[0]
    assert len(capped) == 300 and len(unlimited) > 300
    want = ops.postprocess(heads, params, strides=[32, 16], anchors=[SPEC.head_anchors(h) for h in SPEC.heads],
                           num_classes=3, max_detections=None)[0]
    np.testing.assert_array_equal(unlimited.boxes, want[0])
    from_json = ModelSpec.from_dict({**SPEC.to_dict(), "thresholds": {"max_detections": None}})
    assert from_json.thresholds.max_detections is None
    with pytest.raises(ValueError, match="max_detections must be >= 1 or None"):
        apply_overrides(SPEC, {"max_detections": 0})


@pytest.mark.parametrize("thresholds, message", [
    ({"merge": "x"}, "merge must be 'multi', 'single' or 'none', got 'x'"),
    ({"max_detections": 0}, "max_detections must be >= 1 or None"),
])
def test_bad_thresholds_fail_when_the_model_description_is_read(thresholds, message):
    with pytest.raises(ValueError, match=message):
        Thresholds(**thresholds)
    with pytest.raises(ValueError, match=message):  # a bad model.json fails at load, not at the first frame
        ModelSpec.from_dict({**SPEC.to_dict(), "thresholds": thresholds})


@pytest.mark.parametrize("overrides, message", [
    ({"hsv_low": (0, 20, 0)}, r"overridden together .* got only hsv_low=\(0, 20, 0\)"),
    ({"hsv_high": (179, 255, 200)}, "got only hsv_high"),
    ({"hsv_low": None}, "got only hsv_low=None"),
    ({"hsv_low": (0, 20, 0), "hsv_high": (179, 256, 255)}, r"hsv_high must be 3 integers .* got \(179, 256, 255\)"),
    ({"hsv_low": (0, 20), "hsv_high": (179, 255, 255)}, "hsv_low must be 3 integers"),
    ({"disc": "square"}, "disc must be 'circle' or 'ellipse'"),
])
def test_bad_hsv_overrides_fail_when_given(overrides, message):
    with pytest.raises(ValueError, match=message):
        Annotator(object(), SPEC, **overrides)  # refused before the backend is ever used
    with pytest.raises(ValueError, match=message):
        apply_overrides(SPEC, overrides)


def test_hsv_overrides_and_files_that_are_whole():
    both = apply_overrides(SPEC, {"hsv_low": [0, 30, 0], "hsv_high": [179, 255, 255]}).segmentation
    assert both.hsv_low == (0, 30, 0) and both.hsv_high == (179, 255, 255)
    off = apply_overrides(SPEC, {"hsv_low": None, "hsv_high": None}).segmentation
    assert off.hsv_low is None and off.bounds(gray=True) == (None, None)
    half = {**SPEC.to_dict(), "segmentation": {"hsv_low": [0, 10, 0], "hsv_high": None}}
    with pytest.raises(ValueError, match="hsv_low and hsv_high must both be given or both be None"):
        ModelSpec.from_dict(half)


@pytest.mark.parametrize("name", ["score", "nms_iou", "gbciou", "merge_iou"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0, 2.0])
def test_thresholds_out_of_range_are_refused_through_the_api(name, value):
    import fastcell
    from fastcell.spec import Thresholds

    with pytest.raises(ValueError, match=name):
        Thresholds(**{name: value})
    annotator = fastcell.load(verbose=False)
    with pytest.raises(ValueError, match=name):
        annotator.with_options(**{name: value})
    with pytest.raises(TypeError, match=name):
        Thresholds(**{name: "0.3"})
