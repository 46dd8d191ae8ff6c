"""Circle/ellipse segmentation with and without HSV refinement, against expert whole-cell masks.

On wbc-seg (300 single white-cell images, 120×120, expert masks; GPL-3.0: read in place for
evaluation, never copied into the repository) each image gets its EXPERT box — the bounding box of
its whole-cell mask (mask > 0) — and is segmented with fastcell.ops.segment_cells. Reported: mean
IoU and mean Dice against the mask for

* the inscribed circle alone (radius min(w, h)/2; the paper reports mean IoU 0.912) and the
  inscribed ellipse alone (the paper: 0.935);
* each of them refined by an HSV in-range test whose bounds are chosen by measurement: coordinate
  ascent of mean IoU over the six bounds (H low/high with wrap-around, S low/high, V low/high) on
  a random half of the images (the selection half), then reported on the other half (held out)
  and on all images.

Refinement becomes the default only if it beats both discs alone on the held-out half.

Usage::

    python benchmarks/eval_segmentation.py [--data ../shared/data/wbc-seg] [--seed 0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fastcell import ops

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "wbc-seg"
FULL_RANGE = ((0, 0, 0), (179, 255, 255))
# Candidate values per bound: hue in steps of 5 (0..179), saturation and value in steps of 5 (0..255).
HUE_STEPS = list(range(0, 180, 5)) + [179]
LEVEL_STEPS = list(range(0, 256, 5))


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 BGR
    cell: np.ndarray  # (H, W) bool, expert whole-cell mask
    box: np.ndarray  # (1, 4) float32, bounding box of the mask in pixel-edge coordinates


def load(data: Path) -> list[Sample]:
    samples = []
    for image_path in sorted((data / "images").glob("*.bmp")):
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(image_path.with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            raise FileNotFoundError(f"unreadable image or mask: {image_path}")
        cell = mask > 0
        ys, xs = np.nonzero(cell)
        # Pixel x covers [x, x + 1), so the box that holds the mask ends at max + 1.
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        samples.append(Sample(image_path.stem, image, cell, box))
    return samples


def scores(samples: list[Sample], disc: str, hsv: tuple | None) -> tuple[float, float]:
    """Mean IoU and mean Dice of one segmentation setting over the samples."""
    low, high = hsv if hsv is not None else (None, None)
    ious, dices = [], []
    for s in samples:
        labels, _ = ops.segment_cells(s.image, s.box, [1.0], low, high, disc=disc)
        pred = labels > 0
        inter = np.count_nonzero(pred & s.cell)
        union = np.count_nonzero(pred | s.cell)
        total = np.count_nonzero(pred) + np.count_nonzero(s.cell)
        ious.append(inter / union if union else 1.0)
        dices.append(2 * inter / total if total else 1.0)
    return float(np.mean(ious)), float(np.mean(dices))


def search_hsv(samples: list[Sample], disc: str, rounds: int) -> tuple[tuple, float]:
    """Coordinate ascent of mean IoU over the six HSV bounds, starting from the full range."""
    bounds = [*FULL_RANGE[0], *FULL_RANGE[1]]  # h_lo, s_lo, v_lo, h_hi, s_hi, v_hi
    candidates = [HUE_STEPS, LEVEL_STEPS, LEVEL_STEPS, HUE_STEPS, LEVEL_STEPS, LEVEL_STEPS]

    def as_range(b):
        return (tuple(b[:3]), tuple(b[3:]))

    best = scores(samples, disc, as_range(bounds))[0]
    with tqdm(total=rounds * sum(map(len, candidates)), desc=f"HSV search ({disc})", leave=False) as bar:
        for _ in range(rounds):
            improved = False
            for k, values in enumerate(candidates):
                for v in values:
                    bar.update()
                    trial = list(bounds)
                    trial[k] = v
                    if trial[1] > trial[4] or trial[2] > trial[5]:
                        continue  # an empty S or V range; hue may wrap (low > high)
                    iou = scores(samples, disc, as_range(trial))[0]
                    if iou > best + 1e-6:
                        best, bounds, improved = iou, trial, True
            if not improved:
                break
    return as_range(bounds), best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the wbc-seg folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the selection/held-out split")
    parser.add_argument("--rounds", type=int, default=3, help="coordinate-ascent rounds at most")
    args = parser.parse_args(argv)
    if not (args.data / "images").is_dir():
        print(f"wbc-seg not found at {args.data} (pass --data)", file=sys.stderr)
        return 2

    samples = load(args.data)
    order = np.random.default_rng(args.seed).permutation(len(samples))
    half = len(samples) // 2
    select = [samples[i] for i in order[:half]]
    held_out = [samples[i] for i in order[half:]]
    print(f"wbc-seg: {len(samples)} images; expert boxes; selection half {len(select)}, held-out half {len(held_out)}")

    rows = []
    for disc in ("circle", "ellipse"):
        rows.append((f"inscribed {disc} alone", disc, None))
    for disc in ("circle", "ellipse"):
        hsv, _ = search_hsv(select, disc, args.rounds)
        rows.append((f"{disc} + HSV {hsv[0]}..{hsv[1]}", disc, hsv))

    print()
    print("| method | IoU select | IoU held-out | Dice held-out | IoU all | Dice all |")
    print("|---|---|---|---|---|---|")
    results = {}
    for label, disc, hsv in rows:
        iou_s, _ = scores(select, disc, hsv)
        iou_h, dice_h = scores(held_out, disc, hsv)
        iou_a, dice_a = scores(samples, disc, hsv)
        results[label] = (iou_h, disc, hsv)
        print(f"| {label} | {iou_s:.3f} | {iou_h:.3f} | {dice_h:.3f} | {iou_a:.3f} | {dice_a:.3f} |")

    plain_best = max(results[f"inscribed {d} alone"][0] for d in ("circle", "ellipse"))
    print()
    for disc in ("circle", "ellipse"):
        label = next(k for k in results if k.startswith(f"{disc} + HSV"))
        iou_h, _, hsv = results[label]
        verdict = "beats" if iou_h > plain_best else "does NOT beat"
        print(f"{disc} + HSV {hsv}: held-out IoU {iou_h:.3f} {verdict} the best disc alone ({plain_best:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
