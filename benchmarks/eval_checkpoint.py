"""Per-source, per-class AP of a training checkpoint, with the torch model (CPU or GPU).

Used where the ONNX pipeline is not at hand (the GPU training machine, leave-one-source-out runs):
the heads go through the deployed C++ post-processing (``fastcell.evaluation.predict``), and a
source's unlabelled classes are left out of its figures. The shipped model is evaluated with
``fastcell val`` / ``benchmarks/eval_sources.py`` instead.

    python benchmarks/eval_checkpoint.py runs/x/best.pt DATA[:split+split] ... --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from fastcell.data.dataset import DetectionDataset
from fastcell.data.labels import LabelSet
from fastcell.data.sources import load_source
from fastcell.evaluation.metrics import evaluate_detections
from fastcell.evaluation.predict import predict_dataset
from fastcell.export import load_checkpoint_model
from fastcell.spec import Thresholds


def evaluate(model, anchors, classes, labels: LabelSet, device, score: float = 0.001) -> dict:
    dataset = DetectionDataset(labels, int(model.input_size) if hasattr(model, "input_size") else 416, None,
                               progress=False)
    preds, gts = predict_dataset(model, dataset, anchors, Thresholds(score=score), batch_size=32, progress=False,
                                 autocast_bf16=device.type == "cuda", device=device)
    labelled = labels.samples[0].labelled or (True,) * len(classes)
    keep = [i for i, known in enumerate(labelled) if known]
    preds = [tuple(np.asarray(v)[np.isin(np.asarray(p[2]), keep)] for v in p[:3]) for p in preds]
    m = evaluate_detections(preds, gts, classes, score_threshold=0.25)
    per_class = {c: float(a) for c, a, known in zip(classes, m.ap50, labelled) if known}
    return {"images": len(labels), "cells": int(sum(len(s.boxes) for s in labels.samples)),
            "AP50": per_class, "mAP50": float(np.nanmean(list(per_class.values()))),
            "mAP50_95": float(np.nanmean([np.nanmean(a) for a, known in zip(m.ap, labelled) if known]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("data", nargs="+", help="PATH or PATH:split+split (default split: test)")
    parser.add_argument("--only", help="evaluate only the images of this source")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_checkpoint_model(args.checkpoint)
    model = model.to(device)
    anchors = np.asarray(state["anchors"], np.float32).reshape(6, 2)
    classes = tuple(state["classes"])
    report = {}
    for item in args.data:
        path, _, splits = item.partition(":")
        sets = [load_source(path, split) for split in (splits or "test").split("+")]
        labels = LabelSet(sets[0].classes, [s for ls in sets for s in ls.samples], [], sets[0].root, splits or "test")
        by_source: dict[str, list] = {}
        for sample in labels.samples:
            if args.only is None or sample.source == args.only:
                by_source.setdefault(sample.source or path, []).append(sample)
        for source, samples in by_source.items():
            sub = LabelSet(labels.classes, samples, [], labels.root, labels.split)
            report[f"{source}:{labels.split}"] = result = evaluate(model, anchors, classes, sub, device)
            print(f"{source}:{labels.split}", json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
