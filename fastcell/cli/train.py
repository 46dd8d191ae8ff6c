"""``fastcell train DATA``: train AttentionNet from scratch (needs the ``train`` extra: torch)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastcell.train.trainer import TrainConfig

    parser.add_argument("data", nargs="+",
                        help="Pascal VOC folder, YOLO data.yaml or COCO .json; or several sources "
                             "(BCCD, Chula RBC-12, BCDD, pig-wbc layouts, or packed sets), trained together "
                             "with each source's unlabelled classes masked")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue a run exactly from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs)")
    defaults = TrainConfig(data="")
    for f in fields(TrainConfig):
        if f.name in ("data", "anchors", "progress"):
            continue
        value = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=None,
                                metavar="BOOL", help=f"(default {value})")
        else:
            # default None: "not given", so --resume can tell typed flags from defaults
            parser.add_argument(flag, type=type(value), default=None, help=f"(default {value})")
    parser.add_argument("--anchors", type=float, nargs=12, default=None,
                        help="six w h pairs in input pixels (default: K-means++ on the training boxes)")


def run(args: argparse.Namespace) -> int:
    from fastcell.train.trainer import TrainConfig, Trainer

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    given["progress"] = not args.no_progress
    if args.anchors:
        given["anchors"] = list(args.anchors)
    data = args.data[0] if len(args.data) == 1 else list(args.data)
    config = TrainConfig(**{"data": data, **{k: v for k, v in given.items() if k != "data"}})
    overrides = None
    if args.resume:
        # only the flags typed on the command line change a resumed run
        overrides = {k: v for k, v in given.items() if k in Trainer.RESUME_OVERRIDES}
        unknown = sorted(set(given) - set(Trainer.RESUME_OVERRIDES) - {"anchors"})
        if unknown:
            print(f"note: resuming keeps the run's own {', '.join(unknown)}", file=sys.stderr)
    result = Trainer(config, resume=args.resume, overrides=overrides).fit()
    print(f"best val mAP@0.5 {result['best_mAP50']:.4f}; checkpoints in {result['out']}")
    return 0
