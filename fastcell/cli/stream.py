"""``fastcell stream SOURCE``: run live on a camera, video, URL or folder and print fps and latency.

A window with the boxes is shown only with ``--show`` and when OpenCV can open one (the headless
OpenCV build that fastcell installs cannot; then the flag says so and the run goes on).

Exit status: 0 when the source ended (or ``--max-frames`` / ``q`` stopped it), 1 when the source or
the model cannot be opened or the stream failed (one line on stderr), 2 for bad arguments, 130
after Ctrl-C (the statistics so far are printed first).
"""

from __future__ import annotations

import argparse
import sys
import time


_MODEL_SETTING = object()  # --cell-size not given: the model's own setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastcell.cli import CELL_SIZE_HELP, cell_size, positive_int

    parser.add_argument("source", help="camera index (0), video file, rtsp:// or http:// URL, folder or glob")
    parser.add_argument("--model", default="default", help="model name or path to model.json (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, gpu, cuda (torch on a GPU), tensorrt, openvino, onnxruntime or torch "
                             "(default: %(default)s)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16", "int8"], default=None,
                        help="backend arithmetic; fp16 is TensorRT's (default: the backend's own default)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="frames per inference call (default: 1 for cameras and URLs, 8 otherwise)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many results (0: run to the end)")
    parser.add_argument("--no-drop", action="store_true", help="never drop frames of a live source")
    parser.add_argument("--stall-timeout", type=float, default=None,
                        help="end when one read of the source blocks this many seconds; 0: never "
                             "(default: 10 for cameras and URLs, none for files and folders)")
    parser.add_argument("--reconnect", type=int, default=0, help="reconnect attempts after a camera/URL disconnect")
    parser.add_argument("--no-segment", action="store_true", help="boxes only (skip the masks)")
    parser.add_argument("--cell-size", type=cell_size, default=_MODEL_SETTING, help=CELL_SIZE_HELP)
    parser.add_argument("--show", action="store_true", help="show a window with the detections, if a display exists")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status lines (default: %(default)s)")


def _open_window(name: str) -> bool:
    """Whether OpenCV can show a window here (headless builds and no display cannot)."""
    import cv2

    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        return False


def _draw(result) -> "object":
    import cv2

    from fastcell.frames import to_bgr8

    canvas = to_bgr8(result.image).copy()
    for box, name in zip(result.boxes.astype(int), result.class_names):
        cv2.rectangle(canvas, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), (0, 255, 0), 1)
        cv2.putText(canvas, name, (int(box[0]), max(10, int(box[1]) - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
    return canvas


def run(args: argparse.Namespace) -> int:
    import fastcell
    from fastcell.io.sources import open_source
    from fastcell.pipeline import StreamError

    if args.stall_timeout is not None and args.stall_timeout < 0:
        print(f"fastcell stream: --stall-timeout must be >= 0 seconds, got {args.stall_timeout}", file=sys.stderr)
        return 2
    stall_timeout = "auto" if args.stall_timeout is None else (args.stall_timeout or None)
    try:  # the source first: a wrong path should not wait for a model to load
        source = open_source(int(args.source) if args.source.isdigit() else args.source, reconnect=args.reconnect)
    except (OSError, TypeError, ValueError) as err:  # FileNotFoundError is an OSError
        print(f"fastcell stream: cannot read {args.source!r}: {err}", file=sys.stderr)
        return 1
    annotator = stream = None
    window = None
    code = 0
    try:
        window = "fastcell" if args.show and _open_window("fastcell") else None
        if args.show and window is None:
            print("fastcell: no display available (or headless OpenCV): printing statistics only", file=sys.stderr)
        try:
            options = {} if args.cell_size is _MODEL_SETTING else {"cell_size": args.cell_size}
            annotator = fastcell.load(args.model, args.device, args.precision, segment=not args.no_segment,
                                      keep_image=window is not None, max_batch=args.batch_size or 8, **options)
        except (FileNotFoundError, ImportError, ValueError) as err:  # no such model/backend, bad option
            print(f"fastcell stream: cannot open model {args.model!r}: {err}", file=sys.stderr)
            return 1
        stream = fastcell.stream(source, annotator, batch_size=args.batch_size,
                                 drop=False if args.no_drop else None, stall_timeout=stall_timeout,
                                 keep_image=window is not None, segment=not args.no_segment)
        try:
            _loop(args, stream, window)
        except StreamError as err:  # its message names the stage and the original error
            print(f"fastcell stream: stopped: {err}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt:
            code = 130
        _report(stream)
        return code
    finally:  # whatever happened: the camera, the threads and the engine are released
        if stream is not None:
            stream.close()
        source.close()
        if annotator is not None:
            annotator.close()
        if window is not None:
            import cv2

            cv2.destroyAllWindows()


def _loop(args: argparse.Namespace, stream, window: str | None) -> None:
    last = time.monotonic()
    for result in stream:
        now = time.monotonic()
        if now - last >= args.interval:
            last = now
            print(f"frame {result.frame_index:>7}  {stream.fps:6.1f} fps  latency p50 "
                  f"{stream.latency_p50 * 1e3:6.1f} ms  p99 {stream.latency_p99 * 1e3:6.1f} ms  "
                  f"dropped {stream.dropped}  cells {len(result)}", flush=True)
        if window is not None:
            import cv2

            cv2.imshow(window, _draw(result))
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                return
        if args.max_frames and stream.count >= args.max_frames:
            return


def _report(stream) -> None:
    stats = stream.stats()
    print(f"done: {stats['count']} frames, {stats['fps']:.1f} fps, latency p50 {stats['latency_p50'] * 1e3:.1f} ms "
          f"p99 {stats['latency_p99'] * 1e3:.1f} ms, dropped {stats['dropped']}, unreadable {stats['failed']}"
          + (", source stalled" if stats["stalled"] else ""))
    for path, reason in stream.failed:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
