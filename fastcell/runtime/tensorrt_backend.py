"""TensorRT on an NVIDIA GPU: the same :class:`~fastcell.runtime.Backend` protocol as the CPU engines.

The engine comes from :func:`fastcell.export.tensorrt.spec_engine`: built from the shipped
``model.onnx`` on this GPU at first use and cached, keyed by GPU, compute capability, TensorRT
version, precision and batch profile; a stale or foreign engine is rebuilt or refused, never
loaded.

Execution. Each thread that calls :meth:`TensorRTBackend.infer` gets its own worker: a TensorRT
execution context, one non-blocking CUDA stream, page-locked (pinned) host buffers and device
buffers sized for the profile's largest batch, bound once. A call copies the batch into the pinned
input, then queues host→device copy, inference and device→host copies on the worker's stream and
waits once. Batch sizes repeat in a stream of frames, so the first call at a batch size runs
normally and records that sequence as a CUDA graph; later calls at that size replay the graph in
one launch (no per-kernel launch cost). Batches larger than the profile's maximum are run in chunks.

Needs ``pip install "fastcell[tensorrt]"`` (TensorRT 10.x and NVIDIA's ``cuda-python``) and an
NVIDIA GPU with its driver. THIS PATH HAS NOT YET BEEN RUN ON A GPU: see tests/test_gpu.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from fastcell.runtime import _cuda
from fastcell.runtime._base import check_batch
from fastcell.defaults import INPUT_NAME
from fastcell.export.tensorrt import PRECISIONS, BatchProfile, require_tensorrt, spec_engine
from fastcell.spec import ModelSpec

__all__ = ["TensorRTBackend"]

log = logging.getLogger("fastcell")


class _Worker:
    """One thread's execution context, stream and bound buffers."""

    def __init__(self, engine, spec: ModelSpec, max_batch: int, device: int, use_graphs: bool) -> None:
        cudart = _cuda.runtime()
        _cuda.check(cudart.cudaSetDevice(device), "cudaSetDevice")  # per thread in the runtime API
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = _cuda.Stream()
        size = spec.input_size
        self.input_host = _cuda.PinnedArray((max_batch, 3, size, size), np.float32)
        self.input_device = _cuda.DeviceArray(self.input_host.nbytes)
        self.image_bytes = 3 * size * size * 4
        self.outputs = []  # (name, pinned host array, device array, bytes per image)
        for head in spec.heads:
            cells = size // head.stride
            host = _cuda.PinnedArray((max_batch, spec.head_width, cells, cells), np.float32)
            self.outputs.append((head.output, host, _cuda.DeviceArray(host.nbytes), host.nbytes // max_batch))
        # Addresses are fixed for the worker's life, which is what makes graph replay valid.
        self.context.set_tensor_address(INPUT_NAME, self.input_device.ptr)
        for name, _, device_array, _ in self.outputs:
            self.context.set_tensor_address(name, device_array.ptr)
        self.size = size
        self.use_graphs = use_graphs
        self.graphs: dict[int, _cuda.Graph] = {}
        self.shape = 0

    def _enqueue(self, n: int) -> None:
        self.stream.copy_to_device(self.input_device.ptr, self.input_host.ptr, n * self.image_bytes)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT's log)")
        for _, host, device_array, per_image in self.outputs:
            self.stream.copy_to_host(host.ptr, device_array.ptr, n * per_image)

    def _capture(self, n: int) -> None:
        """Record copies + inference at batch ``n`` as a graph; on any failure, stop using graphs."""
        try:
            self.stream.begin_capture()
            try:
                self._enqueue(n)
            finally:
                graph = self.stream.end_capture()
            self.graphs[n] = graph
        except RuntimeError as err:
            log.warning("fastcell: CUDA graph capture failed at batch %d (%s); running without graphs", n, err)
            self.use_graphs = False

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        np.copyto(self.input_host.array[:n], batch)
        if self.shape != n:
            if not self.context.set_input_shape(INPUT_NAME, (n, 3, self.size, self.size)):
                raise RuntimeError(f"TensorRT refused input shape ({n}, 3, {self.size}, {self.size})")
            self.shape = n
        graph = self.graphs.get(n)
        if graph is not None:
            graph.launch(self.stream)
            self.stream.synchronize()
        else:
            # TensorRT must run a shape once before that shape can be captured.
            self._enqueue(n)
            self.stream.synchronize()
            if self.use_graphs:
                self._capture(n)
        return [host.array[:n].copy() for _, host, _, _ in self.outputs]

    def release(self) -> None:
        for graph in self.graphs.values():
            graph.destroy()
        self.graphs.clear()
        self.context = None
        self.input_device.free()
        self.input_host.free()
        for _, host, device_array, _ in self.outputs:
            device_array.free()
            host.free()
        self.stream.destroy()


class TensorRTBackend:
    """Run a fastcell model with TensorRT on an NVIDIA GPU.

    Parameters
    ----------
    spec : ModelSpec
        The model (``model.onnx`` beside its ``model.json``).
    precision : {None, "fp16", "int8", "fp32"}
        ``None`` means ``"fp16"``. ``"int8"`` needs ``calibration_images``.
    device : int, default 0
        CUDA device index.
    max_batch, opt_batch : int, default 32 and 8
        The engine's batch profile (min 1); larger batches are run in chunks of ``max_batch``.
    workspace_gib : float, default 1.0
        TensorRT's scratch-memory limit while building.
    engine : path, optional
        A prebuilt engine (``fastcell export --format engine``). It is checked against this GPU and
        TensorRT through its metadata JSON and refused, with the reason, when it does not fit.
        Default: the user cache (see :mod:`fastcell.export.tensorrt`).
    cache_dir : path, optional
        Override the engine cache directory.
    on_stale : {None, "rebuild", "refuse"}
        What to do with an engine that does not fit; ``None``: ``"refuse"`` for an explicit
        ``engine``, ``"rebuild"`` for the cache.
    calibration_images : sequence of paths
        Real frames for int8 calibration (at least 8).
    cuda_graphs : bool, default True
        Replay each batch size as a CUDA graph after its first call.
    num_threads : int, optional
        Ignored (a CPU-backend option, accepted so ``device="auto"`` callers may pass it).
    """

    name = "tensorrt"

    def __init__(self, spec: ModelSpec, precision: str | None = None, *, device: int = 0, max_batch: int = 32,
                 opt_batch: int = 8, workspace_gib: float = 1.0, engine: str | Path | None = None,
                 cache_dir: str | Path | None = None, on_stale: str | None = None,
                 calibration_images=(), cuda_graphs: bool = True, num_threads: int | None = None) -> None:
        trt = require_tensorrt()  # ImportError naming fastcell[tensorrt] when absent
        _cuda.runtime()
        precision = precision or "fp16"
        if precision not in PRECISIONS:
            raise ValueError(f"the tensorrt backend runs precision None, 'fp16', 'int8' or 'fp32', got {precision!r}")
        if _cuda.device_count() == 0:
            raise RuntimeError("the tensorrt backend needs an NVIDIA GPU, and no CUDA device is visible "
                               "(no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)")
        self.spec = spec
        self.precision = precision
        self.device = int(device)
        self.profile = BatchProfile(1, min(int(opt_batch), int(max_batch)), int(max_batch))
        self.engine_path = spec_engine(spec, precision, self.profile, device=self.device,
                                       workspace_gib=workspace_gib, calibration_images=calibration_images,
                                       engine_path=engine, directory=cache_dir,
                                       on_stale=on_stale or ("refuse" if engine is not None else "rebuild"))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engine_path} (see its log above)")
        self._check_io(trt)
        self._cuda_graphs = bool(cuda_graphs)
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when the last running infer returns
        self._running = 0

    def _check_io(self, trt) -> None:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        expected = [INPUT_NAME] + [h.output for h in self.spec.heads]
        if sorted(names) != sorted(expected):
            raise RuntimeError(f"{self.engine_path} has tensors {names}, the model expects {expected}")
        for name in expected:
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise RuntimeError(f"{self.engine_path}: tensor {name!r} is {self._engine.get_tensor_dtype(name)}, "
                                   "expected float32 (fastcell builds engines with float32 inputs and outputs)")

    def _worker(self, engine) -> _Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = _Worker(engine, self.spec, self.profile.max, self.device, self._cuda_graphs)
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        return worker

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = check_batch(batch, self.spec.input_size)
        with self._lock:  # counted, so that close() never frees buffers under a running call
            engine = self._engine
            if engine is None:
                raise RuntimeError("this TensorRT backend is closed")
            self._running += 1
        try:
            worker = self._worker(engine)
            step = self.profile.max
            if batch.shape[0] <= step:
                return worker.run(batch)
            parts = [worker.run(batch[i:i + step]) for i in range(0, batch.shape[0], step)]
            return [np.concatenate(per_head) for per_head in zip(*parts)]
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._idle.notify_all()

    def close(self) -> None:
        """Release the engine and every thread's buffers (idempotent).

        New calls are refused at once; calls already running (in other threads) are waited for,
        as their worker's buffers and stream are freed here.
        """
        with self._lock:
            self._engine = None
            while self._running:
                self._idle.wait()
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.release()
        self._local = threading.local()
        self._runtime = None

    def __repr__(self) -> str:
        return (f"TensorRTBackend({self.spec.name!r}, precision={self.precision!r}, batch {self.profile}, "
                f"engine={str(self.engine_path)!r})")
