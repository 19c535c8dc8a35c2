"""Durable, private file writes: the primitives behind "250 only once it is on disk".

A file is durable when its bytes and its directory entry both reached the
disk: write to a temporary name, ``fsync`` the file, ``rename`` (or ``link``)
it into place, then ``fsync`` the directory. Files are created 0600 with
``O_EXCL`` and directories 0700, never under the process umask.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new, renamed or removed names) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Atomically replace ``path`` with ``data``, 0600; durable (fsynced) by default."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            write_all(fd, data)  # no file object: see write_all
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_all(fd: int, *chunks: bytes) -> None:
    """Write ``chunks``, in order, with plain ``os.writev`` calls (short writes resumed).

    No file object: it would add fstat, ioctl and lseek, each one more GIL
    hand-off with the event loop under load. Several chunks instead of one
    joined buffer: on the accept path, joining a 100 KB message to its
    header is one more fresh allocation, which on this kind of machine costs
    more in page faults than the copy (bench/accept.py).
    """
    views = [memoryview(chunk) for chunk in chunks if chunk]
    while views:
        written = os.writev(fd, views)
        while views and written >= views[0].nbytes:
            written -= views.pop(0).nbytes
        if views and written:
            views[0] = views[0][written:]


def random_name() -> str:
    """A file name that says nothing about its content, sender or host."""
    return secrets.token_hex(16)


STORAGE_THREADS = 32
"""Worker threads for blocking file work (writes with fsync, sealing, the replay cache).

asyncio's default pool has ``cpu_count + 4`` threads (6 on two cores), so
20 sessions storing at once queued behind each other's fsyncs; the disk
(and ext4's journal, where there is one) takes concurrent fsyncs together,
which only happens if they are issued concurrently."""


def use_storage_threads(loop: asyncio.AbstractEventLoop) -> None:
    """Give ``loop`` a default executor sized for concurrent fsyncs (:data:`STORAGE_THREADS`)."""
    from concurrent.futures import ThreadPoolExecutor  # a reader of files needs no threads

    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=STORAGE_THREADS, thread_name_prefix="onionmail-io")
    )
