"""File names in text: one escaping, used by every text that names a file (COCO, CSV, VOC,
``failed.txt``, the summary, log lines).

A POSIX file name is any bytes but ``/`` and NUL; Python hands over the bytes that are not UTF-8
as lone surrogates (``os.fsdecode``, "surrogateescape"), which no UTF-8 text can hold, and a name
may hold a line break, which would split a line of ``failed.txt``. So in text a name is written
with each byte that is not part of valid UTF-8, and each control character (below 0x20, and
0x7F), as ``\\xHH`` (two lower-case hex digits), and each backslash doubled. The text is then
valid UTF-8 on one line, and the name can be recovered exactly (:func:`name_from_text`):
``corrupt_\\xff.jpg`` is the file whose name is the bytes ``corrupt_`` 0xFF ``.jpg``. Names that
are valid UTF-8 without backslashes or control characters — nearly all — are written as they are.
"""

from __future__ import annotations

import os
import re

__all__ = ["text_name", "name_from_text"]

_PLAIN = re.compile(r"[^\x00-\x1f\x7f\\]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def text_name(name: str | bytes | os.PathLike) -> str:
    """``name`` as one line of UTF-8-safe text (see the module notes for the escaping).

    Parameters
    ----------
    name : str, bytes or path
        A file name or path, as the file system gave it (``str`` with surrogate escapes, or bytes).

    Returns
    -------
    str
        Text that encodes to UTF-8 without error and holds no control character; equal to
        ``name`` for UTF-8 names without ``\\`` or control characters.
    """
    raw = os.fsencode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _PLAIN.fullmatch(text):
        return text
    escaped = raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped)


def name_from_text(text: str) -> str:
    """The inverse of :func:`text_name`: the file name (``str`` with surrogate escapes)."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode("utf-8")
        out += b"\\" if m.group(1) == "\\" else bytes([int(m.group(1)[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return os.fsdecode(bytes(out))
