"""What each GBCIOU mode does on BCCD: boxes per image in and out, and the ground truth found again.

Every ground-truth box of a split plus three copies of it jittered by ~3 % of its size (scores below
the original's) stand in for a detector's overlapping predictions. ``single`` (the paper's setting of
one cell per frame) folds each frame into one box; ``multi`` (fastcell's default) merges a box only
into a box it overlaps, so separate cells survive. Also draws one frame of each mode::

    python benchmarks/gbciou_modes.py ../shared/data/bccd --figure benchmarks/figures/gbciou_modes.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fastcell import ops
from fastcell.data.labels import read_voc

MODES = ("none", "single", "multi")


def jittered_candidates(gt: np.ndarray, rng: np.random.Generator, copies: int = 3):
    """Ground truth (score 0.9) and ``copies`` jittered duplicates of each box (scores 0.3–0.85)."""
    size = np.tile(np.maximum(gt[:, 2:] - gt[:, :2], 1), 2)
    dupes = np.repeat(gt, copies, 0) + rng.normal(0, 0.03, (len(gt) * copies, 4)) * np.repeat(size, copies, 0)
    scores = np.concatenate([np.full(len(gt), 0.9), rng.uniform(0.3, 0.85, len(dupes))])
    return np.concatenate([gt, dupes]).astype(np.float32), scores.astype(np.float32)


def summarize(samples, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    total = {"gt": 0, "in": 0, **{m: 0 for m in MODES}, "found": 0}
    for s in samples:
        boxes, scores = jittered_candidates(s.boxes, rng)
        total["gt"] += len(s.boxes)
        total["in"] += len(boxes)
        for mode in MODES:
            out, _, _ = ops.gbciou_merge(boxes, scores, None, mode=mode)
            total[mode] += len(out)
            if mode == "multi" and len(s.boxes):
                total["found"] += int((ops.box_iou(s.boxes, out).max(axis=1, initial=0) > 0.5).sum())
    n = max(len(samples), 1)
    return {"images": len(samples), **{k: total[k] / n for k in ("gt", "in", *MODES)},
            "multi_found": total["found"] / max(total["gt"], 1)}


def draw(sample, path: Path, seed: int = 0) -> None:
    image = cv2.imread(str(sample.image))
    boxes, scores = jittered_candidates(sample.boxes, np.random.default_rng(seed))
    panels = []
    for title, shown in (("candidates", boxes), *((m, ops.gbciou_merge(boxes, scores, None, mode=m)[0])
                                                   for m in ("single", "multi"))):
        panel = image.copy()
        for x1, y1, x2, y2 in np.round(shown).astype(int):
            cv2.rectangle(panel, (x1, y1), (x2, y2), (0, 220, 0), 2)
        cv2.putText(panel, f"{title}: {len(shown)} boxes", (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 5)
        cv2.putText(panel, f"{title}: {len(shown)} boxes", (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (255, 255, 255), 2)
        panels.append(panel)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = cv2.resize(np.hstack(panels), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bccd", type=Path)
    parser.add_argument("--figure", type=Path, default=None, help="image (PNG/JPEG) of one test frame in each mode")
    args = parser.parse_args()
    print(f"{'split':<6}{'images':>7}{'GT/img':>8}{'in/img':>8}{'single':>8}{'multi':>8}{'GT found (multi)':>18}")
    for split in ("test", "val", "train"):
        s = summarize(read_voc(args.bccd, split).samples)
        print(f"{split:<6}{s['images']:>7}{s['gt']:>8.2f}{s['in']:>8.2f}{s['single']:>8.2f}{s['multi']:>8.2f}"
              f"{s['multi_found']:>17.1%}")
    if args.figure:
        test = read_voc(args.bccd, "test").samples
        draw(max(test[:20], key=lambda s: len(s.boxes)), args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
