"""Embedding fastcell in instrument software: the acquisition loop calls back once per frame.

Camera SDKs usually deliver frames by callback on their own thread, in a buffer they fill again
for the next frame. Hand each frame to a :class:`~fastcell.io.sources.Pushed` source: it copies
the frame (so the SDK may reuse its buffer at once) and never blocks — when analysis falls behind,
the oldest waiting frame is discarded. Consume the Results on another thread — here the main one.
A pushed source has no stall timeout: acquisition may pause as long as it likes, and ``end()``
ends the stream.

Run ``python -m fastcell.examples.acquisition_callback [MODEL]``; a fake camera makes 60 frames at
30 fps. Replace ``FakeCamera`` with your SDK.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

import fastcell
from fastcell.io import Pushed


class FakeCamera:
    """Stands in for a camera SDK: calls ``on_frame(frame)`` from its own thread at ``fps``."""

    def __init__(self, on_frame, fps: float = 30.0, frames: int = 60) -> None:
        self.on_frame, self.period, self.frames = on_frame, 1.0 / fps, frames
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        rng = np.random.default_rng(0)
        buffer = np.empty((480, 640, 3), np.uint8)  # like a real SDK: one buffer, refilled per frame
        for _ in range(self.frames):
            buffer[...] = rng.integers(0, 255, buffer.shape, dtype=np.uint8)
            self.on_frame(buffer)
            time.sleep(self.period)

    def start(self) -> None:
        self.thread.start()


def main(model: str = "default") -> None:
    source = Pushed("camera", maxsize=4)
    camera = FakeCamera(on_frame=source.push)          # the SDK's per-frame callback
    with fastcell.stream(source, model) as results:
        camera.start()
        threading.Thread(target=lambda: (camera.thread.join(), source.end()), daemon=True).start()
        for result in results:                           # Results in frame order, as they are ready
            print(f"frame {result.frame_index}: {len(result)} cells {result.counts()} "
                  f"latency {result.latency * 1e3:.1f} ms")
    print(f"{results.count} frames analysed, {source.discarded + results.dropped} dropped, "
          f"p99 latency {results.latency_p99 * 1e3:.1f} ms")


if __name__ == "__main__":
    main(*sys.argv[1:2])
