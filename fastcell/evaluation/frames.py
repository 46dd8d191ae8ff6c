"""The paper's Table 2 rates for single-cell frames (a cell, or only noise, per frame). NumPy only.

In the flow-imaging setting every frame holds at most one cell; a frame without a cell holds
debris or nothing ("noise"). Per frame, a detection counts when its score is ``>= score``
(after post-processing), regardless of class unless ``class_aware``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fastcell.evaluation.metrics import iou_matrix

__all__ = ["FrameRates", "frame_rates"]


@dataclass(frozen=True)
class FrameRates:
    """Frame-level rates (each in [0, 1]; NaN when its denominator is 0).

    tp_rate : cell frames in which a detection overlaps a ground-truth cell with IoU ``>= iou``
        (the cell was found), over all cell frames.
    no_label_rate : cell frames left with no detection at all, over all cell frames.
    mislocated_rate : cell frames with detections of which none overlaps a cell with IoU ``>= iou``
        (``tp_rate + no_label_rate + mislocated_rate = 1``).
    fp_rate : noise frames (no ground truth) with at least one detection — noise taken for a
        cell — over all noise frames.
    tn_rate : noise frames left without a label, over all noise frames (``= 1 − fp_rate``).
    cell_frames, noise_frames : the denominators.
    """

    tp_rate: float
    no_label_rate: float
    mislocated_rate: float
    fp_rate: float
    tn_rate: float
    cell_frames: int
    noise_frames: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def frame_rates(predictions, ground_truth, *, score: float, iou: float = 0.5,
                class_aware: bool = False) -> FrameRates:
    """Table 2 rates from per-frame predictions and ground truth.

    Parameters
    ----------
    predictions : list over frames of ``(boxes (K, 4), scores (K,), class_ids (K,))``
    ground_truth : list over frames of ``(boxes (G, 4), class_ids (G,))``; ``G = 0`` for a noise frame
    score : float
        Detections with a score ``>=`` this count.
    iou : float
        A cell counts as found when some detection has IoU ``>= iou`` with it.
    class_aware : bool
        Also require the detection's class to equal the cell's.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction sets for {len(ground_truth)} frames")
    found = none = misplaced = noise_hit = noise_clean = 0
    for (pb, ps, pc), (gb, gc) in zip(predictions, ground_truth):
        pb, ps, pc = np.asarray(pb).reshape(-1, 4), np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1)
        gb, gc = np.asarray(gb).reshape(-1, 4), np.asarray(gc).reshape(-1)
        keep = ps >= score
        pb, pc = pb[keep], pc[keep]
        if len(gb) == 0:
            if len(pb):
                noise_hit += 1
            else:
                noise_clean += 1
            continue
        if not len(pb):
            none += 1
            continue
        hits = iou_matrix(pb, gb) >= iou
        if class_aware:
            hits &= pc[:, None] == gc[None, :]
        if hits.any():
            found += 1
        else:
            misplaced += 1
    cells, noise = found + none + misplaced, noise_hit + noise_clean

    def rate(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return FrameRates(rate(found, cells), rate(none, cells), rate(misplaced, cells), rate(noise_hit, noise),
                      rate(noise_clean, noise), cells, noise)
