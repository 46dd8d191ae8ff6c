"""The GPU path against the CPU: CUDA twins vs the C++ core, TensorRT vs ONNX Runtime, engine cache.

Every test here needs an NVIDIA GPU and is marked ``gpu``; without one they skip, saying why ("no
CUDA device", "tensorrt not installed", or a build without the CUDA kernels). The CPU side of the
engine cache is tested without a GPU in test_tensorrt_cache.py.

The CUDA twins share the CPU core's per-element code and are compiled without FMA contraction, so
letterbox, NMS, GBCIOU and segmentation must agree bit for bit; decode may differ in the last bit of
a float64 exp (libm vs CUDA), so its boxes are compared to 1e-6 relative.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import voc_objects
from fastcell import ops

pytestmark = pytest.mark.gpu

STRIDES = (32.0, 16.0)
ANCHORS = (np.array([[68, 66], [86, 83], [140, 125]], np.float32), np.array([[12, 12], [26, 27], [44, 43]], np.float32))


@pytest.fixture(scope="module")
def core():
    from fastcell._core_loader import core

    if not core.has_cuda():
        pytest.skip("no CUDA kernels in this build of fastcell._core (built with FASTCELL_CUDA=OFF or no toolkit)")
    if core.cuda_device_count() == 0:
        pytest.skip("no CUDA device")
    return core


@pytest.fixture(scope="module")
def trt_ready() -> None:
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt not installed (pip install \"fastcell[tensorrt]\")")
    from fastcell.runtime import _cuda

    if _cuda.device_count() == 0:
        pytest.skip("no CUDA device")


def read_bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def voc_boxes(bccd_dir: Path, image_path: Path) -> np.ndarray:
    return voc_objects(bccd_dir / "Annotations" / (image_path.stem + ".xml"))[0]


# -- letterbox ---------------------------------------------------------------------------------------------
def test_letterbox_equals_cpu_on_bccd(core, bccd_images: list[Path]) -> None:
    frames = np.stack([read_bgr(p) for p in bccd_images])
    gpu, gpu_params = core.cuda_letterbox_batch(frames, 416, 114.0)
    cpu, cpu_params = ops.letterbox_batch(list(frames))
    np.testing.assert_array_equal(gpu_params, cpu_params)
    np.testing.assert_array_equal(gpu, cpu)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_letterbox_equals_cpu_on_random_frames(core, seed: int, channels: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 900, size=2))
    size = int(rng.choice([416, 320, 17]))
    frames = rng.integers(0, 256, size=(2, h, w, channels), dtype=np.uint8)
    gpu, gpu_params = core.cuda_letterbox_batch(frames, size, 114.0)
    for i in range(2):
        image = frames[i, :, :, 0] if channels == 1 else frames[i]
        chw, params = ops.letterbox(image, size)
        np.testing.assert_array_equal(gpu_params[i], params)
        np.testing.assert_array_equal(gpu[i], chw)


# -- decode ------------------------------------------------------------------------------------------------
def random_heads(rng: np.random.Generator, batch: int, classes: int) -> list[np.ndarray]:
    heads = []
    for cells in (13, 26):
        head = rng.normal(0.0, 2.0, size=(batch, 3 * (classes + 5), cells, cells)).astype(np.float32)
        head[:, 4::classes + 5] += rng.choice([-6.0, 2.0], size=(batch, 3, cells, cells), p=[0.9, 0.1])
        heads.append(head)
    return heads


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.9])
def test_decode_equals_cpu(core, seed: int, threshold: float) -> None:
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(1, 5))
    heads = random_heads(rng, batch=3, classes=classes)
    gpu = core.cuda_decode(heads, list(STRIDES), list(ANCHORS), classes, threshold)
    cpu = ops.decode(heads, STRIDES, ANCHORS, classes, threshold)
    assert len(gpu) == len(cpu) == 3
    for (gb, gs, gc), (cb, cs, cc) in zip(gpu, cpu):
        assert len(gs) == len(cs)  # a score within 1 ulp of the threshold would differ: none here
        np.testing.assert_array_equal(gc, cc)
        np.testing.assert_allclose(gs, cs, rtol=1e-6, atol=0)
        np.testing.assert_allclose(gb, cb, rtol=1e-6, atol=1e-4)


def test_decode_reports_the_first_non_finite_value_like_cpu(core) -> None:
    heads = random_heads(np.random.default_rng(0), batch=2, classes=3)
    heads[1][1, 7, 2, 3] = np.nan
    with pytest.raises(ValueError) as cpu_error:
        ops.decode(heads, STRIDES, ANCHORS, 3, 0.25)
    with pytest.raises(ValueError) as gpu_error:
        core.cuda_decode(heads, list(STRIDES), list(ANCHORS), 3, 0.25)
    assert str(gpu_error.value) == str(cpu_error.value)
    assert "image 1, channel 7, y 2, x 3" in str(gpu_error.value)


# -- NMS and GBCIOU ----------------------------------------------------------------------------------------
def random_boxes(rng: np.random.Generator, n: int, tied_scores: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 400, size=(n, 2))
    wh = rng.uniform(1, 80, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if tied_scores:  # many exact ties: the index tie-break must match
        scores = (np.round(scores * 8) / 8).astype(np.float32)
    classes = rng.integers(0, 3, n).astype(np.int32)
    return boxes, scores, classes


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 700, 3000])
@pytest.mark.parametrize("iou", [-0.1, 0.0, 0.45, 0.7, 1.0])
def test_nms_equals_cpu(core, seed: int, n: int, iou: float) -> None:
    boxes, scores, classes = random_boxes(np.random.default_rng(seed), n, tied_scores=seed % 2 == 1)
    np.testing.assert_array_equal(core.cuda_nms(boxes, scores, iou), ops.nms(boxes, scores, iou))
    np.testing.assert_array_equal(core.cuda_nms(boxes, scores, iou, classes), ops.nms(boxes, scores, iou, classes))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["multi", "single", "none"])
@pytest.mark.parametrize("n", [0, 1, 40, 600])
def test_gbciou_merge_equals_cpu(core, seed: int, mode: str, n: int) -> None:
    boxes, scores, classes = random_boxes(np.random.default_rng(100 + seed), n, tied_scores=seed % 2 == 1)
    for threshold, merge_iou in ((0.5, 0.5), (0.9, 0.2)):
        gpu = core.cuda_gbciou_merge(boxes, scores, classes, threshold, mode, merge_iou)
        cpu = ops.gbciou_merge(boxes, scores, classes, threshold=threshold, mode=mode, merge_iou=merge_iou)
        for g, c in zip(gpu, cpu):
            np.testing.assert_array_equal(g, c)


# -- circle / HSV segmentation ------------------------------------------------------------------------------
@pytest.mark.parametrize("disc", ["circle", "ellipse"])
@pytest.mark.parametrize("hsv", [None, ((0, 40, 0), (179, 255, 255)), ((170, 20, 50), (10, 255, 255))])
def test_segment_cells_equals_cpu_on_bccd(core, bccd_dir: Path, bccd_images: list[Path], disc: str, hsv) -> None:
    rng = np.random.default_rng(7)
    for path in bccd_images:
        image = read_bgr(path)
        boxes = voc_boxes(bccd_dir, path)
        scores = rng.uniform(0.2, 1.0, len(boxes)).astype(np.float32)
        low, high = hsv if hsv else (None, None)
        gpu = core.cuda_segment_cells(image, boxes, scores, low, high, disc, (0, 0, 255))
        cpu = ops.segment_cells(image, boxes, scores, hsv_low=low, hsv_high=high, disc=disc, fill=(0, 0, 255))
        np.testing.assert_array_equal(gpu[0], cpu[0])
        np.testing.assert_array_equal(gpu[1], cpu[1])


@pytest.mark.parametrize("seed", range(6))
def test_segment_cells_equals_cpu_on_random_cases(core, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 300, size=2))
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    n = int(rng.integers(0, 400))
    xy = rng.uniform(-50, max(h, w) + 50, size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(-5, 120, size=(n, 2))], axis=1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)  # ties
    if n > 4:  # the edges the CPU handles: NaN/inf boxes (empty masks), NaN scores (painted last)
        boxes[0, 1] = np.nan
        boxes[1, 2] = np.inf
        scores[2] = np.nan
    gpu = core.cuda_segment_cells(image, boxes, scores, (20, 30, 40), (150, 255, 250), "circle", (1, 2, 3))
    cpu = ops.segment_cells(image, boxes, scores, hsv_low=(20, 30, 40), hsv_high=(150, 255, 250), fill=(1, 2, 3))
    np.testing.assert_array_equal(gpu[0], cpu[0])
    np.testing.assert_array_equal(gpu[1], cpu[1])


# -- TensorRT vs ONNX Runtime ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_spec(request):
    """The shipped default model when there is one (meaningful detections), else a random test model."""
    from fastcell.spec import ModelSpec

    repo = Path(__file__).resolve().parents[1]
    if (repo / "engines" / "DEFAULT").is_file():
        return ModelSpec.load(request.getfixturevalue("default_model_json"))
    return ModelSpec.load(request.getfixturevalue("random_model_dir"))


@pytest.fixture(scope="module")
def trt_backend(trt_ready, model_spec, tmp_path_factory):
    from fastcell.runtime.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(model_spec, "fp16", max_batch=8, opt_batch=4,
                              cache_dir=tmp_path_factory.mktemp("engines"))
    yield backend
    backend.close()


def postprocessed(spec, heads, params):
    t = spec.thresholds
    return ops.postprocess(heads, params, strides=[h.stride for h in spec.heads],
                           anchors=[spec.head_anchors(h) for h in spec.heads], num_classes=spec.num_classes,
                           score_threshold=t.score, nms_iou=t.nms_iou, merge=t.merge, gbciou=t.gbciou,
                           merge_iou=t.merge_iou)


def assert_same_detections(trt, ort, score_threshold: float, margin: float = 0.02) -> None:
    """Every ORT detection clear of the threshold has a TRT twin (same class, corners within 1 px), and back."""
    for (a_boxes, a_scores, a_cls), (b_boxes, b_scores, b_cls) in ((trt, ort), (ort, trt)):
        for box, score, cls in zip(b_boxes, b_scores, b_cls):
            if score < score_threshold + margin:
                continue  # fp16 may move a borderline score across the threshold
            close = np.all(np.abs(a_boxes - box) <= 1.0, axis=1) & (a_cls == cls)
            assert close.any(), f"no counterpart within 1 px for {box} (class {cls}, score {score:.3f})"


def test_tensorrt_equals_onnxruntime_within_fp16(trt_backend, model_spec, bccd_images: list[Path]) -> None:
    from fastcell.runtime.onnxruntime_backend import OnnxRuntimeBackend

    frames = [read_bgr(p) for p in bccd_images]
    batch, params = ops.letterbox_batch(frames)
    ort = OnnxRuntimeBackend(model_spec)
    ort_heads = ort.infer(batch)
    trt_heads = trt_backend.infer(batch)
    for t, o in zip(trt_heads, ort_heads):
        assert t.shape == o.shape and t.dtype == np.float32
        assert np.abs(t - o).max() < 0.05 * max(1.0, np.abs(o).max())
    trt_dets = postprocessed(model_spec, trt_heads, params)
    ort_dets = postprocessed(model_spec, ort_heads, params)
    for t, o in zip(trt_dets, ort_dets):
        assert_same_detections(t, o, model_spec.thresholds.score)


def test_graph_replay_chunking_and_threads_give_the_same_heads(trt_backend, model_spec) -> None:
    rng = np.random.default_rng(0)
    size = model_spec.input_size
    batch = rng.uniform(0, 1, size=(11, 3, size, size)).astype(np.float32)  # > max_batch 8: two chunks
    first = trt_backend.infer(batch)
    second = trt_backend.infer(batch)  # batch sizes 8 and 3 now replay their CUDA graphs
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    alone = trt_backend.infer(batch[8:])
    for a, b in zip(alone, first):
        np.testing.assert_array_equal(a, b[8:])
    results: dict[int, list[np.ndarray]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, trt_backend.infer(batch[:4])))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(3):
        for a, b in zip(results[i], first):
            np.testing.assert_array_equal(a, b[:4])


def test_engine_cache_rebuilds_on_a_changed_key(trt_ready, model_spec, tmp_path: Path) -> None:
    from fastcell.export import tensorrt as te
    from fastcell.runtime.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(model_spec, "fp16", max_batch=2, opt_batch=1, cache_dir=tmp_path)
    engine = backend.engine_path
    backend.close()
    built = engine.stat().st_mtime_ns
    meta = json.loads(te.metadata_path(engine).read_text())
    assert meta["batch_profile"] == {"min": 1, "opt": 1, "max": 2} and meta["precision"] == "fp16"

    again = TensorRTBackend(model_spec, "fp16", max_batch=2, opt_batch=1, cache_dir=tmp_path)
    assert again.engine_path == engine and engine.stat().st_mtime_ns == built  # reused, not rebuilt
    again.close()

    # Make the cached engine look foreign (another TensorRT): refused when asked to, rebuilt otherwise.
    meta["key"]["tensorrt_version"] = "0.0.0"
    te.metadata_path(engine).write_text(json.dumps(meta))
    with pytest.raises(te.StaleEngineError, match="TensorRT 0.0.0"):
        TensorRTBackend(model_spec, "fp16", max_batch=2, opt_batch=1, cache_dir=tmp_path, on_stale="refuse")
    rebuilt = TensorRTBackend(model_spec, "fp16", max_batch=2, opt_batch=1, cache_dir=tmp_path)
    assert rebuilt.engine_path == engine and te.check_engine(engine, te.engine_key(
        model_spec.model_path, te.current_target(), "fp16", te.BatchProfile(1, 1, 2), model_spec.input_size))
    rebuilt.close()

    other = TensorRTBackend(model_spec, "fp16", max_batch=4, opt_batch=2, cache_dir=tmp_path)
    assert other.engine_path != engine  # another profile is another key, another file
    other.close()


def test_auto_device_prefers_tensorrt_on_a_gpu(trt_ready, model_spec, tmp_path: Path, monkeypatch) -> None:
    from fastcell.runtime import open_backend

    monkeypatch.setenv("FASTCELL_CACHE", str(tmp_path))
    backend = open_backend(model_spec, "auto", max_batch=2, opt_batch=1)
    assert backend.name == "tensorrt"
    backend.close()
    assert open_backend(model_spec, "cpu").name in ("openvino", "onnxruntime")
