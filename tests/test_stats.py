"""fastcell.stats.DeliveryStats: the fps and latency figures of a stream, on hand-made delivery times."""

from __future__ import annotations

import numpy as np
import pytest

from fastcell.stats import FPS_WINDOW, DeliveryStats


def test_nothing_delivered_is_zero():
    stats = DeliveryStats(started=0.0)
    assert stats.fps == 0.0 and stats.latency_p50 == 0.0 and stats.latency_p99 == 0.0


def test_a_burst_before_the_window_is_full_is_timed_from_the_start():
    """Four results handed out microseconds apart, 2 s after the start: 2 results/s, not 4 per µs."""
    stats = DeliveryStats(started=10.0)
    for i in range(4):
        stats.record(0.1, now=12.0 + 1e-6 * i)
    assert stats.fps == pytest.approx(4 / (12.0 + 3e-6 - 10.0))


def test_a_full_window_is_timed_from_the_delivery_before_it():
    stats = DeliveryStats(started=0.0)
    # bursts of 10 every 0.5 s: 20 results/s whatever the burst edges
    times = [100.0 + 0.5 * (i // 10) + 1e-6 * (i % 10) for i in range(300)]
    for t in times:
        stats.record(0.0, now=t)
    assert len(stats.delivered) == FPS_WINDOW + 1
    assert stats.fps == pytest.approx(FPS_WINDOW / (times[-1] - times[-1 - FPS_WINDOW]))
    assert stats.fps == pytest.approx(20.0, rel=0.05)


def test_latency_percentiles_over_the_last_window():
    rng = np.random.default_rng(0)
    latencies = rng.exponential(0.02, 500)
    stats = DeliveryStats(window=300, started=0.0)
    for i, latency in enumerate(latencies):
        stats.record(latency, now=float(i))
    kept = latencies[-300:]
    assert stats.latency_p50 == pytest.approx(np.percentile(kept, 50))
    assert stats.latency_p99 == pytest.approx(np.percentile(kept, 99))
    assert stats.latency_percentile(0) == pytest.approx(kept.min())
