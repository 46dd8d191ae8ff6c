"""``fastcell annotate SRC --out DIR``: annotation files for a folder, glob, image or video.

Runs :func:`fastcell.stream` over the source and hands each Result to an
:class:`~fastcell.io.writers.AnnotationWriter` (see there for the output layout and why a rerun is
safe). Resuming: a rerun with the same settings skips the images already finished — they are not
even decoded — and rebuilds the COCO/CSV files, so a killed run followed by a rerun leaves the same
bytes as one uninterrupted run. (Video frames cannot be skipped without decoding: a rerun over a
video decodes and infers every frame again but rewrites only the unfinished ones.)

Unreadable files (corrupt, empty, not an image, an image fastcell cannot take such as a float32 or
int16 TIFF, or a frame over ``--max-pixels``, which is refused from its header before it is read)
are reported, listed in ``OUT/failed.txt`` and at the end, and skipped; the run goes on, and so does
a rerun (it tries them again). Entries of the source that are not read at all are listed there too,
with the reason (a folder named like an image, a FIFO, a dangling link, a symlink loop, a second
link to a file already listed, an unsupported format such as ``.gif``); other files (``.xml``,
``.txt``) are counted in the summary. File names are written as
:func:`fastcell.io._names.text_name` says, so any name the file system allows works.

Inputs and outputs never mix: the output folders the run writes (``OUT/yolo``, ``OUT/labels`` …,
``OUT/.fastcell``) are never read as input, also with ``-r``, a ``**`` glob or ``--out`` inside or
equal to the source; a source inside them is refused. Output names are unique per input, whatever
the inputs are called (:func:`fastcell.io.writers.unique_keys`). One output folder holds one
source: a second, different source is refused (``--overwrite`` starts over with it); two sources
are never merged. Exit status: 0 when at least one image was
annotated (now or by an earlier run), 1 when nothing could be read, no image was found, the video
cannot be opened, the output folder holds a run with other settings, or the run stopped early
(what it finished stays; rerun to resume); 2 for bad arguments. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcell.io._names import text_name

#: seconds one image read (or video frame) may block before the run stops; a rerun resumes
READ_STALL_TIMEOUT = 300.0
_MODEL_SETTING = object()  # --cell-size not given: the model's own setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastcell.cli import CELL_SIZE_HELP, cell_size, non_negative_int, positive_int, unit_interval
    from fastcell.io.sources import MAX_PIXELS
    from fastcell.io.writers import DEFAULT_FORMATS, FORMATS

    parser.add_argument("source", help="image folder, glob pattern ('data/**/*.png'), image file or video file")
    parser.add_argument("--out", "-o", required=True, type=Path, help="output folder (created; resumable)")
    parser.add_argument("--model", default="default", help="model name or path to model.json (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, gpu, cuda (torch on a GPU), tensorrt, openvino, onnxruntime or torch "
                             "(default: %(default)s)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default=None,
                        help="backend arithmetic; fp16 is the GPU backends' (default: the backend's own)")
    parser.add_argument("--write", "-w", default=",".join(DEFAULT_FORMATS), type=_formats,
                        help=f"comma-separated outputs from {','.join(FORMATS)}, or 'all' (default: %(default)s)")
    parser.add_argument("--score", type=unit_interval, default=None,
                        help="score threshold in [0, 1] (default: the model's)")
    parser.add_argument("--nms-iou", type=unit_interval, default=None,
                        help="NMS IoU threshold in [0, 1] (default: the model's)")
    parser.add_argument("--merge", choices=["multi", "single", "none"], default=None,
                        help="GBCIOU merging mode (default: the model's)")
    parser.add_argument("--max-detections", type=positive_int, default=None,
                        help="most cells per image (default: the model's)")
    parser.add_argument("--batch", type=positive_int, default=8, help="images per inference call (default: %(default)s)")
    parser.add_argument("--image-format", choices=["auto", "png", "jpg", "tif"], default="auto",
                        help="segmented images, overlays and crops; auto: JPEG for JPEG sources, else PNG")
    parser.add_argument("--labels-format", choices=["png", "tif"], default="png",
                        help="16-bit instance label images (default: %(default)s)")
    parser.add_argument("--coco-masks", choices=["rle", "polygon", "none"], default="rle",
                        help="COCO segmentation: exact RLE, approximate polygons, or none (default: %(default)s)")
    parser.add_argument("--yolo-scores", action="store_true", help="add the score as a 6th column of YOLO files")
    parser.add_argument("--crops-masked", action="store_true", help="crop from the segmented image (debris removed)")
    parser.add_argument("--recursive", "-r", action="store_true", help="include images in sub-folders of SRC")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in an output folder that holds a run with other settings")
    from fastcell._parallel import host_threads

    # decoding and writing are compiled code that releases the GIL: they scale with the host's cores
    parser.add_argument("--workers", type=positive_int, default=max(2, host_threads()),
                        help="decoding and writing threads each (default: the host's cores, at least 2: %(default)s)")
    parser.add_argument("--cell-size", type=cell_size, default=_MODEL_SETTING, help=CELL_SIZE_HELP)
    parser.add_argument("--max-pixels", type=non_negative_int, default=MAX_PIXELS,
                        help="largest image (width x height) read; larger ones are refused from their header "
                             "before decoding; 0: no limit (default: %(default)s)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    from fastcell.distributed._cli import add_arguments as add_distributed_arguments  # imports no Ray

    add_distributed_arguments(parser)  # --engine ray, --address, --gpus-per-worker


def _formats(text: str) -> tuple[str, ...]:
    from fastcell.io.writers import FORMATS

    if text.strip() == "all":
        return FORMATS
    chosen = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in chosen if t not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown output(s) {unknown or [text]}; choose from {', '.join(FORMATS)} or 'all'")
    return chosen


# -- what to annotate ------------------------------------------------------------------------------
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
    plan.items = _items(plan.paths, root)
    return plan


def _items(files: list[str], root: str) -> list[Any]:
    from fastcell.defaults import JPEG_EXTENSIONS
    from fastcell.io.writers import Item, unique_keys

    rel = [Path(os.path.relpath(os.path.abspath(f), os.path.abspath(root))).as_posix() for f in files]
    keys = unique_keys(rel)
    return [Item(key=key, name=r, source_format="jpg" if os.path.splitext(r)[1].lower() in JPEG_EXTENSIONS else None)
            for key, r in zip(keys, rel)]


def _source_setting(source: str) -> str:
    """The source as stored in run.json: its real path (a pattern: absolute), so a rerun from
    another working folder, or through a link, is recognised as the same source."""
    return os.path.realpath(source) if os.path.exists(source) else os.path.abspath(source)


# -- the run ---------------------------------------------------------------------------------------
def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {"score": args.score, "nms_iou": args.nms_iou, "merge": args.merge, "max_detections": args.max_detections}
    overrides = {k: v for k, v in pairs.items() if v is not None}
    if args.cell_size is not _MODEL_SETTING:  # None ("none") is a setting of its own
        overrides["cell_size"] = args.cell_size
    return overrides


def _needs(formats: tuple[str, ...], args: argparse.Namespace) -> tuple[bool, bool]:
    """(segment, keep_image): compute masks only for outputs that use them; keep frames for drawing."""
    segment = bool({"labels", "segmented", "overlay", "csv"} & set(formats)) or ("crops" in formats and args.crops_masked)
    segment |= "coco" in formats and args.coco_masks != "none"
    keep_image = "overlay" in formats or ("crops" in formats and not args.crops_masked)
    # Without masks a Result knows its frame size only from the frame it keeps (YOLO and VOC need
    # it); holding a reference until the frame is written costs no copy.
    keep_image |= not segment
    return segment, keep_image


class _Progress:
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


def run(args: argparse.Namespace) -> int:
    from fastcell.io.sources import open_source

    if getattr(args, "engine", "local") == "ray":
        from fastcell.distributed._cli import run as run_distributed

        return run_distributed(args)
    try:
        plan = resolve(args.source, args.recursive, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"fastcell annotate: {err}", file=sys.stderr)
        return 1
    video = None
    if plan.video is not None:  # opened before anything is loaded or created: a bad file fails fast
        try:
            video = open_source(plan.video, live=False)
        except OSError as err:
            print(f"fastcell annotate: cannot read {text_name(args.source)!r}: {err}", file=sys.stderr)
            return 1
    try:
        return _run(args, plan, video)
    finally:  # the stream closes it too; this covers the ways out before the stream starts
        if video is not None:
            video.close()


def _run(args: argparse.Namespace, plan: Plan, video: Any) -> int:
    import fastcell
    from fastcell.io.writers import AnnotationWriter, SettingsMismatch
    from fastcell.pipeline import StreamError

    formats = args.write
    segment, keep_image = _needs(formats, args)
    overrides = _overrides(args)
    try:
        annotator = fastcell.load(args.model, args.device, args.precision, segment=segment, keep_image=keep_image,
                                  max_batch=args.batch, verbose=not args.quiet, **overrides)
    except (FileNotFoundError, ImportError, ValueError) as err:  # no such model/backend, bad option
        print(f"fastcell annotate: cannot open model {text_name(args.model)!r}: {err}", file=sys.stderr)
        return 1
    settings = {
        "model": annotator.spec.name,
        "model_sha256": annotator.spec.extra.get("sha256"),
        "backend": f"{annotator.backend.name}/{annotator.backend.precision}",
        "overrides": overrides,
        "source": _source_setting(args.source),
    }
    try:
        writer = AnnotationWriter(args.out, annotator.spec.classes, formats, image_format=args.image_format,
                                  label_format=args.labels_format, coco_segmentation=args.coco_masks,
                                  yolo_scores=args.yolo_scores, crops_masked=args.crops_masked, settings=settings,
                                  overwrite=args.overwrite, workers=args.workers)
    except (SettingsMismatch, RuntimeError, OSError) as err:  # other run, busy folder, no permission
        annotator.close()
        print(f"fastcell annotate: {err}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    outcome = _Outcome()
    try:
        with writer:
            _annotate(args, plan, video, annotator, writer, outcome, segment=segment, keep_image=keep_image)
            outcome.totals = writer.finish(outcome.items, outcome.failed)
    except OSError as err:  # writing failed (disk full, permissions): what is finished stays finished
        outcome.error = err
    finally:
        annotator.close()
    elapsed = time.perf_counter() - start
    if not args.quiet and outcome.totals is not None:
        _summary(args, formats, outcome, elapsed, plan)
    if outcome.error is not None:
        error = outcome.error
        cause = error.__cause__ if isinstance(error, StreamError) and error.__cause__ else None
        detail = f" ({type(cause).__name__}: {cause})" if cause else f" ({type(error).__name__})"
        print(f"fastcell annotate: stopped early: {error}{detail}; rerun the same command to resume",
              file=sys.stderr)
        return 1
    if outcome.totals.images == 0:
        print("fastcell annotate: no image could be read", file=sys.stderr)
        return 1
    return 0


@dataclass
class _Outcome:
    items: list[Any] = field(default_factory=list)  # every frame of the source, in order
    annotated: int = 0  # written by this run
    already: int = 0  # finished by an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): skipped, then unreadable
    error: BaseException | None = None
    totals: Any = None  # fastcell.io.writers.Totals


def _annotate(args, plan: Plan, video, annotator, writer, outcome: _Outcome, *, segment: bool,
              keep_image: bool) -> None:
    """Stream the unfinished frames (of the files, or of the opened ``video`` source) through the
    annotator into the writer (fills ``outcome``)."""
    import fastcell
    from fastcell.io.sources import ImageFiles
    from fastcell.pipeline import StreamError, StreamStalled

    outcome.failed = list(plan.skipped)
    if plan.video is None:
        todo = [i for i, item in enumerate(plan.items) if not writer.is_done(item.key)]
        outcome.items = plan.items
        outcome.already = len(plan.items) - len(todo)
        progress = _Progress(len(plan.items), outcome.already, args.quiet)
        if not todo:
            progress.close()
            return
        source: Any = ImageFiles([plan.paths[i] for i in todo], name=args.source, workers=args.workers,
                                 max_pixels=args.max_pixels or None)
    else:
        todo = []
        progress = _Progress(len(video) or None, 0, args.quiet)
        source = video
    stream = None
    try:
        # A hung read (a dead network drive) stops the run after 5 minutes; a rerun resumes.
        stream = fastcell.stream(source, annotator, batch_size=args.batch, keep_image=keep_image,
                                 segment=segment, live=False, drop=False, stall_timeout=READ_STALL_TIMEOUT,
                                 on_stall="raise", workers=args.workers)
        with stream:
            for result in stream:
                if plan.video is None:
                    at = todo[result.frame_index]
                    if result.source != plan.paths[at]:  # the stream's contract: index = list position
                        raise RuntimeError(f"result {result.frame_index} comes from {result.source}, "
                                           f"expected {plan.paths[at]}")
                    item = plan.items[at]
                else:
                    item = _video_item(plan.video, result.frame_index)
                    outcome.items.append(item)
                    if writer.is_done(item.key):
                        outcome.already += 1
                        progress.update(len(result))
                        continue
                writer.submit(result, item)
                outcome.annotated += 1
                progress.update(len(result))
    except (StreamError, StreamStalled) as err:  # what was written stays; the rerun resumes from it
        outcome.error = err
    finally:
        progress.close()
        if stream is not None:
            outcome.failed += list(stream.failed)


def _video_item(video: str, index: int) -> Any:
    from fastcell.defaults import JPEG_EXTENSIONS
    from fastcell.io.writers import Item

    stem = Path(video).stem
    return Item(key=f"{stem}_{index:06d}", name=f"{stem}_{index:06d}", source_format=None, frame_index=index)


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
