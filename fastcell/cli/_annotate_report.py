"""The parts of ``fastcell annotate`` that the single-process and the Ray engine share: the
settings taken from the command line, the outcome of a run and its summary."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from fastcell.io._names import text_name
from fastcell.io.plan import Plan

_MODEL_SETTING = object()  # --cell-size not given: the model's own setting


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {"score": args.score, "nms_iou": args.nms_iou, "merge": args.merge, "max_detections": args.max_detections}
    overrides = {k: v for k, v in pairs.items() if v is not None}
    if args.cell_size is not _MODEL_SETTING:  # None ("none") is a setting of its own
        overrides["cell_size"] = args.cell_size
    return overrides


@dataclass
class _Outcome:
    items: list[Any] = field(default_factory=list)  # every frame of the source, in order
    annotated: int = 0  # written by this run
    already: int = 0  # finished by an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): skipped, then unreadable
    error: BaseException | None = None
    totals: Any = None  # fastcell.io.writers.Totals


def _summary(args, formats, outcome: _Outcome, elapsed: float, plan: Plan) -> None:
    from fastcell.io.writers import failed_line

    totals = outcome.totals
    rate = outcome.annotated / elapsed if elapsed > 0 else 0.0
    cells = " · ".join(f"{name} {n:,}" for name, n in totals.cells.items())
    skipped = len(plan.skipped)
    unreadable = len(outcome.failed) - skipped
    print(f"fastcell annotate: {outcome.annotated} image(s) annotated in {elapsed:.1f} s ({rate:.1f} images/s), "
          f"{outcome.already} already done, {unreadable} failed, {skipped} skipped")
    print(f"  {totals.images} image(s) in {text_name(args.out)}: {sum(totals.cells.values()):,} cells — {cells}")
    print(f"  wrote: {', '.join(formats)}")
    if outcome.failed:
        print(f"  not annotated: {len(outcome.failed)} entr{'y' if len(outcome.failed) == 1 else 'ies'} "
              f"(listed in {text_name(args.out / 'failed.txt')}):")
        for entry in outcome.failed:
            print(f"    {failed_line(entry)}")
    if plan.ignored:
        kinds = ", ".join(f"{ext} ×{n}" for ext, n in plan.ignored.items())
        print(f"  ignored {sum(plan.ignored.values())} other file(s), not images: {kinds}")
    if plan.folders:
        print(f"  {plan.folders} sub-folder(s) not entered (--recursive enters them)")
    if plan.excluded:
        print(f"  not read: {plan.excluded} entr{'y' if plan.excluded == 1 else 'ies'} inside the output folders")
