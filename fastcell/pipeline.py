"""``fastcell.stream(source)``: a pipelined generator of Results, in frame order.

Three threads overlap the work, joined by bounded queues so memory stays flat however long the
stream runs::

    capture ──q_in──▶ preprocess + inference (batched) ──q_post──▶ post-processing ──q_out──▶ you
                                                                   (a pool of threads)

* Post-processing runs on ``post_workers`` threads (default: the host's cores less the two other
  stages; see :func:`fastcell._parallel.default_post_workers`), each batch cut into one chunk per
  thread; the compiled code releases the GIL, so it scales with cores. Results still come out in
  frame order. On a GPU backend with ``infer_frames`` (the cuda backend), the inference thread
  hands it the frames and the letterbox runs on the device.
* Batching: the inference thread takes up to ``batch_size`` frames, waiting at most
  ``max_latency`` seconds after the first one for the batch to fill.
* Live sources (cameras, URLs, callables) drop their *oldest* waiting frame when the pipeline is
  behind (``stream.dropped`` counts them), so latency stays bounded; files, folders and iterables
  never drop — the capture thread waits instead.
* An exception in any stage ends the stream: the results before it are delivered, then the
  consumer gets :class:`StreamError` whose ``__cause__`` is the original exception.
* Stalls. A live source that blocks in one read for longer than ``stall_timeout`` seconds (a
  frozen camera, a dead network stream; 10 s by default) ends the stream (``on_stall="end"``,
  logged) or raises :class:`StreamStalled` (``on_stall="raise"``); a disconnect that the source
  reports is retried ``reconnect`` times first (camera/URL sources), and each step of a reconnect
  (the failed read, the pause, the reopen, the first new read) gets the whole limit: the source's
  ``heartbeat`` restarts the stall timer (see :class:`~fastcell.io.sources.Source`). Files, folders, iterables
  and :class:`~fastcell.io.sources.Pushed` sources have no stall limit by default: a slow
  producer is waited for, and a pushed source ends with ``end()``. Only the source's own reads
  count — time the pipeline spends waiting for the consumer never does.
* ``close()`` (or leaving the ``with`` block) stops every thread within about a second, and does
  not wait for a source stuck in a read: that (daemon) thread ends with the read.
* A caller's Annotator is never used directly: the stream works on a sibling
  (:meth:`~fastcell.annotator.Annotator.with_options`) with its own buffers, so the caller may go
  on calling the Annotator — from any thread — while the stream runs. The sibling's buffers are
  freed when the stream's inference ends; the shared backend stays open (it is the caller's).
"""

from __future__ import annotations

import numbers
import weakref
from pathlib import Path
from typing import Any, Iterator

from fastcell._stream_threads import StreamError, StreamStalled, _Pipeline
from fastcell.annotator import Annotator
from fastcell.io.sources import STALL_TIMEOUT, Source, open_source
from fastcell.results import Result

__all__ = ["stream", "Stream", "StreamError", "StreamStalled", "STALL_TIMEOUT"]

class Stream:
    """An iterator of :class:`~fastcell.results.Result` over a source, run in background threads.

    Build it with :func:`stream`. Attributes: ``fps`` (results/s over the last 256 results,
    or since the start before there are that many),
    ``latency_p50`` / ``latency_p99`` (seconds, capture → result, over the last ``window``
    results), ``dropped`` (live frames discarded), ``count`` (results delivered), ``failed``
    (unreadable files as ``(path, reason)``), ``stalled`` (whether the source stalled),
    ``stall_timeout`` (the limit in force, seconds or None, once ``"auto"`` is resolved),
    ``annotator`` (the stream's own Annotator: a sibling of one the caller passed),
    ``post_workers`` (post-processing threads).

    A stream left without :meth:`close` — a ``break`` out of the loop, then the last reference
    dropped — is stopped when it is garbage-collected: its threads end and its frames and
    buffers are freed, as after ``close()`` (a :func:`weakref.finalize` does it; the threads hold
    only the pipeline behind this object). Closing it, or a ``with`` block, stays the way to
    stop it at a known moment.
    """

    def __init__(self, source: Source, annotator: Annotator, **options: Any) -> None:
        self._pipeline = _Pipeline(source, annotator, **options)
        self._finalizer = weakref.finalize(self, _Pipeline.abandon, self._pipeline)

    def __getattr__(self, name: str) -> Any:  # statistics and settings live in the pipeline
        pipeline = self.__dict__.get("_pipeline")
        if pipeline is None:
            raise AttributeError(name)
        return getattr(pipeline, name)

    def __iter__(self) -> Iterator[Result]:
        return self

    def __next__(self) -> Result:
        return self._pipeline.__next__()

    def close(self, timeout: float = 2.0) -> None:
        """Stop all threads and release the source (and the annotator this stream opened).

        Waits at most ``timeout`` seconds for the inference and post-processing threads, and at
        most half a second for the capture thread: a source blocked in a read that ``close``
        cannot interrupt (a hung camera) keeps its (daemon) thread until the read returns.
        """
        self._finalizer.detach()
        self._pipeline.close(timeout)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream(source: Any, model: str | Path | Annotator = "default", *, device: str = "auto",
           precision: str | None = None, batch_size: int | None = None, max_latency: float | None = None,
           drop: bool | None = None, live: bool | None = None, queue_size: int | None = None,
           keep_image: bool | None = None, segment: bool | None = None,
           stall_timeout: float | str | None = "auto", on_stall: str = "end", reconnect: int = 0,
           workers: int = 2, throughput: bool = False, post_workers: int | None = None,
           **overrides: Any) -> Stream:
    """Annotate frames from ``source`` in background threads; iterate the Results in frame order.

    Parameters
    ----------
    source : any
        Camera index, video file, RTSP/HTTP URL, folder, glob, list of paths, iterable of numpy
        frames, an array (``(N, H, W)`` / ``(N, H, W, C)`` stacks are N frames, ``(H, W)`` /
        ``(H, W, C)`` one: see :func:`fastcell.io.sources.array_frames`), a callable returning
        frames, or a :class:`~fastcell.io.sources.Source` (see
        :func:`fastcell.io.sources.open_source`).
    model : str, path or Annotator
        Model name/path (opened with ``device`` and ``precision``), or a ready Annotator. The
        stream runs a sibling of it (:meth:`~fastcell.annotator.Annotator.with_options`: same
        backend and settings, buffers of its own), so the caller may keep using it meanwhile; the
        stream never closes it.
    batch_size : int, optional
        Most frames per inference call. Default 1 for live sources (lowest latency), 8 otherwise.
    max_latency : float, optional
        Seconds the inference thread waits for a batch to fill. Default 0 for live sources, 0.05
        otherwise.
    drop : bool, optional
        Drop the oldest waiting frame when behind. Default: True for live sources only.
    live : bool, optional
        Override whether the source counts as live.
    queue_size : int, optional
        Frames waiting for inference (default ``2 · batch_size``, at least 2).
    keep_image : bool, optional
        Keep each original frame in its Result (needed by overlays/crops writers). Default: the
        given Annotator's setting, True for a model opened here.
    segment : bool, optional
        Compute labels and segmented images. Default as for ``keep_image``.
    stall_timeout : float, None or "auto"
        Seconds one read of the source may block before the stream gives up on it (see
        ``on_stall``); ``None``: wait forever. ``"auto"`` (default): ``STALL_TIMEOUT`` (10 s)
        for live sources — cameras, URLs, callables, anything opened with ``live=True`` — and no
        limit for files, folders, iterables (a slow producer is waited for: every frame is
        processed) and :class:`~fastcell.io.sources.Pushed` sources (acquisition may pause;
        ``end()`` ends them). For a camera/URL, "auto" is at least its longest read, open or
        reconnect-pause limit plus a second (the defaults fit in 10 s), so that a reconnect can
        still happen. Each source says its own (``Source.auto_stall_timeout``). A number applies
        to any source; each step of a reconnect gets all of it.
    on_stall : {"end", "raise"}
        What a stall does: end the stream after the frames already read (logged; ``stalled`` is
        set), or raise :class:`StreamStalled` after them.
    reconnect : int
        Camera/URL sources: reconnect attempts after a disconnect (a read that fails or times
        out: see :class:`~fastcell.io.sources.VideoCapture`).
    workers : int
        Image-file decoding threads.
    post_workers : int, optional
        Post-processing threads (default: the host's cores less two, at least 1, at most 32; with
        1 it runs in the stream's post-processing thread itself).
    **overrides
        Post-processing settings (``score``, ``merge``, ``hsv_low`` ...) and
        ``cell_size`` (a number of pixels, ``"auto"`` or None; see :mod:`fastcell.scale`), as
        :class:`~fastcell.annotator.Annotator` takes them.

    Returns
    -------
    Stream
        Iterate it (or use it as a context manager); ``close()`` stops it.

    Raises
    ------
    ValueError
        For a bad ``on_stall`` or ``stall_timeout``, or an array source of another shape.
    FileNotFoundError, OSError, TypeError
        When the source cannot be opened (see :func:`~fastcell.io.sources.open_source`).
    """
    if on_stall not in ("end", "raise"):
        raise ValueError(f"on_stall must be 'end' or 'raise', got {on_stall!r}")
    _check_stall_timeout(stall_timeout)
    src = open_source(source, live=live, reconnect=reconnect, workers=workers)
    is_live = src.live
    batch_size = int(batch_size) if batch_size else (1 if is_live else 8)
    max_latency = (0.0 if is_live else 0.05) if max_latency is None else float(max_latency)
    drop = is_live if drop is None else bool(drop)
    own = not isinstance(model, Annotator)
    try:
        if own:
            annotator = Annotator.from_model(model, device, precision, throughput=throughput,
                                             segment=True if segment is None else segment,
                                             keep_image=True if keep_image is None else keep_image,
                                             max_batch=batch_size, **overrides)
        else:
            # The preprocessing buffer of an Annotator is reused by every call: were the stream to
            # use the caller's, a direct call meanwhile would overwrite a batch in flight.
            # Its max_batch is the stream's batch size: a smaller one would split every batch.
            annotator = model.with_options(segment=segment, keep_image=keep_image, max_batch=batch_size,
                                           **overrides)
    except BaseException:
        src.close()
        raise
    return Stream(src, annotator, batch_size=batch_size, max_latency=max_latency, drop=drop,
                  queue_size=queue_size or max(2, 2 * batch_size),
                  stall_timeout=_resolve_stall_timeout(stall_timeout, src), on_stall=on_stall,
                  own_annotator=own, post_workers=post_workers)


def _check_stall_timeout(value: Any) -> None:
    if value is None or (isinstance(value, str) and value == "auto"):
        return
    expected = "stall_timeout must be a number of seconds > 0, None (no limit) or 'auto'"
    if isinstance(value, (str, bool)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{expected}, got {value!r}")
    if not value > 0:
        raise ValueError(f"{expected}, got {value!r}")


def _resolve_stall_timeout(value: Any, source: Source) -> float | None:
    """``"auto"``: the source's own limit (``Source.auto_stall_timeout``; see :func:`stream`)."""
    if isinstance(value, str):
        return source.auto_stall_timeout()
    return None if value is None else float(value)
