"""Frames → the network's input batch, in one C++ call per batch (``fastcell.ops.letterbox_batch``).

Accepted frames: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA, each
uint8 or uint16 (16-bit cameras; full scale 65535). Anything else raises ValueError saying what
arrived. The batch lands in a buffer owned by the :class:`Preprocessor` and reused by the next call,
so a long stream allocates nothing per frame.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ["Preprocessor", "check_frame", "to_bgr8"]

_EXPECTED = "(H, W) gray, (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, dtype uint8 or uint16"


def check_frame(frame: object) -> np.ndarray:
    """Validate one frame and return it as a 2-D gray or 3-/4-channel array (no pixel copy).

    Raises
    ------
    ValueError
        When ``frame`` is not an image of a supported shape and dtype, or is empty.
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"a frame must be a numpy array {_EXPECTED}; got {type(frame).__name__}")
    if frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"a frame must be {_EXPECTED}; got dtype {frame.dtype} (shape {frame.shape}); "
                         "convert it first (float: scale to 0-255, cast to uint8; signed: clip to uint8/uint16)")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))):
        raise ValueError(f"a frame must be {_EXPECTED}; got shape {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"a frame must not be empty; got shape {frame.shape}")
    return frame


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """An 8-bit BGR view of a checked frame, for HSV segmentation (a copy only when converting).

    16-bit values map to 8 bits as ``round(v / 257)`` (65535 → 255), the same full scale the
    letterbox uses.
    """
    if frame.dtype == np.uint16:
        frame = cv2.convertScaleAbs(frame, alpha=1.0 / 257.0)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


class Preprocessor:
    """Letterbox a list of frames into a reused ``(N, 3, S, S)`` float32 buffer.

    Parameters
    ----------
    size : int
        Network input side S.
    pad_value : int
        Letterbox padding grey level (0–255).
    max_batch : int
        Initial buffer capacity; grows when a bigger batch arrives.
    """

    def __init__(self, size: int = 416, pad_value: int = 114, max_batch: int = 8) -> None:
        self.size = int(size)
        self.pad_value = int(pad_value)
        self._buffer = np.empty((max(1, int(max_batch)), 3, self.size, self.size), np.float32)

    def __call__(self, frames: Sequence[np.ndarray], cell_sizes: Sequence[float | None] | None = None,
                 train_cell_size: float = 66.0) -> tuple[np.ndarray, np.ndarray]:
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
