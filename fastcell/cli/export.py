"""``fastcell export CHECKPOINT``: ONNX + metadata JSON (``--format engine``: also a TensorRT engine on this GPU).

Parses the options and calls :mod:`fastcell.export`; nothing is made here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastcell.defaults import SCORE
    from fastcell.export.tensorrt import PRECISIONS  # names only: no tensorrt import

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
                             f"`fastcell val --split val`; default {SCORE})")
    parser.add_argument("--metrics", default=None, metavar="REPORT_JSON",
                        help="a `fastcell val --out` report.json whose figures go into the metadata")
    group = parser.add_argument_group("TensorRT engine (--format engine; needs an NVIDIA GPU and fastcell[tensorrt])")
    group.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0], help="engine precision (default fp16)")
    group.add_argument("--batch-opt", type=int, default=8, help="batch size TensorRT optimises for (default 8)")
    group.add_argument("--batch-max", type=int, default=32, help="largest batch the engine accepts (default 32)")
    group.add_argument("--workspace-gib", type=float, default=2.0, help="TensorRT builder workspace (default 2 GiB)")
    group.add_argument("--calib", nargs="+", default=(), metavar="IMAGES",
                       help="int8 calibration images, or folders of them (real frames of the target microscope, "
                            "never the test split): --format engine builds an int8 engine on them; --format onnx "
                            "also writes model_int8.onnx for the CPU backends (64 images at most)")
    group.add_argument("--calib-count", type=int, default=512, help="int8: use at most this many images (default 512)")
    group.add_argument("--device", type=int, default=0, help="CUDA device to build on (default 0)")


def _export_onnx(args: argparse.Namespace, calib: bool):
    """The ONNX export (and with ``calib`` the CPU int8 model): the spec written."""
    from fastcell.export import calibration_images, export_onnx, quantize_int8
    from fastcell.spec import Thresholds

    extra = {}
    if args.data_name or args.data_licence:
        extra["training_data"] = {"name": args.data_name, "licence": args.data_licence}
    if args.metrics:
        report = json.loads(Path(args.metrics).read_text())
        extra["metrics"] = {k: report[k] for k in ("split", "data", "mAP50", "mAP50_95", "precision", "recall", "f1",
                                                   "per_class", "score") if k in report}
    thresholds = Thresholds(score=args.score) if args.score is not None else None
    spec = export_onnx(args.checkpoint, args.out, name=args.name or Path(args.out).name, weights=args.weights,
                       use_ema=not args.raw, verify_images=args.verify or None, extra=extra, thresholds=thresholds)
    info = spec.extra["export"]
    print(f"wrote {spec.model_path} ({spec.extra['bytes'] / 1e6:.1f} MB, {info['weights']} weights, opset "
          f"{info['opset']}) and {spec.path}; max |ONNX - PyTorch| = {info['max_abs_diff_vs_torch']:.2e} "
          f"on {info['verified_on']} inputs; sha256 {spec.extra['sha256'][:16]}…")
    if calib:  # an int8 model for the CPU backends, beside the float one
        images = calibration_images(args.calib, min(args.calib_count, 64))
        out = quantize_int8(spec, images, limit=len(images))
        print(f"wrote {out} (int8 for OpenVINO / ONNX Runtime, calibrated on {len(images)} images; "
              f"measure its cost: fastcell val DATA --model {args.out} --precision int8)")
    return spec


def _export_engine(args: argparse.Namespace) -> int:
    from fastcell.export import calibration_images, export_engine
    from fastcell.export.tensorrt import metadata_path
    from fastcell.spec import ModelSpec, find_model

    source = Path(args.checkpoint)
    if source.suffix in (".pt", ".pth"):  # a checkpoint: ONNX first (the images calibrate the engine, not a CPU model)
        spec = _export_onnx(args, calib=False)
    else:
        spec = ModelSpec.load(find_model(source))
    images = calibration_images(args.calib, args.calib_count) if args.precision == "int8" else []
    if args.precision == "int8" and not images:
        print("--precision int8 needs --calib IMAGES (real frames, at least 8)", file=sys.stderr)
        return 2
    path = export_engine(spec, args.precision, out_dir=args.out, batch_opt=args.batch_opt, batch_max=args.batch_max,
                         workspace_gib=args.workspace_gib, calibration_images=images, device=args.device)
    meta = json.loads(metadata_path(path).read_text())
    print(f"wrote {path} ({meta['engine_bytes'] / 1e6:.1f} MB, {meta['precision']}, batch {'/'.join(str(v) for v in meta['batch_profile'].values())}, "
          f"TensorRT {meta['tensorrt_version']}, {meta['gpu_name']} cc "
          f"{meta['compute_capability']}) and {metadata_path(path)}. It runs only on this GPU model with this "
          "TensorRT; elsewhere fastcell builds its own from model.onnx.")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.format == "engine":  # ONNX first (from a checkpoint), then the engine on this machine's GPU
        return _export_engine(args)
    _export_onnx(args, calib=bool(args.calib))
    return 0
