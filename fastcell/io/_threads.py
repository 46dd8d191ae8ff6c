"""A small pool of daemon threads, for work that must never keep the process alive.

Used by the image reader (:class:`~fastcell.io.sources.ImageFiles`: a read stuck on a dead network
drive) and the annotation writer (:class:`~fastcell.io.writers.AnnotationWriter`: a Ctrl-C or an
error that skips ``close()`` must not leave a worker that the interpreter waits for at exit —
:class:`concurrent.futures.ThreadPoolExecutor` threads are joined there, and one started just as
the interrupt came is never told to stop). Stopping a daemon writer mid-file is safe: every file
is written to a temporary and renamed (see :mod:`fastcell.io.writers._atomic`).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

__all__ = ["DaemonPool"]


class DaemonPool:
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
