"""What a frame is: the rules every stage shares (sources, preprocessing, post-processing).

Accepted frames: ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA, each
uint8 or uint16 (16-bit cameras; full scale 65535). This module sits below the stages that read,
letterbox and segment frames, so each of them imports it and none imports another for it.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["EXPECTED", "check_frame", "to_bgr8"]

#: what :func:`check_frame` accepts, in words (for error messages)
EXPECTED = "(H, W) gray, (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, dtype uint8 or uint16"


def check_frame(frame: object) -> np.ndarray:
    """Validate one frame and return it as a 2-D gray or 3-/4-channel array (no pixel copy).

    Parameters
    ----------
    frame : ndarray
        See the module docstring for the accepted shapes and dtypes.

    Returns
    -------
    ndarray
        ``frame``, with an ``(H, W, 1)`` frame viewed as ``(H, W)``.

    Raises
    ------
    TypeError
        When ``frame`` is not a numpy array, or its dtype is not uint8 or uint16.
    ValueError
        When its shape is not one of the accepted ones, or it is empty.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"a frame must be a numpy array {EXPECTED}; got {type(frame).__name__}")
    if frame.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"a frame must be {EXPECTED}; got dtype {frame.dtype} (shape {frame.shape}); "
                        "convert it first (float: scale to 0-255, cast to uint8; signed: clip to uint8/uint16)")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))):
        raise ValueError(f"a frame must be {EXPECTED}; got shape {frame.shape}")
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
