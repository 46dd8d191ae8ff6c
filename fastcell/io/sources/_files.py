"""Image files: the reader (:func:`read_image`) and the decoding-ahead source (:class:`ImageFiles`)."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import imagesize
import numpy as np

from fastcell.io._names import text_name
from fastcell.io._threads import DaemonPool
from fastcell.io.sources._base import Item, Source, file_kind
from fastcell.frames import check_frame

__all__ = ["read_image", "ImageFiles", "MAX_PIXELS", "check_max_pixels", "check_count"]

log = logging.getLogger("fastcell")


#: Default ``max_pixels``: the largest frame (width × height) read from a file. PIL refuses
#: decompression bombs from about 179 MP; 100 MP keeps one 16-bit BGRA frame under 1 GB.
MAX_PIXELS = 100_000_000
# Bytes per pixel of the largest frame fastcell takes uncompressed (16-bit BGRA), plus room for
# metadata: a file longer than that for its pixel limit is refused before it is read whole.
_MAX_BYTES_PER_PIXEL = 8
_METADATA_ALLOWANCE = 16 << 20


def check_count(name: str, value: Any) -> int:
    """Validate a count setting (threads, frames): an int >= 1, returned as int.

    Raises
    ------
    TypeError
        For a value that is not an integer.
    ValueError
        For an integer below 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_max_pixels(max_pixels: Any) -> int | None:
    """Validate a ``max_pixels`` setting: an int >= 1, or None for no limit (returned as given).

    Raises
    ------
    TypeError
        For a value that is not an integer (a float, a bool, a string).
    ValueError
        For an integer below 1.
    """
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)):
        raise TypeError(f"max_pixels must be an int >= 1 or None (no limit), got {type(max_pixels).__name__} "
                        f"{max_pixels!r}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 (or None for no limit), got {max_pixels}")
    return int(max_pixels)


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image file as stored: 8/16-bit, gray/BGR/BGRA (``cv2.IMREAD_UNCHANGED``).

    Before anything is decoded, the file must be a regular file (a FIFO would block the read
    forever) and its header (read by :mod:`imagesize`, a few bytes) must give a frame of at most
    ``max_pixels`` pixels; a file longer than such a frame could be even uncompressed (8 bytes a
    pixel, plus 16 MiB of metadata) is refused without being read, so a huge or hostile file
    costs neither the memory nor the time of decoding it. The decoded image is then checked to
    be one fastcell can annotate (:func:`fastcell.frames.check_frame`: uint8/uint16, gray,
    BGR or BGRA); an ``(H, W, 1)`` image comes back as ``(H, W)``.

    Parameters
    ----------
    path : str or path
        The file. Any name the file system allows (names that are not UTF-8 arrive as ``str``
        with surrogate escapes, as :func:`os.fsdecode` gives them).
    max_pixels : int or None
        Largest ``width × height`` accepted (default :data:`MAX_PIXELS`, 100 MP); None: no
        limit of fastcell's own (OpenCV's, 2**30 pixels, remains).

    Raises
    ------
    ValueError
        When the file is empty, not a regular file, larger than ``max_pixels`` allows, cannot be
        decoded or decodes to an unsupported image (e.g. a float32 TIFF).
    OSError
        When it cannot be read.
    MemoryError
        When even a frame within the limit does not fit in memory.
    """
    max_pixels = check_max_pixels(max_pixels)
    path = os.fspath(path)
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{file_kind(info.st_mode)}, not an image file")
    if info.st_size == 0:
        raise ValueError("empty file")
    width, height = imagesize.get(path)  # (-1, -1): a header imagesize does not know
    if max_pixels is not None:
        if width > 0 and height > 0 and width * height > max_pixels:
            raise ValueError(f"{width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
                             "(raise max_pixels, or --max-pixels on the command line, to read it)")
        most = max_pixels * _MAX_BYTES_PER_PIXEL + _METADATA_ALLOWANCE
        if info.st_size > most:
            raise ValueError(f"file of {info.st_size:,} bytes: larger than any image of at most {max_pixels:,} "
                             f"pixels can be ({most:,} bytes); not read (raise max_pixels to read it)")
    data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode: works with any path encoding
    if data.size == 0:
        raise ValueError("empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    del data
    if image is None or image.size == 0:
        raise ValueError("not a decodable image (corrupt or unsupported format)")
    if max_pixels is not None and image.shape[0] * image.shape[1] > max_pixels:  # a header that lied
        raise ValueError(f"{image.shape[1]}x{image.shape[0]} pixels, over the limit of {max_pixels:,}")
    try:
        return check_frame(image)
    except (TypeError, ValueError) as err:  # decodable, but not an image the network can take
        raise ValueError(f"unsupported image: {err}") from None


class ImageFiles(Source):
    """A list of image files, read in order, decoded ahead by a small pool of daemon threads.

    Each file is decoded and checked (:func:`read_image`) in the pool, so a corrupt or unsupported
    file is recorded in ``failed`` and skipped before it reaches the stream.

    Parameters
    ----------
    paths : iterable of path
        The files, in the order to process them.
    name : str
        What to call the whole source.
    workers : int
        Decoding threads (OpenCV releases the GIL while decoding), >= 1. At most ``2 · workers``
        images are decoded ahead, so memory stays bounded.
    max_pixels : int or None
        Largest frame read (see :func:`read_image`); a larger one is that file's failure.

    Raises
    ------
    TypeError, ValueError
        For ``workers`` or ``max_pixels`` of the wrong type or out of range.
    """

    live = False

    def __init__(self, paths: Iterable[str | Path], name: str = "files", workers: int = 2,
                 max_pixels: int | None = MAX_PIXELS) -> None:
        super().__init__()
        self.paths = [os.fsdecode(p) for p in paths]  # bytes names too: os.fsdecode keeps every byte
        self.name = name
        self.workers = check_count("workers", workers)
        self.max_pixels = check_max_pixels(max_pixels)
        self._closed = False

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, path: str) -> tuple[np.ndarray | None, str]:
        try:
            return read_image(path, self.max_pixels), ""
        except MemoryError:  # one frame too big for this machine is that file's failure, not the run's
            return None, "out of memory while reading it"
        except (OSError, ValueError, cv2.error) as err:
            return None, str(err) or type(err).__name__

    def __iter__(self) -> Iterator[Item]:
        self._closed = False
        pool = DaemonPool(self.workers, "fastcell-decode")
        pending: deque = deque()
        try:
            paths = iter(enumerate(self.paths))
            for index, path in paths:
                pending.append((index, path, pool.submit(self._read, path)))
                if len(pending) >= 2 * self.workers:
                    break
            while pending and not self._closed:
                index, path, future = pending.popleft()
                nxt = next(paths, None)
                if nxt is not None:
                    pending.append((nxt[0], nxt[1], pool.submit(self._read, nxt[1])))
                image, reason = future.result()
                if image is None:
                    log.warning("fastcell: skipping %s: %s", text_name(path), reason)
                    self.failed.append((path, reason))
                    continue
                yield image, path, index, time.monotonic()
        finally:
            # Also when the consumer stops early: drop the decodes not started, and do not wait
            # for a running one (it may hang; its daemon thread ends with it).
            for _, _, future in pending:
                future.cancel()
            pool.shutdown()

    def close(self) -> None:
        self._closed = True


