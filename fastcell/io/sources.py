"""Where frames come from: cameras, videos, URLs, folders, globs, path lists, numpy frames, callables.

Every source iterates ``(frame, source_name, index, timestamp)``: the frame as an ndarray (uint8 or
uint16, gray/BGR/BGRA, as read), the file path/URL/name it came from, its 0-based position in the
source, and ``time.monotonic()`` when it was read. Sources say whether they are ``live`` (a camera
or a stream that will not wait: the pipeline may drop its oldest frames when behind) or not
(files, folders, iterables: every frame is processed).

Unreadable, corrupt or unsupported image files (a float32 or signed-integer TIFF, say: they decode,
but fastcell takes 8- and 16-bit unsigned images only) are logged, recorded in ``source.failed`` as
``(path, reason)`` and skipped when read — a folder with one bad file still runs to the end, and a
rerun does not stop on it either. Their index is not reused, so the indices of the other files stay
their positions in the sorted list.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
import queue
import threading
import time
import types
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from fastcell.preprocess import check_frame

__all__ = ["Source", "ImageFiles", "VideoCapture", "Frames", "Callback", "Pushed", "open_source", "read_image",
           "array_frames", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "STALL_TIMEOUT"]

log = logging.getLogger("fastcell")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                              ".jp2", ".pbm", ".pgm", ".ppm", ".pnm"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".wmv", ".mpg", ".mpeg", ".webm",
                              ".flv", ".mjpeg", ".mjpg", ".gif", ".ts"})
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")

# Defined here, not in fastcell.pipeline (which imports this module and re-exports it): the
# sources decide their own "auto" stall limit (Source.auto_stall_timeout).
STALL_TIMEOUT = 10.0  # seconds: stall_timeout="auto" for live sources other than Pushed
_STEP_MARGIN = 1.0  # seconds a camera's own time limit for one step must stay below the stall limit

Item = tuple[np.ndarray, str, int, float]


class Source:
    """Base class: an iterable of ``(frame, source_name, index, timestamp)`` with a ``live`` flag.

    ``heartbeat`` is for sources whose one read may take several steps (a camera that reconnects:
    a failed read, a pause, a reopen, a new read): the ``time.monotonic()`` at which the current
    step began, or None. :func:`fastcell.stream` times a stall from the later of the read's start
    and the last heartbeat, so a source that is visibly working on getting its next frame is not
    given up on as stalled; only a step that itself blocks too long is.
    """

    name: str = "frames"
    live: bool = False
    heartbeat: float | None = None

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[Item]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Stop the iteration and release the device/files.

        May be called from any thread, also while another thread is blocked reading, and must
        return at once: a source whose device is not thread-safe only raises a flag here and lets
        the reading thread release it (see :class:`VideoCapture`).
        """

    def auto_stall_timeout(self) -> float | None:
        """The stall limit :func:`fastcell.stream` puts on this source for ``stall_timeout="auto"``.

        Returns
        -------
        float or None
            :data:`STALL_TIMEOUT` seconds for a live source; None (no limit) for one that is not
            live, whose reads are waited for however long they take.
        """
        return STALL_TIMEOUT if self.live else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, live={self.live})"


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as stored: 8/16-bit, gray/BGR/BGRA (``cv2.IMREAD_UNCHANGED``).

    The decoded image is checked to be one fastcell can annotate
    (:func:`fastcell.preprocess.check_frame`: uint8/uint16, gray, BGR or BGRA); an ``(H, W, 1)``
    image comes back as ``(H, W)``.

    Parameters
    ----------
    path : str or path
        The file.

    Raises
    ------
    ValueError
        When the file is empty, cannot be decoded or decodes to an unsupported image, e.g. a
        float32 TIFF.
    OSError
        When it cannot be read.
    """
    data = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode: works with any path encoding
    if data.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ValueError("not a decodable image (corrupt or unsupported format)")
    try:
        return check_frame(image)
    except ValueError as err:  # decodable, but not an image the network can take
        raise ValueError(f"unsupported image: {err}") from None


class _DaemonPool:
    """A few daemon threads running submitted calls, for reads that may hang.

    Unlike :class:`concurrent.futures.ThreadPoolExecutor`, whose threads the interpreter joins at
    exit, a read stuck here (a dead network drive) never keeps the process alive, and
    :meth:`shutdown` never waits.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
                         for i in range(max(1, int(workers)))]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._tasks.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn, args = task
            if not future.set_running_or_notify_cancel():  # cancelled while queued
                continue
            try:
                result = fn(*args)
            except BaseException as err:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """Let the threads end after their current call, without waiting for them."""
        for _ in self._threads:
            self._tasks.put(None)  # behind the queued (cancelled) calls, which are skipped


class ImageFiles(Source):
    """A list of image files, read in order, decoded ahead by a small pool of daemon threads.

    Each file is decoded and checked (:func:`read_image`) in the pool, so a corrupt or unsupported
    file is recorded in ``failed`` and skipped before it reaches the stream.

    Parameters
    ----------
    paths : iterable of path
        The files, in the order to process them.
    name : str
        What to call the whole source.
    workers : int
        Decoding threads (OpenCV releases the GIL while decoding). At most ``2 · workers`` images
        are decoded ahead, so memory stays bounded.
    """

    live = False

    def __init__(self, paths: Iterable[str | Path], name: str = "files", workers: int = 2) -> None:
        super().__init__()
        self.paths = [str(p) for p in paths]
        self.name = name
        self.workers = max(1, int(workers))
        self._closed = False

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> tuple[np.ndarray | None, str]:
        try:
            return read_image(path), ""
        except (OSError, ValueError, cv2.error) as err:
            return None, str(err) or type(err).__name__

    def __iter__(self) -> Iterator[Item]:
        self._closed = False
        pool = _DaemonPool(self.workers, "fastcell-decode")
        pending: deque = deque()
        try:
            paths = iter(enumerate(self.paths))
            for index, path in paths:
                pending.append((index, path, pool.submit(self._read, path)))
                if len(pending) >= 2 * self.workers:
                    break
            while pending and not self._closed:
                index, path, future = pending.popleft()
                nxt = next(paths, None)
                if nxt is not None:
                    pending.append((nxt[0], nxt[1], pool.submit(self._read, nxt[1])))
                image, reason = future.result()
                if image is None:
                    log.warning("fastcell: skipping %s: %s", path, reason)
                    self.failed.append((path, reason))
                    continue
                yield image, path, index, time.monotonic()
        finally:
            # Also when the consumer stops early: drop the decodes not started, and do not wait
            # for a running one (it may hang; its daemon thread ends with it).
            for _, _, future in pending:
                future.cancel()
            pool.shutdown()

    def close(self) -> None:
        self._closed = True


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
        return max(STALL_TIMEOUT, step + _STEP_MARGIN)

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
        if isinstance(self.target, int) or not _is_url(str(self.target)):
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


def _is_url(text: str) -> bool:
    return text.lower().startswith(URL_SCHEMES)


def _image_files(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(p)]


def open_source(source: Any, *, live: bool | None = None, reconnect: int = 0, workers: int = 2) -> Source:
    """Turn what the user passed into a :class:`Source`.

    Parameters
    ----------
    source : Source, int, str, path, sequence of paths, ndarray, iterable of ndarray or callable
        * int, or a string of digits that is not a file: camera index;
        * ``rtsp://``, ``http(s)://`` ... URL: a network stream (live);
        * a folder: its image files, sorted by name (other files ignored);
        * a pattern with ``*``, ``?`` or ``[``: the matching image files, sorted;
        * a video file (by extension) or a single image file;
        * a list/tuple of paths; any iterable of frames;
        * an array: ``(N, H, W, C)`` is a stack of frames, ``(N, H, W)`` a stack of gray frames
          unless its last axis is 1, 3 or 4 — then, like ``(H, W, C)`` and ``(H, W)``, it is one
          frame (see :func:`array_frames`);
        * a callable returning frames (``None`` ends it; live by default).
    live : bool, optional
        Override whether the source is live (may drop frames when behind).
    reconnect : int
        Camera/URL sources: reconnect attempts after a disconnect.
    workers : int
        Image files: decoding threads.

    Raises
    ------
    FileNotFoundError
        For a path or pattern that names nothing readable.
    TypeError
        For an object that is none of the above.
    ValueError
        For an array of a shape that is neither a frame nor a stack of frames.
    """
    if isinstance(source, Source):
        if live is not None:
            source.live = live
        return source
    if isinstance(source, (bool, np.bool_)):
        raise TypeError(f"a source cannot be a bool ({source!r})")
    if isinstance(source, (int, np.integer)):
        return VideoCapture(int(source), live=live, reconnect=reconnect)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), live, reconnect, workers)
    if isinstance(source, np.ndarray):
        return Frames(source, "array", live=bool(live))  # Frames splits it (array_frames)
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        return ImageFiles([os.fspath(s) for s in source], "paths", workers)
    if callable(source) and not hasattr(source, "__iter__"):
        return Callback(source, live=True if live is None else live)
    if hasattr(source, "__iter__"):
        return Frames(source, getattr(source, "name", None) or type(source).__name__, live=bool(live))
    raise TypeError(f"cannot read frames from a {type(source).__name__}: expected a camera index, path, "
                    "URL, folder, glob, list of paths, iterable of numpy frames or a callable")


def _open_path(text: str, live: bool | None, reconnect: int, workers: int) -> Source:
    if _is_url(text):
        return VideoCapture(text, live=live, reconnect=reconnect)
    path = Path(text)
    if path.is_dir():
        files = _image_files(sorted(str(p) for p in path.iterdir()))
        if not files:
            raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {path}")
        return ImageFiles(files, str(path), workers)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return VideoCapture(text, live=live, reconnect=reconnect)
        return ImageFiles([text], text, workers)
    if any(c in text for c in "*?["):
        files = _image_files(sorted(globlib.glob(text, recursive=True)))
        if not files:
            raise FileNotFoundError(f"the pattern {text!r} matches no image files")
        return ImageFiles(files, text, workers)
    if text.isdigit():
        return VideoCapture(int(text), live=live, reconnect=reconnect)
    raise FileNotFoundError(f"no such file, folder or pattern: {text!r}")


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
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, int(maxsize)))
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
