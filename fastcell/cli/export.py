"""``fastcell export CHECKPOINT``: ONNX + metadata JSON (``--format engine``: also a TensorRT engine on this GPU)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (best.pt / last.pt), or with --format engine "
                                           "an exported model folder/JSON/ONNX")
    parser.add_argument("--out", required=True, help="output folder (model.onnx + model.json), e.g. engines/bccd")
    parser.add_argument("--format", choices=("onnx", "engine"), default="onnx")
    parser.add_argument("--name", default=None, help="model name in the metadata (default: the folder name)")
    parser.add_argument("--weights", choices=("fp32", "fp16"), default="fp16",
                        help="storage of the weights; fp16 halves the file, computation stays fp32 (default fp16)")
    parser.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    parser.add_argument("--verify", nargs="*", default=None, metavar="IMAGE",
                        help="images to compare ONNX Runtime with PyTorch on (default: two random inputs)")
    parser.add_argument("--data-name", default=None, help="training data description for the metadata")
    parser.add_argument("--data-licence", default=None, help="licence of the training data")
    parser.add_argument("--score", type=float, default=None,
                        help="operating score threshold written to the metadata (e.g. the best-F1 one of "
                             "`fastcell val --split val`; default 0.25)")
    parser.add_argument("--metrics", default=None, metavar="REPORT_JSON",
                        help="a `fastcell val --out` report.json whose figures go into the metadata")
    from fastcell.runtime.tensorrt_engine import add_engine_arguments  # no tensorrt import: options only

    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.format == "engine":  # ONNX first (from a checkpoint), then the engine on this machine's GPU
        from fastcell.runtime.tensorrt_engine import run_engine_export

        return run_engine_export(args)
    from pathlib import Path

    from fastcell.export import export_onnx

    extra = {}
    if args.data_name or args.data_licence:
        extra["training_data"] = {"name": args.data_name, "licence": args.data_licence}
    if args.metrics:
        report = json.loads(Path(args.metrics).read_text())
        extra["metrics"] = {k: report[k] for k in ("split", "data", "mAP50", "mAP50_95", "precision", "recall", "f1",
                                                   "per_class", "score_threshold") if k in report}
    from fastcell.spec import Thresholds

    thresholds = Thresholds(score=args.score) if args.score is not None else None
    spec = export_onnx(args.checkpoint, args.out, name=args.name or Path(args.out).name, weights=args.weights,
                       use_ema=not args.raw, verify_images=args.verify or None, extra=extra, thresholds=thresholds)
    info = spec.extra["export"]
    print(f"wrote {spec.model_path} ({spec.extra['bytes'] / 1e6:.1f} MB, {info['weights']} weights, opset "
          f"{info['opset']}) and {spec.path}; max |ONNX - PyTorch| = {info['max_abs_diff_vs_torch']:.2e} "
          f"on {info['verified_on']} inputs; sha256 {spec.extra['sha256'][:16]}…")
    if args.calib:  # with --format onnx: an int8 model for the CPU backends, beside the float one
        from fastcell.runtime.calibrate import quantize_int8
        from fastcell.runtime.tensorrt_engine import calibration_images

        images = calibration_images(args.calib, min(args.calib_count, 64))
        out = quantize_int8(spec, images, limit=len(images))
        spec.extra["int8"] = {"file": out.name, "calibration_images": len(images),
                              "calibration_method": "ONNX Runtime static QDQ, MinMax, per-channel int8 weights"}
        spec.save(spec.path)
        print(f"wrote {out} (int8 for OpenVINO / ONNX Runtime, calibrated on {len(images)} images; "
              f"measure its cost: fastcell val DATA --model {args.out} --precision int8)")
    return 0
