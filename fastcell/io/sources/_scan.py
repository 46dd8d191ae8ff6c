"""Listing a folder or a glob: the image files to read, and every other entry with what became of it.

Nothing is passed over in silence: an entry that looks meant to be read but cannot be — a folder
named like an image, a FIFO or other special file, a dangling symlink, a symlink loop, a second
path to a file or folder already listed, an image format fastcell does not read (``.gif``,
``.heic`` ...) or a video inside a folder — is *skipped* with a reason; any other file (``.xml``,
``.txt``) is *ignored*, counted by extension. Files under an excluded folder (the output folder
of an annotation run) are never read, only counted.
"""

from __future__ import annotations

import errno
import glob as globlib
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from fastcell.io._names import text_name
from fastcell.io.sources._base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, file_kind

__all__ = ["Listing", "scan", "UNSUPPORTED_IMAGE_EXTENSIONS"]

#: Image formats a user may expect to be read, which fastcell (OpenCV's decoders) does not read.
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({
    ".gif", ".heic", ".heif", ".avif", ".jxl", ".jxr", ".jfif", ".svg", ".ico", ".psd", ".tga", ".exr",
    ".hdr", ".pic", ".pfm", ".pam", ".sr", ".ras", ".raw", ".dng", ".cr2", ".nef", ".arw", ".czi", ".nd2",
    ".lif", ".svs", ".ndpi", ".vsi", ".scn", ".ome",
})


@dataclass
class Listing:
    """What :func:`scan` found.

    Attributes
    ----------
    files : list of str
        Image files to read: regular files (or links to them) with an image extension, sorted
        by path, each file once.
    skipped : list of (str, str)
        ``(path, reason)`` for each entry not read that looked meant to be, in path order.
    ignored : dict of str to int
        Other files, counted by extension (``"(none)"`` for names without one).
    excluded : int
        Entries under the excluded folders, not read.
    folders : int
        Sub-folders not entered (``recursive=False``).
    """

    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    excluded: int = 0
    folders: int = 0


class _Scanner:
    def __init__(self, recursive: bool, exclude: Iterable[str | os.PathLike]) -> None:
        self.recursive = recursive
        self.exclude = [os.path.realpath(p) for p in exclude]
        self.listing = Listing()
        self.ignored: Counter = Counter()
        self.skipped: dict[str, str] = {}
        self.files: dict[tuple[int, int], str] = {}  # (device, inode) → first path: each file once
        self.dirs: dict[tuple[int, int], str] = {}

    def excluded(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == e or real.startswith(e.rstrip(os.sep) + os.sep) for e in self.exclude)

    def folder(self, path: str) -> None:
        try:
            with os.scandir(path) as it:
                names = sorted(entry.path for entry in it)
        except OSError as err:
            self.skipped[path] = f"cannot list this folder: {err.strerror or err}"
            return
        for entry in names:
            self.entry(entry, inside_folder=True)

    def entry(self, path: str, inside_folder: bool) -> None:
        ext = os.path.splitext(path)[1].lower()
        try:
            info = os.stat(path)
        except OSError as err:
            self.skipped[path] = _stat_failure(path, err)
            return
        if stat.S_ISDIR(info.st_mode):
            if self.excluded(path):
                self.listing.excluded += 1
            elif not self.recursive or not inside_folder:
                if ext in IMAGE_EXTENSIONS:
                    self.skipped[path] = "a folder, not an image file (named like one)"
                else:
                    self.listing.folders += 1
            elif (info.st_dev, info.st_ino) in self.dirs:
                first = self.dirs[(info.st_dev, info.st_ino)]
                self.skipped[path] = f"a folder already listed as {text_name(first)} (a symlink loop or a second link)"
            else:
                self.dirs[(info.st_dev, info.st_ino)] = path
                self.folder(path)
            return
        if not stat.S_ISREG(info.st_mode):
            self.skipped[path] = f"{file_kind(info.st_mode)}, not an image file"
        elif ext in IMAGE_EXTENSIONS:
            if self.excluded(path):
                self.listing.excluded += 1
            elif (info.st_dev, info.st_ino) in self.files:
                self.skipped[path] = f"the same file as {text_name(self.files[(info.st_dev, info.st_ino)])}"
            else:
                self.files[(info.st_dev, info.st_ino)] = path
        elif ext in UNSUPPORTED_IMAGE_EXTENSIONS:
            self.skipped[path] = f"unsupported image format ({ext})"
        elif ext in VIDEO_EXTENSIONS:
            self.skipped[path] = f"a video ({ext}): annotate it on its own"
        else:
            self.ignored[ext or "(none)"] += 1

    def result(self) -> Listing:
        self.listing.files = sorted(self.files.values())
        self.listing.skipped = sorted(self.skipped.items())
        self.listing.ignored = dict(sorted(self.ignored.items()))
        return self.listing


def _stat_failure(path: str, err: OSError) -> str:
    if os.path.islink(path):
        if err.errno == errno.ELOOP:
            return "a symlink loop"
        if err.errno == errno.ENOENT:
            try:
                target = text_name(os.readlink(path))
            except OSError:
                target = "?"
            return f"a dangling symlink (to {target})"
    return f"cannot read: {err.strerror or err}"


def scan(source: str | os.PathLike, recursive: bool = False, exclude: Iterable[str | os.PathLike] = ()) -> Listing:
    """List the image files of a folder or a glob pattern, and account for every other entry.

    Parameters
    ----------
    source : str or path
        A folder, or a pattern with ``*``, ``?`` or ``[`` (``**`` matches sub-folders).
    recursive : bool
        Folders: enter sub-folders too. Symlinked sub-folders are followed, each real folder once
        (a loop or a second link to it is skipped with a reason).
    exclude : iterable of path
        Folders whose contents are never read (compared by real path, so links into them are
        excluded too): the output folders of an annotation run.

    Returns
    -------
    Listing

    Raises
    ------
    FileNotFoundError
        When ``source`` is neither a folder nor a pattern.
    """
    text = os.fspath(source)
    scanner = _Scanner(recursive, exclude)
    if os.path.isdir(text):
        info = os.stat(text)
        scanner.dirs[(info.st_dev, info.st_ino)] = text
        scanner.folder(text)
    elif any(c in text for c in "*?["):
        for path in sorted(globlib.glob(text, recursive=True)):
            scanner.entry(path, inside_folder=False)
    else:
        raise FileNotFoundError(f"no such folder or pattern: {text_name(text)!r}")
    return scanner.result()
