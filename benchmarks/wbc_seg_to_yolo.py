"""Turn wbc-seg (one white cell per 120×120 frame, expert masks) into a one-class YOLO data set.

For the single-class "cell" model of the segmentation study: each frame's box is the bounding box of
its expert whole-cell mask (mask > 0). Splits by frame id, matching the HSV study's halves
(``benchmarks/eval_segmentation.py`` selects on 001–150 and holds out 151–300): train 001–125,
val 126–150, test 151–300. The images are linked, not copied (wbc-seg is GPL-3.0: evaluation only,
never shipped)::

    python benchmarks/wbc_seg_to_yolo.py ../shared/data/wbc-seg runs/wbc-seg-yolo
    fastcell train runs/wbc-seg-yolo/data.yaml --out runs/wbc-cell --epochs 40
    fastcell val runs/wbc-seg-yolo/data.yaml --model runs/wbc-cell/best.pt --split test \\
        --segmentation ../shared/data/wbc-seg --seg-frames 151-300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

SPLITS = {"train": range(1, 126), "val": range(126, 151), "test": range(151, 301)}


def yolo_line(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask > 0)
    h, w = mask.shape
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1  # pixel edges, as the HSV study
    return f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wbc_seg", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    source = args.wbc_seg.resolve() / "images"
    for split, ids in SPLITS.items():
        (args.out / "images" / split).mkdir(parents=True, exist_ok=True)
        (args.out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in ids:
            image, mask = source / f"{i:03d}.bmp", source / f"{i:03d}.png"
            link = args.out / "images" / split / image.name
            if not link.exists():
                link.symlink_to(image)
            label = yolo_line(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE))
            (args.out / "labels" / split / f"{i:03d}.txt").write_text(label + "\n")
    (args.out / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\ntest: images/test\n"
                                        "names: [cell]\n")
    print(f"wrote {args.out / 'data.yaml'}: " + ", ".join(f"{k} {len(v)}" for k, v in SPLITS.items()))


if __name__ == "__main__":
    main()
