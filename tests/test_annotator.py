"""The Annotator: accepted frame kinds, clear errors for the rest, batching, overrides, no torch."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import fastcell
from fastcell.annotator import Annotator
from fastcell.runtime import open_backend
from fastcell.spec import ModelSpec


@pytest.fixture(scope="module")
def annotator(random_model_dir) -> Annotator:
    # ONNX Runtime fp32: deterministic, so the same frame always gives the same boxes
    return Annotator(open_backend(ModelSpec.load(random_model_dir), "onnxruntime"), max_batch=3)


@pytest.fixture(scope="module")
def frame(bccd_images) -> np.ndarray:
    return cv2.imread(str(bccd_images[0]))


def _same(a, b, atol=1e-3):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


def test_result_contract_on_a_real_frame(annotator, frame):
    r = annotator(frame)
    h, w = frame.shape[:2]
    assert len(r) > 0
    assert r.boxes.dtype == np.float32 and r.boxes.shape == (len(r), 4)
    assert r.scores.dtype == np.float32 and r.class_ids.dtype == np.int32
    assert np.all(r.boxes[:, 0] <= r.boxes[:, 2]) and np.all(r.boxes[:, 1] <= r.boxes[:, 3])
    assert r.boxes.min() >= 0 and np.all(r.boxes[:, [0, 2]] <= w) and np.all(r.boxes[:, [1, 3]] <= h)
    assert np.all(np.diff(r.scores) <= 0)  # descending
    assert np.all(r.scores >= annotator.spec.thresholds.score)
    assert r.labels.shape == (h, w) and r.segmented.shape == frame.shape
    assert r.image is frame and r.classes == ("RBC", "WBC", "Platelets")
    # pixels outside every mask are the fill colour; inside they are the frame's
    outside = r.labels == 0
    assert np.all(r.segmented[outside] == 0)
    np.testing.assert_array_equal(r.segmented[~outside], frame[~outside])


def test_grayscale_bgra_and_16bit_frames_match_their_bgr_equivalent(annotator, frame):
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    gray_bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    _same(annotator(gray), annotator(gray_bgr))
    _same(annotator(gray[:, :, None]), annotator(gray_bgr))
    _same(annotator(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)), annotator(frame))
    deep = frame.astype(np.uint16) * 257  # same picture at 16 bits, full scale 65535
    r16 = annotator(deep)
    _same(r16, annotator(frame))
    assert r16.segmented.dtype == np.uint8  # segmentation runs on the 8-bit view


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((48, 64, 3), np.float32), TypeError, "dtype float32"),
    (np.zeros((48, 64, 2), np.uint8), ValueError, r"shape \(48, 64, 2\)"),
    (np.zeros((0, 64, 3), np.uint8), ValueError, "must not be empty"),
    (np.zeros((2, 48, 64, 3), np.uint8), ValueError, r"shape \(2, 48, 64, 3\)"),
    ("frame.png", TypeError, "got str"),
])
def test_bad_frames_raise_saying_what_was_expected(annotator, bad, error, message):
    """A wrong type (not an array, not uint8/uint16) is a TypeError; a wrong shape a ValueError."""
    with pytest.raises(error, match=message):
        annotator(bad)


def test_batch_names_the_bad_frame_and_matches_single_calls(annotator, frame):
    with pytest.raises(TypeError, match="frame 1:"):
        annotator.batch([frame, np.zeros((4, 4), np.int64)])
    with pytest.raises(ValueError, match="frame 1:"):
        annotator.batch([frame, np.zeros((4, 4, 2), np.uint8)])
    small = cv2.resize(frame, (320, 240))
    tall = np.ascontiguousarray(frame.transpose(1, 0, 2))  # portrait, different letterbox padding
    frames = [frame, small, tall, frame[::2, ::2], small]  # 5 frames > max_batch 3: two chunks
    batched = annotator.batch(frames)
    assert [r.frame_index for r in batched] == list(range(5))
    for f, r in zip(frames, batched):
        _same(r, annotator(f))
        assert r.labels.shape == f.shape[:2]
    assert annotator.batch([]) == []


def test_overrides_replace_the_model_settings(annotator, frame):
    strict = Annotator(annotator.backend, annotator.spec, score=0.6)
    loose = annotator(frame)
    kept = strict(frame)
    assert strict.spec.thresholds.score == 0.6 and annotator.spec.thresholds.score == 0.25
    assert len(kept) < len(loose) and np.all(kept.scores >= 0.6)
    with pytest.raises(TypeError, match="unknown option.*'score_threshold' is now called 'score'"):
        Annotator(annotator.backend, annotator.spec, score_threshold=0.5)
    with pytest.raises(TypeError, match="unknown option"):
        Annotator(annotator.backend, annotator.spec, threshold=0.5)
    with pytest.raises(ValueError, match="merge must be"):
        Annotator(annotator.backend, annotator.spec, merge="average")


def test_segment_and_keep_image_switches(annotator, frame):
    lean = Annotator(annotator.backend, annotator.spec, segment=False, keep_image=False)
    r = lean(frame)
    assert r.labels is None and r.segmented is None and r.image is None
    _same(r, annotator(frame))


def test_load_logs_which_backend_it_chose_and_prints_only_when_asked(random_model_dir, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="fastcell"), fastcell.load(random_model_dir / "model.json") as a:
        backend = a.backend
    assert f"on {backend.name} ({backend.precision})" in caplog.text
    assert capsys.readouterr().out == ""  # a library does not print by default
    with fastcell.load(random_model_dir / "model.json", verbose=True) as a:
        assert f"on {a.backend.name} ({a.backend.precision})" in capsys.readouterr().out


def test_inference_path_never_imports_torch(random_model_dir, frame, tmp_path):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), frame)
    code = (
        "import sys, fastcell\n"
        f"a = fastcell.load({str(random_model_dir / 'model.json')!r})\n"
        "import cv2\n"
        f"r = a(cv2.imread({str(image)!r}))\n"
        f"rs = list(fastcell.stream([{str(image)!r}] * 3, a))\n"
        "assert len(rs) == 3\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    # no GPU for the child: on a GPU machine device="auto" would rightly take the torch-CUDA backend
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr


def test_with_options_keeps_settings_and_changes_only_those_named(annotator, frame):
    strict = Annotator(annotator.backend, annotator.spec, segment=False, score=0.3)
    twin = strict.with_options()
    assert twin.backend is strict.backend and not twin.segment and twin.spec.thresholds.score == 0.3
    _same(twin(frame), strict(frame))
    changed = strict.with_options(segment=True, nms_iou=0.3)
    r = changed(frame)
    assert r.labels is not None and changed.spec.thresholds.score == 0.3 and changed.spec.thresholds.nms_iou == 0.3
    assert not strict.segment and strict.spec.thresholds.nms_iou == annotator.spec.thresholds.nms_iou
    with pytest.raises(TypeError, match="unknown option"):
        strict.with_options(score_threshold=0.5)


def test_siblings_from_with_options_run_in_parallel_threads_correctly(annotator, bccd_images):
    import threading

    frames = [cv2.imread(str(p)) for p in bccd_images[:2]]
    frames[1] = cv2.resize(frames[1], (320, 240))  # another size: another letterbox
    expected = [annotator(f) for f in frames]
    siblings = [annotator.with_options() for _ in frames]
    got: list[list] = [[], []]

    def work(i: int) -> None:
        for _ in range(6):
            got[i].append(siblings[i](frames[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i in range(2):
        assert len(got[i]) == 6
        for r in got[i]:
            _same(r, expected[i], atol=1e-4)
