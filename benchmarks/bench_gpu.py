"""GPU throughput of fastcell: TensorRT model-only and end-to-end images/s, with time per stage.

One run prints, for each precision (fp16, int8) and batch size (1, 8, 32), side by side:

1. model only: the TensorRT engine alone, ``execute_async_v3`` back to back on one stream (inputs
   already on the device), images/s; and ``backend.infer()`` (pinned host input → device → engine →
   pinned host output, CUDA-graph replay), images/s;
2. end to end from decoded frames (uint8 BGR 640×480 BCCD frames in host memory, as a camera or a
   decoder thread hands them over): upload → CUDA letterbox straight into the engine's input →
   engine → heads to the host → C++ post-processing (decode, NMS, GBCIOU, map back), images/s, and
   the milliseconds per batch of each stage measured alone;
3. the issue's targets on one H100 beside them: ≥ 5,000 images/s model-only at batch 32 in fp16,
   ≥ 2,000 images/s end to end.

Usage: ``python benchmarks/bench_gpu.py [--model default] [--batches 1 8 32] [--precisions fp16 int8]
[--iters 200]``. Needs an NVIDIA GPU, ``pip install "fastcell[tensorrt]"`` and a build with the CUDA
kernels (``fastcell.sys_info()`` shows ``core.cuda: True``); without a GPU it says so and exits 2.
Engines are built on first use (a minute or two each) and cached (see fastcell.runtime.tensorrt_engine).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "data" / "bccd"
TARGET_MODEL_ONLY = 5000  # images/s, batch 32, fp16, one H100
TARGET_END_TO_END = 2000  # images/s from decoded frames


def fail(message: str) -> None:
    print(f"bench_gpu: {message}", file=sys.stderr)
    sys.exit(2)


def check_environment():
    if importlib.util.find_spec("tensorrt") is None:
        fail('tensorrt is not installed (pip install "fastcell[tensorrt]"); nothing measured')
    from fastcell.runtime import _cuda

    if _cuda.device_count() == 0:
        fail("no CUDA device: this benchmark needs an NVIDIA GPU and its driver; nothing measured")
    from fastcell._core_loader import core

    return core, _cuda.device_properties(0)


def model_spec(name: str, tmp: Path):
    from fastcell.spec import ModelSpec, find_model

    try:
        return ModelSpec.load(find_model(name))
    except FileNotFoundError:
        if name != "default":
            raise
    print("  (no shipped default model: exporting a randomly initialised AttentionNet)")
    import torch

    from fastcell.export import export_onnx
    from fastcell.model import AttentionNet

    torch.manual_seed(0)
    spec = ModelSpec(classes=("RBC", "WBC", "Platelets"),
                     anchors=np.array([[12, 12], [26, 27], [44, 43], [68, 66], [86, 83], [140, 125]], np.float32),
                     name="random-bench")
    export_onnx(model=AttentionNet(3).eval(), spec=spec, out_dir=tmp)
    return ModelSpec.load(tmp / "model.json")


def bccd_frames(count: int) -> tuple[np.ndarray, list[Path]]:
    import cv2

    if not BCCD.is_dir():
        fail(f"the BCCD images are not at {BCCD}")
    names = (BCCD / "ImageSets" / "Main" / "test.txt").read_text().split()
    paths = [BCCD / "JPEGImages" / f"{n}.jpg" for n in names]
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths[:count]]
    frames = [f for f in frames if f is not None and f.shape == (480, 640, 3)]
    train = (BCCD / "ImageSets" / "Main" / "train.txt").read_text().split()
    calibration = [BCCD / "JPEGImages" / f"{n}.jpg" for n in train[:128]]
    return np.stack(frames), calibration


def model_only(backend, batch: int, iters: int) -> tuple[float, float]:
    """(engine-only images/s, infer() images/s) at this batch size."""
    size = backend.spec.input_size
    data = np.random.default_rng(0).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    for _ in range(3):  # builds the worker, runs the shape once, captures its CUDA graph
        backend.infer(data)
    start = time.perf_counter()
    for _ in range(iters):
        backend.infer(data)
    infer_rate = batch * iters / (time.perf_counter() - start)

    worker = backend._worker()
    worker.context.set_input_shape("images", (batch, 3, size, size))
    worker.shape = batch
    start = time.perf_counter()
    for _ in range(iters):
        worker.context.execute_async_v3(int(worker.stream))
    worker.stream.synchronize()
    return batch * iters / (time.perf_counter() - start), infer_rate


def end_to_end(core, backend, frames: np.ndarray, batch: int, iters: int) -> tuple[float, dict[str, float]]:
    """End-to-end images/s from uint8 frames in host memory, and ms per batch of each stage alone."""
    from fastcell import ops
    from fastcell.runtime import _cuda

    spec, size = backend.spec, backend.spec.input_size
    worker = backend._worker()
    n, height, width, _ = frames.shape
    pinned = _cuda.PinnedArray((batch, height, width, 3), np.uint8)
    device = _cuda.DeviceArray(pinned.nbytes)
    t = spec.thresholds
    post = dict(strides=[h.stride for h in spec.heads], anchors=[spec.head_anchors(h) for h in spec.heads],
                num_classes=spec.num_classes, score_threshold=t.score, nms_iou=t.nms_iou, merge=t.merge,
                gbciou=t.gbciou, merge_iou=t.merge_iou)
    stages = {"upload+letterbox": 0.0, "engine": 0.0, "heads to host": 0.0, "postprocess": 0.0}

    def step(i: int, timing: bool) -> None:
        marks = [time.perf_counter()]
        np.copyto(pinned.array, frames[(i * batch + np.arange(batch)) % n])
        worker.stream.copy_to_device(device.ptr, pinned.ptr, pinned.nbytes)
        params = core.cuda_letterbox_batch_device(device.ptr, batch, height, width, 3, width * 3, height * width * 3,
                                                  size, float(spec.pad_value), worker.input_device.ptr,
                                                  int(worker.stream))
        if timing:
            worker.stream.synchronize()
            marks.append(time.perf_counter())
        if worker.shape != batch:
            worker.context.set_input_shape("images", (batch, 3, size, size))
            worker.shape = batch
        worker.context.execute_async_v3(int(worker.stream))
        if timing:
            worker.stream.synchronize()
            marks.append(time.perf_counter())
        for _, host, device_array, per_image in worker.outputs:
            worker.stream.copy_to_host(host.ptr, device_array.ptr, batch * per_image)
        worker.stream.synchronize()
        marks.append(time.perf_counter())
        ops.postprocess([host.array[:batch] for _, host, _, _ in worker.outputs], params, **post)
        marks.append(time.perf_counter())
        if timing:
            for name, a, b in zip(stages, marks, marks[1:]):
                stages[name] += (b - a) * 1000

    for i in range(3):
        step(i, False)
    start = time.perf_counter()
    for i in range(iters):
        step(i, False)
    rate = batch * iters / (time.perf_counter() - start)
    for i in range(iters):
        step(i, True)
    device.free()
    pinned.free()
    return rate, {k: v / iters for k, v in stages.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--precisions", nargs="+", default=["fp16", "int8"], choices=["fp16", "int8", "fp32"])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--frames", type=int, default=72, help="BCCD test frames cycled through (default all 72)")
    args = parser.parse_args()

    core, gpu = check_environment()
    if not core.has_cuda():
        fail("fastcell._core was built without the CUDA kernels (reinstall with a CUDA toolkit, FASTCELL_CUDA=ON)")
    import tensorrt as trt

    from fastcell.runtime.tensorrt_backend import TensorRTBackend

    with tempfile.TemporaryDirectory() as tmp:
        spec = model_spec(args.model, Path(tmp))
        frames, calibration = bccd_frames(args.frames)
        print(f"GPU {gpu.name} (cc {gpu.compute_capability}), TensorRT {trt.__version__}, CUDA runtime "
              f"{core.cuda_runtime_version()}, model {spec.name!r}, {len(frames)} BCCD frames 640x480, "
              f"{time.strftime('%Y-%m-%d')}")
        rows = []
        for precision in args.precisions:
            backend = TensorRTBackend(spec, precision, max_batch=max(args.batches), opt_batch=max(args.batches),
                                      calibration_images=calibration if precision == "int8" else ())
            for batch in args.batches:
                engine_rate, infer_rate = model_only(backend, batch, args.iters)
                e2e_rate, stages = end_to_end(core, backend, frames, batch, max(10, args.iters // 4))
                rows.append((precision, batch, engine_rate, infer_rate, e2e_rate, stages))
            backend.close()

    print(f"\n{'precision':>9} {'batch':>5} | {'engine img/s':>12} {'infer() img/s':>13} | {'end-to-end img/s':>16} | "
          "ms per batch: upload+letterbox / engine / heads to host / postprocess")
    for precision, batch, engine_rate, infer_rate, e2e_rate, stages in rows:
        print(f"{precision:>9} {batch:>5} | {engine_rate:12,.0f} {infer_rate:13,.0f} | {e2e_rate:16,.0f} | "
              + " / ".join(f"{v:.3f}" for v in stages.values()))
    best = {(p, b): (e, x) for p, b, e, _, x, _ in rows}
    if ("fp16", 32) in best:
        engine_rate, e2e_rate = best[("fp16", 32)]
        print(f"\ntargets (one H100): model-only fp16 batch 32 {engine_rate:,.0f} img/s vs >= {TARGET_MODEL_ONLY:,} "
              f"({'met' if engine_rate >= TARGET_MODEL_ONLY else 'NOT met'}); end-to-end {e2e_rate:,.0f} img/s vs "
              f">= {TARGET_END_TO_END:,} ({'met' if e2e_rate >= TARGET_END_TO_END else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
