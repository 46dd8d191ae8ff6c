"""The threads, queues and statistics behind :class:`fastcell.pipeline.Stream`.

How they work together (batching, drops, stalls, errors, closing) is told in
:mod:`fastcell.pipeline`, the public front; this module is the machinery.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np

from fastcell._parallel import default_post_workers, submit_batch
from fastcell.annotator import Annotator
from fastcell.frames import check_frame
from fastcell.io.sources import ImageFiles, Source
from fastcell.results import Result
from fastcell.stats import DeliveryStats

log = logging.getLogger("fastcell")

_POLL = 0.05  # seconds between checks of the stop flags while waiting on a queue
_SOURCE_GRACE = 0.5  # seconds close() waits for a capture thread that may be stuck in the source
_POST_POLL = 0.001  # seconds the post thread waits for a new batch while chunks are in flight


class StreamError(RuntimeError):
    """A stage of the stream failed; ``__cause__`` is the original exception."""


class StreamStalled(TimeoutError):
    """The source delivered no frame within ``stall_timeout`` seconds (``on_stall="raise"``)."""


class _Nothing:
    """No new batch arrived (the post thread then delivers what is ready)."""


_NOTHING = _Nothing()


class _End:
    """End-of-stream marker, passed down the queues."""


class _Failure:
    def __init__(self, stage: str, error: BaseException) -> None:
        self.stage = stage
        self.error = error


_END = _End()
_CAPTURE, _INFER, _POST = 0, 1, 2
_LIVE: "weakref.WeakSet[_Pipeline]" = weakref.WeakSet()  # pipelines whose threads may still run


@atexit.register
def _stop_at_exit() -> None:
    """Stop the streams still running when the interpreter exits, and wait (2 s at most) for their
    inference and post-processing threads: a daemon thread still inside a backend's compiled call
    while the interpreter tears that backend down aborts the process ("terminate called ...") —
    after a Ctrl-C that cut a ``close()`` short, say. A capture thread stuck in a read is not
    waited for."""
    deadline = time.monotonic() + 2.0
    for pipeline in list(_LIVE):
        pipeline._stop.set()
        for t in pipeline._threads[_INFER:]:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))


class _Pipeline:
    """The threads, queues and statistics behind a :class:`Stream` (which see).

    The stage threads run this object's methods, so they hold it, never the :class:`Stream`
    the caller holds: that one can be collected while they run, and its finalizer stops them.
    """

    def __init__(self, source: Source, annotator: Annotator, *, batch_size: int, max_latency: float,
                 drop: bool, queue_size: int, stall_timeout: float | None, on_stall: str,
                 own_annotator: bool, window: int = 10_000, post_workers: int | None = None) -> None:
        if on_stall not in ("end", "raise"):
            raise ValueError(f"on_stall must be 'end' or 'raise', got {on_stall!r}")
        self.source = source
        self.annotator = annotator
        self.batch_size = max(1, int(batch_size))
        self.max_latency = max(0.0, float(max_latency))
        self.drop = bool(drop)
        self.stall_timeout = stall_timeout
        self.on_stall = on_stall
        self._own_annotator = own_annotator
        self.post_workers = default_post_workers() if post_workers is None else max(1, int(post_workers))
        self._check_frames = not isinstance(source, ImageFiles)  # files are checked on read
        self._q_in: queue.Queue = queue.Queue(max(1, int(queue_size)))
        self._q_post: queue.Queue = queue.Queue(2)
        self._q_out: queue.Queue = queue.Queue(max(2, self.batch_size * 2))
        self._stop = threading.Event()
        self._cut = -1  # stages with an index below this stop (a later stage failed)
        self._capture_lock = threading.Lock()
        self._capture_done = False
        self._waiting_since: float | None = None  # when the capture thread began waiting on the source
        self.dropped = 0
        self.count = 0
        self.stalled = False
        self._finished = False
        self._stats = DeliveryStats(window)
        self._annotator_lock = threading.Lock()
        self._infer_ended = False
        self._annotator_closed = False
        self._threads = [
            threading.Thread(target=self._run_capture, name="fastcell-capture", daemon=True),
            threading.Thread(target=self._run_infer, name="fastcell-infer", daemon=True),
            threading.Thread(target=self._run_post, name="fastcell-post", daemon=True),
        ]
        _LIVE.add(self)
        for t in self._threads:
            t.start()

    # -- statistics ------------------------------------------------------------------------------
    @property
    def fps(self) -> float:
        """Results per second over the last 256 results (see :attr:`fastcell.stats.DeliveryStats.fps`)."""
        return self._stats.fps

    @property
    def latency_p50(self) -> float:
        return self._stats.latency_p50

    @property
    def latency_p99(self) -> float:
        return self._stats.latency_p99

    @property
    def failed(self) -> list[tuple[str, str]]:
        return self.source.failed

    @property
    def live(self) -> bool:
        return self.source.live

    def stats(self) -> dict[str, Any]:
        return {"count": self.count, "fps": self.fps, "latency_p50": self.latency_p50,
                "latency_p99": self.latency_p99, "dropped": self.dropped, "failed": len(self.failed),
                "stalled": self.stalled}

    # -- queue helpers -----------------------------------------------------------------------------
    def _halted(self, stage: int) -> bool:
        return self._stop.is_set() or stage < self._cut

    def _put(self, q: queue.Queue, item: Any, stage: int) -> bool:
        """Blocking put that gives up when this stage must stop."""
        while not self._halted(stage):
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue, stage: int, timeout: float | None = None) -> Any:
        """Blocking get (``None`` when this stage must stop or ``timeout`` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._halted(stage):
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if wait <= 0:
                return None
            try:
                return q.get(timeout=wait)
            except queue.Empty:
                continue
        return None

    def _fail(self, stage: int, name: str, error: BaseException, q: queue.Queue) -> None:
        self._cut = max(self._cut, stage)
        self._put(q, _Failure(name, error), stage + 1)

    # -- stage threads -----------------------------------------------------------------------------
    def _run_capture(self) -> None:
        frames: Any = None
        try:
            frames = iter(self.source)
            while not self._halted(_CAPTURE):
                self._waiting_since = time.monotonic()
                item = next(frames, _END)
                self._waiting_since = None
                with self._capture_lock:
                    if self._capture_done or self._halted(_CAPTURE):
                        return
                    if item is _END:
                        self._capture_done = True
                        break
                frame, name, index, stamp = item
                if self._check_frames:
                    try:
                        frame = check_frame(frame)
                    except (TypeError, ValueError) as err:
                        raise type(err)(f"frame {index} of {name}: {err}") from None
                self._offer((frame, {"frame_index": index, "source": name, "timestamp": stamp}))
            self._put(self._q_in, _END, _CAPTURE)
        except BaseException as err:  # noqa: BLE001 - every failure goes to the consumer
            self._waiting_since = None
            with self._capture_lock:
                if self._capture_done:
                    return
                self._capture_done = True
            self._fail(_CAPTURE, "capture", err, self._q_in)
        finally:
            # Finish the source's generator here, in the thread that read it: a source holding a
            # device that is not thread-safe (cv2.VideoCapture) releases it in its ``finally``,
            # which would otherwise run in whichever thread drops the last reference.
            close = getattr(frames, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as err:  # noqa: BLE001 - a failing release must not hide the stream's outcome
                    log.warning("fastcell: closing %s failed: %s", self.source.name, err)

    def _offer(self, item: tuple[np.ndarray, dict[str, Any]]) -> None:
        """Queue a frame: live sources drop the oldest waiting frame instead of waiting."""
        if not self.drop:
            self._put(self._q_in, item, _CAPTURE)
            return
        while not self._halted(_CAPTURE):
            try:
                self._q_in.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self._q_in.get_nowait()
                except queue.Empty:
                    continue
                if isinstance(old, (_End, _Failure)):  # never lose a marker (cannot happen, but cheap)
                    self._q_in.put(old)
                    return
                self.dropped += 1

    def _run_infer(self) -> None:
        try:
            self._infer()
        finally:
            self._on_infer_end()

    def _infer(self) -> None:
        pending: tuple[Any, list, list] | None = None  # a batch in flight on a pipelining GPU backend
        try:
            ended: Any = None
            while ended is None:
                if pending is not None and self._q_in.empty():
                    # nothing to stage meanwhile: hand the batch in flight on now (latency first)
                    batch_in_flight, pending = pending, None
                    if not self._hand_on(batch_in_flight):
                        return
                first = self._get(self._q_in, _INFER)
                if first is None:
                    return
                if isinstance(first, (_End, _Failure)):
                    ended = first
                    break
                batch = [first]
                deadline = time.monotonic() + self.max_latency
                while len(batch) < self.batch_size:
                    try:
                        wait = deadline - time.monotonic()
                        item = self._q_in.get(timeout=wait) if wait > 0 else self._q_in.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(item, (_End, _Failure)):
                        ended = item
                        break
                    batch.append(item)
                frames, meta = [f for f, _ in batch], [m for _, m in batch]
                # A GPU backend that pipelines runs this batch while the previous one is handed on.
                ticket = self.annotator.submit(frames)
                if pending is not None:
                    batch_in_flight, pending = pending, None
                    if not self._hand_on(batch_in_flight):
                        return
                if ticket is not None:
                    pending = (ticket, frames, meta)
                    continue
                heads, params = self.annotator.preprocess_infer(frames)
                if not self._put(self._q_post, (frames, meta, heads, params.copy()), _INFER):
                    return
            if pending is not None:
                batch_in_flight, pending = pending, None
                if not self._hand_on(batch_in_flight):
                    return
            self._put(self._q_post, ended, _INFER)
        except BaseException as err:  # noqa: BLE001
            self._fail(_INFER, "inference", err, self._q_post)
        finally:
            if pending is not None:  # stopped early: free the backend's slot
                try:
                    self.annotator.collect(pending[0])
                except Exception:  # noqa: BLE001 - the stream is ending; its outcome is decided
                    pass

    def _hand_on(self, pending: tuple[Any, list, list]) -> bool:
        """Wait for a submitted batch and queue it for post-processing; False when told to stop."""
        ticket, frames, meta = pending
        heads, params = self.annotator.collect(ticket)
        return self._put(self._q_post, (frames, meta, heads, params.copy()), _INFER)

    def _on_infer_end(self) -> None:
        """The inference thread is done with the Annotator: free what the stream holds of it.

        A sibling of the caller's Annotator gives back its own buffers only — the backend is
        shared with the caller, who closes it. An Annotator the stream opened is closed once the
        stream is closed too (here or in :meth:`close`, whichever comes last).
        """
        with self._annotator_lock:
            self._infer_ended = True
        if self._own_annotator:
            self._close_annotator()
        else:
            self.annotator.release_buffers()

    def _close_annotator(self) -> None:
        with self._annotator_lock:
            if not (self._finished and self._infer_ended) or self._annotator_closed:
                return
            self._annotator_closed = True
        self.annotator.close()

    def _run_post(self) -> None:
        """Hand batches to the pool in chunks and deliver the chunks' Results in frame order.

        Up to ``2 · post_workers`` chunks are in flight; while some are, new batches are taken as
        they come (polled every millisecond) and the oldest chunk is delivered once it is done.
        """
        workers = self.post_workers
        pool = ThreadPoolExecutor(workers, thread_name_prefix="fastcell-post") if workers > 1 else None
        pending: deque[Future] = deque()  # chunks in frame order
        limit = 2 * workers
        try:
            while True:
                item: Any = _NOTHING
                if not pending:
                    item = self._get(self._q_post, _POST)
                    if item is None:
                        return
                elif len(pending) < limit:
                    try:
                        item = self._q_post.get(timeout=_POST_POLL)
                    except queue.Empty:
                        pass
                if self._halted(_POST):
                    return
                if isinstance(item, (_End, _Failure)):
                    while pending:
                        if not self._deliver(pending.popleft()):
                            return
                    self._put(self._q_out, item, _POST)
                    return
                if item is not _NOTHING:
                    frames, meta, heads, params = item
                    pending.extend(submit_batch(pool, workers, self.annotator.postprocess_rescaled, heads, params,
                                                frames, meta))
                elif pending[0].done() or len(pending) >= limit:
                    if not self._deliver(pending.popleft()):
                        return
        except BaseException as err:  # noqa: BLE001
            self._fail(_POST, "post-processing", err, self._q_out)
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, chunk: Future) -> bool:
        """Queue one chunk's Results (waiting for it); False when the stage must stop."""
        for result in chunk.result():
            result.latency = time.monotonic() - result.timestamp
            if not self._put(self._q_out, result, _POST):
                return False
        return True

    # -- consumer ----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Result]:
        return self

    def __next__(self) -> Result:
        while not self._finished:
            try:
                item = self._q_out.get(timeout=_POLL)
            except queue.Empty:
                self._check_health()
                continue
            if isinstance(item, Result):
                self.count += 1
                self._stats.record(item.latency)
                return item
            self.close()
            if isinstance(item, _Failure):
                raise StreamError(f"the {item.stage} stage of the stream failed: "
                                  f"{type(item.error).__name__}: {item.error}") from item.error
            if self.stalled and self.on_stall == "raise":
                raise StreamStalled(f"{self.source.name} delivered no frame for {self.stall_timeout} s")
        raise StopIteration

    def _check_health(self) -> None:
        """Called while the consumer waits: detect a stalled source or a pipeline that died."""
        since = self._waiting_since
        beat = self.source.heartbeat  # a source working through the steps of one read
        if since is not None and beat is not None and beat > since:
            since = beat
        if (self.stall_timeout is not None and since is not None and not self.stalled
                and time.monotonic() - since > self.stall_timeout):
            self._on_stall()
        if not self._threads[_POST].is_alive() and self._q_out.empty() and not self._finished:
            self.close()  # every stage ended without a marker: only after close() from another thread
            raise StreamError("the stream's threads stopped before the end of the source")

    def _on_stall(self) -> None:
        with self._capture_lock:
            if self._capture_done:
                return
            self._capture_done = True  # the blocked capture thread must not queue anything later
        self.stalled = True
        log.warning("fastcell: %s delivered no frame for %.1f s; ending the stream (on_stall=%r)",
                    self.source.name, self.stall_timeout, self.on_stall)
        try:
            self.source.close()  # may unblock a camera read
        except Exception as err:  # noqa: BLE001 - closing a broken source may fail too
            log.warning("fastcell: closing %s failed: %s", self.source.name, err)
        # end the stream behind the frames already queued (q_in drains: inference keeps running)
        threading.Thread(target=self._put, args=(self._q_in, _END, _INFER), daemon=True).start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop all threads and release the source (and the annotator this stream opened).

        Waits at most ``timeout`` seconds for the inference and post-processing threads, and at
        most half a second for the capture thread: a source blocked in a read that ``close`` cannot
        interrupt (a hung camera) keeps its thread — a daemon — until the read returns, and the
        source releases its device there. Likewise an inference call still running closes the
        annotator this stream opened when it returns.
        """
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        try:
            self.source.close()
        except Exception as err:  # noqa: BLE001
            log.warning("fastcell: closing %s failed: %s", self.source.name, err)
        deadline = time.monotonic() + timeout
        for stage, t in enumerate(self._threads):
            if t is not threading.current_thread():
                wait = max(0.0, deadline - time.monotonic())
                t.join(min(wait, _SOURCE_GRACE) if stage == _CAPTURE else wait)
        for q in (self._q_in, self._q_post, self._q_out):  # free the frames held in the queues
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        if self._own_annotator:
            self._close_annotator()  # now, or when the inference thread ends

    def abandon(self) -> None:
        """Stop a stream nobody holds any more, without waiting (called by :class:`Stream`'s finalizer).

        It may run in any thread — one of this stream's own, when a garbage collection happens
        there — so it only raises the stop flags, closes the source and frees the queued frames;
        the threads notice within ``_POLL`` seconds and end, and with them the last references
        to this object, its frames and its Annotator's buffers.
        """
        self.close(timeout=0.0)
