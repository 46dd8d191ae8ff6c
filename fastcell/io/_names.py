"""File names in text: one escaping, used by every text that names a file (COCO, CSV, VOC, YAML,
``failed.txt``, the summary, log lines).

A POSIX file name is any bytes but ``/`` and NUL; Python hands over the bytes that are not UTF-8
as lone surrogates (``os.fsdecode``, "surrogateescape"), which no UTF-8 text can hold. Such a
name is written with each of those bytes as ``\\xHH`` (two lower-case hex digits) and each
backslash doubled, so the text is valid UTF-8 and the name can be recovered exactly
(:func:`name_from_text`): ``corrupt_\\xff.jpg`` is the file whose name is the bytes
``corrupt_`` 0xFF ``.jpg``. Names that are valid UTF-8 and hold no backslash — nearly all — are
written as they are.
"""

from __future__ import annotations

import os
import re

__all__ = ["text_name", "name_from_text"]

_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def text_name(name: str | bytes | os.PathLike) -> str:
    """``name`` as UTF-8-safe text: undecodable bytes as ``\\xHH``, backslashes doubled.

    Parameters
    ----------
    name : str, bytes or path
        A file name or path, as the file system gave it (``str`` with surrogate escapes, or bytes).

    Returns
    -------
    str
        Text that encodes to UTF-8 without error; equal to ``name`` for UTF-8 names without ``\\``.
    """
    raw = os.fsencode(name)
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def name_from_text(text: str) -> str:
    """The inverse of :func:`text_name`: the file name (``str`` with surrogate escapes)."""
    raw = text.encode("utf-8")
    out = _ESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)),
                      raw.decode("utf-8"))
    return os.fsdecode(os.fsencode(out))
