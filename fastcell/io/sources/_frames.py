"""Frames from memory: any iterable of arrays, a stack in one array, or a grabbing callable."""

from __future__ import annotations

import time
import types
from typing import Callable, Iterable, Iterator

import numpy as np

from fastcell.io.sources._base import Item, Source

__all__ = ["Frames", "Callback", "array_frames"]


class Frames(Source):
    """Any iterable of numpy frames: a list, a generator, or a stack of frames in one array.

    An array is split into frames by :func:`array_frames`: ``(N, H, W, C)`` and ``(N, H, W)``
    (when ``W`` is not 1, 3 or 4) are stacks; ``(H, W)`` and ``(H, W, C)`` with ``C`` in
    {1, 3, 4} are one frame.
    """

    def __init__(self, frames: Iterable[np.ndarray], name: str = "frames", live: bool = False) -> None:
        super().__init__()
        self.frames = array_frames(frames) if isinstance(frames, np.ndarray) else frames
        self.name = name
        self.live = live
        self._closed = False

    def __len__(self) -> int:
        return len(self.frames)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Item]:
        for index, frame in enumerate(self.frames):
            if self._closed:
                return
            yield frame, self.name, index, time.monotonic()

    def close(self) -> None:
        self._closed = True
        # A generator handed over is consumed here and nowhere else: stop it. Any other object
        # with a close() (a file, a camera wrapper) is the caller's to close, not ours.
        if isinstance(self.frames, types.GeneratorType):
            try:
                self.frames.close()
            except (ValueError, RuntimeError):  # a generator running in another thread
                pass


class Callback(Source):
    """A callable returning one frame per call (e.g. a camera SDK's grab); ``None`` ends the source.

    Treated as live by default: an acquisition loop does not wait for the analysis.
    """

    def __init__(self, grab: Callable[[], np.ndarray | None], name: str | None = None, live: bool = True) -> None:
        super().__init__()
        self.grab = grab
        self.name = name or getattr(grab, "__name__", "callable")
        self.live = live
        self._closed = False

    def __iter__(self) -> Iterator[Item]:
        index = 0
        while not self._closed:
            try:
                frame = self.grab()
            except StopIteration:
                return
            if frame is None:
                return
            yield frame, self.name, index, time.monotonic()
            index += 1

    def close(self) -> None:
        self._closed = True


def array_frames(array: np.ndarray) -> list[np.ndarray]:
    """Split an array into frames by its shape (views, no copy).

    The rule, as :func:`open_source` documents it:

    * ``ndim == 2`` — ``(H, W)``: one gray frame;
    * ``ndim == 3`` and the last axis is 1, 3 or 4 — ``(H, W, C)``: one gray/BGR/BGRA frame;
    * ``ndim == 3`` otherwise — ``(N, H, W)``: a stack of ``N`` gray frames;
    * ``ndim == 4`` — ``(N, H, W, C)``: a stack of ``N`` frames.

    A gray stack whose frames are 1, 3 or 4 pixels wide is therefore read as one frame; pass
    ``list(stack)`` to say otherwise.

    Raises
    ------
    ValueError
        For arrays of other dimensions.
    """
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        return [array]
    if array.ndim in (3, 4):
        return list(array)
    raise ValueError(f"an array source must be (H, W), (H, W, C) with C in 1/3/4, a gray stack (N, H, W) "
                     f"or a stack (N, H, W, C); got shape {array.shape}")


