"""The :class:`Source` protocol, the file extensions fastcell reads and the stall limit."""

from __future__ import annotations

import stat
from typing import Iterator

import numpy as np

from fastcell.defaults import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

__all__ = ["Source", "Item", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "URL_SCHEMES", "STALL_TIMEOUT", "is_url", "file_kind"]

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")

# Defined here, not in fastcell.pipeline (which imports this package and re-exports it): the
# sources decide their own "auto" stall limit (Source.auto_stall_timeout).
STALL_TIMEOUT = 10.0  # seconds: stall_timeout="auto" for live sources other than Pushed

Item = tuple[np.ndarray, str, int, float]


def is_url(text: str) -> bool:
    """Whether ``text`` starts with one of :data:`URL_SCHEMES` (any case)."""
    return text.lower().startswith(URL_SCHEMES)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` that is not a regular file is, in words ("a FIFO")."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


class Source:
    """Base class: an iterable of ``(frame, source_name, index, timestamp)`` with a ``live`` flag.

    ``heartbeat`` is for sources whose one read may take several steps (a camera that reconnects:
    a failed read, a pause, a reopen, a new read): the ``time.monotonic()`` at which the current
    step began, or None. :func:`fastcell.stream` times a stall from the later of the read's start
    and the last heartbeat, so a source that is visibly working on getting its next frame is not
    given up on as stalled; only a step that itself blocks too long is.
    """

    name: str = "frames"
    live: bool = False
    heartbeat: float | None = None

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[Item]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Stop the iteration and release the device/files.

        May be called from any thread, also while another thread is blocked reading, and must
        return at once: a source whose device is not thread-safe only raises a flag here and lets
        the reading thread release it (see :class:`VideoCapture`).
        """

    def auto_stall_timeout(self) -> float | None:
        """The stall limit :func:`fastcell.stream` puts on this source for ``stall_timeout="auto"``.

        Returns
        -------
        float or None
            :data:`STALL_TIMEOUT` seconds for a live source; None (no limit) for one that is not
            live, whose reads are waited for however long they take.
        """
        return STALL_TIMEOUT if self.live else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, live={self.live})"


