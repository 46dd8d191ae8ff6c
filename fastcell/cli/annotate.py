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
import sys
import time
from pathlib import Path
from typing import Any

from fastcell.io._names import text_name
from fastcell.io.plan import READ_STALL_TIMEOUT, Plan, Progress as _Progress, needs as _needs, resolve
from fastcell.io.plan import source_setting as _source_setting
from fastcell.cli._annotate_report import _MODEL_SETTING, _Outcome, _overrides, _summary

#: seconds one image read (or video frame) may block before the run stops; a rerun resumes


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
    from fastcell.cli.annotate_ray import add_arguments as add_distributed_arguments  # imports no Ray

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


# -- the run ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from fastcell.io.sources import open_source

    if getattr(args, "engine", "local") == "ray":
        from fastcell.cli.annotate_ray import run as run_distributed

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
    from fastcell.io.writers import Item

    stem = Path(video).stem
    return Item(key=f"{stem}_{index:06d}", name=f"{stem}_{index:06d}", source_format=None, frame_index=index)
