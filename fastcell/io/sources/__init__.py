"""Where frames come from: cameras, videos, URLs, folders, globs, path lists, numpy frames, callables.

Every source iterates ``(frame, source_name, index, timestamp)``: the frame as an ndarray (uint8 or
uint16, gray/BGR/BGRA, as read), the file path/URL/name it came from, its 0-based position in the
source, and ``time.monotonic()`` when it was read. Sources say whether they are ``live`` (a camera
or a stream that will not wait: the pipeline may drop its oldest frames when behind) or not
(files, folders, iterables: every frame is processed).

Unreadable, corrupt or unsupported image files (a float32 or signed-integer TIFF, say: they decode,
but fastcell takes 8- and 16-bit unsigned images only) are logged, recorded in ``source.failed`` as
``(path, reason)`` and skipped when read — a folder with one bad file still runs to the end, and a
rerun does not stop on it either. Their index is not reused, so the indices of the other files stay
their positions in the sorted list. Entries of a folder or glob that are not read at all (a folder
named like an image, a FIFO, a dangling link, a symlink loop, a ``.gif``) are listed by
:func:`scan` with their reasons, and an :class:`ImageFiles` made by :func:`open_source` starts
with them in ``failed``. Frames larger than ``max_pixels`` are refused from the file header,
before anything is decoded.

One module per kind of source: ``_base`` (the :class:`Source` protocol, extensions, stall limit),
``_files`` (:func:`read_image`, :class:`ImageFiles`), ``_scan`` (listing folders and globs, with
every entry that is not read and why), ``_video`` (:class:`VideoCapture`), ``_frames``
(:class:`Frames`, :class:`Callback`), ``_pushed`` (:class:`Pushed`) and ``_open``
(:func:`open_source`). Import from here: the module names are private.
"""

from fastcell.io.sources._base import IMAGE_EXTENSIONS, STALL_TIMEOUT, URL_SCHEMES, VIDEO_EXTENSIONS, Item, Source
from fastcell.io.sources._files import MAX_PIXELS, ImageFiles, read_image
from fastcell.io.sources._frames import Callback, Frames, array_frames
from fastcell.io.sources._open import open_source
from fastcell.io.sources._pushed import Pushed
from fastcell.io.sources._scan import Listing, scan
from fastcell.io.sources._video import VideoCapture

__all__ = ["Source", "ImageFiles", "VideoCapture", "Frames", "Callback", "Pushed", "open_source", "read_image",
           "array_frames", "scan", "Listing", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "URL_SCHEMES",
           "STALL_TIMEOUT", "MAX_PIXELS", "Item"]
