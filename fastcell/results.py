"""What the Annotator returns for one frame: detections, masks and the segmented image.

A :class:`Result` is plain numpy; writers (``fastcell.io.writers``) turn it into files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = ["Result"]


@dataclass
class Result:
    """Detections and segmentation of one frame.

    Attributes
    ----------
    boxes : (K, 4) ndarray of float32
        ``(x1, y1, x2, y2)`` in original-image pixels, ``0 <= x1 <= x2 <= width`` (clipped), sorted
        by descending score.
    scores : (K,) ndarray of float32
        Objectness × class probability, in [0, 1].
    class_ids : (K,) ndarray of int32
        Index into ``classes``.
    classes : tuple of str
        The model's class names.
    labels : (H, W) ndarray of int32 or None
        Instance label image: 0 = background, ``i + 1`` = detection ``i`` (where discs overlap the
        higher score wins). ``None`` when segmentation was switched off.
    segmented : (H, W, 3) ndarray of uint8 or None
        The frame with every pixel outside all masks set to the fill colour.
    image : ndarray or None
        The original frame as given (kept for overlays and crops; may be dropped to save memory).
    frame_index : int
        Position of the frame in its source (0-based), in source order.
    source : str or None
        Path, URL or name of the frame's origin.
    timestamp : float
        ``time.monotonic()`` when the frame was captured/read.
    latency : float
        Seconds from capture to this result being ready.
    image_size : (int, int) or None
        ``(height, width)`` of the frame, known even when neither image nor labels are kept.
    input_scale : float
        Network-input pixels per frame pixel in the pass that gave these results (the letterbox
        scale, or the ``cell_size`` rescale; 0 when unknown).
    cell_size : float or None
        The cell diameter (frame pixels) the frame was rescaled for, when ``cell_size`` applied.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    classes: tuple[str, ...]
    labels: np.ndarray | None = None
    segmented: np.ndarray | None = None
    image: np.ndarray | None = None
    frame_index: int = 0
    source: str | None = None
    timestamp: float = 0.0
    latency: float = 0.0
    image_size: tuple[int, int] | None = None
    input_scale: float = 0.0
    cell_size: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def class_names(self) -> list[str]:
        return [self.classes[int(c)] for c in self.class_ids]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the frame."""
        if self.image_size is not None:
            return self.image_size
        if self.labels is not None:
            return self.labels.shape[:2]
        if self.image is not None:
            return self.image.shape[:2]
        raise ValueError("this result keeps neither the image nor the label image")

    def counts(self) -> dict[str, int]:
        """Number of detections per class name (every class present, zeros included)."""
        n = np.bincount(self.class_ids, minlength=len(self.classes)) if len(self) else np.zeros(len(self.classes), int)
        return {name: int(n[i]) for i, name in enumerate(self.classes)}

    def masks(self) -> list[np.ndarray]:
        """One boolean (H, W) mask per detection, from the instance label image."""
        if self.labels is None:
            raise ValueError("segmentation was switched off for this result")
        return [self.labels == i + 1 for i in range(len(self))]

    def polygons(self) -> list[np.ndarray]:
        """Outer contour of each detection's mask as a (P, 2) int32 array of (x, y); empty if none."""
        if self.labels is None:
            raise ValueError("segmentation was switched off for this result")
        out = []
        for i in range(len(self)):
            x1, y1, x2, y2 = _int_box(self.boxes[i], self.labels.shape)
            roi = (self.labels[y1:y2, x1:x2] == i + 1).astype(np.uint8)
            contours, _ = cv2.findContours(roi, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if not contours:
                out.append(np.zeros((0, 2), np.int32))
                continue
            c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.int32)
            out.append(c + np.array([x1, y1], np.int32))
        return out

    def crops(self, masked: bool = False) -> list[np.ndarray]:
        """Per-cell crops of the original image (or of the segmented one when ``masked``)."""
        src = self.segmented if masked else self.image
        if src is None:
            raise ValueError("this result keeps no image to crop from")
        crops = []
        for b in self.boxes:
            x1, y1, x2, y2 = _int_box(b, src.shape)
            crops.append(src[y1:y2, x1:x2].copy())
        return crops


def _int_box(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Pixel-index bounds covering a float box, clipped to the image."""
    h, w = shape[:2]
    x1 = int(np.clip(np.floor(box[0]), 0, w))
    y1 = int(np.clip(np.floor(box[1]), 0, h))
    x2 = int(np.clip(np.ceil(box[2]), 0, w))
    y2 = int(np.clip(np.ceil(box[3]), 0, h))
    return x1, y1, x2, y2
