"""Backends: the choice among them, their contracts, and agreement with each other on real images."""

from __future__ import annotations

import importlib.util
import threading

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

    batch, params = Preprocessor(416, 114)(frames)
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
    with pytest.raises(FileNotFoundError, match="quantize_int8"):
        open_backend(spec, "openvino", precision="int8")


def test_available_backends_lists_what_imports():
    present = available_backends()
    assert "onnxruntime" in present  # a hard dependency
    assert ("openvino" in present) == HAS_OPENVINO


# -- the protocol ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, error", [(np.zeros((1, 3, 416, 416), np.float64), TypeError),
                                        ([[0.0]], TypeError),
                                        (np.zeros((3, 416, 416), np.float32), ValueError),
                                        (np.zeros((1, 3, 320, 320), np.float32), ValueError),
                                        (np.zeros((0, 3, 416, 416), np.float32), ValueError)])
def test_bad_batches_are_refused(spec, bad, error):
    """Not a float32 array: TypeError; a float32 array of the wrong shape: ValueError."""
    backend = open_backend(spec, "onnxruntime")
    with pytest.raises(error, match=r"\(N>=1, 3, 416, 416\) float32"):
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


def _match_iou(a, b, min_iou, margin, threshold):
    """Every confident detection of ``a`` has a same-class one in ``b`` overlapping it by ``min_iou``."""
    from fastcell.ops import box_iou

    for box, score, cls in zip(a.boxes, a.scores, a.class_ids):
        if score < threshold + margin:
            continue
        iou = box_iou(box[None], b.boxes)[0] if len(b.boxes) else np.zeros(0)
        assert ((b.class_ids == cls) & (iou >= min_iou)).any(), f"detection {box} ({score:.3f}, class {cls}) missing"


def test_shipped_model_fp32_backends_agree_within_a_pixel(default_model_json, bccd_images):
    """Every confident cell ONNX Runtime fp32 finds on real images, OpenVINO fp32 finds too (and the
    other way round): same class, corners within 1 px."""
    if not HAS_OPENVINO:
        pytest.skip("openvino is not installed")
    spec = ModelSpec.load(default_model_json)
    frames = [cv2.imread(str(p)) for p in bccd_images]
    ort = Annotator(open_backend(spec, "onnxruntime"), spec).batch(frames)
    assert sum(len(r) for r in ort) >= len(frames)  # a trained model finds cells in every field
    ov = Annotator(open_backend(spec, "openvino", "fp32"), spec).batch(frames)
    for ra, rb in zip(ort, ov):
        _match(ra, rb, margin=1e-3, threshold=spec.thresholds.score)
        _match(rb, ra, margin=1e-3, threshold=spec.thresholds.score)


def test_shipped_model_bf16_finds_the_same_cells_as_fp32(default_model_json, bccd_images):
    """OpenVINO's default bf16 against ONNX Runtime fp32 on real images: the same cells, same class.

    Not within 1 px: where overlapping candidates of one cell score within bf16's rounding of each
    other (~1e-2), NMS may keep a different one of them, a few pixels away (up to 17 px on a 105 px
    red cell in these frames, IoU 0.76). Measured on the BCCD test split the two give the same mAP
    (0.8967 bf16 vs 0.8964 fp32, ``fastcell val --device openvino --precision bf16``)."""
    spec = ModelSpec.load(default_model_json)
    frames = [cv2.imread(str(p)) for p in bccd_images]
    ort = Annotator(open_backend(spec, "onnxruntime"), spec).batch(frames)
    bf16 = _openvino_bf16(spec)
    assert bf16.precision == "bf16"
    for ra, rb in zip(ort, Annotator(bf16, spec).batch(frames)):
        _match_iou(ra, rb, 0.7, BF16_SCORE_MARGIN, spec.thresholds.score)
        _match_iou(rb, ra, 0.7, BF16_SCORE_MARGIN, spec.thresholds.score)


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

    from fastcell.export.int8 import quantize_int8

    for name in ("model.onnx", "model.json"):
        shutil.copy(random_model_dir / name, tmp_path / name)
    spec = ModelSpec.load(tmp_path)
    path = quantize_int8(spec, bccd_images[:4])
    assert path == tmp_path / "model_int8.onnx" and path.is_file()
    spec = ModelSpec.load(tmp_path)  # the runtime finds the int8 model through model.json["int8"]["file"]
    assert spec.extra["int8"]["file"] == "model_int8.onnx" and spec.extra["int8"]["calibration_images"] == 4
    _, batch, _ = bccd_batch
    fp32 = open_backend(spec, "onnxruntime").infer(batch)
    devices = ["onnxruntime"] + (["openvino"] if HAS_OPENVINO else [])
    for device in devices:
        backend = open_backend(spec, device, "int8")
        assert backend.precision == "int8"
        for a, b in zip(fp32, backend.infer(batch)):
            assert np.abs(a - b).max() <= 0.05 * np.abs(a).max(), device


# -- options and precisions the chosen backend does not have ---------------------------------------------
@pytest.mark.parametrize("device", ["onnxruntime", pytest.param("torch", marks=needs_torch)])
def test_throughput_is_dropped_for_backends_without_that_mode(spec, random_model_dir, bccd_batch, device):
    import fastcell

    _, batch, _ = bccd_batch
    backend = open_backend(spec, device, throughput=True)  # OpenVINO's option, harmless elsewhere
    assert backend.name == device
    np.testing.assert_array_equal(backend.infer(batch[:1])[0], open_backend(spec, device).infer(batch[:1])[0])
    annotator = fastcell.load(random_model_dir / "model.json", device, throughput=True, verbose=False)
    assert annotator.backend.name == device


@pytest.mark.parametrize("device", ["cpu", "onnxruntime", pytest.param("openvino", marks=needs_openvino),
                                    pytest.param("torch", marks=needs_torch)])
def test_fp16_on_a_cpu_backend_is_refused_naming_tensorrt(spec, device):
    with pytest.raises(ValueError, match=r"fp16.*needs the tensorrt backend"):
        open_backend(spec, device, "fp16")


# -- close() while another thread is inside infer() --------------------------------------------------------
WAIT = 30.0


class _Gate:
    """Holds a call until released, saying when it has entered."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.log: list[str] = []

    def hold(self) -> None:
        self.entered.set()
        assert self.release.wait(WAIT)
        self.log.append("call returned")


class _HeldSession:  # ONNX Runtime
    def __init__(self, session, gate: _Gate) -> None:
        self.session, self.gate = session, gate

    def run(self, outputs, feed):
        self.gate.hold()
        return self.session.run(outputs, feed)


class _HeldRequest:  # OpenVINO
    def __init__(self, request, gate: _Gate) -> None:
        self.request, self.gate = request, gate

    def infer(self, *args, **kwargs):
        self.gate.hold()
        return self.request.infer(*args, **kwargs)

    def get_tensor(self, output):
        return self.request.get_tensor(output)


class _HeldModel:  # PyTorch
    def __init__(self, model, gate: _Gate) -> None:
        self.model, self.gate = model, gate

    def __call__(self, x):
        self.gate.hold()
        return self.model(x)


def _close_during_infer(backend, gate: _Gate, batch: np.ndarray) -> list:
    """Start infer() in a thread, close() in another while it runs; return what infer returned."""
    returned: list = []
    caller = threading.Thread(target=lambda: returned.append(backend.infer(batch)))
    caller.start()
    try:
        assert gate.entered.wait(WAIT)
        closer = threading.Thread(target=lambda: (backend.close(), gate.log.append("closed")))
        closer.start()
        closer.join(0.3)
        assert closer.is_alive()  # close() waits: freeing the engine under the running call is the crash
    finally:
        gate.release.set()
    caller.join(WAIT)
    closer.join(WAIT)
    assert gate.log[0] == "call returned" and gate.log[-1] == "closed"  # in that order
    return returned


@pytest.mark.parametrize("device", ["onnxruntime", pytest.param("openvino", marks=needs_openvino),
                                    pytest.param("torch", marks=needs_torch)])
def test_close_waits_for_a_running_infer_then_refuses_new_calls(spec, bccd_batch, device):
    _, batch, _ = bccd_batch
    backend = open_backend(spec, device, "fp32")
    expected = backend.infer(batch[:1])
    gate = _Gate()
    if device == "onnxruntime":
        backend._session = _HeldSession(backend._session, gate)
    elif device == "openvino":
        backend._request = _HeldRequest(backend._request, gate)
    else:
        backend._model = _HeldModel(backend._model, gate)
    (heads,) = _close_during_infer(backend, gate, batch[:1])
    for a, b in zip(heads, expected):  # the running call finished normally
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="backend is closed"):
        backend.infer(batch[:1])
    backend.close()  # idempotent


def test_tensorrt_close_waits_for_calls_running_in_other_threads(tmp_path, monkeypatch):
    """TensorRT itself is faked (no GPU here): the backend's own bookkeeping is what is tested —
    a thread's buffers are freed by close() only after that thread's call has returned."""
    from types import SimpleNamespace

    import fastcell.runtime.tensorrt_backend as trb
    from fastcell.runtime import _cuda

    spec = ModelSpec(classes=("cell",), anchors=np.ones((6, 2), np.float32), name="fake")
    gate = _Gate()

    class Engine:
        names = ["images"] + [h.output for h in spec.heads]
        num_io_tensors = len(names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_dtype(self, name):
            return "float32"

    class Worker:
        def __init__(self, engine, spec, max_batch, device, use_graphs) -> None:
            pass

        def run(self, batch):
            gate.hold()
            return [np.zeros((batch.shape[0], 1), np.float32)]

        def release(self) -> None:
            gate.log.append("released")

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    fake_trt = SimpleNamespace(Logger=Logger, DataType=SimpleNamespace(FLOAT="float32"),
                               Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: Engine()))
    engine_file = tmp_path / "fake.engine"
    engine_file.write_bytes(b"engine")
    monkeypatch.setattr(trb, "require_tensorrt", lambda: fake_trt)
    monkeypatch.setattr(trb, "spec_engine", lambda *a, **k: engine_file)
    monkeypatch.setattr(trb, "_Worker", Worker)
    monkeypatch.setattr(_cuda, "runtime", lambda: None)
    monkeypatch.setattr(_cuda, "device_count", lambda: 1)
    backend = trb.TensorRTBackend(spec)
    batch = np.zeros((2, 3, spec.input_size, spec.input_size), np.float32)
    (heads,) = _close_during_infer(backend, gate, batch)
    assert heads[0].shape == (2, 1)
    assert gate.log == ["call returned", "released", "closed"]  # the worker is freed after its call
    with pytest.raises(RuntimeError, match="backend is closed"):
        backend.infer(batch)
