"""Atomic file and folder replacement: a reader (or a rerun after a kill) sees the old file or the
new one, never half of one.

Every file is written to a temporary name in the same folder (same file system, so ``os.replace``
is a rename, which POSIX makes atomic) and then renamed over the final name. The temporary names
are fixed — ``.<name>.fastcell-tmp`` — rather than random, so a killed run leaves at most one
stale temporary per final file, which the next run overwrites or removes with
:func:`remove_stale_temporaries`.

Nothing is fsynced: the files survive a killed process (the page cache outlives it), not a power
failure. Syncing every file would cost a disk flush per file at hundreds of images per second.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["TMP_SUFFIX", "write_bytes", "write_text", "replace_dir", "staging_dir", "remove_stale_temporaries"]

TMP_SUFFIX = ".fastcell-tmp"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (``\\n`` line ends on every platform)."""
    return write_bytes(path, text.encode("utf-8"))


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` folder to ``final``, replacing what was there.

    A folder cannot be renamed over a non-empty one, so an existing ``final`` (left by a run that was
    killed before it recorded the image as finished) is removed first; a kill between the two
    steps leaves no ``final`` and an unfinished image, which the rerun writes again.
    """
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)


def staging_dir(final: Path) -> Path:
    """The temporary sibling in which the contents of folder ``final`` are written."""
    return _temporary(final)


def remove_stale_temporaries(root: str | Path) -> int:
    """Delete temporary files and folders a killed run left under ``root``; return how many."""
    removed = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.endswith(TMP_SUFFIX):
                os.unlink(os.path.join(dirpath, name))
                removed += 1
        for name in list(dirnames):
            if name.endswith(TMP_SUFFIX):
                shutil.rmtree(os.path.join(dirpath, name))
                dirnames.remove(name)
                removed += 1
    return removed
