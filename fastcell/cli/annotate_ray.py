"""``fastcell annotate --engine ray``: the options it adds and the command it runs.

Kept out of :mod:`fastcell.cli.annotate` so that the single-process command reads as before; that
module only adds these options and hands the parsed arguments here when ``--engine ray``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "distributed (--engine ray, needs fastcell[ray])",
        "SRC may also be a list file (.txt), a Parquet/CSV manifest with a 'path' column, or a URI "
        "(s3://, gs://, file://...); --workers is then the number of Ray actors, each with its own model "
        "(at most as many as the cluster holds: CPUs, or GPUs with --gpus-per-worker). Also writes "
        "detections.parquet (one row per cell).")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process (default); ray: actors on a Ray cluster")
    group.add_argument("--address", default=None,
                       help="Ray cluster to join ('auto', 'ray://head:10001'); default: start a local one")
    group.add_argument("--gpus-per-worker", type=float, default=0.0,
                       help="GPUs per actor; 0.5 puts two actors on each GPU (default: %(default)s)")
    group.add_argument("--cpus-per-worker", type=float, default=1.0,
                       help="CPUs per actor, also its inference threads (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from fastcell.cli._annotate_report import _Outcome, _overrides, _summary
    from fastcell.distributed import DETECTIONS_FILE, annotate
    from fastcell.io.writers import SettingsMismatch, Totals

    try:
        summary = annotate(
            args.source, args.out, model=args.model, device=args.device, precision=args.precision,
            formats=args.write, address=args.address, workers=args.workers,
            gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, batch_size=args.batch,
            recursive=args.recursive, overwrite=args.overwrite, image_format=args.image_format,
            labels_format=args.labels_format, coco_masks=args.coco_masks, yolo_scores=args.yolo_scores,
            crops_masked=args.crops_masked, overrides=_overrides(args), progress=not args.quiet,
            max_pixels=args.max_pixels)
    except (FileNotFoundError, ValueError, ImportError, SettingsMismatch, ConnectionError) as err:
        print(f"fastcell annotate: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # another run holds the folder; a model no worker could open
        print(f"fastcell annotate: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        outcome = _Outcome(annotated=summary.annotated, already=summary.already, failed=summary.failed,
                           totals=Totals(images=summary.images, cells=summary.cells))
        _summary(args, args.write, outcome, summary.elapsed, summary.plan)
        hosts = {w.split(":")[0] for w in summary.workers}
        print(f"  ray: {len(summary.workers)} actor process(es) on {len(hosts)} node(s); "
              f"{DETECTIONS_FILE}: {summary.detections:,} cells")
    if summary.error is not None:
        print(f"fastcell annotate: stopped early: {type(summary.error).__name__}: {_first_line(summary.error)}; "
              "rerun the same command to resume", file=sys.stderr)
        return 1
    if summary.images == 0:
        print("fastcell annotate: no image could be read", file=sys.stderr)
        return 1
    return 0


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else ""
