"""How many threads the CPU stages get on this host, and post-processing split across them.

Post-processing (decode, NMS, GBCIOU, segmentation) and the writers spend their time in compiled
code that releases the GIL, so on a many-core host they scale with threads: the issue's H200 host
went from ~2,000 to 10,800 images/s of post-processing with segmentation on 14 threads. The stream
keeps results in frame order by handing out futures in submission order.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["host_threads", "default_post_workers", "split_batch", "done_future"]

#: threads the stream itself keeps busy besides the post-processing pool: capture and inference
_OTHER_STAGES = 2
_MAX_POST_WORKERS = 32


def host_threads() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_post_workers() -> int:
    """Post-processing threads for a stream: the cores the capture and inference threads leave.

    1 on a host of up to 3 cores (post-processing then runs in the stream's own thread, as before
    there was a pool), 14 on 16 cores, at most 32.
    """
    return max(1, min(_MAX_POST_WORKERS, host_threads() - _OTHER_STAGES))


def split_batch(n: int, workers: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges cutting ``n`` frames into at most ``workers`` nearly equal chunks."""
    step = max(1, math.ceil(n / max(1, workers)))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def done_future(fn: Callable[..., Any], *args: Any) -> Future:
    """Run ``fn(*args)`` here and now; its result or exception in a finished Future."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as err:  # noqa: BLE001 - delivered through the future, like a pool's
        future.set_exception(err)
    return future


def submit_batch(pool: ThreadPoolExecutor | None, workers: int, fn: Callable[..., Any],
                 heads: Sequence[np.ndarray], params: np.ndarray, frames: Sequence[Any],
                 meta: Sequence[Any]) -> list[Future]:
    """``fn(heads, params, frames, meta)`` over chunks of one batch, as futures in frame order.

    Without a pool the whole batch runs here, in one call (no chunking overhead).
    """
    if pool is None:
        return [done_future(fn, heads, params, frames, meta)]
    return [pool.submit(fn, [h[lo:hi] for h in heads], params[lo:hi], frames[lo:hi], meta[lo:hi])
            for lo, hi in split_batch(len(frames), workers)]
