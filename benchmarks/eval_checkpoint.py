"""Per-source, per-class AP of a training checkpoint, with the torch model (CPU or GPU).

Used where the ONNX pipeline is not at hand (the GPU training machine, leave-one-source-out runs):
the checkpoint runs on the torch backend under an Annotator, as ``fastcell val best.pt`` does
(``fastcell.evaluation.predict``), and a source's unlabelled classes are left out of its figures. The shipped model is evaluated with
``fastcell val`` / ``benchmarks/eval_sources.py`` instead.

    python benchmarks/eval_checkpoint.py runs/x/best.pt DATA[:split+split] ... --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from fastcell.annotator import Annotator
from fastcell.data.labels import LabelSet
from fastcell.data.sources import load_source
from fastcell.evaluation.metrics import evaluate_detections
from fastcell.evaluation.predict import predict_images
from fastcell.model.checkpoint import checkpoint_spec, load_checkpoint_model
from fastcell.runtime.torch_backend import TorchBackend


def evaluate(backend: TorchBackend, classes, labels: LabelSet, score: float = 0.001) -> dict:
    annotator = Annotator(backend, segment=False, keep_image=False, max_batch=32, score=score)
    preds = predict_images(annotator, [s.image for s in labels.samples], progress=False)
    gts = [(s.boxes, s.class_ids) for s in labels.samples]
    labelled = labels.samples[0].labelled or (True,) * len(classes)
    keep = [i for i, known in enumerate(labelled) if known]
    preds = [tuple(np.asarray(v)[np.isin(np.asarray(p[2]), keep)] for v in p[:3]) for p in preds]
    m = evaluate_detections(preds, gts, classes, score=backend.spec.thresholds.score)
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
    backend = TorchBackend(checkpoint_spec(state), model=model.to(device),
                           precision="bf16" if device.type == "cuda" else "fp32")
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
            report[f"{source}:{labels.split}"] = result = evaluate(backend, classes, sub)
            print(f"{source}:{labels.split}", json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
