"""The receiver's memory of delivered envelope ids: exactly-once delivery of retries.

A sender that lost our ``250`` retries the same envelope id in a new session
(see :mod:`onionmail.seal.envelope`). The inbound server asks :meth:`seen`
before delivering and calls :meth:`record` after the message is durable in
the Maildir, so a retry is acknowledged without being stored twice. Between
the two, :meth:`begin` keeps the Maildir file name the message is stored
under: a crash after the message is stored but before :meth:`record` leaves
that name behind, and the sender's retry finds its own file instead of
storing a second copy.

The cache is bounded by time, not by count: an envelope created more than
``window`` seconds ago is refused as stale by
:func:`~onionmail.seal.envelope.verify_binding`, so its id need not be
remembered any longer. Entries are pruned when the cache opens, on every
:meth:`record`, and on demand with :meth:`prune`.

Storage is SQLite with ``synchronous=FULL`` (a recorded id survives a crash
or power loss once :meth:`record` returns), file 0600 in a 0700 directory
(SQLite gives its ``-wal`` and ``-shm`` files the database file's mode).
Write-ahead log, not a rollback journal: a commit is one append and one
fsync of the log instead of a journal file created, fsynced and deleted
around two writes of the database; with two commits per message received,
the rollback journal was the largest part of the inbound server's work
(bench/onion.py). Calls come from ``asyncio.to_thread`` workers: one
connection shared under a lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from onionmail.core.errors import OnionMailError
from onionmail.core.files import ensure_private_dir
from onionmail.seal.envelope import MAX_ENVELOPE_AGE

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    envelope_id BLOB PRIMARY KEY,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS delivered_created ON delivered (created);
CREATE TABLE IF NOT EXISTS storing (
    envelope_id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    created INTEGER NOT NULL
);
"""


class ReplayCacheError(OnionMailError, OSError):
    """The replay cache could not be opened, read or written."""


class ReplayCache:
    """Envelope ids delivered within the last ``window`` seconds, on disk."""

    def __init__(
        self,
        path: Path,
        window: int = MAX_ENVELOPE_AGE,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the cache at ``path`` and prune expired entries.

        ``clock`` gives "now" for the automatic pruning; tests replace it.
        """
        self.path = path
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = self._guard("open", lambda: _connect(path))
        self.prune(clock())

    def seen(self, envelope_id: bytes) -> bool:
        """Whether ``envelope_id`` was recorded (and not yet pruned)."""

        def query() -> bool:
            row = self._conn.execute(
                "SELECT 1 FROM delivered WHERE envelope_id = ?", (envelope_id,)
            ).fetchone()
            return row is not None

        return self._guard("read", query)

    def begin(self, envelope_id: bytes, created: int, name: str) -> tuple[str, bool]:
        """Note that ``envelope_id`` is being stored as ``name``; durable when this returns.

        Returns the name to store under and whether an earlier attempt began
        with it (then it may already be stored: see :meth:`Maildir.holds`).
        """

        def write() -> tuple[str, bool]:
            with self._conn:
                row = self._conn.execute(
                    "SELECT name FROM storing WHERE envelope_id = ?", (envelope_id,)
                ).fetchone()
                if row is not None:
                    return str(row[0]), True
                self._conn.execute(
                    "INSERT INTO storing (envelope_id, name, created) VALUES (?, ?, ?)",
                    (envelope_id, name, created),
                )
                return name, False

        return self._guard("write", write)

    def record(self, envelope_id: bytes, created: int) -> None:
        """Remember ``envelope_id``; durable when this returns. Prunes expired ids."""
        cutoff = self._clock() - self.window

        def write() -> None:
            with self._conn:
                self._conn.execute(
                    "INSERT OR IGNORE INTO delivered (envelope_id, created) VALUES (?, ?)",
                    (envelope_id, created),
                )
                self._conn.execute("DELETE FROM storing WHERE envelope_id = ?", (envelope_id,))
                self._conn.execute("DELETE FROM delivered WHERE created < ?", (cutoff,))
                self._conn.execute("DELETE FROM storing WHERE created < ?", (cutoff,))

        self._guard("write", write)

    def prune(self, now: float) -> int:
        """Forget ids created before ``now - window``; returns how many."""

        def delete() -> int:
            with self._conn:
                cursor = self._conn.execute(
                    "DELETE FROM delivered WHERE created < ?", (now - self.window,)
                )
                self._conn.execute("DELETE FROM storing WHERE created < ?", (now - self.window,))
                return cursor.rowcount

        return self._guard("prune", delete)

    def __len__(self) -> int:
        """How many ids the cache holds."""

        def count() -> int:
            value: int = self._conn.execute("SELECT COUNT(*) FROM delivered").fetchone()[0]
            return value

        return self._guard("read", count)

    def close(self) -> None:
        """Close the database; further calls raise :class:`ReplayCacheError`."""
        self._guard("close", self._conn.close)

    def __enter__(self) -> ReplayCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _guard(self, action: str, operation: Callable[[], _T]) -> _T:
        """Run ``operation`` under the lock; storage failures become ReplayCacheError."""
        with self._lock:
            try:
                return operation()
            except (sqlite3.Error, OSError) as exc:
                raise ReplayCacheError(
                    f"replay cache {self.path}: could not {action}: {exc}"
                ) from exc


def _connect(path: Path) -> sqlite3.Connection:
    """Create the file 0600 (in a 0700 directory) before SQLite opens it."""
    ensure_private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn
