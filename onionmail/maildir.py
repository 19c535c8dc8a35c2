"""Maildir delivery that survives a crash at any instant.

The layout is the standard one (``tmp/``, ``new/``, ``cur/``) so neomutt,
Dovecot or Python's :mod:`mailbox` read it directly. Python's
``mailbox.Maildir`` is not used for writing: it puts the machine's host name
into every file name and does not fsync. Here a message is written to
``tmp/``, fsynced, linked into ``new/`` and the directory fsynced before
:meth:`Maildir.deliver` returns; only then may the box answer ``250``. File
names are ``<unix time>.<random>.onionmail`` — no host name, no sender.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from onionmail.fsutil import ensure_private_dir, fsync_dir, random_name

SUBDIRS = ("tmp", "new", "cur")


class Maildir:
    """One Maildir folder, created 0700 if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        ensure_private_dir(path)
        for sub in SUBDIRS:
            ensure_private_dir(path / sub)

    def deliver(self, message: bytes) -> Path:
        """Store ``message`` durably in ``new/`` and return its path."""
        name = f"{int(time.time())}.{random_name()}.onionmail"
        tmp = self.path / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(message)
                handle.flush()
                os.fsync(handle.fileno())
            final = self.path / "new" / name
            os.link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.path / "new")
        return final

    def clean_tmp(self, older_than: float = 36 * 3600) -> int:
        """Remove leftovers in ``tmp/`` (a crash mid-write); returns how many."""
        removed = 0
        limit = time.time() - older_than
        for entry in (self.path / "tmp").iterdir():
            if entry.stat().st_mtime < limit:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def count(self) -> int:
        """Messages in ``new/`` and ``cur/``."""
        return sum(1 for sub in ("new", "cur") for _ in (self.path / sub).iterdir())
