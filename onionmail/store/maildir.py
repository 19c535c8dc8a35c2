"""Maildir delivery that survives a crash at any instant.

The layout is the standard one (``tmp/``, ``new/``, ``cur/``) so neomutt,
Dovecot or Python's :mod:`mailbox` read it directly. Python's
``mailbox.Maildir`` is not used for writing: it puts the machine's host name
into every file name and does not fsync. Here a message is written to
``tmp/`` and fsynced, then renamed into ``new/`` and ``new/`` is fsynced,
before :meth:`Maildir.deliver` returns; only then may the box answer
``250``. A reader (neomutt, Dovecot) therefore never sees a message that is
not on disk whole, and a power cut leaves either nothing in ``new/`` or the
whole message. File names are ``<unix time>.<random>.onionmail`` — no host
name, no sender.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from onionmail.core.errors import AddressError
from onionmail.core.files import ensure_private_dir, fsync_dir, random_name, write_all

SUBDIRS = ("tmp", "new", "cur")


class Maildir:
    """One Maildir folder, created 0700 if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        ensure_private_dir(path)
        for sub in SUBDIRS:
            ensure_private_dir(path / sub)

    def deliver(self, message: bytes, name: str | None = None, *, seen: bool = False) -> Path:
        """Store ``message`` durably in ``new/`` (as ``name``, or a new name); its path.

        ``seen``: straight into ``cur/`` with the Seen flag instead, as a mail
        client files its own copy of a message it sent (one rename, not a
        delivery to ``new/`` and a second rename to flag it).
        """
        name = name or new_message_name()
        tmp = self.path / "tmp" / name
        final = self.path / "cur" / f"{name}{INFO}{SEEN}" if seen else self.path / "new" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, message)
            os.fsync(fd)  # whole on disk before any reader can see it
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        try:
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            # Not durable, so not acknowledged: nothing may stay visible in new/.
            final.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
            raise
        return final

    def clean_tmp(self, older_than: float = 36 * 3600) -> int:
        """Remove leftovers of a crash mid-write; returns how many.

        Files in ``tmp/`` older than ``older_than`` seconds (a message is
        written there, fsynced, then renamed into ``new/``, so nothing in
        ``tmp/`` was acknowledged), and empty files in ``new/``: no message
        the box stores is empty.
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

    def holds(self, name: str) -> bool:
        """Whether a message stored as ``name`` is here, in ``new/`` or, moved by a reader
        and given flags (``name:2,S``), in ``cur/``. Scans ``cur/``: for the rare retry
        after a crash, not for every delivery."""
        if (self.path / "new" / name).exists():
            return True
        with os.scandir(self.path / "cur") as entries:
            return any(e.name == name or e.name.startswith(name + ":") for e in entries)

    def count(self) -> int:
        """Messages in ``new/`` and ``cur/``."""
        return sum(1 for sub in ("new", "cur") for _ in (self.path / sub).iterdir())


def new_message_name() -> str:
    """A Maildir file name: ``<unix time>.<random>.onionmail`` (no host, no sender)."""
    return f"{int(time.time())}.{random_name()}.onionmail"


# --- flags and moves (what a mail client does to stored mail) ------------------------

SEEN, REPLIED, FLAGGED, TRASHED = "S", "R", "F", "T"
INFO = ":2,"
"""Where a message's flags start in its file name (the Maildir specification's info)."""


def flags_of(key: str) -> str:
    """The flags of the message at ``key`` (``new/<name>`` or ``cur/<name>:2,FS``)."""
    name = key.rsplit("/", 1)[-1]
    return name.partition(INFO)[2] if INFO in name else ""


def set_flags(root: Path, key: str, *, add: str = "", remove: str = "") -> str:
    """Add and remove flags of the message at ``root/key``; its new key.

    A message gets its flags in ``cur/`` (a message in ``new/`` has not been
    seen by any client yet), letters sorted as the specification wants, so
    neomutt and Dovecot read the same state. One rename, atomic.
    """
    base = key.split("/", 1)[1].partition(INFO)[0]
    flags = "".join(sorted((set(flags_of(key)) | set(add)) - set(remove)))
    new_key = f"cur/{base}{INFO}{flags}"
    if new_key != key:
        os.rename(root / key, root / new_key)
        fsync_dir(root / "cur")
    return new_key


def move_message(root: Path, key: str, destination: Path) -> str:
    """Move the message at ``root/key`` into the Maildir ``destination`` (made if missing),
    flags and name kept; its key there. One rename: both folders are under one mailbox."""
    Maildir(destination)
    target = destination / key
    os.rename(root / key, target)
    fsync_dir(target.parent)
    fsync_dir((root / key).parent)
    return key


def checked_key(key: str) -> str:
    """``key`` if it names a message as a folder listing does (``new/<name>``,
    ``cur/<name>``), else :class:`~onionmail.core.errors.AddressError`."""
    sub, _, name = key.partition("/")
    if sub not in ("new", "cur") or not name or "/" in name or name.startswith("."):
        raise AddressError("not a message of this folder")
    return key


def folder_stamp(root: Path) -> tuple[int, int]:
    """The modification times of ``new/`` and ``cur/``: a delivery, a move or a flag change
    (all renames in or out of them) changes one, whoever made it. Two ``stat`` calls."""
    stamps = []
    for sub in ("new", "cur"):
        try:
            stamps.append(os.stat(root / sub).st_mtime_ns)
        except FileNotFoundError:
            stamps.append(0)
    return stamps[0], stamps[1]
