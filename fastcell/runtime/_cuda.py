"""The few CUDA runtime calls the TensorRT backend needs, through NVIDIA's ``cuda-python`` bindings.

Why ``cuda-python`` (``cuda.bindings``) rather than PyCUDA: it is NVIDIA's own, maintained in step
with each CUDA release, ships binary wheels (PyCUDA builds from source against a local toolkit at
``pip install`` time), talks to the runtime API on the device's *primary* context (the one TensorRT
and every other CUDA library use; PyCUDA's ``autoinit`` makes a context of its own, which must then
be pushed and popped around TensorRT calls), and is what TensorRT's own Python samples use. Every
call returns ``(error, *results)``; :func:`check` turns a non-zero error into a RuntimeError that
names the call and the CUDA error.

Nothing here runs at import time: importing this module without ``cuda-python`` raises the
ImportError that names the extra to install.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcell.runtime._base import missing

__all__ = ["runtime", "check", "device_count", "device_properties", "DeviceInfo", "PinnedArray",
           "DeviceArray", "Stream", "Graph"]


def runtime() -> Any:
    """The ``cuda-python`` runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as err:
            raise missing("cuda-python", "tensorrt", "the TensorRT backend") from err
    return cudart


def check(result: Any, what: str) -> Any:
    """Unpack a ``cuda-python`` result ``(err, *values)``; raise RuntimeError naming ``what`` on error."""
    cudart = runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        _, text = cudart.cudaGetErrorString(err)
        detail = text.decode() if isinstance(text, bytes) else str(text)
        raise RuntimeError(f"CUDA call {what} failed: {getattr(err, 'name', err)} ({detail})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    """CUDA devices visible here; 0 without ``cuda-python``, without a driver or without a GPU."""
    try:
        cudart = runtime()
    except ImportError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if int(err) == 0 else 0


@dataclass(frozen=True)
class DeviceInfo:
    """What identifies a GPU for engine compatibility."""

    index: int
    name: str
    compute_capability: str  # "9.0"
    total_memory: int  # bytes


def device_properties(index: int = 0) -> DeviceInfo:
    """Name and compute capability of CUDA device ``index`` (RuntimeError when there is none)."""
    cudart = runtime()
    count = device_count()
    if index < 0 or index >= count:
        raise RuntimeError(f"CUDA device {index} requested but {count} device(s) are visible"
                           + ("" if count else " (no NVIDIA driver or GPU on this machine)"))
    props = check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(index, name.rstrip("\x00").strip(), f"{props.major}.{props.minor}", int(props.totalGlobalMem))


class PinnedArray:
    """A numpy array over page-locked host memory (the fast, asynchronous side of a copy)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> None:
        self._cudart = runtime()
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        self.ptr = int(check(self._cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        self.nbytes = nbytes
        buffer = (ctypes.c_byte * nbytes).from_address(self.ptr)
        self.array = np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            check(self._cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class DeviceArray:
    """``nbytes`` of device memory; ``ptr`` is the device address TensorRT binds."""

    def __init__(self, nbytes: int) -> None:
        self._cudart = runtime()
        self.nbytes = max(1, int(nbytes))
        self.ptr = int(check(self._cudart.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            check(self._cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class Stream:
    """A non-blocking CUDA stream (it never synchronises with the legacy default stream)."""

    def __init__(self) -> None:
        self._cudart = runtime()
        self.handle = check(self._cudart.cudaStreamCreateWithFlags(self._cudart.cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags")

    def __int__(self) -> int:  # TensorRT's execute_async_v3 takes the raw handle as an int
        return int(self.handle)

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.handle), "cudaMemcpyAsync(H2D)")

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.handle), "cudaMemcpyAsync(D2H)")

    def synchronize(self) -> None:
        check(self._cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def begin_capture(self) -> None:
        # Thread-local mode: other threads' CUDA calls (other workers) do not break this capture.
        mode = self._cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(self._cudart.cudaStreamBeginCapture(self.handle, mode), "cudaStreamBeginCapture")

    def end_capture(self) -> "Graph":
        graph = check(self._cudart.cudaStreamEndCapture(self.handle), "cudaStreamEndCapture")
        return Graph(graph)

    def destroy(self) -> None:
        if self.handle is not None:
            check(self._cudart.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Graph:
    """An instantiated CUDA graph: one launch replays the captured copies and kernels."""

    def __init__(self, graph: Any) -> None:
        self._cudart = runtime()
        self._graph = graph
        self._exec = check(self._cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(self._cudart.cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self._exec is not None:
            check(self._cudart.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            check(self._cudart.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._exec = self._graph = None
