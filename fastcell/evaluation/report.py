"""``fastcell val`` in a function: evaluate a model on a labelled split, write JSON + PNG plots.

Detections come from an :class:`~fastcell.annotator.Annotator` on the chosen backend, reading the
images as ``fastcell annotate`` does (:mod:`fastcell.evaluation.predict`), so what is scored is what
a user gets. Detections for AP are taken at a low score threshold (``map_score``, 0.001:
the precision/recall curve needs the low-score tail); precision, recall, F1, the confusion matrix
and the Table 2 frame rates are taken at the model's own score threshold (``spec.thresholds.score``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fastcell.data.labels import load_labels
from fastcell.evaluation.frames import frame_rates
from fastcell.evaluation.metrics import DetectionMetrics, best_score_threshold, evaluate_detections

__all__ = ["evaluate_model", "plot_pr_curves", "plot_confusion"]


def plot_pr_curves(metrics: DetectionMetrics, path: str | Path) -> Path:
    """Interpolated precision against recall at IoU 0.5, one line per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastcell.evaluation.metrics import RECALL_POINTS

    fig, ax = plt.subplots(figsize=(6, 5))
    col = int(np.argmin(np.abs(metrics.iou_thresholds - 0.5)))
    for c, name in enumerate(metrics.classes):
        if np.isfinite(metrics.ap[c, col]):
            ax.plot(RECALL_POINTS, metrics.precision[c, col], label=f"{name} AP50={metrics.ap[c, col]:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"PR curve @ IoU 0.5 — mAP50 {metrics.map50:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_confusion(metrics: DetectionMetrics, path: str | Path) -> Path:
    """The confusion matrix (rows predicted, columns true; 'background' = unmatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*metrics.classes, "background"]
    cm = metrics.confusion
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"confusion @ score {metrics.score:g}, IoU 0.5")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def evaluate_model(model: str | Path, data: str | Path, split: str = "test", out_dir: str | Path | None = None,
                   map_score: float = 0.001, score: float | None = None, batch_size: int = 8,
                   segmentation_data: str | Path | None = None, cell_classes: tuple[str, ...] | None = None,
                   segmentation_names=None, progress: bool = True, device: str | None = None,
                   precision: str | None = None) -> dict:
    """Evaluate ``model`` (engine name / model.json / .onnx / .pt checkpoint) on ``data``'s ``split``.

    ``device`` and ``precision`` choose the backend (see
    :func:`fastcell.evaluation.predict.open_backend_for`); ``score`` is the operating threshold for
    P/R/F1, the confusion matrix and the frame rates (default: the model's).

    Returns the report dict; with ``out_dir`` also writes ``report.json``, ``pr_curve.png`` and
    ``confusion.png`` there.
    """
    from fastcell.evaluation.predict import open_annotator, predict_images

    with open_annotator(model, device, precision, max_batch=batch_size, score=map_score) as annotator:
        spec = annotator.spec
        labels = load_labels(data, split, spec.classes)
        images = [s.image for s in labels.samples]
        ground_truth = [(s.boxes, s.class_ids) for s in labels.samples]
        op_score = annotator.backend.spec.thresholds.score if score is None else score
        t0 = time.perf_counter()
        predictions = predict_images(annotator, images, progress=progress)
        seconds = time.perf_counter() - t0
        metrics = evaluate_detections(predictions, ground_truth, spec.classes, score=op_score)
        report = {
            "model": str(model),
            "backend": f"{annotator.backend.name} {annotator.backend.precision}",
            "postprocess": "fastcell.annotator.Annotator",
            "data": str(data),
            "split": split,
            "images": len(images),
            "skipped_labels": [str(i) for i in labels.issues],
            "thresholds": {"map_score": map_score, "operating_score": op_score, "nms_iou": spec.thresholds.nms_iou,
                           "merge": spec.thresholds.merge},
            **metrics.to_dict(),
            "frame_rates": frame_rates(predictions, ground_truth, score=op_score).to_dict(),
            # the operating point this split would choose (tune on val, then pass it to export --score)
            "best_f1_score_threshold": dict(zip(("score", "mean_f1"),
                                                best_score_threshold(predictions, ground_truth, len(spec.classes)))),
            "seconds": round(seconds, 2),
        }
        if segmentation_data is not None:
            from fastcell.evaluation.segmentation import evaluate_segmentation

            # masks are cut from the boxes a user would get: those at the operating threshold
            seg = evaluate_segmentation(annotator.with_options(score=op_score), segmentation_data, cell_classes,
                                        names=segmentation_names, progress=progress)
            report["segmentation"] = {"data": str(segmentation_data), "cell_classes": list(cell_classes or []),
                                      "disc": spec.segmentation.disc, "hsv_low": spec.segmentation.hsv_low,
                                      "hsv_high": spec.segmentation.hsv_high, **seg.to_dict()}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2, default=_plain) + "\n")
        plot_pr_curves(metrics, out / "pr_curve.png")
        plot_confusion(metrics, out / "confusion.png")
    return report


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value)} to JSON")
