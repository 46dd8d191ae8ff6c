"""Helpers shared by the source and pipeline tests (test_io_sources.py, test_pipeline.py)."""

from __future__ import annotations

import numpy as np

WAIT = 30.0  # generous bound for "stops promptly" checks; never a speed assertion


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random BGR frames of a few sizes."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48 + 4 * i % 40, 64, 3), dtype=np.uint8) for i in range(n)]


def threads_stop(stream) -> bool:
    """Whether every thread of ``stream`` ends within :data:`WAIT` seconds."""
    for t in stream._threads:
        t.join(WAIT)
    return not any(t.is_alive() for t in stream._threads)
