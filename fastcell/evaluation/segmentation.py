"""Segmentation quality of the circle/HSV masks from *predicted* boxes, against expert masks.

For the ``wbc-seg`` set (one white cell per 120×120 frame, mask PNG beside each BMP: 0
background, 128 cytoplasm, 255 nucleus; the cell is ``mask > 0``): the detector runs on the frame
through the deployed pipeline, the boxes of the cell class(es) are folded into one by GBCIOU in
``"single"`` mode (the paper's one-cell-per-frame setting), and ``fastcell.ops.segment_cells``
turns it into a mask. Per frame, IoU = |P∩G| / |P∪G| and Dice = 2|P∩G| / (|P|+|G|); a frame with
no detection scores 0 on both. Means are over all frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm


__all__ = ["mask_iou_dice", "SegmentationScores", "evaluate_segmentation", "wbc_seg_frames"]


def mask_iou_dice(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two boolean masks of the same shape (both empty → 1.0, 1.0)."""
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, truth {truth.shape}")
    pred, truth = pred.astype(bool), truth.astype(bool)
    inter = np.logical_and(pred, truth).sum()
    union = np.logical_or(pred, truth).sum()
    total = pred.sum() + truth.sum()
    if union == 0:
        return 1.0, 1.0
    return float(inter / union), float(2 * inter / total)


@dataclass
class SegmentationScores:
    """Per-frame IoU/Dice and their means; ``detected`` is the share of frames with a kept box."""

    iou: np.ndarray
    dice: np.ndarray
    detected: float
    names: list[str] = field(default_factory=list)

    @property
    def mean_iou(self) -> float:
        return float(self.iou.mean()) if len(self.iou) else float("nan")

    @property
    def mean_dice(self) -> float:
        return float(self.dice.mean()) if len(self.dice) else float("nan")

    def to_dict(self) -> dict:
        return {"frames": int(len(self.iou)), "mean_iou": round(self.mean_iou, 4),
                "mean_dice": round(self.mean_dice, 4), "detected_frames": round(self.detected, 4),
                "median_iou": round(float(np.median(self.iou)), 4) if len(self.iou) else None}


def wbc_seg_frames(root: str | Path, limit: int = 0, names=None) -> list[tuple[Path, Path]]:
    """``(image.bmp, mask.png)`` pairs of the wbc-seg folder, sorted by name.

    ``names``: only these frame ids (e.g. ``["201", ..., "300"]``, a held-out part); ``limit``: the first N.
    """
    images = Path(root) / "images"
    if not images.is_dir():
        raise FileNotFoundError(f"not a wbc-seg folder: {images} is missing")
    pairs = [(p, p.with_suffix(".png")) for p in sorted(images.glob("*.bmp")) if p.with_suffix(".png").is_file()]
    if names is not None:
        wanted = set(names)
        pairs = [pair for pair in pairs if pair[0].stem in wanted]
    return pairs[:limit] if limit else pairs


def evaluate_segmentation(annotator, root: str | Path, cell_classes: tuple[str, ...] | None = None,
                          limit: int = 0, names=None, progress: bool = True) -> SegmentationScores:
    """Mean IoU and Dice of predicted-box circle/HSV masks against the wbc-seg expert masks.

    Parameters
    ----------
    annotator : Annotator
        The model, backend and settings: its thresholds (with ``merge="none"``: the single-cell
        GBCIOU fold is applied here after the class filter) and its segmentation (disc, HSV range).
        See :func:`fastcell.evaluation.predict.open_annotator`.
    root : path
        The wbc-seg folder (``images/NNN.bmp`` + ``images/NNN.png``).
    cell_classes : tuple of str, optional
        Classes whose boxes count as the cell (e.g. ``("WBC",)`` for the BCCD model, whose red
        cells around the white one are not part of the expert mask). Default: every class.
    limit, names : optional
        Evaluate only the first ``limit`` frames / the frames with these ids.
    """
    from fastcell.evaluation.predict import predict_images
    from fastcell.frames import to_bgr8
    from fastcell.io.sources import read_image
    from fastcell.ops import gbciou_merge, segment_cells

    spec = annotator.spec
    segmentation = spec.segmentation
    pairs = wbc_seg_frames(root, limit, names)
    images = [read_image(p) for p, _ in pairs]
    predictions = predict_images(annotator.with_options(merge="none"), images, progress=progress, desc="wbc-seg")
    wanted = None if cell_classes is None else [spec.classes.index(c) for c in cell_classes]
    ious, dices, hits = [], [], 0
    for (image_path, mask_path), image, (boxes, scores, ids) in tqdm(
            list(zip(pairs, images, predictions)), desc="masks", disable=not progress, leave=False):
        if wanted is not None:
            keep = np.isin(ids, wanted)
            boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
        if len(boxes):
            hits += 1
            boxes, scores, ids = gbciou_merge(boxes, scores, np.zeros_like(ids), threshold=spec.thresholds.gbciou,
                                              mode="single")
        low, high = segmentation.bounds(gray=image.ndim == 2)
        labels, _ = segment_cells(to_bgr8(image), boxes, scores, low, high, segmentation.disc)
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
        iou, dice = mask_iou_dice(labels > 0, truth)
        if not len(boxes):
            iou = dice = 0.0
        ious.append(iou)
        dices.append(dice)
    return SegmentationScores(np.asarray(ious), np.asarray(dices), hits / max(len(pairs), 1),
                              [p.stem for p, _ in pairs])
