"""Backends: the choice among them, their contracts, and agreement with each other on real images."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from fastcell.annotator import Annotator
from fastcell.runtime import available_backends, open_backend
from fastcell.spec import ModelSpec

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch (fastcell[train]) is not installed")


@pytest.fixture(scope="module")
def spec(random_model_dir) -> ModelSpec:
    return ModelSpec.load(random_model_dir)


@pytest.fixture(scope="module")
def bccd_batch(bccd_images):
    """Real BCCD frames letterboxed by the product's own preprocessing."""
    frames = [cv2.imread(str(p)) for p in bccd_images[:4]]
    from fastcell.preprocess import Preprocessor

    batch, params = Preprocessor()(frames)
    return frames, batch.copy(), params.copy()


# -- choosing a backend ------------------------------------------------------------------------------
@needs_openvino
def test_auto_prefers_openvino(spec):
    backend = open_backend(spec, "auto")
    assert backend.name == "openvino"
    assert backend.precision in ("bf16", "fp32")
    backend.close()


def test_auto_falls_back_to_onnxruntime(spec, monkeypatch):
    import fastcell.runtime as runtime

    monkeypatch.setattr(runtime, "available_backends", lambda: ["onnxruntime"])
    backend = open_backend(spec, "cpu")
    assert backend.name == "onnxruntime" and backend.precision == "fp32"


def test_missing_engine_says_which_extra(spec, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install "fastcell\[train\]"'):
        open_backend(spec, "torch")


def test_unknown_device_and_precision_are_refused(spec):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        open_backend(spec, "tpu")
    with pytest.raises(ValueError, match="bf16 needs the openvino backend"):
        open_backend(spec, "onnxruntime", precision="bf16")


@needs_openvino
def test_int8_without_calibration_is_refused_with_the_way_out(spec):
    with pytest.raises(ValueError, match="quantize_int8"):
        open_backend(spec, "openvino", precision="int8")


def test_available_backends_lists_what_imports():
    present = available_backends()
    assert "onnxruntime" in present  # a hard dependency
    assert ("openvino" in present) == HAS_OPENVINO


# -- the protocol ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.zeros((1, 3, 416, 416), np.float64), np.zeros((3, 416, 416), np.float32),
                                 np.zeros((1, 3, 320, 320), np.float32), np.zeros((0, 3, 416, 416), np.float32)])
def test_bad_batches_are_refused(spec, bad):
    backend = open_backend(spec, "onnxruntime")
    with pytest.raises(ValueError, match=r"\(N>=1, 3, 416, 416\) float32"):
        backend.infer(bad)


@pytest.mark.parametrize("device", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_outputs_have_the_spec_shapes_and_belong_to_the_caller(spec, bccd_batch, device):
    _, batch, _ = bccd_batch
    backend = open_backend(spec, device, "fp32")
    first = backend.infer(batch[:2])
    kept = [h.copy() for h in first]
    second = backend.infer(batch[2:4])
    for head, h, k in zip(spec.heads, first, kept):
        assert h.shape == (2, spec.head_width, 416 // head.stride, 416 // head.stride)
        assert h.dtype == np.float32
        np.testing.assert_array_equal(h, k)  # not overwritten by the next call
    assert not np.allclose(first[0], second[0])  # different images, different outputs


# -- agreement on real images ------------------------------------------------------------------------
def _fp32_backends(spec):
    backends = [open_backend(spec, "onnxruntime")]
    if HAS_OPENVINO:
        backends.append(open_backend(spec, "openvino", "fp32"))
    if HAS_TORCH:
        backends.append(open_backend(spec, "torch"))
    return backends


def test_fp32_backends_agree_on_raw_heads(spec, bccd_batch):
    _, batch, _ = bccd_batch
    outputs = [(b.name, b.infer(batch)) for b in _fp32_backends(spec)]
    ref_name, ref = outputs[0]
    for name, heads in outputs[1:]:
        for a, b in zip(ref, heads):
            scale = float(np.abs(a).max())
            assert np.abs(a - b).max() <= 1e-3 * max(1.0, scale), f"{name} vs {ref_name}"


def _match(a, b, tol_px=1.0, margin=1e-3, threshold=0.25):
    """Every confident detection of ``a`` has one in ``b`` with the same class and corners within ``tol_px``.

    Detections whose score is within ``margin`` of the threshold may flip either way between
    engines, so they are not required to match.
    """
    for box, score, cls in zip(a.boxes, a.scores, a.class_ids):
        if score < threshold + margin:
            continue
        same = (b.class_ids == cls) & (np.abs(b.boxes - box).max(axis=1) <= tol_px)
        assert same.any(), f"detection {box} ({score:.3f}, class {cls}) missing"


def test_fp32_backends_find_the_same_cells_on_bccd(spec, bccd_batch):
    frames, _, _ = bccd_batch
    results = [Annotator(b, spec).batch(frames) for b in _fp32_backends(spec)]
    assert sum(len(r) for r in results[0]) > 0  # the test model does detect something
    for other in results[1:]:
        for ra, rb in zip(results[0], other):
            _match(ra, rb)
            _match(rb, ra)


@needs_openvino
def test_throughput_mode_gives_the_latency_mode_outputs(spec, bccd_batch):
    _, batch, _ = bccd_batch
    latency = open_backend(spec, "openvino", "fp32").infer(batch)
    throughput = open_backend(spec, "openvino", "fp32", throughput=True).infer(batch)
    for a, b in zip(latency, throughput):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


@needs_openvino
def test_bf16_stays_close_to_fp32(spec, bccd_batch):
    _, batch, _ = bccd_batch
    backend = open_backend(spec, "openvino")
    if backend.precision != "bf16":
        pytest.skip("this CPU runs OpenVINO in fp32 (no bf16)")
    fp32 = open_backend(spec, "onnxruntime").infer(batch)
    for a, b in zip(fp32, backend.infer(batch)):
        # bf16 keeps 8 mantissa bits: a few percent of the output range after 13 layers
        assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()


def _openvino_bf16(spec):
    """OpenVINO in bf16, or a skip where this CPU has no bf16."""
    if not HAS_OPENVINO:
        pytest.skip("openvino is not installed")
    try:
        return open_backend(spec, "openvino", "bf16")
    except ValueError as err:  # "precision='bf16' needs a CPU with bf16 support"
        pytest.skip(str(err))


# Scores of bf16 move by up to ~1e-2 (8 mantissa bits through 13 layers), so detections that close
# to the threshold may appear in one engine only.
BF16_SCORE_MARGIN = 0.02


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_shipped_model_backends_agree_within_a_pixel(default_model_json, bccd_images, precision):
    """Every confident cell ONNX Runtime fp32 finds on real images, OpenVINO finds too (and the other
    way round): same class, corners within 1 px — in fp32 and in bf16, OpenVINO's default."""
    spec = ModelSpec.load(default_model_json)
    frames = [cv2.imread(str(p)) for p in bccd_images]
    ort = Annotator(open_backend(spec, "onnxruntime"), spec).batch(frames)
    assert sum(len(r) for r in ort) >= len(frames)  # a trained model finds cells in every field
    if precision == "bf16":
        backend, margin = _openvino_bf16(spec), BF16_SCORE_MARGIN
    elif HAS_OPENVINO:
        backend, margin = open_backend(spec, "openvino", "fp32"), 1e-3
    else:
        pytest.skip("openvino is not installed")
    assert backend.precision == precision
    for ra, rb in zip(ort, Annotator(backend, spec).batch(frames)):
        _match(ra, rb, margin=margin, threshold=spec.thresholds.score)
        _match(rb, ra, margin=margin, threshold=spec.thresholds.score)


def test_openvino_bf16_boxes_are_within_a_pixel_of_onnxruntime_fp32(spec, bccd_images):
    """Box geometry on real images: bf16 vs fp32, one box per anchor.

    The random test model scores every anchor alike (≈0.366 for all classes), so which boxes survive
    NMS, and their classes, are decided by rounding; with NMS, merging and the cap switched off the
    boxes of (nearly) every anchor are kept, and each must have a partner within 1 px in the other
    engine. Classes are compared by the shipped-model test above, where they mean something.
    """
    backend = _openvino_bf16(spec)
    assert backend.precision == "bf16"
    frames = [cv2.imread(str(p)) for p in bccd_images[:3]]
    every_anchor = dict(segment=False, nms_iou=1.0, merge="none", max_detections=100_000)
    fp32 = Annotator(open_backend(spec, "onnxruntime"), spec, **every_anchor).batch(frames)
    bf16 = Annotator(backend, spec, **every_anchor).batch(frames)
    for a, b in zip(fp32, bf16):
        assert len(a) > 1000 and abs(len(a) - len(b)) <= 0.01 * len(a)  # only threshold flips differ
        for x, y in ((a, b), (b, a)):
            confident = x.boxes[np.abs(x.scores - spec.thresholds.score) > BF16_SCORE_MARGIN]
            nearest = np.array([np.abs(y.boxes - box).max(axis=1).min() for box in confident])
            assert nearest.max() <= 1.0, f"a box {nearest.max():.2f} px from any in the other engine"


def test_int8_calibration_on_real_images_stays_close_to_fp32(random_model_dir, bccd_images, bccd_batch, tmp_path):
    pytest.importorskip("onnx", reason="int8 calibration needs onnx (fastcell[train])")
    import shutil

    from fastcell.runtime.calibrate import quantize_int8

    for name in ("model.onnx", "model.json"):
        shutil.copy(random_model_dir / name, tmp_path / name)
    spec = ModelSpec.load(tmp_path)
    path = quantize_int8(spec, bccd_images[:4])
    assert path == tmp_path / "model_int8.onnx" and path.is_file()
    _, batch, _ = bccd_batch
    fp32 = open_backend(spec, "onnxruntime").infer(batch)
    devices = ["onnxruntime"] + (["openvino"] if HAS_OPENVINO else [])
    for device in devices:
        backend = open_backend(spec, device, "int8")
        assert backend.precision == "int8"
        for a, b in zip(fp32, backend.infer(batch)):
            assert np.abs(a - b).max() <= 0.05 * np.abs(a).max(), device
