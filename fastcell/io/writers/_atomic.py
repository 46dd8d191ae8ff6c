"""Atomic file and folder replacement: a reader (or a rerun after a kill) sees the old file or the
new one, never half of one.

Every file is written under a temporary name in one *temporary folder* of the output folder
(``OUT/.fastcell/tmp``: the same file system, so ``os.replace`` is a rename, which POSIX makes
atomic) and then renamed over its final name. Keeping temporaries out of the folders that hold
outputs means no output name — whatever the input was called, ``foo.fastcell-tmp.jpg`` included —
can ever be taken for a temporary, and a killed run's leftovers are all in one place:
:func:`remove_stale_temporaries` empties it. Temporary names are unique (``tempfile``), so writer
threads never share one.

Nothing is fsynced: the files survive a killed process (the page cache outlives it), not a power
failure. Syncing every file would cost a disk flush per file at hundreds of images per second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["write_bytes", "write_text", "replace_dir", "staging_dir", "remove_stale_temporaries"]


def write_bytes(path: str | Path, data: bytes, tmp_dir: str | Path, prefix: str = "file-") -> Path:
    """Write ``data`` to ``path`` atomically through ``tmp_dir``, creating parent folders as needed.

    ``prefix`` names the temporary (``tmp_dir/<prefix>XXXX``), for whoever clears stale ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text(path: str | Path, text: str, tmp_dir: str | Path) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (``\\n`` line ends on every platform).

    The text must be valid UTF-8: file names go through :func:`fastcell.io._names.text_name`
    first, which makes any name so.
    """
    return write_bytes(path, text.encode("utf-8"), tmp_dir)


def staging_dir(tmp_dir: str | Path) -> Path:
    """A new, empty folder in ``tmp_dir`` in which to write the contents of a folder."""
    Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=tmp_dir, prefix="dir-"))


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` folder to ``final``, replacing what was there.

    A folder cannot be renamed over a non-empty one, so an existing ``final`` (left by a run that was
    killed before it recorded the image as finished) is removed first; a kill between the two
    steps leaves no ``final`` and an unfinished image, which the rerun writes again.
    """
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    elif final.exists() or final.is_symlink():
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)


def remove_stale_temporaries(tmp_dir: str | Path) -> int:
    """Delete what a killed run left in ``tmp_dir``; return how many entries."""
    tmp_dir = Path(tmp_dir)
    if not tmp_dir.is_dir():
        return 0
    removed = 0
    for entry in tmp_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed
