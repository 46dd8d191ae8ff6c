"""Cameras, video files and network streams, read with ``cv2.VideoCapture``."""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from typing import Any, Iterator

import cv2
import numpy as np

from fastcell.io.sources import _base
from fastcell.io.sources._base import URL_SCHEMES, Item, Source, is_url

__all__ = ["VideoCapture"]

log = logging.getLogger("fastcell")

_STEP_MARGIN = 1.0  # seconds a camera's own time limit for one step must stay below the stall limit


class VideoCapture(Source):
    """A camera index, a video file or a network stream, read with ``cv2.VideoCapture``.

    Parameters
    ----------
    target : int or str
        Camera index, file path or URL.
    live : bool, optional
        Default: True for cameras and URLs, False for files.
    reconnect : int
        Live sources only: how many times to reopen after the stream ends or errors before giving
        up (0: end at once). Between attempts wait ``reconnect_delay`` seconds.
    open_timeout, read_timeout : float
        Seconds OpenCV may take to open the target / to read one frame, where its backend supports
        these limits (FFmpeg: files and network streams); a frozen stream then fails the read
        instead of blocking it, and a reconnect can follow. Camera backends that refuse these
        limits (e.g. V4L2) open without them. Both default to 5 s, below the stream's 10 s stall
        limit (:data:`STALL_TIMEOUT`), which each step of a reconnect restarts
        (see ``heartbeat`` in :class:`Source`): a read that times out is then retried, not
        taken for a stall.

    Raises
    ------
    ValueError
        For a negative or non-integer ``reconnect``, or a time that is negative, nan or infinite
        (checked before anything is opened).
    OSError
        When the target cannot be opened.

    Notes
    -----
    ``cv::VideoCapture`` is not thread-safe, so the capture is only ever used by the thread that
    iterates this source: :meth:`close` (which may come from any thread) only raises a flag, and
    the reading thread releases the device when its current ``read()`` returns. A read that never
    returns keeps the device until it does; the stream does not wait for it (see
    :func:`fastcell.stream`'s stall handling).
    """

    def __init__(self, target: int | str, *, live: bool | None = None, reconnect: int = 0,
                 reconnect_delay: float = 1.0, api: int = cv2.CAP_ANY, open_timeout: float = 5.0,
                 read_timeout: float = 5.0) -> None:
        super().__init__()
        if isinstance(reconnect, bool) or not isinstance(reconnect, (int, np.integer)) or reconnect < 0:
            raise ValueError(f"reconnect must be an int >= 0, got {reconnect!r}")
        for name, value in (("reconnect_delay", reconnect_delay), ("open_timeout", open_timeout),
                            ("read_timeout", read_timeout)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        self.target = target
        self.name = f"camera:{target}" if isinstance(target, int) else str(target)
        self.live = (isinstance(target, int) or str(target).lower().startswith(URL_SCHEMES)) if live is None else live
        self.reconnect = int(reconnect)
        self.reconnect_delay = float(reconnect_delay)
        self.api = api
        self.open_timeout = float(open_timeout)
        self.read_timeout = float(read_timeout)
        self._cap: Any = None
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards _reading/_cap hand-over between close() and the reader
        self._reading = False
        self.fps = 0.0
        self.reconnects = 0
        self._cap = self._open()
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def auto_stall_timeout(self) -> float | None:
        """None for a file; for a live source :data:`STALL_TIMEOUT`, raised to fit one reconnect step.

        The stall timer restarts at each step of a reconnect (the source's ``heartbeat``), so
        each step — one read, the pause, one open — must end within the limit, or the stream
        would give up on a camera that is about to reconnect.
        """
        if not self.live:
            return None
        step = max(self.read_timeout, self.open_timeout, self.reconnect_delay)
        return max(_base.STALL_TIMEOUT, step + _STEP_MARGIN)

    def _timeouts(self) -> list[int]:
        return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, round(self.open_timeout * 1000)),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(self.read_timeout * 1000))]

    def _timeouts_may_be_refused(self) -> bool:
        """Whether a failed open with the timeouts may be a backend refusing them.

        Backends refuse to open with parameters they do not know (OpenCV checks for unused ones):
        camera backends such as V4L2 do, and so may the one that reads a local file FFmpeg cannot
        (a retry there costs nothing). A URL goes to FFmpeg when it is present, which takes both
        timeouts: there a failure is the stream's own.
        """
        if isinstance(self.target, int) or not is_url(str(self.target)):
            return True
        if self.api not in (cv2.CAP_ANY, cv2.CAP_FFMPEG):
            return True
        return not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG)

    def _open(self) -> Any:
        # Only where the timeouts may be what failed is the open retried without them: for an
        # unreachable URL the retry would block for OpenCV's own, longer open timeout.
        attempts = [self._timeouts()] + ([[]] if self._timeouts_may_be_refused() else [])
        for params in attempts:
            self.heartbeat = time.monotonic()
            cap = cv2.VideoCapture(self.target, self.api, params)
            if cap.isOpened():
                return cap
            cap.release()
        raise OSError(f"cannot open {self.name} with OpenCV (no such camera/file, unsupported "
                      "codec, or the stream is unreachable)")

    def __len__(self) -> int:
        if self.live or self._cap is None:
            raise TypeError(f"{self.name} is live: it has no length")
        return max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __iter__(self) -> Iterator[Item]:
        with self._lock:
            if self._closed.is_set() or self._reading:
                return
            self._reading = True
        try:
            yield from self._frames()
        finally:  # released here, by the reading thread, never under a running read()
            with self._lock:
                self._reading = False
                cap, self._cap = self._cap, None
            if cap is not None:
                cap.release()

    def _frames(self) -> Iterator[Item]:
        index = 0
        failures = 0
        while not self._closed.is_set():
            cap = self._cap
            ok, frame = cap.read() if cap is not None else (False, None)
            if ok and frame is not None:
                failures = 0
                yield frame, self.name, index, time.monotonic()
                index += 1
                continue
            if self._closed.is_set() or not self.live or failures >= self.reconnect:
                return
            failures += 1
            self.reconnects += 1
            self.heartbeat = time.monotonic()  # each step of a reconnect restarts the stall timer
            log.warning("fastcell: %s stopped delivering frames; reconnect %d/%d in %.1f s",
                        self.name, failures, self.reconnect, self.reconnect_delay)
            if self._closed.wait(self.reconnect_delay):
                return
            self._cap = None
            if cap is not None:
                cap.release()
            try:
                self._cap = self._open()
            except OSError as err:
                log.warning("fastcell: %s", err)
            self.heartbeat = time.monotonic()  # the read on the new capture begins

    def close(self) -> None:
        """Stop reading (any thread). The device is released by the reading thread, or here when
        no thread is reading."""
        with self._lock:
            self._closed.set()
            if self._reading:
                return
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


