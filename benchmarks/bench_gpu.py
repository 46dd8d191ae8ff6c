"""GPU throughput of fastcell without TensorRT (the torch-CUDA backend), every figure in one run.

Prints, side by side:

1. model only: CUDA-graph replays back to back with the input already on the device (the network's
   ceiling), and ``backend.infer()`` (float32 batch on the host → device → graph → heads to the
   host), images/s at batch 1, 8, 32;
2. GPU stage: ``backend.infer_frames()`` — uint8 640×480 frames in host memory → pinned upload →
   CUDA letterbox into the graph's input → graph → heads to the host — images/s and ms per batch;
3. post-processing with segmentation on 1…N threads (N = the host's cores), images/s: the CPU side;
4. ``fastcell.stream`` end to end from decoded frames (batch 32 and 8): images/s, latency p50/p99;
5. ``fastcell annotate`` of JPEG files with the default writers: images/s (incl. model load);
6. time of each stage per batch of 32, measured alone;

and the issue's targets beside them (H200, 16 host cores): model only fp16 batch 32 ≥ 28,000
images/s; stream with segmentation ≥ 10,000; annotate ≥ 2,500; stream batch 8 p99 ≤ 10 ms.

Usage: ``python benchmarks/bench_gpu.py [--device cuda] [--quick] [--compile]``. ``--quick`` keeps
the whole run to about a minute (fewer iterations and frames). The frames are the BCCD samples in
tests/data/bccd (640×480 JPEGs), so nothing outside the checkout is needed. ``--device`` takes any
backend (``onnxruntime`` runs the script on a machine without a GPU, for checking it); the GPU-only
rows are then skipped with the reason. Without a CUDA GPU and ``--device cuda`` it says so and
exits 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "tests" / "data" / "bccd"
TARGETS = {"model": 28_000, "stream": 10_000, "annotate": 2_500, "p99_b8_ms": 10.0}


def fail(message: str) -> None:
    print(f"bench_gpu: {message}", file=sys.stderr)
    sys.exit(2)


def sample_frames(count: int) -> list[np.ndarray]:
    import cv2

    paths = sorted(SAMPLES.glob("*.jpg"))
    if not paths:
        fail(f"no sample JPEGs in {SAMPLES}")
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    # distinct arrays (a camera hands over new buffers), cycling through the samples
    return [frames[i % len(frames)].copy() for i in range(count)]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10,.0f} images/s"


def timed(fn, repeat: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def model_only(backend, batches: list[int], iters: int) -> None:
    print("\n1. model only")
    size = backend.spec.input_size
    for b in batches:
        data = np.random.default_rng(0).uniform(0, 1, (b, 3, size, size)).astype(np.float32)
        infer = timed(lambda: backend.infer(data), iters)
        line = f"   batch {b:3d}: infer() {rate(b, infer)}"
        graphs = getattr(backend, "_graphs", {})
        if b in graphs:
            torch = backend._torch
            graph = graphs[b][0]
            with torch.cuda.stream(backend._stream):
                def replay() -> None:
                    for _ in range(iters):
                        graph.replay()
                    backend._stream.synchronize()
                seconds = timed(replay, 1) / iters
            line += f" | graph replay alone {rate(b, seconds)}"
            if b == 32:
                line += f" (target {TARGETS['model']:,})"
        print(line, flush=True)


def gpu_stage(backend, frames: list[np.ndarray], batches: list[int], iters: int) -> None:
    print("\n2. GPU stage: pinned upload + device letterbox + graph + heads to host")
    if not hasattr(backend, "infer_frames") or not backend.can_take_frames(frames[:1]):
        print(f"   skipped: the {backend.name} backend has no device letterbox here")
        return
    for b in batches:
        chunk = frames[:b]
        seconds = timed(lambda: backend.infer_frames(chunk), iters)

        def pipelined() -> None:  # two batches in flight, as the stream runs them
            previous = backend.submit_frames(chunk)
            for _ in range(iters - 1):
                ticket = backend.submit_frames(chunk)
                backend.collect(previous)
                previous = ticket
            backend.collect(previous)
        overlapped = timed(pipelined, 1) / iters
        print(f"   batch {b:3d}: {rate(b, seconds)}  ({seconds * 1e3:.2f} ms per batch); "
              f"two in flight {rate(b, overlapped)}", flush=True)


def post_scaling(annotator, frames: list[np.ndarray], quick: bool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fastcell._parallel import host_threads, split_batch

    print("\n3. post-processing + segmentation (CPU) on a pool, batch 32, 640x480")
    batch = frames[:32]
    heads, params = annotator.preprocess_infer(batch)
    meta = [{"frame_index": i} for i in range(len(batch))]
    one = None
    counts = sorted({1, 2, 4, 8, 14, 16, host_threads()} & set(range(1, host_threads() + 1)))
    for threads in counts:
        pool = ThreadPoolExecutor(threads)
        rounds = 4 if quick else 16

        def run() -> None:
            futures = []
            for _ in range(rounds):
                for lo, hi in split_batch(len(batch), threads):
                    futures.append(pool.submit(annotator.postprocess, [h[lo:hi] for h in heads], params[lo:hi],
                                               batch[lo:hi], meta[lo:hi]))
            for f in futures:
                f.result()
        seconds = timed(run, 2) / rounds
        pool.shutdown()
        one = one or seconds
        print(f"   {threads:2d} threads: {rate(len(batch), seconds)}  (x{one / seconds:.1f})", flush=True)


def stream_end_to_end(annotator, frames: list[np.ndarray], batch: int) -> tuple[float, float, float]:
    import fastcell

    count = 0
    start = time.perf_counter()
    with fastcell.stream(frames, annotator, batch_size=batch, max_latency=0.002) as stream:
        for _ in stream:
            count += 1
    seconds = time.perf_counter() - start
    return count / seconds, stream.latency_p50 * 1e3, stream.latency_p99 * 1e3


def annotate_files(device: str, count: int, batch: int) -> float:
    from fastcell._parallel import host_threads
    from fastcell.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        samples = sorted(SAMPLES.glob("*.jpg"))
        for i in range(count):
            shutil.copyfile(samples[i % len(samples)], src / f"frame_{i:05d}.jpg")
        workers = str(max(2, host_threads() // 2))
        start = time.perf_counter()
        code = main(["annotate", str(src), "--out", str(Path(tmp) / "out"), "--device", device, "-q",
                     "--batch", str(batch), "--workers", workers])
        seconds = time.perf_counter() - start
        if code != 0:
            print(f"   annotate exited with {code}")
    return count / seconds


def stages(annotator, frames: list[np.ndarray], iters: int) -> None:
    from fastcell import ops

    print("\n6. each stage alone, ms per batch of 32")
    batch = frames[:32]
    backend = annotator.backend
    size, pad = annotator.spec.input_size, annotator.spec.pad_value
    letterboxed, params = ops.letterbox_batch(batch, size=size, pad_value=pad)
    heads = backend.infer(letterboxed)
    rows = [("CPU letterbox (one thread)", lambda: ops.letterbox_batch(batch, size=size, pad_value=pad)),
            ("infer() from a float32 host batch", lambda: backend.infer(letterboxed))]
    if hasattr(backend, "infer_frames") and backend.can_take_frames(batch):
        rows.append(("infer_frames(): upload + device letterbox + graph + download", lambda: backend.infer_frames(batch)))
    rows.append(("post-processing + segmentation (one thread)", lambda: annotator.postprocess(heads, params, batch)))
    for name, fn in rows:
        print(f"   {name:62s} {timed(fn, iters) * 1e3:8.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="backend (default: %(default)s)")
    parser.add_argument("--precision", default=None, help="backend precision (default: the backend's)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network first (minutes)")
    args = parser.parse_args()

    import fastcell
    from fastcell._parallel import default_post_workers, host_threads
    from fastcell.annotator import Annotator

    options = {"compile": True} if args.compile else {}
    try:
        annotator = Annotator.from_model(args.model, args.device, args.precision, max_batch=32, **options)
    except (ImportError, RuntimeError) as err:
        fail(f"cannot open the {args.device} backend: {err}")
    backend = annotator.backend
    print(f"fastcell {fastcell.__version__}: {backend!r}; host threads {host_threads()}, "
          f"post workers {default_post_workers()}")
    if backend.name == "cuda":
        torch = backend._torch
        print(f"   GPU {torch.cuda.get_device_name(backend._device)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}")
    iters = 10 if args.quick else 100
    n_stream = 512 if args.quick else 4096
    frames = sample_frames(max(n_stream, 32))
    gpu = backend.name in ("cuda", "tensorrt")
    batches = [1, 8, 32] if gpu else [1, 8]

    model_only(backend, batches, iters)
    gpu_stage(backend, frames, [b for b in batches if b > 1], iters)
    post_scaling(annotator, frames, args.quick)

    print("\n4. fastcell.stream end to end from decoded 640x480 frames, with segmentation")
    for b in (32, 8):
        n = n_stream if gpu else 64
        fps, p50, p99 = stream_end_to_end(annotator, frames[:n], b)
        target = f"target {TARGETS['stream']:,}" if b == 32 else f"target p99 <= {TARGETS['p99_b8_ms']} ms"
        print(f"   batch {b:2d}: {fps:10,.0f} images/s  latency p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({target})",
              flush=True)

    print("\n5. fastcell annotate of JPEG files, default writers (incl. model load)")
    n_files = (256 if args.quick else 2048) if gpu else 32
    print(f"   {n_files} files: {annotate_files(args.device, n_files, 32):10,.0f} images/s "
          f"(target {TARGETS['annotate']:,})", flush=True)

    stages(annotator, frames, iters)
    annotator.close()


if __name__ == "__main__":
    main()
