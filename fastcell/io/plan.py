"""What an annotation run reads and writes: the source resolved to image files with unique output
names, the outputs' needs (masks, frames), the run's progress bar.

Shared by ``fastcell annotate`` (one process) and :mod:`fastcell.distributed` (Ray), so that both
list the same images under the same output names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcell.io._names import text_name

__all__ = ["READ_STALL_TIMEOUT", "Plan", "resolve", "plan_items", "source_setting", "needs", "Progress"]

#: seconds a file read may block before the run reports it stalled (network file systems)
READ_STALL_TIMEOUT = 300.0


@dataclass
class Plan:
    """The resolved source: image files with their output names, or one video; and what was not read."""

    paths: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)  # fastcell.io.writers.Item, one per path
    video: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), listed in failed.txt
    ignored: dict[str, int] = field(default_factory=dict)  # other files by extension
    excluded: int = 0  # entries inside the output folders
    folders: int = 0  # sub-folders not entered (no --recursive)


def resolve(source: str, recursive: bool = False, out: str | Path | None = None) -> Plan:
    """Expand SRC to a sorted list of image files (or a video), each with a unique output key.

    Keys (:func:`fastcell.io.writers.unique_keys`) are paths relative to the folder (or, for a
    glob, to the deepest folder common to the matches) without the suffix — ``sub/img_001`` — or
    with it where that would be ambiguous (``img.png`` and ``img.tif`` → keys ``img.png``,
    ``img.tif``). With ``out``, nothing inside the folders an annotation run writes there is
    listed (see :func:`fastcell.io.writers.owned_paths`).

    Raises
    ------
    FileNotFoundError
        When SRC names nothing, or no image files.
    ValueError
        When SRC is inside the output folders of ``out``.
    """
    from fastcell.io.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, scan
    from fastcell.io.writers import owned_paths

    exclude = owned_paths(out) if out is not None else []
    path = Path(source)
    if os.path.lexists(source):
        real = os.path.realpath(source)
        for owned in exclude:
            inside = os.path.realpath(owned)
            if real == inside or real.startswith(inside.rstrip(os.sep) + os.sep):
                raise ValueError(f"the source {text_name(source)} is inside {text_name(owned)}, which this "
                                 "run writes; choose another --out")
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        return Plan(video=str(path))
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise FileNotFoundError(f"{text_name(source)} is neither an image nor a video file (by its extension)")
        plan = Plan(paths=[str(path)])
        root = str(path.parent)
    elif path.is_dir() or any(c in source for c in "*?["):
        listing = scan(source, recursive, exclude)
        plan = Plan(paths=listing.files, skipped=listing.skipped, ignored=listing.ignored,
                    excluded=listing.excluded, folders=listing.folders)
        if not listing.files:
            if path.is_dir():
                hint = "" if recursive or not listing.folders else " (sub-folders: --recursive)"
                what = f"no image files in folder {text_name(source)}{hint}"
            else:
                what = f"the pattern {text_name(source)!r} matches no image files"
            if listing.skipped:
                first, reason = listing.skipped[0]
                what += f"; {len(listing.skipped)} entries skipped, e.g. {text_name(first)}: {reason}"
            raise FileNotFoundError(what)
        root = (str(path) if path.is_dir() else
                os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in listing.files]))
    elif os.path.lexists(source):
        raise FileNotFoundError(f"{text_name(source)} is not a file, folder or pattern that can be read")
    else:
        raise FileNotFoundError(f"no such file, folder or pattern: {text_name(source)!r}")
    plan.items = plan_items(plan.paths, root)
    return plan


def plan_items(files: list[str], root: str) -> list[Any]:
    from fastcell.defaults import JPEG_EXTENSIONS
    from fastcell.io.writers import Item, unique_keys

    rel = [Path(os.path.relpath(os.path.abspath(f), os.path.abspath(root))).as_posix() for f in files]
    keys = unique_keys(rel)
    return [Item(key=key, name=r, source_format="jpg" if os.path.splitext(r)[1].lower() in JPEG_EXTENSIONS else None)
            for key, r in zip(keys, rel)]


def source_setting(source: str) -> str:
    """The source as stored in run.json: its real path (a pattern: absolute), so a rerun from
    another working folder, or through a link, is recognised as the same source."""
    return os.path.realpath(source) if os.path.exists(source) else os.path.abspath(source)


def needs(formats: tuple[str, ...], args: Any) -> tuple[bool, bool]:
    """(segment, keep_image): compute masks only for outputs that use them; keep frames for drawing."""
    segment = bool({"labels", "segmented", "overlay", "csv"} & set(formats)) or ("crops" in formats and args.crops_masked)
    segment |= "coco" in formats and args.coco_masks != "none"
    keep_image = "overlay" in formats or ("crops" in formats and not args.crops_masked)
    # Without masks a Result knows its frame size only from the frame it keeps (YOLO and VOC need
    # it); holding a reference until the frame is written costs no copy.
    keep_image |= not segment
    return segment, keep_image


class Progress:
    """A tqdm bar (auto-disabled when stderr is not a terminal) that survives without tqdm."""

    def __init__(self, total: int | None, initial: int, quiet: bool) -> None:
        self.cells = 0  # found by this run
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is a dependency; still, a missing bar must not stop the run
            self.bar = None
            return
        self.bar = tqdm(total=total, initial=initial, unit="img", desc="annotate", dynamic_ncols=True,
                        disable=True if quiet else None)

    def update(self, cells: int) -> None:
        self.cells += cells
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(cells=self.cells, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
