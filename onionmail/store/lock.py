"""One running box per directory, and a way for the CLI to find it.

``onionmail run`` holds an exclusive ``flock`` on ``BOXDIR/run/box.lock``
(which holds its pid) for as long as it runs. The kernel drops the lock when
the process dies, however it dies, so a stale pid or status file never makes
a dead box look alive: ``status`` and ``queue flush`` ask the lock, not the
files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from onionmail.core.errors import OnionMailError
from onionmail.core.files import ensure_private_dir


def lock_path(box_dir: Path) -> Path:
    return box_dir / "run" / "box.lock"


class BoxLock:
    """The running box's lock; ``acquire()`` at start, ``release()`` at stop."""

    def __init__(self, box_dir: Path) -> None:
        self.path = lock_path(box_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = running_pid(self.path.parent.parent)
            raise OnionMailError(
                f"{self.path.parent.parent}: another 'onionmail run' (pid {pid}) is using this box"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def running_pid(box_dir: Path) -> int | None:
    """The pid of the ``onionmail run`` holding ``box_dir``, or None if none is running."""
    path = lock_path(box_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
