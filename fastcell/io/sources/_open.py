"""``open_source``: what the user passed → a :class:`~fastcell.io.sources.Source`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastcell.io._names import text_name
from fastcell.io.sources._base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Source, is_url
from fastcell.io.sources._files import ImageFiles
from fastcell.io.sources._scan import Listing, scan
from fastcell.io.sources._frames import Callback, Frames
from fastcell.io.sources._video import VideoCapture

__all__ = ["open_source"]

log = logging.getLogger("fastcell")


def open_source(source: Any, *, live: bool | None = None, reconnect: int = 0, workers: int = 2) -> Source:
    """Turn what the user passed into a :class:`Source`.

    Parameters
    ----------
    source : Source, int, str, path, sequence of paths, ndarray, iterable of ndarray or callable
        * int, or a string of digits that is not a file: camera index;
        * ``rtsp://``, ``http(s)://`` ... URL: a network stream (live);
        * a folder: its image files, sorted by name (entries that are not read: see
          :func:`~fastcell.io.sources.scan`; those meant as images start ``failed``);
        * a pattern with ``*``, ``?`` or ``[``: the matching image files, sorted;
        * a video file (by extension) or a single image file;
        * a list/tuple of paths; any iterable of frames;
        * an array: ``(N, H, W, C)`` is a stack of frames, ``(N, H, W)`` a stack of gray frames
          unless its last axis is 1, 3 or 4 — then, like ``(H, W, C)`` and ``(H, W)``, it is one
          frame (see :func:`array_frames`);
        * a callable returning frames (``None`` ends it; live by default).
    live : bool, optional
        Override whether the source is live (may drop frames when behind).
    reconnect : int
        Camera/URL sources: reconnect attempts after a disconnect.
    workers : int
        Image files: decoding threads.

    Raises
    ------
    FileNotFoundError
        For a path or pattern that names nothing readable.
    TypeError
        For an object that is none of the above.
    ValueError
        For an array of a shape that is neither a frame nor a stack of frames.
    """
    if isinstance(source, Source):
        if live is not None:
            source.live = live
        return source
    if isinstance(source, (bool, np.bool_)):
        raise TypeError(f"a source cannot be a bool ({source!r})")
    if isinstance(source, (int, np.integer)):
        return VideoCapture(int(source), live=live, reconnect=reconnect)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), live, reconnect, workers)
    if isinstance(source, np.ndarray):
        return Frames(source, "array", live=bool(live))  # Frames splits it (array_frames)
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        return ImageFiles([os.fspath(s) for s in source], "paths", workers)
    if callable(source) and not hasattr(source, "__iter__"):
        return Callback(source, live=True if live is None else live)
    if hasattr(source, "__iter__"):
        return Frames(source, getattr(source, "name", None) or type(source).__name__, live=bool(live))
    raise TypeError(f"cannot read frames from a {type(source).__name__}: expected a camera index, path, "
                    "URL, folder, glob, list of paths, iterable of numpy frames or a callable")


def _open_path(text: str, live: bool | None, reconnect: int, workers: int) -> Source:
    if is_url(text):
        return VideoCapture(text, live=live, reconnect=reconnect)
    path = Path(text)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return VideoCapture(text, live=live, reconnect=reconnect)
        return ImageFiles([text], text, workers)
    if path.is_dir() or any(c in text for c in "*?["):
        listing = scan(text)
        if not listing.files:
            what = (f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {text_name(text)}"
                    if path.is_dir() else f"the pattern {text_name(text)!r} matches no image files")
            raise FileNotFoundError(what + _skipped_note(listing))
        source = ImageFiles(listing.files, text, workers)
        source.failed.extend(listing.skipped)  # entries meant as images that are not read: say so
        for entry, reason in listing.skipped:
            log.warning("fastcell: skipping %s: %s", text_name(entry), reason)
        return source
    if text.isdigit():
        return VideoCapture(int(text), live=live, reconnect=reconnect)
    raise FileNotFoundError(f"no such file, folder or pattern: {text_name(text)!r}")


def _skipped_note(listing: Listing) -> str:
    if not listing.skipped:
        return ""
    path, reason = listing.skipped[0]
    return f" ({len(listing.skipped)} entries skipped, e.g. {text_name(path)}: {reason})"
