"""The torch-CUDA backend on a GPU, against ONNX Runtime on the CPU and against itself.

Marked ``gpu``; skipped (with the reason) without torch built with CUDA, a visible GPU or onnx.
Frames are the BCCD samples in tests/data/bccd, so nothing outside the checkout is needed.

Tolerances. fp16 arithmetic moves head values by up to ~0.06 on values up to ~17 (measured on an
H200), so heads are compared to 5 % of their largest magnitude and detections as in test_gpu.py:
every ONNX Runtime cell clear of the threshold (by 0.02) has an fp16 twin of the same class with
corners within 1 px, and back. fp32 (TF32 convolutions where cuDNN picks them) gets 2 %. The device
letterbox equals the CPU's bit for bit, so ``infer_frames`` must equal CPU letterbox + ``infer``
exactly: both run the same CUDA graph on the same input.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastcell import ops
from fastcell.spec import ModelSpec, find_model

pytestmark = pytest.mark.gpu

SAMPLES = Path(__file__).resolve().parent / "data" / "bccd"


@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch", reason="the cuda backend needs torch (fastcell[cuda])")
    pytest.importorskip("onnx", reason="the cuda backend reads model.onnx with onnx (fastcell[cuda])")
    from fastcell.runtime.cuda_backend import cuda_unavailable_reason

    reason = cuda_unavailable_reason(torch)
    if reason is not None:
        pytest.skip(reason)
    return torch


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec.load(find_model("default"))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    paths = sorted(SAMPLES.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no sample frames in {SAMPLES}")
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]


@pytest.fixture(scope="module")
def fp16(torch_cuda, spec):
    from fastcell.runtime.cuda_backend import CudaBackend

    backend = CudaBackend(spec, "fp16", max_batch=8)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(spec, frames):
    from fastcell.runtime.onnxruntime_backend import OnnxRuntimeBackend

    batch, params = ops.letterbox_batch(frames)
    return batch, params, OnnxRuntimeBackend(spec).infer(batch)


def detections(spec, heads, params):
    t = spec.thresholds
    return ops.postprocess(heads, params, strides=[h.stride for h in spec.heads],
                           anchors=[spec.head_anchors(h) for h in spec.heads], num_classes=spec.num_classes,
                           score_threshold=t.score, nms_iou=t.nms_iou, merge=t.merge, gbciou=t.gbciou,
                           merge_iou=t.merge_iou)


def assert_same_detections(a, b, score_threshold: float, margin: float = 0.02) -> None:
    for (a_boxes, a_scores, a_cls), (b_boxes, b_scores, b_cls) in ((a, b), (b, a)):
        for box, score, cls in zip(b_boxes, b_scores, b_cls):
            if score < score_threshold + margin:
                continue  # fp16 may move a borderline score across the threshold
            close = np.all(np.abs(a_boxes - box) <= 1.0, axis=1) & (a_cls == cls)
            assert close.any(), f"no counterpart within 1 px for {box} (class {cls}, score {score:.3f})"


def test_fp16_heads_and_cells_match_onnxruntime(fp16, spec, reference) -> None:
    batch, params, ort = reference
    heads = fp16.infer(batch)
    for h, o in zip(heads, ort):
        assert h.shape == o.shape and h.dtype == np.float32
        assert np.abs(h - o).max() < 0.05 * max(1.0, np.abs(o).max())
    cells = 0
    for g, c in zip(detections(spec, heads, params), detections(spec, ort, params)):
        assert_same_detections(g, c, spec.thresholds.score)
        cells += len(c[0])
    assert cells > 0


def test_fp32_heads_match_onnxruntime(torch_cuda, spec, reference) -> None:
    from fastcell.runtime.cuda_backend import CudaBackend

    batch, _, ort = reference
    backend = CudaBackend(spec, "fp32", max_batch=8)
    try:
        for h, o in zip(backend.infer(batch), ort):
            assert np.abs(h - o).max() < 0.02 * max(1.0, np.abs(o).max())
    finally:
        backend.close()


@pytest.mark.parametrize("layout", ["bgr", "gray", "bgra"])
def test_device_letterbox_path_equals_cpu_letterbox_then_infer(fp16, frames, layout: str) -> None:
    convert = {"bgr": None, "gray": cv2.COLOR_BGR2GRAY, "bgra": cv2.COLOR_BGR2BGRA}[layout]
    chosen = [f if convert is None else cv2.cvtColor(f, convert) for f in frames]
    assert fp16.can_take_frames(chosen)
    heads, params = fp16.infer_frames(chosen)
    batch, cpu_params = ops.letterbox_batch(chosen)
    np.testing.assert_array_equal(params, cpu_params)
    for a, b in zip(heads, fp16.infer(batch)):
        np.testing.assert_array_equal(a, b)


def test_frames_the_device_path_cannot_take_fall_back(fp16, frames) -> None:
    mixed = [frames[0], frames[1][:300]]
    deep = [frames[0].astype(np.uint16) * 257]
    assert fp16.infer_frames(mixed) is None and fp16.infer_frames(deep) is None


def test_graph_replay_chunks_and_threads_give_the_same_heads(torch_cuda, spec) -> None:
    from fastcell.runtime.cuda_backend import CudaBackend

    backend = CudaBackend(spec, "fp16", max_batch=4)
    try:
        size = spec.input_size
        batch = np.random.default_rng(0).uniform(0, 1, (6, 3, size, size)).astype(np.float32)
        first = backend.infer(batch)  # chunks of 4 and 2: two graphs recorded
        second = backend.infer(batch)  # replayed
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(backend.infer(batch[4:]), first):
            np.testing.assert_array_equal(a, b[4:])
        results: dict[int, list[np.ndarray]] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, backend.infer(batch[:4])))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(3):
            for a, b in zip(results[i], first):
                np.testing.assert_array_equal(a, b[:4])
    finally:
        backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.infer(batch[:1])


def test_without_graphs_gives_the_same_cells(torch_cuda, spec, fp16, reference) -> None:
    from fastcell.runtime.cuda_backend import CudaBackend

    batch, params, _ = reference
    eager = CudaBackend(spec, "fp16", max_batch=8, cuda_graphs=False)
    try:
        for e, g in zip(detections(spec, eager.infer(batch), params), detections(spec, fp16.infer(batch), params)):
            assert_same_detections(e, g, spec.thresholds.score)
    finally:
        eager.close()


def test_auto_picks_cuda_and_the_stream_equals_the_annotator(torch_cuda, spec, frames) -> None:
    import importlib.util

    import fastcell
    from fastcell.annotator import Annotator
    from fastcell.runtime import open_backend

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: auto picks it first")
    backend = open_backend(spec, "auto", max_batch=4)
    assert backend.name == "cuda"
    annotator = Annotator(backend, max_batch=4)
    try:
        eight = [frames[i % len(frames)] for i in range(8)]
        expected = annotator.batch(eight)  # device letterbox, chunks of 4
        with fastcell.stream(eight, annotator, batch_size=4, max_latency=5.0, post_workers=3) as stream:
            results = list(stream)
        assert [r.frame_index for r in results] == list(range(8))
        for r, e in zip(results, expected):
            np.testing.assert_array_equal(r.class_ids, e.class_ids)
            np.testing.assert_allclose(r.boxes, e.boxes, atol=1e-3)
            np.testing.assert_array_equal(r.labels.astype(bool), e.labels.astype(bool))
        assert sum(len(r) for r in results) > 0
    finally:
        annotator.close()


# -- device-pointer entries of the CUDA twins (csrc/bindings/register_cuda_device.cpp) ----------------------
@pytest.fixture(scope="module")
def device_core(torch_cuda):
    from fastcell._core_loader import core

    if not hasattr(core, "cuda_decode_device"):
        pytest.skip("no CUDA kernels in this build of fastcell._core")
    if core.cuda_device_count() == 0:
        pytest.skip("fastcell._core sees no CUDA device")
    return core


@pytest.mark.parametrize("threshold", [0.05, 0.32])
def test_decode_of_device_heads_equals_cpu(device_core, torch_cuda, spec, reference, threshold: float) -> None:
    torch = torch_cuda
    _, _, heads = reference
    strides = [float(h.stride) for h in spec.heads]
    anchors = [spec.head_anchors(h) for h in spec.heads]
    on_device = [torch.from_numpy(h.copy()).cuda() for h in heads]
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    gpu = device_core.cuda_decode_device([h.data_ptr() for h in on_device], [tuple(h.shape) for h in on_device],
                                         strides, anchors, spec.num_classes, threshold, stream.cuda_stream)
    cpu = ops.decode(heads, strides, anchors, spec.num_classes, threshold)
    assert len(gpu) == len(cpu) == len(heads[0])
    for (gb, gs, gc), (cb, cs, cc) in zip(gpu, cpu):
        assert len(gs) == len(cs) > 0
        np.testing.assert_array_equal(gc, cc)
        np.testing.assert_allclose(gs, cs, rtol=1e-6, atol=0)
        np.testing.assert_allclose(gb, cb, rtol=1e-6, atol=1e-4)


def test_segmentation_into_device_buffers_equals_cpu(device_core, torch_cuda, spec, frames, reference) -> None:
    torch = torch_cuda
    _, params, heads = reference
    seg = spec.segmentation
    for frame, (boxes, scores, _) in zip(frames, detections(spec, heads, params)):
        image = torch.from_numpy(frame.copy()).cuda()
        h, w = frame.shape[:2]
        labels = torch.full((h, w), -1, dtype=torch.int32, device="cuda")
        segmented = torch.zeros((h, w, 3), dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        device_core.cuda_segment_cells_device(image.data_ptr(), h, w, w * 3, boxes, scores, seg.hsv_low, seg.hsv_high,
                                              seg.disc, seg.fill, labels.data_ptr(), segmented.data_ptr(), 0)
        cpu_labels, cpu_segmented = ops.segment_cells(frame, boxes, scores, hsv_low=seg.hsv_low,
                                                      hsv_high=seg.hsv_high, disc=seg.disc, fill=seg.fill)
        np.testing.assert_array_equal(labels.cpu().numpy(), cpu_labels)
        np.testing.assert_array_equal(segmented.cpu().numpy(), cpu_segmented)


def test_two_batches_in_flight_equal_the_synchronous_path(fp16, frames) -> None:
    eight = [frames[i % len(frames)] for i in range(8)]
    expected = [fp16.infer_frames(eight[:5]), fp16.infer_frames(eight[5:])]
    first, second = fp16.submit_frames(eight[:5]), fp16.submit_frames(eight[5:])
    assert first is not None and second is not None and fp16.submit_frames(eight[:1]) is None
    for (heads, params), (want_heads, want_params) in zip((fp16.collect(first), fp16.collect(second)), expected):
        np.testing.assert_array_equal(params, want_params)
        for a, b in zip(heads, want_heads):
            np.testing.assert_array_equal(a, b)
