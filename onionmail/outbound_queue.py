"""The durable outbound queue: what the box acknowledged, it keeps until delivered or bounced.

Layout under ``BOXDIR/queue`` (0700)::

    tmp/              messages being written (removed at start-up: never acknowledged)
    active/<id>.msg   the message, encrypted at rest (SecretBox, key derived from the identity)
    active/<id>.state attempts, next try, last error, destination onion (JSON, no subject)

Files rather than SQLite: one message is one immutable file, written to
``tmp/``, fsynced, renamed into ``active/`` and the directory fsynced; the
rename is the commit point, so a crash leaves either no message (no ``250``
was sent) or a whole one. The small ``.state`` file is rewritten atomically
after each attempt; a missing or damaged one means "never tried yet", which
is always safe. ``ids`` are random, so file names say nothing about the mail.

The message file is encrypted with a key derived from the box identity
(BLAKE2b keyed with the seed, personalised ``om-queue-v1``), so a copy of the
queue directory alone reveals neither bodies nor recipients.

A new entry's state is written before its message is renamed into
``active/``: an entry is visible only once its first try time (set by the
timing policy, :mod:`onionmail.timing`) is on disk, so the delivery agent
never takes a held message for a due one. That first state is not fsynced
on its own: the message's directory fsync, which ``250`` waits for anyway,
commits both names, and the first try time is also inside the encrypted
message, so :meth:`OutboundQueue.recover` rebuilds a state that a crash
lost or left empty. One file fsync and one directory fsync per message
instead of two of each (the accept benchmark, ``bench/accept.py``).

Cover traffic (dummy envelopes, :mod:`onionmail.cover_traffic`) goes through
the same queue, marked ``cover`` in the encrypted message and in the clear
state file. The mark in the state lets :func:`list_queue` leave dummies out
of ``onionmail queue`` and ``status`` without the key; the cost is that
someone who reads the queue directory can tell which waiting entries are
dummies, as they can already read destinations and try times. Cover traffic
is aimed at observers of the network, not of the box's disk.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nacl.exceptions
import nacl.hash
import nacl.secret
import nacl.utils

from onionmail.errors import QueueError
from onionmail.fsutil import ensure_private_dir, fsync_dir, random_name, write_private_file
from onionmail.identity import derive_subkey


@dataclass(frozen=True)
class QueuedMessage:
    """One message for one destination onion (all its recipients are on that onion)."""

    id: str
    destination: str
    mail_from: str
    recipients: tuple[str, ...]
    message: bytes
    envelope_id: bytes
    created: float
    cover: bool = False
    """A dummy envelope (cover traffic): never bounced, dropped when it fails."""
    first_try: float = 0.0
    """When the timing policy let it go first (0: at once); rebuilds a lost state."""

    def first_state(self) -> QueueState:
        """Its state as :meth:`OutboundQueue.enqueue` wrote it (never tried yet)."""
        return QueueState(
            self.id, self.destination, self.created, next_try=self.first_try, cover=self.cover
        )


@dataclass(frozen=True)
class QueueState:
    """What may be shown about a queued message: never the subject or the recipients."""

    id: str
    destination: str
    created: float
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""
    cover: bool = False


def queue_key(seed: bytes) -> bytes:
    """The at-rest key of the queue, domain-separated from every other use of the seed."""
    return derive_subkey(seed, b"om-queue-v1")


class OutboundQueue:
    """Durable queue in ``directory``; all methods block (call them via ``asyncio.to_thread``)."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._box = nacl.secret.SecretBox(key)
        ensure_private_dir(directory)
        self._tmp = ensure_private_dir(directory / "tmp")
        self._active = ensure_private_dir(directory / "active")

    def recover(self) -> int:
        """Remove half-written messages left by a crash; returns how many."""
        removed = 0
        for entry in self._tmp.iterdir():
            entry.unlink(missing_ok=True)
            removed += 1
        for entry in self._active.glob(".*.tmp"):
            entry.unlink(missing_ok=True)
            removed += 1
        for state in self._active.glob("*.state"):
            if not state.with_suffix(".msg").exists():
                state.unlink(missing_ok=True)
        for msg in self._active.glob("*.msg"):
            if _readable_state(msg.with_suffix(".state")):
                continue
            # A crash lost or emptied the state (the first one is not fsynced on
            # its own); the message was (or may have been) acknowledged: keep it,
            # first try as the timing policy set it.
            try:
                kept = self.load(msg.stem)
            except QueueError:
                self.quarantine(msg.stem)
                continue
            self._write_state(
                QueueState(
                    kept.id,
                    kept.destination,
                    kept.created,
                    next_try=kept.first_try,
                    cover=kept.cover,
                )
            )
        return removed

    def enqueue(
        self,
        destination: str,
        mail_from: str,
        recipients: tuple[str, ...],
        message: bytes,
        *,
        next_try: float | None = None,
        cover: bool = False,
    ) -> QueuedMessage:
        """Store a message durably; once this returns, ``250`` may be sent.

        ``next_try`` (Unix seconds) is when it is first tried, as the timing
        policy decided; ``None``: at once. ``cover`` marks a dummy envelope.
        """
        entry = QueuedMessage(
            id=random_name(),
            destination=destination,
            mail_from=mail_from,
            recipients=recipients,
            message=message,
            envelope_id=nacl.utils.random(16),
            created=time.time(),
            cover=cover,
            first_try=next_try or 0.0,
        )
        header = {
            "destination": entry.destination,
            "mail_from": entry.mail_from,
            "recipients": list(entry.recipients),
            "envelope_id": entry.envelope_id.hex(),
            "created": entry.created,
        }
        if cover:
            header["cover"] = True
        if next_try is not None:
            header["first_try"] = next_try
        plain = json.dumps(header).encode() + b"\n" + message
        state = QueueState(entry.id, destination, entry.created, cover=cover)
        if next_try is not None:
            state = replace(state, next_try=next_try)
        # The state first: the entry appears (the .msg rename) with its first try set.
        # Not fsynced: the directory fsync below commits it (module docstring).
        self._write_state(state, durable=False)
        tmp = self._tmp / f"{entry.id}.msg"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._box.encrypt(plain))
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self._active / f"{entry.id}.msg")
            fsync_dir(self._active)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            (self._active / f"{entry.id}.state").unlink(missing_ok=True)
            raise QueueError(exc.errno, f"could not queue the message: {exc.strerror}") from None
        return entry

    def load(self, queue_id: str) -> QueuedMessage:
        path = self._active / f"{queue_id}.msg"
        try:
            plain = self._box.decrypt(path.read_bytes())
        except OSError as exc:
            raise QueueError(exc.errno, f"queue entry {queue_id}: {exc.strerror}") from None
        except nacl.exceptions.CryptoError:
            raise QueueError(0, f"queue entry {queue_id}: does not decrypt (damaged?)") from None
        head, _, message = plain.partition(b"\n")
        header = json.loads(head)
        return QueuedMessage(
            id=queue_id,
            destination=header["destination"],
            mail_from=header["mail_from"],
            recipients=tuple(header["recipients"]),
            message=message,
            envelope_id=bytes.fromhex(header["envelope_id"]),
            created=float(header["created"]),
            cover=header.get("cover") is True,
            first_try=float(header.get("first_try", 0.0)),
        )

    def states(self) -> list[QueueState]:
        """Every entry, dummies included (what the delivery agent works through)."""
        return list_queue(self.directory, include_cover=True)

    def record_failure(self, state: QueueState, error: str, next_try: float) -> QueueState:
        updated = replace(state, attempts=state.attempts + 1, next_try=next_try, last_error=error)
        self._write_state(updated)
        return updated

    def quarantine(self, queue_id: str) -> Path:
        """Move an unreadable entry out of the queue into ``damaged/`` (kept, not lost)."""
        damaged = ensure_private_dir(self.directory / "damaged")
        for suffix in (".msg", ".state"):
            source = self._active / f"{queue_id}{suffix}"
            if source.exists():
                os.rename(source, damaged / source.name)
        fsync_dir(damaged)
        fsync_dir(self._active)
        return damaged / f"{queue_id}.msg"

    def reschedule_all(self, next_try: float) -> int:
        """Make every message waiting for a retry due at ``next_try``; returns how many.

        Used when tor is back: messages still held by the timing policy keep
        their time (a tor restart must not release them all at once).
        """
        return reschedule_queue(self.directory, next_try, include_held=False)

    def remove(self, queue_id: str) -> None:
        """Forget a delivered or bounced message (durably)."""
        (self._active / f"{queue_id}.msg").unlink(missing_ok=True)
        (self._active / f"{queue_id}.state").unlink(missing_ok=True)
        fsync_dir(self._active)

    def _write_state(self, state: QueueState, *, durable: bool = True) -> None:
        try:
            write_private_file(
                self._active / f"{state.id}.state",
                json.dumps(asdict(state)).encode(),
                durable=durable,
            )
        except OSError as exc:
            raise QueueError(exc.errno, f"could not update the queue: {exc.strerror}") from None


def reschedule_queue(directory: Path, next_try: float, *, include_held: bool = True) -> int:
    """Bring waiting entries' next try forward to ``next_try``; needs no key.

    ``queue flush`` moves every entry, including mail the timing policy still
    holds (the user asked for it to go now); with ``include_held=False`` only
    entries waiting for a retry move: a never-tried entry keeps the first try
    the timing policy gave it. Returns how many messages moved, not counting
    dummies (cover traffic), which move too.
    """
    count = 0
    for state in list_queue(directory, include_cover=True):
        if state.attempts == 0 and not include_held:
            continue
        if state.next_try > next_try and state.destination != "?":
            path = directory / "active" / f"{state.id}.state"
            write_private_file(path, json.dumps(asdict(replace(state, next_try=next_try))).encode())
            count += 0 if state.cover else 1
    return count


def _readable_state(path: Path) -> bool:
    try:
        QueueState(**json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError):
        return False
    return True


def list_queue(directory: Path, *, include_cover: bool = False) -> list[QueueState]:
    """The queue's states, oldest first; readable without the identity key.

    Dummy envelopes (cover traffic) are left out unless ``include_cover``:
    ``onionmail queue`` and ``status`` show the user's mail only.

    Runs while the delivery agent removes delivered entries, so an entry that
    vanishes between the directory listing and the read is simply skipped.
    """
    states = [s for s in iter_queue(directory) if include_cover or not s.cover]
    return sorted(states, key=lambda s: s.created)


def iter_queue(directory: Path) -> Iterator[QueueState]:
    """Every entry's state, in directory order, read one at a time (memory stays flat)."""
    active = directory / "active"
    if not active.is_dir():
        return
    with os.scandir(active) as entries:
        for entry in entries:
            if not entry.name.endswith(".msg"):
                continue
            msg = Path(entry.path)
            try:
                yield QueueState(**json.loads(msg.with_suffix(".state").read_bytes()))
                continue
            except FileNotFoundError:
                pass  # just removed, or a crash's leftover (recover() writes its state)
            except (OSError, ValueError, TypeError):
                pass
            try:
                yield QueueState(msg.stem, "?", msg.stat().st_mtime)
            except FileNotFoundError:
                continue  # removed meanwhile: delivered or bounced


@dataclass(frozen=True)
class DueScan:
    """What one pass over the queue found for the delivery agent."""

    due: list[QueueState]
    """The earliest due entries, at most the scan's limit, earliest first."""
    more_due: bool
    """More entries were due than the limit."""
    next_due: float | None
    """The earliest try time among the entries not yet due."""


def scan_due(directory: Path, now: float, limit: int, skip: Collection[str] = ()) -> DueScan:
    """The entries due at ``now`` (at most ``limit``, earliest first) and the next try after.

    One pass, holding at most ``limit`` states: a queue of 100,000 messages
    (tor down for a day) costs the agent a directory read, not 100,000
    objects in memory.
    """
    heap: list[tuple[float, str, QueueState]] = []  # the latest due on top (negated)
    more, next_due = False, None
    for state in iter_queue(directory):
        if state.id in skip:
            continue
        if state.next_try > now:
            if next_due is None or state.next_try < next_due:
                next_due = state.next_try
            continue
        item = (-state.next_try, state.id, state)
        if len(heap) < limit:
            heapq.heappush(heap, item)
        else:
            more = True
            heapq.heappushpop(heap, item)
    due = [state for _, _, state in sorted(heap, reverse=True)]
    return DueScan(due, more, next_due)
