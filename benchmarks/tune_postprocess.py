"""Choose the post-processing defaults (NMS IoU, GBCIOU mode and thresholds) by measurement.

Runs the model once over a labelled split (the validation split: never tune on test), keeps the raw
head maps, then post-processes them under each setting of a small grid and prints mAP@0.5,
mAP@0.5:0.95 and the best class-mean F1 with its score threshold, one row per setting::

    python benchmarks/tune_postprocess.py ../shared/data/bccd --model runs/bccd/best.pt --split val

Not a test: a measurement whose winner is written into the model's metadata at export
(``fastcell export ... --score S``; the other thresholds live in ``fastcell.spec.Thresholds``).
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from fastcell.data.labels import load_labels
from fastcell.evaluation.metrics import best_score_threshold, evaluate_detections
from fastcell.evaluation.predict import postprocess_heads
from fastcell.evaluation.predictors import load_predictor, read_image
from fastcell.ops import letterbox_batch


def raw_heads(predictor, images, batch_size: int = 8):
    """Letterboxed forward passes: a list of (heads, params) per batch."""
    spec = predictor.spec
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="forward", leave=False):
        chunk = [read_image(p) for p in images[start:start + batch_size]]
        batch, params = letterbox_batch(chunk, size=spec.input_size, pad_value=spec.pad_value)
        out.append((predictor(batch), params))
    return out


def score_setting(cached, spec, thresholds, ground_truth):
    strides = tuple(h.stride for h in spec.heads)
    anchors = np.asarray(spec.anchors, np.float32)
    predictions = []
    for heads, params in cached:
        predictions += postprocess_heads(heads, params, anchors, spec.num_classes, thresholds, strides=strides)
    metrics = evaluate_detections(predictions, ground_truth, spec.classes)
    best_score, best_f1 = best_score_threshold(predictions, ground_truth, spec.num_classes)
    return metrics.map50, metrics.map50_95, best_f1, best_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()

    predictor = load_predictor(args.model)
    spec = predictor.spec
    labels = load_labels(args.data, args.split, spec.classes)
    ground_truth = [(s.boxes, s.class_ids) for s in labels.samples]
    cached = raw_heads(predictor, [s.image for s in labels.samples])
    base = replace(spec.thresholds, score=0.001)

    grid = [("none", None, None)] + [("multi", g, m) for g, m in itertools.product((0.3, 0.5), (0.3, 0.5, 0.7))]
    print(f"{args.model} on {args.split} ({len(ground_truth)} images)")
    print(f"{'nms_iou':>8} {'merge':>6} {'gbciou':>7} {'merge_iou':>10} {'mAP50':>7} {'mAP50:95':>9} "
          f"{'best F1':>8} {'@score':>7}")
    for nms_iou in (0.3, 0.45, 0.6):
        for merge, gbciou, merge_iou in grid:
            t = replace(base, nms_iou=nms_iou, merge=merge, gbciou=gbciou or base.gbciou,
                        merge_iou=merge_iou or base.merge_iou)
            m50, m5095, f1, s = score_setting(cached, spec, t, ground_truth)
            print(f"{nms_iou:>8.2f} {merge:>6} {gbciou or '-':>7} {merge_iou or '-':>10} {m50:>7.4f} {m5095:>9.4f} "
                  f"{f1:>8.3f} {s:>7.2f}")


if __name__ == "__main__":
    main()
