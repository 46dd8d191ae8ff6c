"""Frames pushed in by an acquisition callback (:class:`Pushed`)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import numpy as np

from fastcell.io.sources._base import Item, Source
from fastcell.io.sources._files import check_count

__all__ = ["Pushed"]


class Pushed(Source):
    """Frames pushed in by the caller — for acquisition loops that deliver frames by callback.

    ``push(frame)`` never blocks the acquisition thread: when ``maxsize`` frames are waiting, the
    oldest is discarded and counted in ``discarded`` (a live camera does not wait). ``end()`` ends
    the source after the frames already pushed; it is the only end — :func:`fastcell.stream` puts
    no stall timeout on a pushed source unless asked to, as acquisition may pause for as long as
    it likes. Once the stream is closed (:meth:`close`), ``push`` discards frames (counted in
    ``discarded``) instead of raising, so a camera callback outliving the analysis does not fail
    on the SDK's thread; ``push`` after ``end()`` is a programming error and raises.

    Parameters
    ----------
    name : str
        What to call the source in Results.
    maxsize : int
        Frames waiting at most.
    copy : bool
        Copy each pushed frame (default). Camera SDKs usually hand the callback a buffer that they
        reuse for a later frame; a frame queued without a copy would then be overwritten before
        it is analysed. Pass False only when every pushed array is yours to give away.
    """

    live = True

    def __init__(self, name: str = "pushed", maxsize: int = 8, *, copy: bool = True) -> None:
        super().__init__()
        self.name = name
        self.copy = bool(copy)
        self._queue: "queue.Queue" = queue.Queue(maxsize=check_count("maxsize", maxsize))
        self._lock = threading.Lock()  # several acquisition threads may push
        self._ended = False
        self._closed = False
        self._index = 0
        self.discarded = 0

    def push(self, frame: np.ndarray, *, copy: bool | None = None) -> None:
        """Hand one frame to the stream (thread-safe, non-blocking).

        Parameters
        ----------
        frame : ndarray
            The frame (uint8/uint16, gray/BGR/BGRA).
        copy : bool, optional
            Override the source's ``copy`` setting for this frame.
        """
        if self._ended:  # checked again under the lock; this one only skips a useless copy
            raise RuntimeError(f"source {self.name!r} has ended; push() after end()")
        if self._closed:  # the stream stopped: nobody will read this frame
            with self._lock:
                self.discarded += 1
            return
        if self.copy if copy is None else copy:
            frame = np.array(frame, copy=True)  # the SDK may refill its buffer as soon as we return
        with self._lock:
            # end() takes the lock too: once the reader sees _ended, every frame pushed before
            # end() is already in the queue
            if self._ended:
                raise RuntimeError(f"source {self.name!r} has ended; push() after end()")
            item = (frame, self.name, self._index, time.monotonic())
            self._index += 1
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.discarded += 1
                    except queue.Empty:
                        pass

    def end(self) -> None:
        """No more frames: the stream finishes the pushed ones and stops."""
        with self._lock:
            self._ended = True

    def __iter__(self) -> Iterator[Item]:
        while not self._closed:
            try:
                yield self._queue.get(timeout=0.05)
            except queue.Empty:
                with self._lock:
                    ended = self._ended
                if ended:
                    # A push() and end() may both have come after the wait above ran out: the
                    # queue is final now, so take what it holds before stopping.
                    while not self._closed:
                        try:
                            yield self._queue.get_nowait()
                        except queue.Empty:
                            return
                    return

    def auto_stall_timeout(self) -> None:
        """None: acquisition may pause for as long as it likes; only ``end()`` ends the source."""
        return None

    def close(self) -> None:
        """Stop at once, leaving frames still waiting unread (any thread)."""
        self._closed = True
