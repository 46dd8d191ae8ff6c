"""What the default model was taught: augmented training samples of every source, boxes drawn.

    python benchmarks/plot_augmentations.py .traindata --out benchmarks/figures/augmentations.jpg

DATA is a packed set (``fastcell.data.sources.pack_sources``) or several source folders. The
augmentations are those of the shipped recipe (``engines/DEFAULT/model.json`` → training).
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from fastcell.data.augment import Augment
from fastcell.data.dataset import DetectionDataset
from fastcell.data.labels import LabelSet
from fastcell.data.sources import CLASSES, load_source

RECIPE = Augment(mosaic=0.5, zoom=(0.4, 2.5), stain=0.08, white_balance=0.1, gamma=0.25, blur=0.2, noise=6,
                 jpeg=0.3, single_cell=0.15)
COLOURS = {"WBC": (255, 80, 0), "RBC": (0, 0, 230), "Platelets": (0, 200, 0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--out", default="benchmarks/figures/augmentations.jpg")
    parser.add_argument("--per-source", type=int, default=5)
    parser.add_argument("--tile", type=int, default=208)
    args = parser.parse_args(argv)
    samples = [s for path in args.data for s in load_source(path, "train").samples]
    sources = sorted({s.source for s in samples})
    rows = []
    for r, source in enumerate(sources):
        labels = LabelSet(CLASSES, [s for s in samples if s.source == source], [], None, "train")
        dataset = DetectionDataset(labels, 416, RECIPE, seed=7, progress=False)
        rng = np.random.default_rng(r)
        tiles = []
        for index in rng.choice(len(dataset), args.per_source, replace=False):
            image, targets, *_ = dataset[int(index)]
            canvas = np.ascontiguousarray(image.numpy().transpose(1, 2, 0)[:, :, ::-1])
            for cls, x1, y1, x2, y2 in targets.numpy():
                cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), COLOURS[CLASSES[int(cls)]], 2)
            tiles.append(cv2.resize(canvas, (args.tile, args.tile), interpolation=cv2.INTER_AREA))
        label = np.full((args.tile, 150, 3), 255, np.uint8)
        known = "+".join(c[:3] for c, k in zip(CLASSES, labels.samples[0].labelled) if k)
        for k, text in enumerate((source, f"labels {known}")):
            cv2.putText(label, text, (4, 90 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack([label, *tiles]))
    cv2.imwrite(args.out, np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out}: {len(sources)} sources × {args.per_source} samples "
          "(boxes: WBC blue, RBC red, platelets green)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
