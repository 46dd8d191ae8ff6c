"""Frames → the network's input batch, in one C++ call per batch (``fastcell.ops.letterbox_batch``).

Accepted frames are those of :func:`fastcell.frames.check_frame`; anything else raises TypeError
(not an array, wrong dtype) or ValueError (wrong shape) saying what arrived. The batch lands in a
buffer owned by the :class:`Preprocessor` and reused by the next call, so a long stream allocates
nothing per frame.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fastcell.defaults import TRAIN_CELL_SIZE
from fastcell.frames import check_frame

__all__ = ["Preprocessor"]


class Preprocessor:
    """Letterbox a list of frames into a reused ``(N, 3, S, S)`` float32 buffer.

    Parameters
    ----------
    size : int
        Network input side S (``spec.input_size``).
    pad_value : int
        Letterbox padding grey level, 0–255 (``spec.pad_value``).
    max_batch : int
        Initial buffer capacity; grows when a bigger batch arrives.
    """

    def __init__(self, size: int, pad_value: int, max_batch: int = 8) -> None:
        self.size = int(size)
        self.pad_value = int(pad_value)
        self._buffer = np.empty((max(1, int(max_batch)), 3, self.size, self.size), np.float32)

    def __call__(self, frames: Sequence[np.ndarray], cell_sizes: Sequence[float | None] | None = None,
                 train_cell_size: float = TRAIN_CELL_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """Letterbox ``frames``; with ``cell_sizes``, each frame whose cells (that many of its pixels
        across) would come out larger than ``train_cell_size`` is scaled down to it instead, on a
        grey canvas (:mod:`fastcell.scale`); its params still map input pixels to frame pixels.

        Returns
        -------
        batch : (N, 3, S, S) ndarray of float32
            RGB in [0, 1]; a view of the internal buffer, overwritten by the next call.
        params : (N, 5) ndarray of float32
            ``[scale, pad_x, pad_y, width, height]`` per frame.
        """
        from fastcell import ops

        frames = [check_frame(f) for f in frames]
        if not frames:
            raise ValueError("a batch needs at least one frame")
        n = len(frames)
        if n > self._buffer.shape[0]:
            self._buffer = np.empty((n, 3, self.size, self.size), np.float32)
        placed: dict[int, tuple[int, int, int, int]] = {}
        if cell_sizes is not None:
            from fastcell.scale import input_scale, place_on_canvas

            frames = list(frames)
            for i, cell in enumerate(cell_sizes):
                h, w = frames[i].shape[:2]
                scale = input_scale(w, h, self.size, cell, train_cell_size) if cell else None
                if scale is not None:
                    frames[i], x0, y0 = place_on_canvas(frames[i], scale, self.size, self.pad_value)
                    placed[i] = (x0, y0, w, h)
        batch, params = ops.letterbox_batch(frames, out=self._buffer[:n], size=self.size, pad_value=self.pad_value)
        if placed:
            from fastcell.scale import canvas_params

            for i, (x0, y0, w, h) in placed.items():
                params[i] = canvas_params(params[i], x0, y0, w, h)
        return batch, params

    def release(self) -> None:
        """Free the buffer; the next call allocates one for its batch."""
        self._buffer = np.empty((0, 3, self.size, self.size), np.float32)
