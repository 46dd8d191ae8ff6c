"""``fastcell train DATA``: train AttentionNet from scratch (needs the ``train`` extra: torch)."""

from __future__ import annotations

import argparse
from dataclasses import fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastcell.train.trainer import TrainConfig

    parser.add_argument("data", help="Pascal VOC folder, YOLO data.yaml or COCO .json")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue a run exactly from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs)")
    defaults = TrainConfig(data="")
    for f in fields(TrainConfig):
        if f.name in ("data", "anchors", "progress"):
            continue
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=value,
                                metavar="BOOL", help=f"(default {value})")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default {value})")
    parser.add_argument("--anchors", type=float, nargs=12, default=None,
                        help="six w h pairs in input pixels (default: K-means++ on the training boxes)")


def run(args: argparse.Namespace) -> int:
    from fastcell.train.trainer import TrainConfig, Trainer

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["anchors"] = list(args.anchors) if args.anchors else []
    values["progress"] = not args.no_progress
    config = TrainConfig(**values)
    result = Trainer(config, resume=args.resume).fit()
    print(f"best val mAP@0.5 {result['best_mAP50']:.4f}; checkpoints in {result['out']}")
    return 0
