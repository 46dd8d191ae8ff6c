"""The ``fastcell`` command line: one module per sub-command, registered here and imported lazily.

Each sub-command module defines ``add_arguments(parser)`` and ``run(args) -> int``. Importing a
module happens only when its command runs, so ``fastcell annotate`` never imports torch.

Errors are one line on stderr, never a traceback: a bad argument exits with status 2
(``fastcell annotate: error: argument --write/-w: ...``), a failure the command did not handle
itself with status 1 (``fastcell annotate: error: OSError: ...``). Set ``FASTCELL_DEBUG=1`` to get
the traceback of the latter instead.
"""

from __future__ import annotations

import signal
import sys


_interrupted = False  # a SIGINT arrived while the command ran (see _on_interrupt)
_running = False  # main() has started
_previous_unraisablehook = sys.unraisablehook


def _on_interrupt(signum, frame):  # noqa: ARG001 - a signal handler's signature
    """SIGINT while the command line runs: remember it, then behave as Python's own handler.

    Compiled modules that are being imported (NumPy's, pybind11's) turn an exception raised inside
    their initialisation into an ImportError, losing the KeyboardInterrupt; the flag lets
    :func:`main` still report an interrupt. Before ``main()`` starts (the imports of this
    package), the interrupt exits at once, with one line instead of an import traceback.
    """
    global _interrupted
    _interrupted = True
    if _running:
        raise KeyboardInterrupt
    sys.stderr.write("interrupted\n")
    raise SystemExit(130)


def _unraisable(info) -> None:
    """A Ctrl-C that Python cannot raise (it landed in a callback, e.g. of the import lock) is
    still an interrupt — :func:`main` exits 130 — not a traceback printed as "Exception ignored"."""
    global _interrupted
    if issubclass(info.exc_type, KeyboardInterrupt):
        _interrupted = True
        return
    _previous_unraisablehook(info)


# Only when this package is loaded to run the `fastcell` command (console script or
# `python -m fastcell`), never when a program imports it.
_main_module = sys.modules.get("__main__")
if (getattr(getattr(_main_module, "__spec__", None), "name", None) == "fastcell.__main__"
        or (getattr(_main_module, "__file__", None) or "").rsplit("/", 1)[-1] == "fastcell"):
    try:
        signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:  # not the main thread: nothing to guard
        pass

import argparse  # noqa: E402 - after the guard above
import importlib  # noqa: E402
import os  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402
from typing import NoReturn  # noqa: E402

DEBUG_ENV = "FASTCELL_DEBUG"


def _int_at_least(text: str, minimum: int, what: str, bound: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}{bound}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a bad value is a usage error, exit status 2)."""
    return _int_at_least(text, 1, "a positive integer", " (1 or more)")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a bad value is a usage error, exit status 2)."""
    return _int_at_least(text, 0, "an integer >= 0")


def unit_interval(text: str) -> float:
    """argparse type: a finite number in [0, 1] (thresholds); nan, inf and others are usage errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def cell_size(text: str) -> float | str | None:
    """argparse type of ``--cell-size``: ``auto``, ``none`` or a finite number of pixels > 0."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a cell diameter in pixels, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a cell diameter in pixels > 0, got {text}")
    return value


CELL_SIZE_HELP = ("typical cell diameter in the frames' pixels: frames whose cells would be larger than the "
                  "model's training scale are scaled down to it; 'auto' re-runs only frames whose cells came "
                  "out too large or not at all; 'none': plain letterbox (default: the model's setting)")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the full usage of a command with 25 options buries it."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

# name → (module, one-line help). Training-side commands need the ``train`` extra (torch).
COMMANDS: dict[str, tuple[str, str]] = {
    "annotate": ("fastcell.cli.annotate", "annotate a folder, glob or video: boxes, masks, segmented images"),
    "stream": ("fastcell.cli.stream", "run live on a camera/video/URL and print fps and latency"),
    "anchors": ("fastcell.cli.anchors", "K-means++ anchors for a data set (the paper's Algorithm 1)"),
    "train": ("fastcell.cli.train", "train AttentionNet from scratch"),
    "val": ("fastcell.cli.val", "evaluate a model: mAP, P/R/F1, confusion matrix, segmentation IoU"),
    "export": ("fastcell.cli.export", "export a checkpoint to ONNX (+ metadata JSON) or a TensorRT engine"),
    "info": ("fastcell.cli.info", "print versions, backends and precisions, the default model and compiled "
                                  "features (for bug reports)"),
}


def _version_line() -> str:
    from fastcell._version import __version__

    return f"fastcell {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastcell", description="Real-time cell detection and segmentation.")
    parser.add_argument("--version", "-V", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily in main() for the chosen command only.
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (130 after Ctrl-C, with one line on stderr)."""
    global _running, _interrupted, _previous_unraisablehook
    previous = None
    try:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, _on_interrupt)
    except ValueError:  # an embedding that does not let Python handle signals
        previous = None
    _running, _interrupted = True, False
    _previous_unraisablehook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        code = _main(argv)
        if _interrupted and code != 130:  # the command took an interrupt that an import disguised for an error
            print("interrupted", file=sys.stderr)
            return 130
        return code
    except KeyboardInterrupt:  # Ctrl-C at any moment, also while modules load: one line, status 130
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _running = False
        sys.unraisablehook = _previous_unraisablehook
        if previous is not None and previous is not _on_interrupt:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):  # answered here, so main() returns rather than exits
        print(_version_line())
        return 0
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints usage / the error and exits
        return 2
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
        sub = _Parser(prog=f"fastcell {name}", description=COMMANDS[name][1])
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if _interrupted:  # an interrupt a compiled module's import turned into another error
            raise KeyboardInterrupt from None
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"fastcell {name}: error: {type(err).__name__}: {err} (set {DEBUG_ENV}=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
