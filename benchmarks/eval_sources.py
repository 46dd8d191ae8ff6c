"""How a shipped model transfers: per-source, per-class AP and single-cell segmentation, in one run.

    python benchmarks/eval_sources.py --model engines/DEFAULT [--data ../shared/data] [--json out.json]
                                      [--cell-size none|auto|PIXELS] [--record]

``--record`` writes the figures into the model's ``model.json`` (``transfer``), beside its training
sources, as the model card.

Every figure comes from the deployed pipeline (``fastcell.load`` → Annotator: letterbox, backend,
C++ post-processing) with the model's own settings, except the score threshold, lowered to 0.001
for the AP curves (P/R/F1 are read at the model's threshold). Per source (its test split: BCCD's
published one, the hash split of :func:`fastcell.data.sources.split_of` for Chula and BCDD, pig-wbc's
``test/``), only the classes that source labels are scored; predictions of the others are left out.

``wbc-seg`` frames 151–300 (GPL-3.0: evaluation only): the highest-scoring white cell of each
frame, segmented with the model's default settings, against the expert whole-cell mask
(``mask > 0``); a frame with no white cell scores 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import fastcell
from fastcell.data.sources import CLASSES, load_source
from fastcell.evaluation.metrics import evaluate_detections
from fastcell.evaluation.segmentation import mask_iou_dice, wbc_seg_frames
from fastcell.io.sources import read_image

SOURCES = ("bccd", "chula-rbc12", "bcdd", "pig-wbc")


def detection_table(annotator, root: Path, split: str = "test") -> dict:
    labels = load_source(root, split)
    labelled = labels.samples[0].labelled or (True,) * len(CLASSES)
    keep = [i for i, known in enumerate(labelled) if known]
    low = annotator.with_options(score=0.001)
    preds, gts = [], []
    for sample in tqdm(labels.samples, desc=root.name, leave=False):
        frame = read_image(sample.image)  # as `fastcell annotate` reads files
        r = low(frame)
        mask = np.isin(r.class_ids, keep)
        preds.append((r.boxes[mask], r.scores[mask], r.class_ids[mask]))
        gts.append((sample.boxes, sample.class_ids))
    m = evaluate_detections(preds, gts, CLASSES, score=annotator.spec.thresholds.score)
    rows = {}
    for i in keep:
        rows[CLASSES[i]] = {"AP50": float(m.ap[i, 0]), "AP50_95": float(np.nanmean(m.ap[i])),
                            "precision": float(m.p[i]), "recall": float(m.r[i]), "f1": float(m.f1[i]),
                            "cells": int(sum((s.class_ids == i).sum() for s in labels.samples))}
    return {"images": len(labels), "classes": rows,
            "mAP50": float(np.nanmean([rows[c]["AP50"] for c in rows])),
            "mAP50_95": float(np.nanmean([rows[c]["AP50_95"] for c in rows]))}


def wbc_seg(annotator, root: Path, first: int = 151, last: int = 300) -> dict:
    frames = wbc_seg_frames(root, names=[f"{i:03d}" for i in range(first, last + 1)])
    wbc = annotator.spec.classes.index("WBC")
    ious, dices, found = [], [], 0
    for image_path, mask_path in tqdm(frames, desc="wbc-seg", leave=False):
        frame = read_image(image_path)
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0
        r = annotator(frame)
        cells = np.flatnonzero(r.class_ids == wbc)
        if len(cells):
            found += 1
            best = cells[np.argmax(r.scores[cells])]
            iou, dice = mask_iou_dice(r.labels == best + 1, truth)
        else:
            iou, dice = 0.0, 0.0
        ious.append(iou)
        dices.append(dice)
    return {"frames": len(frames), "found": found / len(frames), "mean_iou": float(np.mean(ious)),
            "median_iou": float(np.median(ious)), "mean_dice": float(np.mean(dices))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--cell-size", default="model", help="'model' (its setting), 'none', 'auto' or pixels")
    parser.add_argument("--json")
    parser.add_argument("--record", action="store_true", help="write the figures into the model's model.json")
    args = parser.parse_args(argv)
    options = {}
    if args.cell_size != "model":
        options["cell_size"] = None if args.cell_size == "none" else (
            "auto" if args.cell_size == "auto" else float(args.cell_size))
    annotator = fastcell.load(args.model, verbose=True, **options)
    print(f"cell_size: {annotator.spec.cell_size!r} (training scale {annotator.spec.train_cell_size} px)")
    report: dict = {"model": str(args.model), "cell_size": annotator.spec.cell_size, "sources": {}}
    data = Path(args.data)
    start = time.time()
    for name in SOURCES:
        if not (data / name).is_dir():
            print(f"skip {name}: {data / name} is absent")
            continue
        report["sources"][name] = t = detection_table(annotator, data / name)
        per_class = "  ".join(f"{c} {v['AP50']:.3f}" for c, v in t["classes"].items())
        print(f"{name:12s} {t['images']:4d} images  mAP@0.5 {t['mAP50']:.3f}  mAP@0.5:0.95 {t['mAP50_95']:.3f}  "
              f"{per_class}", flush=True)
    if (data / "wbc-seg").is_dir():
        report["wbc_seg"] = s = wbc_seg(annotator, data / "wbc-seg")
        print(f"wbc-seg 151-300: white cell found in {s['found']:.0%}, mean IoU {s['mean_iou']:.3f}, "
              f"median {s['median_iou']:.3f}, mean Dice {s['mean_dice']:.3f}")
    print(f"({time.time() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.record:
        path = annotator.spec.path
        card = json.loads(path.read_text())
        setting = "none" if annotator.spec.cell_size is None else str(annotator.spec.cell_size)
        card.setdefault("transfer", {})[f"cell_size={setting}"] = {
            "command": "python benchmarks/eval_sources.py --model MODEL --cell-size " + setting,
            "sources": report["sources"], "wbc_seg_151_300": report.get("wbc_seg")}
        path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
