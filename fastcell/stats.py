"""Throughput and latency of a stream of results: what :class:`fastcell.pipeline.Stream` reports.

Kept apart from the stream's threads and queues: the consumer thread records each result it hands
out (:meth:`DeliveryStats.record`) and reads the figures; nothing here blocks or starts a thread.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

__all__ = ["DeliveryStats", "FPS_WINDOW"]

FPS_WINDOW = 256  # results over which fps is measured


class DeliveryStats:
    """Results/s over the last :data:`FPS_WINDOW` deliveries and latency percentiles over the last ``window``.

    Parameters
    ----------
    window : int
        Latencies kept for the percentiles.
    started : float, optional
        ``time.monotonic()`` when the stream started (default: now); the fps of the first results
        is timed from it.
    """

    def __init__(self, window: int = 10_000, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else float(started)
        self.latencies: deque[float] = deque(maxlen=int(window))
        # delivery times of the last results, plus the one before them: the span's start
        self.delivered: deque[float] = deque(maxlen=FPS_WINDOW + 1)

    def record(self, latency: float, now: float | None = None) -> None:
        """One result handed out at ``now`` (default: now), ``latency`` seconds after its capture."""
        self.delivered.append(time.monotonic() if now is None else float(now))
        self.latencies.append(float(latency))

    @property
    def fps(self) -> float:
        """Results per second over the last 256 results (all of them, timed from the start, until
        there are more).

        Results reach the consumer in bursts (a batch at a time), so the span must begin before
        the first counted result — at the delivery just before the window, or at the start —
        never at a counted one: ``count / (last delivery − that reference)``.
        """
        delivered = self.delivered
        if not delivered:
            return 0.0
        if len(delivered) < delivered.maxlen:  # the window is not full yet: from the start
            count, reference = len(delivered), self.started
        else:
            count, reference = len(delivered) - 1, delivered[0]
        span = delivered[-1] - reference
        return count / span if span > 0 else 0.0

    def latency_percentile(self, q: float) -> float:
        """The ``q``-th percentile (0–100) of the kept latencies in seconds; 0.0 before any result."""
        return float(np.percentile(np.fromiter(self.latencies, float), q)) if self.latencies else 0.0

    @property
    def latency_p50(self) -> float:
        return self.latency_percentile(50)

    @property
    def latency_p99(self) -> float:
        return self.latency_percentile(99)
