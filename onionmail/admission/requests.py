"""What the owner does with a stranger's mail in ``Requests``: accept, block or ignore.

- **accept**: the sender becomes a contact (the address book gets it, under
  a petname made from its local part) and all its mail in ``Requests`` moves
  to INBOX; its later mail goes to INBOX and never pays a stamp;
- **block**: its later mail is refused at RCPT (``550 5.7.1``; by onion for
  onion senders, so every address of that box) and all its mail in
  ``Requests`` is deleted;
- **ignore**: this one message is deleted; the sender stays a stranger.

A stored message's sender is its ``Return-Path``, which the box writes
first when it stores a message (the sealed sender for onion mail, the
gateway's clearnet sender for relayed mail). Used by ``onionmail requests``
and the TUI (through ``BoxApi.requests``); the running box sees each change
at its next RCPT (the sender book is shared SQLite, the address book is
re-read when it changes).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import os
from dataclasses import dataclass
from pathlib import Path

from onionmail.admission import REQUESTS
from onionmail.admission.senders import SenderBook, sender_key, senders_key
from onionmail.core.errors import ConfigError, IdentityError
from onionmail.core.files import fsync_dir
from onionmail.store.contacts import AddressBook
from onionmail.store.maildir import Maildir

HEAD_BYTES = 16384


@dataclass(frozen=True)
class Request:
    """One message in ``Requests``: its Maildir key (``cur/NAME``) and who sent it."""

    key: str
    sender: str
    subject: str


def _sender_and_subject(path: Path) -> tuple[str, str]:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    sender = email.utils.parseaddr(str(headers.get("Return-Path", "")))[1]
    return sender.lower(), str(headers.get("Subject", ""))


class Requests:
    """The ``Requests`` folders of one box and the sender book they feed."""

    def __init__(self, box_dir: Path, local_parts: tuple[str, ...], seed: bytes | None) -> None:
        """``seed``: the box's (the sender book keeps keyed hashes); None while the key is
        locked, when only :meth:`pending` and :meth:`ignore` work."""
        self.box_dir = box_dir
        self.local_parts = local_parts
        self.seed = seed

    def _senders(self) -> SenderBook:
        if self.seed is None:
            raise IdentityError("unlock the box's key first: the sender book needs it")
        return SenderBook(self.box_dir / "state" / "senders.sqlite", senders_key(self.seed))

    def folder(self, local_part: str) -> Path:
        if local_part not in self.local_parts:
            raise ConfigError(f"{local_part}: not a local part of this box")
        return self.box_dir / "mail" / local_part / REQUESTS

    def pending(self, local_part: str) -> list[Request]:
        """The requests waiting in ``local_part``'s folder, oldest first."""
        root = self.folder(local_part)
        found: list[Request] = []
        for sub in ("new", "cur"):
            try:
                names = sorted(os.listdir(root / sub))
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                sender, subject = _sender_and_subject(root / sub / name)
                found.append(Request(f"{sub}/{name}", sender, subject))
        return found

    def accept(self, local_part: str, sender: str) -> int:
        """Make ``sender`` a contact and move its requests to INBOX; how many moved."""
        book = AddressBook(self.box_dir)
        known = book.entries()
        if sender.lower() not in (a.lower() for a in known.values()):
            base = sender.split("@", 1)[0] or "contact"
            petname, n = base, 2
            while petname in known:
                petname, n = f"{base}-{n}", n + 1
            book.put(petname, sender)
        senders = self._senders()
        try:
            senders.know(sender_key(sender), "accepted")
        finally:
            senders.close()
        inbox = Maildir(self.box_dir / "mail" / local_part)
        root = self.folder(local_part)
        moved = 0
        for request in self._from(local_part, sender):
            sub, name = request.key.split("/", 1)
            os.rename(root / sub / name, inbox.path / sub / name)
            moved += 1
        if moved:
            for sub in ("new", "cur"):
                fsync_dir(inbox.path / sub)
                fsync_dir(root / sub)
        return moved

    def block(self, local_part: str, sender: str) -> int:
        """Refuse ``sender`` from now on and delete its requests; how many were deleted."""
        senders = self._senders()
        try:
            senders.block(sender_key(sender))
        finally:
            senders.close()
        deleted = 0
        for request in self._from(local_part, sender):
            (self.folder(local_part) / request.key).unlink()
            deleted += 1
        return deleted

    def unblock(self, sender: str) -> bool:
        senders = self._senders()
        try:
            return senders.unblock(sender_key(sender))
        finally:
            senders.close()

    def blocked_count(self) -> int:
        senders = self._senders()
        try:
            return senders.blocked_count()
        finally:
            senders.close()

    def ignore(self, local_part: str, key: str) -> None:
        """Delete one request (the sender stays a stranger)."""
        sub, _, name = key.partition("/")
        if sub not in ("new", "cur") or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{key!r} is not a message of the Requests folder")
        (self.folder(local_part) / sub / name).unlink()

    def _from(self, local_part: str, sender: str) -> list[Request]:
        key = sender_key(sender)
        return [r for r in self.pending(local_part) if r.sender and sender_key(r.sender) == key]
