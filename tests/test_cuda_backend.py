"""The torch-CUDA backend's GPU-free parts: ONNX weights → torch, the refusals, ``device="auto"``.

The torch network built from ``model.onnx``'s initializers is compared with ONNX Runtime running
that same file, in fp32 on the CPU, on the real frames in tests/data/bccd: the oracle is a different
engine reading the same bytes. The GPU half (fp16 graphs, the device letterbox) is tests/test_gpu_cuda.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell import ops
from fastcell.runtime import open_backend
from fastcell.spec import ModelSpec, find_model

torch = pytest.importorskip("torch", reason="the cuda backend's weight loading needs torch (fastcell[cuda])")
onnx = pytest.importorskip("onnx", reason="reading model.onnx needs onnx (fastcell[cuda])")

SAMPLES = Path(__file__).resolve().parent / "data" / "bccd"
NO_GPU = torch.version.cuda is None or not torch.cuda.is_available()


@pytest.fixture(scope="module")
def shipped() -> ModelSpec:
    try:
        return ModelSpec.load(find_model("default"))
    except FileNotFoundError:
        pytest.skip("no shipped default model (engines/DEFAULT)")


@pytest.fixture(scope="module")
def sample_batch() -> tuple[np.ndarray, np.ndarray]:
    paths = sorted(SAMPLES.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no sample frames in {SAMPLES}")
    return ops.letterbox_batch([cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths])


def test_onnx_weights_give_onnxruntime_heads_in_fp32(shipped, sample_batch) -> None:
    from fastcell.model.onnx_weights import attentionnet_from_onnx
    from fastcell.runtime.onnxruntime_backend import OnnxRuntimeBackend

    batch, params = sample_batch
    model = attentionnet_from_onnx(shipped)
    with torch.inference_mode():
        heads = [h.numpy() for h in model(torch.from_numpy(batch))]
    reference = OnnxRuntimeBackend(shipped).infer(batch)
    for ours, theirs, head in zip(heads, reference, shipped.heads):
        assert ours.shape == theirs.shape == (len(batch), shipped.head_width, 416 // head.stride, 416 // head.stride)
        # two fp32 engines summing in other orders: ~1e-5 of values up to ~17
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)
    # and therefore the same cells
    args = dict(strides=[h.stride for h in shipped.heads], anchors=[shipped.head_anchors(h) for h in shipped.heads],
                num_classes=shipped.num_classes, score_threshold=shipped.thresholds.score)
    for (b1, s1, c1), (b2, s2, c2) in zip(ops.postprocess(heads, params, **args),
                                          ops.postprocess(reference, params, **args)):
        assert len(b1) == len(b2) > 0
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_allclose(b1, b2, atol=0.05)


def _onnx_with(tmp_path: Path, op: str, **attrs) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "layers.0.conv.weight")
    bias = numpy_helper.from_array(np.zeros(2, np.float32), "layers.0.conv.bias")
    nodes = [helper.make_node("Conv", ["images", weight.name, bias.name], ["c"]),
             helper.make_node(op, ["c"], ["p5"], **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("p5", TensorProto.FLOAT, None)], [weight, bias])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_a_foreign_graph_is_refused_saying_what_differs(tmp_path: Path, shipped) -> None:
    from fastcell.model.onnx_weights import attentionnet_from_onnx, onnx_tensors

    with pytest.raises(ValueError, match="op 'Sigmoid'.*not part of a folded AttentionNet"):
        onnx_tensors(_onnx_with(tmp_path, "Sigmoid"))
    with pytest.raises(ValueError, match="slope 0.2.*uses 0.1"):
        onnx_tensors(_onnx_with(tmp_path, "LeakyRelu", alpha=0.2))
    tensors = onnx_tensors(_onnx_with(tmp_path, "LeakyRelu", alpha=0.1))
    assert set(tensors) == {"layers.0.conv.weight", "layers.0.conv.bias"}
    with pytest.raises(ValueError, match="missing .*layers.10.conv.bias"):
        attentionnet_from_onnx(shipped, tmp_path / "model.onnx")
    # the shipped file read as a network with another number of classes: the heads do not fit
    with pytest.raises(ValueError, match=r"layers.15.weight is \(24, 512, 1, 1\), .* 1 classes needs \(18, 512, 1, 1\)"):
        attentionnet_from_onnx(shipped.replace(classes=("cell",)), shipped.model_path)


@pytest.mark.skipif(not NO_GPU, reason="a CUDA GPU is visible: the refusal is for machines without one")
@pytest.mark.parametrize("device", ["cuda", "gpu"])
def test_cuda_without_a_gpu_refuses_in_one_line(shipped, device: str) -> None:
    if device == "gpu" and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: 'gpu' means tensorrt here")
    with pytest.raises(RuntimeError, match="the cuda backend cannot run: torch .*") as err:
        open_backend(shipped, device)
    assert "\n" not in str(err.value)


def test_cuda_refuses_precisions_it_does_not_run(shipped) -> None:
    from fastcell.runtime.cuda_backend import CudaBackend

    with pytest.raises(ValueError, match="'fp16', 'bf16' or 'fp32', got 'int8'.*int8 needs the tensorrt"):
        CudaBackend(shipped, "int8")


def test_auto_skips_a_gpu_backend_that_cannot_start(shipped, monkeypatch, caplog) -> None:
    import fastcell.runtime as runtime

    present = [b for b in runtime.available_backends() if b not in ("tensorrt", "cuda")]
    monkeypatch.setattr(runtime, "available_backends", lambda: ["cuda", *present])
    monkeypatch.setattr(runtime, "_open", _fail_on_cuda(runtime._open))
    with caplog.at_level(logging.WARNING, logger="fastcell"):
        backend = open_backend(shipped, "auto")
    assert backend.name in ("openvino", "onnxruntime")
    assert "the cuda backend cannot start (no GPU here); trying the next backend" in caplog.text
    backend.close()
    # "cpu" never tries a GPU backend, and "auto" without a GPU does not offer one
    assert open_backend(shipped, "cpu").name == backend.name


def _fail_on_cuda(real):
    def _open(name, *args):
        if name == "cuda":
            raise RuntimeError("no GPU here")
        return real(name, *args)
    return _open


@pytest.mark.skipif(not NO_GPU, reason="a CUDA GPU is visible")
def test_no_gpu_backend_is_offered_without_a_gpu(monkeypatch) -> None:
    monkeypatch.undo()  # the real driver query, not conftest's stand-in for tests not marked gpu
    from fastcell.runtime import available_backends, gpu_count

    assert gpu_count() == 0
    assert "cuda" not in available_backends() and "tensorrt" not in available_backends()


def test_fp16_on_the_cpu_names_both_gpu_backends(shipped) -> None:
    with pytest.raises(ValueError, match="fp16' needs the tensorrt backend or the cuda backend"):
        open_backend(shipped, "onnxruntime", "fp16")


def test_device_pointer_entries_check_their_arguments_before_any_device() -> None:
    from fastcell._core_loader import core

    if not hasattr(core, "cuda_decode_device"):
        pytest.skip("this build of fastcell._core has no CUDA kernels")
    anchors = [np.ones((3, 2), np.float32)]
    with pytest.raises(ValueError, match="one entry per head, got 1, 2, 1, 1"):
        core.cuda_decode_device([1], [(1, 24, 13, 13), (1, 24, 26, 26)], [32.0], anchors, 3, 0.3, 0)
    with pytest.raises(ValueError, match=r"non-null device pointer with shape .* got shape \(1, 24, 0, 13\)"):
        core.cuda_decode_device([1], [(1, 24, 0, 13)], [32.0], anchors, 3, 0.3, 0)
    with pytest.raises(ValueError, match="row_stride must be >= 3 \\* width = 30 bytes, got 20"):
        core.cuda_segment_cells_device(1, 10, 10, 20, np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="hsv_low and hsv_high must both be given"):
        core.cuda_segment_cells_device(1, 10, 10, 30, np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                       hsv_low=(0, 0, 0))


# -- the backend's buffers, chunks, graph buckets and device-letterbox staging, emulated on the CPU --------
# CUDA is replaced by its CPU equivalent where the backend touches it: streams and device contexts do
# nothing, pinned memory is ordinary memory, a "graph" replays by running the network again into the
# outputs it recorded (what a CUDA graph does: same input buffer, same output tensors), and the device
# letterbox writes through the raw pointers the backend passes, as the kernel does. The heads are
# compared with ONNX Runtime; what this cannot check (the real kernels, fp16, capture) is test_gpu_cuda.py.
class _FakeStream:
    cuda_stream = 0

    def __init__(self, device=None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _FakeEvent:
    def __init__(self, blocking=False) -> None:
        pass

    def record(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _FakeCuda:
    Stream = _FakeStream
    Event = _FakeEvent
    is_available = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 1)
    device = staticmethod(lambda d: contextlib.nullcontext())
    stream = staticmethod(lambda s: contextlib.nullcontext())


class _FakeTorch:
    """torch, with CUDA's runtime swapped for the CPU (see above)."""

    cuda = _FakeCuda
    version = types.SimpleNamespace(cuda="13.0")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def device(kind, index=0):
        return torch.device("cpu", index)

    @staticmethod
    def empty(*shape, pin_memory=False, **kwargs):
        return torch.empty(*shape, **kwargs)

    @staticmethod
    def zeros(*shape, **kwargs):
        return torch.zeros(*shape, **kwargs)


class _PointerLetterbox:
    """fastcell._core's device letterbox entry, on host memory reached through the same raw pointers."""

    calls = 0

    def cuda_letterbox_batch_device(self, frames, count, height, width, channels, row_stride, image_stride,
                                    size, pad_value, out, stream):
        assert row_stride == width * channels and image_stride == height * width * channels and stream == 0
        type(self).calls += 1
        src = np.ctypeslib.as_array((ctypes.c_uint8 * (count * image_stride)).from_address(frames))
        src = src.reshape(count, height, width, channels)
        dst = np.ctypeslib.as_array((ctypes.c_float * (count * 3 * size * size)).from_address(out))
        images = [f[:, :, 0] if channels == 1 else f for f in src]
        _, params = ops.letterbox_batch(images, out=dst.reshape(count, 3, size, size), size=size, pad_value=pad_value)
        return params


def _record_on_cpu(self, n):
    outputs = self._forward(n)

    class Replay:
        def replay(_) -> None:
            for kept, new in zip(outputs, self._forward(n)):
                kept.copy_(new)

    self._graphs[n] = (Replay(), outputs)


@pytest.fixture()
def emulated(monkeypatch, shipped):
    from fastcell import _parallel
    from fastcell.runtime import cuda_backend

    monkeypatch.setattr(cuda_backend, "require", lambda *a, **k: _FakeTorch())
    monkeypatch.setattr(cuda_backend, "_device_core", lambda: _PointerLetterbox())
    monkeypatch.setattr(cuda_backend.CudaBackend, "_record", _record_on_cpu)
    monkeypatch.setattr(_parallel, "host_threads", lambda: 6)  # four staging threads
    backends = []

    def make(**kwargs):
        backends.append(cuda_backend.CudaBackend(shipped, "fp32", **kwargs))
        return backends[-1]
    yield make
    for b in backends:
        b.close()


def test_emulated_chunks_and_graph_buckets_give_onnxruntime_heads(emulated, shipped, sample_batch) -> None:
    from fastcell.runtime.onnxruntime_backend import OnnxRuntimeBackend

    batch, _ = sample_batch  # 4 frames
    reference = OnnxRuntimeBackend(shipped).infer(batch)
    chunked = emulated(max_batch=3)
    for ours, theirs in zip(chunked.infer(batch), reference):  # chunks of 3 and 1
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)
    assert sorted(chunked._graphs) == [1, 3]  # 3 frames: the bucket of 4 capped at max_batch
    padded = emulated(max_batch=8)
    three = padded.infer(batch[:3])  # runs the graph of 4, reads 3
    assert sorted(padded._graphs) == [4]
    for ours, theirs in zip(three, reference):
        assert ours.shape[0] == 3
        np.testing.assert_allclose(ours, theirs[:3], rtol=0, atol=1e-3)
    for again, first in zip(padded.infer(batch[:3]), three):  # a replay reads the new input
        np.testing.assert_array_equal(again, first)


@pytest.mark.parametrize("layout", ["bgr", "gray", "bgra"])
def test_emulated_frames_path_equals_cpu_letterbox_then_infer(emulated, layout: str) -> None:
    convert = {"bgr": None, "gray": cv2.COLOR_BGR2GRAY, "bgra": cv2.COLOR_BGR2BGRA}[layout]
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(SAMPLES.glob("*.jpg"))]
    frames = [f if convert is None else cv2.cvtColor(f, convert) for f in frames]
    frames = frames + frames[:1]  # 5: chunks of 4 and 1 at max_batch 4
    backend = emulated(max_batch=4)
    assert backend._stagers is not None and backend.can_take_frames(frames)
    before = _PointerLetterbox.calls
    heads, params = backend.infer_frames(frames)
    assert _PointerLetterbox.calls == before + 2
    batch, cpu_params = ops.letterbox_batch(frames)
    np.testing.assert_array_equal(params, cpu_params)
    for a, b in zip(heads, backend.infer(batch)):
        np.testing.assert_array_equal(a, b)
    assert backend.infer_frames([frames[0], frames[1][:200]]) is None  # mixed sizes: the CPU path
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(batch[:1])


def test_emulated_two_batches_in_flight_then_the_synchronous_path(emulated, sample_batch) -> None:
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(SAMPLES.glob("*.jpg"))]
    backend = emulated(max_batch=4)
    expected = [backend.infer_frames(frames[:2]), backend.infer_frames(frames[2:])]
    first = backend.submit_frames(frames[:2])
    second = backend.submit_frames(frames[2:])
    assert first is not None and second is not None
    assert backend.submit_frames(frames[:1]) is None  # both slots busy: the caller goes synchronous
    direct = backend.infer_frames(frames[:1])  # and a direct call still runs, in a slot of its own
    for got, want in ((backend.collect(first), expected[0]), (backend.collect(second), expected[1])):
        np.testing.assert_array_equal(got[1], want[1])
        for a, b in zip(got[0], want[0]):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(direct[0], expected[0][0]):
        np.testing.assert_array_equal(a, b[:1])
    with pytest.raises(RuntimeError, match="collected already"):
        backend.collect(first)
    assert backend.submit_frames(frames * 2) is None  # more than max_batch frames


@pytest.mark.parametrize("batch_size", [1, 3])
def test_emulated_stream_pipelines_batches_and_equals_the_annotator(emulated, shipped, batch_size: int) -> None:
    import fastcell
    from fastcell.annotator import Annotator

    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in sorted(SAMPLES.glob("*.jpg"))] * 2
    annotator = Annotator(emulated(max_batch=4), shipped, max_batch=4)
    submitted = []
    real_submit = annotator.backend.submit_frames
    annotator.backend.submit_frames = lambda *a: submitted.append(len(a[0])) or real_submit(*a)
    with fastcell.stream(frames, annotator, batch_size=batch_size, post_workers=2) as stream:
        results = list(stream)
    assert [r.frame_index for r in results] == list(range(8)) and sum(submitted) == 8
    for r, e in zip(results, annotator.batch(frames)):
        np.testing.assert_array_equal(r.class_ids, e.class_ids)
        np.testing.assert_allclose(r.boxes, e.boxes, atol=1e-3)  # batches of other sizes: fp32 rounding
