"""Maildir delivery that survives a crash at any instant.

The layout is the standard one (``tmp/``, ``new/``, ``cur/``) so neomutt,
Dovecot or Python's :mod:`mailbox` read it directly. Python's
``mailbox.Maildir`` is not used for writing: it puts the machine's host name
into every file name and does not fsync. Here a message is written to
``tmp/``, linked into ``new/`` (readers see it whole from that moment), then
the file and ``new/`` are fsynced before :meth:`Maildir.deliver` returns;
only then may the box answer ``250``. File names are
``<unix time>.<random>.onionmail`` — no host name, no sender.

Linking (and unlinking the ``tmp/`` name) before the fsync rather than
after lets the file's fsync write its name in ``new/`` too: ext4 without a
journal (this project's machines) writes a new file's directory along with
it, and with a journal the commit that makes the file durable holds the
link. The directory fsync then finds nothing left to write: one disk flush
per message instead of two, the same as Postfix's queue. The cost is a
narrow window: a power cut between the link and the fsync can leave an
empty file in ``new/`` for a message that was never acknowledged (its
sender retries). :meth:`Maildir.clean_tmp`, run at start-up, moves such
empty files out of ``new/``; nothing acknowledged is touched, since an
acknowledged file was fsynced whole.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from onionmail.fsutil import ensure_private_dir, fsync_dir, random_name, write_all

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
        final = self.path / "new" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, message)
            os.link(tmp, final)
            os.unlink(tmp)
            os.fsync(fd)
            fsync_dir(self.path / "new")
        except BaseException:
            # Not durable, so not acknowledged: nothing may stay visible in new/.
            final.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return final

    def clean_tmp(self, older_than: float = 36 * 3600) -> int:
        """Remove leftovers of a crash mid-write; returns how many.

        Files in ``tmp/`` older than ``older_than`` seconds, and empty files in
        ``new/`` (a power cut between the link and the fsync: never
        acknowledged; no message the box stores is empty).
        """
        removed = 0
        for entry in (self.path / "new").iterdir():
            if entry.stat().st_size == 0:
                entry.unlink(missing_ok=True)
                removed += 1
        limit = time.time() - older_than
        for entry in (self.path / "tmp").iterdir():
            if entry.stat().st_mtime < limit:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def count(self) -> int:
        """Messages in ``new/`` and ``cur/``."""
        return sum(1 for sub in ("new", "cur") for _ in (self.path / sub).iterdir())
