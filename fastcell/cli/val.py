"""``fastcell val``: evaluate a model on a labelled split — mAP, P/R/F1, confusion, Table 2 rates, segmentation."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="Pascal VOC folder, YOLO data.yaml or COCO .json")
    parser.add_argument("--model", default="default",
                        help="shipped model name, model folder/JSON/ONNX, or a training checkpoint .pt "
                             "(default: the default model)")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", default=None, help="folder for report.json, pr_curve.png, confusion.png")
    parser.add_argument("--score", type=float, default=None,
                        help="operating score threshold for P/R/F1 and the confusion matrix (default: the model's)")
    parser.add_argument("--map-score", type=float, default=0.001, help="score threshold of the detections used for AP")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None,
                        help="run the model on this runtime backend (auto, openvino, onnxruntime, tensorrt); "
                             "default: ONNX Runtime fp32, the reference")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8"), default=None,
                        help="the backend's precision (int8 needs `fastcell export --calib IMAGES` first); measures its cost")
    parser.add_argument("--segmentation", metavar="WBC_SEG_DIR", default=None,
                        help="also score circle/HSV masks from predicted boxes on a wbc-seg folder")
    parser.add_argument("--cell-classes", nargs="+", default=None,
                        help="classes that count as the cell for --segmentation (e.g. WBC)")
    parser.add_argument("--seg-frames", default=None, metavar="FIRST-LAST",
                        help="only these wbc-seg frame ids, e.g. 201-300 (a held-out part)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from fastcell.evaluation.report import evaluate_model

    names = None
    if args.seg_frames:
        first, _, last = args.seg_frames.partition("-")
        names = [f"{i:03d}" for i in range(int(first), int(last or first) + 1)]
    report = evaluate_model(args.model, args.data, args.split, args.out, map_score=args.map_score, score=args.score,
                            batch_size=args.batch_size, segmentation_data=args.segmentation,
                            cell_classes=tuple(args.cell_classes) if args.cell_classes else None,
                            segmentation_names=names,
                            progress=not args.no_progress, device=args.device, precision=args.precision)
    print(f"{report['model']} on {report['data']} [{report['split']}], {report['images']} images "
          f"({report['backend']}, {report['postprocess']}):")
    print(f"  mAP@0.5 {report['mAP50']:.4f}   mAP@0.5:0.95 {report['mAP50_95']:.4f}   "
          f"P {report['precision']:.3f} R {report['recall']:.3f} F1 {report['f1']:.3f} "
          f"@ score {report['thresholds']['operating_score']}")
    print(f"  {'class':<12}{'AP50':>8}{'AP50:95':>9}{'P':>7}{'R':>7}{'F1':>7}{'GT':>6}")
    for name, c in report["per_class"].items():
        fmt = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"  {name:<12}{fmt(c['AP50']):>8}{fmt(c['AP50_95']):>9}{fmt(c['precision']):>7}{fmt(c['recall']):>7}"
              f"{fmt(c['f1']):>7}{c['ground_truth']:>6}")
    print("  frame rates:", json.dumps(report["frame_rates"]))
    best = report["best_f1_score_threshold"]
    print(f"  best class-mean F1 {best['mean_f1']:.3f} at score >= {best['score']:.2f}")
    if "segmentation" in report:
        print("  segmentation:", json.dumps(report["segmentation"]))
    if args.out:
        print(f"  report and plots in {args.out}")
    return 0
