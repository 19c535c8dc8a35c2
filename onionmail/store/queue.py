"""The durable outbound queue: what the box acknowledged, it keeps until delivered or bounced.

Layout under ``BOXDIR/queue`` (0700)::

    tmp/              messages being written (removed at start-up: never acknowledged)
    active/<id>.msg   one line in clear (destination onion, created, first try, cover),
                      then the message, encrypted (AES-256-GCM, key derived from the identity)
    active/<id>.state attempts, next try, last error (JSON); only once the state changed
    damaged/          entries that do not load: kept, never sent

**One file per accepted message**, written to ``tmp/``, renamed into
``active/``, then the file and ``active/`` fsynced before ``250`` goes out
(the file's fsync writes the new name with it: one disk flush per message).
A power cut between rename and fsync can leave a torn entry for a message
never acknowledged; it fails to load and moves to ``damaged/``. Files rather
than SQLite: a message is one immutable file, under a random name that says
nothing about the mail.

**The clear header** (``omq3`` and JSON with exactly ``destination``,
``created``, ``first_try``, ``cover``) lets ``onionmail queue``, the TUI and
the agent's scans (:func:`scan_due`) work without the key, and an entry
appears already held as the timing policy decided. It names no sender,
recipient or subject, and it is the cipher's associated data, so an edited
header makes the entry fail to load rather than go elsewhere.

**The cipher** is AES-256-GCM with a random 96-bit nonce (about 2^32
messages per key, far beyond a personal box's queue), streamed over the
parts and written with one ``writev``. The key is derived from the identity
seed (``om-queue-v1``, then ``om-queue-gcm``), so a copy of the queue
directory alone reveals neither bodies nor senders nor recipients.

**The state file** is written only when the state changes (a failed
attempt, a reschedule), atomically and durably. No ``.state`` means never
tried yet; a damaged one means the same (at worst an early retry).

Cover traffic (:mod:`onionmail.box.cover_traffic`) goes through the same
queue, marked ``cover`` in the clear header so listings can leave dummies
out without the key; whoever reads the queue directory can tell them apart,
as they can read destinations and times: cover traffic is aimed at the
network's observers, not the disk's.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import nacl.utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onionmail.core.errors import QueueError
from onionmail.core.files import (
    ensure_private_dir,
    fsync_dir,
    random_name,
    write_all,
    write_private_file,
)
from onionmail.seal.identity import derive_subkey

CLEAR_HEADER_MAGIC = b"omq3 "
"""How a ``.msg`` starts: a clear header, then AES-256-GCM (the layout written now)."""
GCM_NONCE_BYTES = 12
CLEAR_HEADER_MAX = 1024
"""Bytes read to find the clear header line (it is about 150)."""
_COMPACT = (",", ":")


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
    """When the timing policy let it go first (0: at once); the state of a never-tried entry."""
    dsn_to: str = ""
    """Where a failure is reported when not to ``mail_from``'s own Maildir: the clearnet
    sender of mail a gateway relays to a box (kept encrypted, like the envelope)."""
    dsn_names: tuple[str, ...] = ()
    """The recipients as ``dsn_to`` addressed them (a gateway's aliases), one per
    recipient in order: a report names those, never the box behind them."""

    def first_state(self) -> QueueState:
        """Its state as :meth:`OutboundQueue.enqueue` left it (never tried yet)."""
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
        self._gcm_key = derive_subkey(key, b"om-queue-gcm")
        ensure_private_dir(directory)
        self._tmp = ensure_private_dir(directory / "tmp")
        self._active = ensure_private_dir(directory / "active")

    def recover(self) -> int:
        """Remove half-written files left by a crash; returns how many messages.

        Also: a state file whose message is gone is removed; a damaged one is
        removed (never tried yet: the header's first try holds); an entry
        without a readable clear header moves to ``damaged/`` (kept, not sent).
        """
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
            state_path = msg.with_suffix(".state")
            if _read_state(state_path) is not None:
                continue
            if _read_clear_state(msg) is not None:
                state_path.unlink(missing_ok=True)  # damaged: back to "never tried yet"
                continue
            self.quarantine(msg.stem)
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
        dsn_to: str = "",
        dsn_names: tuple[str, ...] = (),
    ) -> QueuedMessage:
        """Store a message durably; once this returns, ``250`` may be sent.

        ``next_try`` (Unix seconds) is when it is first tried, as the timing
        policy decided; ``None``: at once. ``cover`` marks a dummy envelope.
        One file: written to ``tmp/``, renamed into ``active/``, then the
        file and ``active/`` fsynced (module docstring).
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
            dsn_to=dsn_to,
            dsn_names=dsn_names,
        )
        clear = _clear_header(entry)
        secret: dict[str, Any] = {
            "mail_from": entry.mail_from,
            "recipients": list(entry.recipients),
            "envelope_id": entry.envelope_id.hex(),
        }
        if dsn_to or dsn_names:
            secret.update(dsn_to=dsn_to, dsn_names=list(dsn_names))
        chunks = self._seal(clear, json.dumps(secret, separators=_COMPACT).encode(), message)
        name = f"{entry.id}.msg"
        tmp, final = self._tmp / name, self._active / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, *chunks)
                os.rename(tmp, final)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self._active)
        except OSError as exc:
            # Not acknowledged: leave nothing that could be delivered after a 451.
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise QueueError(exc.errno, f"could not queue the message: {exc.strerror}") from None
        return entry

    def _seal(self, clear: bytes, secret: bytes, message: bytes) -> list[bytes]:
        """``clear``, then ``secret`` and ``message`` encrypted: the chunks to write in turn."""
        nonce = os.urandom(GCM_NONCE_BYTES)
        encryptor = Cipher(algorithms.AES(self._gcm_key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(clear)
        chunks = [clear, nonce, encryptor.update(secret + b"\n"), encryptor.update(message)]
        chunks.append(encryptor.finalize())  # empty for GCM; the API asks for the call
        chunks.append(encryptor.tag)
        return chunks

    def _open(self, queue_id: str, data: bytes, line: bytes) -> bytes:
        """The plaintext of an entry whose clear header ``line`` starts ``data``."""
        if not line:
            raise QueueError(0, f"queue entry {queue_id}: no clear header (damaged?)")
        try:
            with memoryview(data) as view:
                nonce = view[len(line) : len(line) + GCM_NONCE_BYTES]
                sealed = view[len(line) + GCM_NONCE_BYTES :]
                return AESGCM(self._gcm_key).decrypt(nonce, sealed, line)
        except (InvalidTag, ValueError):
            raise QueueError(
                0, f"queue entry {queue_id}: does not decrypt (damaged, altered or another key?)"
            ) from None

    def size(self, queue_id: str) -> int:
        """The entry's file size in bytes (about the message's; 0 if it is gone)."""
        try:
            return (self._active / f"{queue_id}.msg").stat().st_size
        except FileNotFoundError:
            return 0

    def load(self, queue_id: str) -> QueuedMessage:
        """The whole entry, decrypted; :class:`QueueError` if it cannot be."""
        path = self._active / f"{queue_id}.msg"
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise QueueError(exc.errno, f"queue entry {queue_id}: {exc.strerror}") from None
        line, clear = _parse_clear_header(data)
        plain = self._open(queue_id, data, line)
        head, _, message = plain.partition(b"\n")
        try:
            header = json.loads(head)
            header.update(clear or {})  # checked by the decryption (associated data)
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
                dsn_to=str(header.get("dsn_to", "")),
                dsn_names=tuple(str(n) for n in header.get("dsn_names", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise QueueError(0, f"queue entry {queue_id}: unreadable header (damaged?)") from None

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

    def _write_state(self, state: QueueState) -> None:
        try:
            write_private_file(self._active / f"{state.id}.state", _state_bytes(state))
        except OSError as exc:
            raise QueueError(exc.errno, f"could not update the queue: {exc.strerror}") from None


def reschedule_queue(directory: Path, next_try: float, *, include_held: bool = True) -> int:
    """Bring waiting entries' next try forward to ``next_try``; needs no key.

    ``queue flush`` moves every entry, including mail the timing policy still
    holds (the user asked for it to go now); with ``include_held=False`` only
    entries waiting for a retry move: a never-tried entry keeps the first try
    the timing policy gave it. Returns how many messages moved, not counting
    dummies (cover traffic), which move too. A moved entry gets a state file
    (durable) if it had none.
    """
    count = 0
    for state in list_queue(directory, include_cover=True):
        if state.attempts == 0 and not include_held:
            continue
        if state.next_try > next_try and state.destination != "?":
            path = directory / "active" / f"{state.id}.state"
            write_private_file(path, _state_bytes(replace(state, next_try=next_try)))
            count += 0 if state.cover else 1
    return count


def list_queue(directory: Path, *, include_cover: bool = False) -> list[QueueState]:
    """The queue's states, oldest first; readable without the identity key.

    Dummy envelopes (cover traffic) are left out unless ``include_cover``:
    ``onionmail queue`` and ``status`` show the user's mail only.

    Runs while the delivery agent removes delivered entries, so an entry that
    vanishes between the directory listing and the read is simply skipped.
    """
    states = [s for s in iter_queue(directory) if include_cover or not s.cover]
    return sorted(states, key=lambda s: s.created)


def count_queue(directory: Path) -> int:
    """How many messages are queued, dummies (cover traffic) left out, as ``status`` shows.

    One entry at a time: counting a queue of 100,000 (tor down for a day)
    builds no list of them (a list, even freed, stays in the process's RSS).
    """
    return sum(1 for state in iter_queue(directory) if not state.cover)


def iter_queue(directory: Path) -> Iterator[QueueState]:
    """Every entry's state, in directory order, read one at a time (memory stays flat).

    The ``.state`` file where there is a readable one; otherwise the
    ``.msg``'s clear header (never tried yet); otherwise (a damaged entry,
    which the delivery agent's load quarantines) a placeholder with
    destination ``"?"``, due at once.
    """
    active = directory / "active"
    if not active.is_dir():
        return
    with os.scandir(active) as entries:
        for entry in entries:
            if not entry.name.endswith(".msg"):
                continue
            msg = Path(entry.path)
            state = _read_state(msg.with_suffix(".state"))
            if state is None:
                try:
                    state = _read_clear_state(msg)
                    if state is None:
                        state = QueueState(msg.stem, "?", msg.stat().st_mtime)
                except FileNotFoundError:
                    continue  # removed meanwhile: delivered or bounced
            yield state


def _clear_header(entry: QueuedMessage) -> bytes:
    fields = {
        "destination": entry.destination,
        "created": entry.created,
        "first_try": entry.first_try,
        "cover": entry.cover,
    }
    return CLEAR_HEADER_MAGIC + json.dumps(fields, separators=_COMPACT).encode() + b"\n"


def _parse_clear_header(data: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """``(line with its newline, fields)``, or ``(b"", None)`` when ``data`` has no clear header."""
    if not data.startswith(CLEAR_HEADER_MAGIC):
        return b"", None
    end = data.find(b"\n", 0, CLEAR_HEADER_MAX)
    if end < 0:
        return b"", None
    line = data[: end + 1]
    try:
        fields = json.loads(line[len(CLEAR_HEADER_MAGIC) :])
        checked = {
            "destination": str(fields["destination"]),
            "created": float(fields["created"]),
            "first_try": float(fields["first_try"]),
            "cover": fields["cover"] is True,
        }
    except (ValueError, KeyError, TypeError):
        return b"", None
    return line, checked


def _read_clear_state(msg: Path) -> QueueState | None:
    """A never-tried entry's state from its clear header; None if it has none.

    Raises :class:`FileNotFoundError` if the message is gone.
    """
    try:
        with open(msg, "rb", buffering=0) as handle:
            start = handle.read(CLEAR_HEADER_MAX)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    _, clear = _parse_clear_header(start)
    if clear is None:
        return None
    return QueueState(
        msg.stem,
        clear["destination"],
        clear["created"],
        next_try=clear["first_try"],
        cover=clear["cover"],
    )


def _read_state(path: Path) -> QueueState | None:
    """The state file's content; None when it is missing or damaged (never tried yet)."""
    try:
        return QueueState(**json.loads(path.read_bytes()))
    except (OSError, ValueError, TypeError):
        return None


def _state_bytes(state: QueueState) -> bytes:
    return json.dumps(asdict(state)).encode()


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
