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

from tqdm import tqdm

from fastcell.data.labels import load_labels
from fastcell.evaluation.metrics import best_score_threshold, evaluate_detections
from fastcell.evaluation.predict import open_annotator
from fastcell.io.sources import read_image


def raw_heads(annotator, images):
    """The Annotator's first two stages, once: a list of (heads, params, frames) per batch."""
    out = []
    step = annotator.max_batch
    for start in tqdm(range(0, len(images), step), desc="forward", leave=False):
        frames = [read_image(p) for p in images[start:start + step]]
        batch, params = annotator.preprocess(frames)
        out.append((annotator.infer(batch), params.copy(), frames))
    return out


def score_setting(cached, annotator, ground_truth):
    """The Annotator's post-processing (with its settings) over the cached heads, scored."""
    predictions = []
    for heads, params, frames in cached:
        predictions += [(r.boxes, r.scores, r.class_ids) for r in annotator.postprocess(heads, params, frames)]
    spec = annotator.spec
    metrics = evaluate_detections(predictions, ground_truth, spec.classes, score=spec.thresholds.score)
    best_score, best_f1 = best_score_threshold(predictions, ground_truth, spec.num_classes)
    return metrics.map50, metrics.map50_95, best_f1, best_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()

    annotator = open_annotator(args.model, score=0.001)
    spec = annotator.spec
    labels = load_labels(args.data, args.split, spec.classes)
    ground_truth = [(s.boxes, s.class_ids) for s in labels.samples]
    cached = raw_heads(annotator, [s.image for s in labels.samples])
    base = spec.thresholds

    grid = [("none", None, None)] + [("multi", g, m) for g, m in itertools.product((0.3, 0.5), (0.3, 0.5, 0.7))]
    print(f"{args.model} on {args.split} ({len(ground_truth)} images)")
    print(f"{'nms_iou':>8} {'merge':>6} {'gbciou':>7} {'merge_iou':>10} {'mAP50':>7} {'mAP50:95':>9} "
          f"{'best F1':>8} {'@score':>7}")
    for nms_iou in (0.3, 0.45, 0.6):
        for merge, gbciou, merge_iou in grid:
            setting = annotator.with_options(nms_iou=nms_iou, merge=merge, gbciou=gbciou or base.gbciou,
                                             merge_iou=merge_iou or base.merge_iou)
            m50, m5095, f1, s = score_setting(cached, setting, ground_truth)
            print(f"{nms_iou:>8.2f} {merge:>6} {gbciou or '-':>7} {merge_iou or '-':>10} {m50:>7.4f} {m5095:>9.4f} "
                  f"{f1:>8.3f} {s:>7.2f}")


if __name__ == "__main__":
    main()
