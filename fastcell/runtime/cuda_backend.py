"""PyTorch on an NVIDIA GPU (``device="cuda"``): the shipped ONNX model's weights, fp16, CUDA graphs.

Why torch and not TensorRT here: TensorRT cannot be installed on every GPU machine (its wheels are
large and need a package registry), while torch with CUDA usually is. The network is rebuilt from
``model.onnx``'s own initializers (:func:`fastcell.runtime.onnx_weights.attentionnet_from_onnx`), so
it computes what ONNX Runtime computes, and no training checkpoint is needed.

Execution. fp16 (default; ``"bf16"`` and ``"fp32"`` too), channels-last, on one CUDA stream of the
backend's own. The input lives in one fixed float32 device buffer of ``max_batch`` frames; each batch
size is recorded once as a CUDA graph (cast to fp16 + the network + cast of the heads to float32)
and replayed afterwards in one launch, with cuDNN's autotuner on while recording. Calls are
serialised by a lock (one stream, one set of buffers); batches above ``max_batch`` run in chunks,
and a batch of n frames runs the graph of the next power of two (at most ~6 graphs per stream).

Two ways in:

* :meth:`CudaBackend.infer` — the :class:`~fastcell.runtime.Backend` protocol: a float32 batch on
  the host → pinned copy → device → graph → heads back into pinned buffers;
* :meth:`CudaBackend.infer_frames` — the device-resident path: uint8 frames of one size → pinned
  staging → one upload → the CUDA letterbox kernel (``fastcell._core``) writes straight into the
  graph's input → graph → heads to the host, one synchronisation per batch. Frames it cannot take
  (mixed sizes, uint16, a build without the CUDA kernels) make it return ``None``: the caller then
  letterboxes on the CPU and calls :meth:`infer`.

Needs ``pip install "fastcell[cuda]"`` (torch with CUDA, and onnx) and a GPU that torch can see;
without one the constructor raises a RuntimeError with the one-line reason.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastcell.runtime._base import PRECISIONS as _BACKEND_PRECISIONS
from fastcell.runtime._base import check_batch, require
from fastcell.spec import ModelSpec

__all__ = ["CudaBackend", "cuda_unavailable_reason", "PRECISIONS"]

log = logging.getLogger("fastcell")

PRECISIONS = _BACKEND_PRECISIONS["cuda"]  # fp16 first: the default
_WARMUP = 3  # eager runs before a graph is recorded (lazy cuDNN/cuBLAS set-up must not be captured)


def cuda_unavailable_reason(torch: Any, device: int = 0) -> str | None:
    """Why torch cannot run on CUDA device ``device`` here, in one line; ``None`` when it can."""
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build; install a CUDA build of torch "
                "(https://pytorch.org/get-started/locally/)")
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device "
                "(no NVIDIA GPU or driver, or CUDA_VISIBLE_DEVICES hides them)")
    count = torch.cuda.device_count()
    if not 0 <= device < count:
        return f"CUDA device {device} requested but {count} device(s) are visible"
    return None


class CudaBackend:
    """Run a fastcell model with PyTorch on an NVIDIA GPU.

    Parameters
    ----------
    spec : ModelSpec
        The model (``model.onnx`` beside its ``model.json``).
    precision : {None, "fp16", "bf16", "fp32"}
        ``None`` means ``"fp16"``. Inputs and returned heads are float32 whatever the precision.
    device : int, default 0
        CUDA device index.
    max_batch : int, default 32
        Frames per graph launch; larger batches run in chunks.
    cuda_graphs : bool, default True
        Record each batch size as a CUDA graph at its first call and replay it after.
    compile : bool, default False
        ``torch.compile(mode="max-autotune-no-cudagraphs")`` the network first (faster kernels;
        minutes of compiling per batch size, cached by inductor in ``$FASTCELL_CACHE/inductor`` or
        ``~/.cache/fastcell/inductor`` unless ``TORCHINDUCTOR_CACHE_DIR`` is set).
    num_threads, throughput
        Ignored (CPU-backend options, accepted so ``device="auto"`` callers may pass them).

    Raises
    ------
    ImportError
        Without torch or onnx (naming ``pip install "fastcell[cuda]"``).
    RuntimeError
        When torch sees no CUDA device (one line saying why).
    ValueError
        For another precision, or an ONNX file that is not a folded AttentionNet.
    """

    name = "cuda"

    def __init__(self, spec: ModelSpec, precision: str | None = None, *, device: int = 0, max_batch: int = 32,
                 cuda_graphs: bool = True, compile: bool = False, num_threads: int | None = None,
                 throughput: bool = False) -> None:
        torch = require("torch", "cuda", "the cuda backend")
        precision = precision or "fp16"
        if precision not in PRECISIONS:
            raise ValueError(f"the cuda backend runs precision None, 'fp16', 'bf16' or 'fp32', got {precision!r}"
                             + (" (int8 needs the tensorrt backend or a CPU backend)" if precision == "int8" else ""))
        reason = cuda_unavailable_reason(torch, int(device))
        if reason is not None:
            raise RuntimeError(f"the cuda backend cannot run: {reason}")
        require("onnx", "cuda", "reading model.onnx's weights")
        from fastcell.model.onnx_weights import attentionnet_from_onnx

        self.spec = spec
        self.precision = precision
        self.max_batch = max(1, int(max_batch))
        self._torch = torch
        self._device = torch.device("cuda", int(device))
        self._dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        model = attentionnet_from_onnx(spec).to(self._device, self._dtype)
        model = model.to(memory_format=torch.channels_last).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if compile:
            _inductor_cache()
            model = torch.compile(model, mode="max-autotune-no-cudagraphs", dynamic=False)
        self._model = model
        self._use_graphs = bool(cuda_graphs)
        self._lock = threading.RLock()  # submit_frames holds it around _submit, which takes it too
        size = spec.input_size
        with torch.cuda.device(self._device):
            self._stream = torch.cuda.Stream(self._device)
            # Fixed addresses: graph replay reads this input and the letterbox kernel writes it.
            self._input = torch.zeros((self.max_batch, 3, size, size), dtype=torch.float32, device=self._device)
            self._host_input = torch.empty((self.max_batch, 3, size, size), dtype=torch.float32, pin_memory=True)
            self._host_heads = self._new_host_heads()
            # two batches of frames in flight (submit_frames / collect), each with its own buffers
            # blocking events: a thread waiting for the GPU sleeps instead of spinning on a core
            self._slots = [_Slot(self._new_host_heads(), torch.cuda.Event(blocking=True)) for _ in range(2)]
            self._sync_slot = _Slot(self._new_host_heads(), torch.cuda.Event(blocking=True))
        self._graphs: dict[int, tuple[Any, list[Any]]] = {}
        self._core = _device_core()
        # Staging 32 camera frames into pinned memory is ~30 MB of memcpy (~3 ms on one core, as much
        # as the network itself); numpy releases the GIL while copying, so a few threads share it.
        from fastcell._parallel import host_threads

        stagers = min(4, host_threads() - 1)
        self._stagers = ThreadPoolExecutor(stagers, thread_name_prefix="fastcell-stage") if stagers > 1 else None

    def _new_host_heads(self) -> list[Any]:
        size, torch = self.spec.input_size, self._torch
        return [torch.empty((self.max_batch, self.spec.head_width, size // h.stride, size // h.stride),
                            dtype=torch.float32, pin_memory=True) for h in self.spec.heads]

    # -- the network on the fixed input --------------------------------------------------------------
    def _forward(self, n: int) -> list[Any]:
        torch = self._torch
        x = self._input[:n].to(dtype=self._dtype, memory_format=torch.channels_last)
        # float32 and NCHW-contiguous, as the host buffers are (the network's outputs are channels-last)
        return [h.to(torch.float32, memory_format=torch.contiguous_format) for h in self._model(x)]

    def _record(self, n: int) -> None:
        """Warm up batch size ``n`` and record it as a graph; on failure, run without graphs."""
        torch = self._torch
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # autotune while recording: the graph keeps the choice
        try:
            for _ in range(_WARMUP):
                self._forward(n)
            graph = torch.cuda.CUDAGraph()
            # thread-local capture: CUDA calls of other threads (post-processing) never break it
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                outputs = self._forward(n)
            self._graphs[n] = (graph, outputs)
        except RuntimeError as err:
            log.warning("fastcell: CUDA graph capture failed at batch %d (%s); running without graphs", n, err)
            self._use_graphs = False
        finally:
            torch.backends.cudnn.benchmark = benchmark

    def _bucket(self, n: int) -> int:
        """The graph that runs ``n`` frames: the next power of two (or ``max_batch``), so a stream
        whose batches vary records at most ~6 graphs, not one per size (each takes a second or two
        of autotuning). The rows past ``n`` hold stale input; their heads are never read."""
        return min(self.max_batch, 1 << (n - 1).bit_length())

    def _launch(self, n: int, host_heads: list[Any]) -> None:
        """Queue the graph (or the network) on ``self._input[:n]`` and the heads' copies into
        ``host_heads`` (pinned) on the backend's stream; returns without waiting."""
        m = self._bucket(n)
        if self._use_graphs and m not in self._graphs:
            self._record(m)
        entry = self._graphs.get(m) if self._use_graphs else None
        # eager outputs are freed on return; the caching allocator reuses them only in stream order
        outputs = entry[1] if entry is not None else self._forward(n)
        if entry is not None:
            entry[0].replay()
        for host, out in zip(host_heads, outputs):
            host[:n].copy_(out[:n], non_blocking=True)

    def _run(self, n: int) -> list[np.ndarray]:
        """The graph (or the network) on ``self._input[:n]``, heads copied to the host; waits once."""
        self._launch(n, self._host_heads)
        self._stream.synchronize()
        return [host[:n].numpy().copy() for host in self._host_heads]

    def _check_open(self) -> None:
        if self._model is None:
            raise RuntimeError("this cuda backend is closed")

    # -- the Backend protocol -----------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        batch = check_batch(batch, self.spec.input_size)
        if batch.shape[0] > self.max_batch:
            parts = [self.infer(batch[i:i + self.max_batch]) for i in range(0, batch.shape[0], self.max_batch)]
            return [np.concatenate(per_head) for per_head in zip(*parts)]
        torch = self._torch
        n = batch.shape[0]
        with self._lock, torch.inference_mode(), torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            self._check_open()
            np.copyto(self._host_input[:n].numpy(), batch)
            self._input[:n].copy_(self._host_input[:n], non_blocking=True)
            return self._run(n)

    # -- the device-resident path ---------------------------------------------------------------------
    def can_take_frames(self, frames: Sequence[np.ndarray]) -> bool:
        """Whether :meth:`infer_frames` letterboxes these frames on the GPU: uint8, one shape, a
        build of ``fastcell._core`` with the CUDA kernels, device 0 (the kernels' runtime's)."""
        if self._core is None or self._device.index != 0 or not frames:
            return False
        first = frames[0]
        return all(isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.shape == first.shape for f in frames) \
            and (first.ndim == 2 or (first.ndim == 3 and first.shape[2] in (1, 3, 4)))

    def infer_frames(self, frames: Sequence[np.ndarray], pad_value: int | None = None
                     ) -> tuple[list[np.ndarray], np.ndarray] | None:
        """Letterbox ``frames`` on the GPU into the network's input and run it.

        Parameters
        ----------
        frames : sequence of (H, W), (H, W, 1|3|4) ndarray of uint8
            Checked frames (:func:`fastcell.frames.check_frame`), all of one shape.
        pad_value : int, optional
            Letterbox grey level; default ``spec.pad_value``.

        Returns
        -------
        (heads, params) or None
            The heads as :meth:`infer` returns them and the ``(N, 5)`` letterbox parameters — the
            same as ``fastcell.ops.letterbox_batch`` followed by :meth:`infer` (the letterbox
            kernel equals the CPU's bit for bit) — or ``None`` when :meth:`can_take_frames` is
            False (the caller then takes the CPU path).
        """
        frames = list(frames)
        if not self.can_take_frames(frames):
            return None
        # A slot of its own, never left in flight (the lock is held from staging to collecting), so
        # direct calls neither wait for nor disturb a stream's batches in flight.
        with self._lock:
            self._check_open()
            parts = [self.collect(self._submit(frames[i:i + self.max_batch], pad_value, self._sync_slot))
                     for i in range(0, len(frames), self.max_batch)]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(per_head) for per_head in zip(*(p[0] for p in parts))], \
            np.concatenate([p[1] for p in parts])

    def submit_frames(self, frames: Sequence[np.ndarray], pad_value: int | None = None) -> "_Ticket | None":
        """Queue :meth:`infer_frames`'s work for up to ``max_batch`` frames and return at once.

        Two batches may be in flight: while the GPU runs one, the caller stages the next (the
        stream's inference thread does). :meth:`collect` waits for a batch and returns its
        ``(heads, params)``.

        Returns
        -------
        ticket or None
            ``None`` when :meth:`can_take_frames` is False, there are more than ``max_batch``
            frames, or two batches are in flight already (then use :meth:`infer_frames`).

        Raises
        ------
        RuntimeError
            When the backend is closed.
        """
        frames = list(frames)
        if len(frames) > self.max_batch or not self.can_take_frames(frames):
            return None
        with self._lock:
            self._check_open()
            slot = next((s for s in self._slots if s.ticket is None), None)
            if slot is None:
                return None
            return self._submit(frames, pad_value, slot)

    def _submit(self, frames: list[np.ndarray], pad_value: int | None, slot: "_Slot") -> "_Ticket":
        """Stage, upload, letterbox and launch ``frames`` (at most ``max_batch``) in ``slot``."""
        torch = self._torch
        n = len(frames)
        shape = frames[0].shape if frames[0].ndim == 3 else frames[0].shape + (1,)
        height, width, channels = (int(v) for v in shape)
        pad = float(self.spec.pad_value if pad_value is None else pad_value)
        with self._lock, torch.inference_mode(), torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            self._check_open()
            # The slot's previous batch was collected, so its upload from this pinned buffer is done.
            pinned, on_device = self._staging(slot, shape)
            host = pinned.numpy()
            if self._stagers is not None and n >= 4:
                list(self._stagers.map(lambda i: np.copyto(host[i], frames[i].reshape(shape)), range(n)))
            else:
                for i, frame in enumerate(frames):
                    np.copyto(host[i], frame.reshape(shape))
            on_device[:n].copy_(pinned[:n], non_blocking=True)
            # Stream order: this letterbox writes the input only after the previous graph read it.
            params = self._core.cuda_letterbox_batch_device(
                on_device.data_ptr(), n, height, width, channels, width * channels, height * width * channels,
                self.spec.input_size, pad, self._input.data_ptr(), self._stream.cuda_stream)
            self._launch(n, slot.heads)
            slot.event.record(self._stream)
            slot.ticket = _Ticket(slot, n, params)
            return slot.ticket

    def collect(self, ticket: "_Ticket") -> tuple[list[np.ndarray], np.ndarray]:
        """Wait for a batch from :meth:`submit_frames`: ``(heads, params)`` as :meth:`infer_frames`."""
        with self._lock:
            self._check_open()
            slot = ticket.slot
            if slot.ticket is not ticket:
                raise RuntimeError("this batch was collected already")
            slot.event.synchronize()
            heads = [h[:ticket.count].numpy().copy() for h in slot.heads]
            slot.ticket = None
            return heads, ticket.params

    def _staging(self, slot: "_Slot", shape: tuple[int, ...]) -> tuple[Any, Any]:
        """The slot's pinned and device uint8 buffers for ``max_batch`` frames of ``shape``."""
        if slot.shape != shape:
            torch = self._torch
            slot.pinned = slot.device = None  # the old pair is freed before the new one is allocated
            full = (self.max_batch, *shape)
            slot.pinned = torch.empty(full, dtype=torch.uint8, pin_memory=True)
            slot.device = torch.empty(full, dtype=torch.uint8, device=self._device)
            slot.shape = shape
        return slot.pinned, slot.device

    def close(self) -> None:
        """Release the network, graphs and buffers (idempotent); waits for a running call."""
        with self._lock:
            self._model = None
            self._graphs.clear()
            self._slots = []
            self._sync_slot = None
            self._input = self._host_input = None
            self._host_heads = []
            if self._stagers is not None:
                self._stagers.shutdown(wait=False)
                self._stagers = None

    def __repr__(self) -> str:
        return (f"CudaBackend({self.spec.name!r}, precision={self.precision!r}, device={self._device}, "
                f"max_batch={self.max_batch}, graphs={self._use_graphs})")


class _Slot:
    """Buffers of one batch of frames in flight: pinned and device frames, pinned heads, an event."""

    def __init__(self, heads: list[Any], event: Any) -> None:
        self.heads = heads
        self.event = event
        self.shape: tuple[int, ...] | None = None
        self.pinned: Any = None
        self.device: Any = None
        self.ticket: _Ticket | None = None


class _Ticket:
    """A submitted batch: which slot holds it, how many frames, its letterbox parameters."""

    def __init__(self, slot: _Slot, count: int, params: np.ndarray) -> None:
        self.slot, self.count, self.params = slot, count, params


def _device_core() -> Any:
    """``fastcell._core`` when it was built with the CUDA kernels and sees a device, else None."""
    from fastcell._core_loader import core

    if not core.has_cuda():
        log.info("fastcell: this build of fastcell._core has no CUDA kernels; the cuda backend letterboxes on the CPU")
        return None
    if core.cuda_device_count() == 0:
        return None
    return core


def _inductor_cache() -> None:
    """Point inductor's compile cache at fastcell's cache folder, unless the user chose one."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        root = Path(os.environ.get("FASTCELL_CACHE", Path.home() / ".cache" / "fastcell"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
