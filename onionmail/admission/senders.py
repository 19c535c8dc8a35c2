"""Who may write to the box: senders it knows, senders it blocks, and how much each sent.

``BOXDIR/state/senders.sqlite`` (0600, SQLite with ``synchronous=FULL``):

- ``known``: senders the owner wrote to (recorded at submission) or accepted
  from ``Requests``; with the address book (``contacts.toml``) they are the
  box's contacts, whose mail goes to INBOX and never pays;
- ``blocked``: senders whose mail is refused (``550 5.7.1`` at RCPT);
- ``counts``: messages accepted per sender and per hour, and from all
  strangers together, so the per-sender limits survive a restart.

A sender is keyed by its onion for onion mail (a box is one party, whatever
the local part) and by its whole address, lower case, for clearnet mail a
gateway relays. The file holds only a keyed hash of each (BLAKE2b, with a key
derived from the box's seed, as the ledger does): whoever takes the disk does
not read there whom the owner writes to; with the key (the seed, which a
passphrase protects) a guessed address can be checked, no more.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

from onionmail.core.errors import OnionMailError
from onionmail.core.files import ensure_private_dir
from onionmail.core.mail_address import MailAddress
from onionmail.seal.identity import derive_subkey

STRANGERS = "*strangers"
"""The counter of all strangers' mail together."""
HOUR = 3600
KEEP_HOURS = 48

_SCHEMA = """
CREATE TABLE IF NOT EXISTS known (key TEXT PRIMARY KEY, why TEXT NOT NULL, since INTEGER);
CREATE TABLE IF NOT EXISTS blocked (key TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counts (
    key TEXT NOT NULL, hour INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key, hour)
);
"""


def senders_key(seed: bytes) -> bytes:
    """The key of the sender book's hashes, from the box's seed."""
    return derive_subkey(seed, b"om-senders-v1")


class SenderBookError(OnionMailError, OSError):
    """The sender book could not be opened, read or written."""


def sender_key(address: MailAddress | str) -> str:
    """The key a sender is known by: its onion, or its whole clearnet address."""
    text = str(address).lower()
    domain = text.rsplit("@", 1)[-1]
    return domain if domain.endswith(".onion") else text


class SenderBook:
    """Known, blocked and counted senders of one box (calls from worker threads)."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._key = key
        self._lock = threading.Lock()
        try:
            ensure_private_dir(path.parent)
            fresh = not path.exists()
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            if fresh:
                path.chmod(0o600)
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SenderBookError(f"{path}: cannot open the sender book: {exc}") from None

    def _h(self, key: str) -> str:
        return hashlib.blake2b(key.encode(), key=self._key, digest_size=16).hexdigest()

    def _run(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise SenderBookError(f"{self.path}: {exc}") from None

    def is_known(self, key: str) -> bool:
        return bool(self._run("SELECT 1 FROM known WHERE key = ?", self._h(key)))

    def know(self, key: str, why: str) -> None:
        """Make ``key`` a contact ("wrote-to", "accepted"); unblocks it."""
        key = self._h(key)
        self._run("DELETE FROM blocked WHERE key = ?", key)
        self._run(
            "INSERT INTO known (key, why, since) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
            key,
            why,
            int(time.time()),
        )

    def known_count(self) -> int:
        return int(str(self._run("SELECT COUNT(*) FROM known")[0][0]))

    def is_blocked(self, key: str) -> bool:
        return bool(self._run("SELECT 1 FROM blocked WHERE key = ?", self._h(key)))

    def block(self, key: str) -> None:
        key = self._h(key)
        self._run("DELETE FROM known WHERE key = ?", key)
        self._run(
            "INSERT INTO blocked (key, since) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            key,
            int(time.time()),
        )

    def unblock(self, key: str) -> bool:
        before = self.is_blocked(key)
        self._run("DELETE FROM blocked WHERE key = ?", self._h(key))
        return before

    def blocked_count(self) -> int:
        """How many senders are blocked (only their hashes are kept)."""
        return int(str(self._run("SELECT COUNT(*) FROM blocked")[0][0]))

    def count(self, key: str, now: float | None = None) -> int:
        """Messages accepted from ``key`` in the last hour (this hour and the part of the
        last one that a sliding hour still covers, weighted)."""
        now = time.time() if now is None else now
        hour, into = divmod(int(now), HOUR)
        rows = self._run(
            "SELECT hour, n FROM counts WHERE key = ? AND hour >= ?", self._h(key), hour - 1
        )
        by_hour = {int(str(h)): int(str(n)) for h, n in rows}
        current = by_hour.get(hour, 0)
        previous = by_hour.get(hour - 1, 0)
        return current + previous * (HOUR - into) // HOUR

    def record(self, keys: list[str], now: float | None = None) -> None:
        """One more message from each of ``keys`` (durable); old hours pruned."""
        hour = int(time.time() if now is None else now) // HOUR
        for key in keys:
            self._run(
                "INSERT INTO counts (key, hour, n) VALUES (?, ?, 1) "
                "ON CONFLICT (key, hour) DO UPDATE SET n = n + 1",
                self._h(key),
                hour,
            )
        self._run("DELETE FROM counts WHERE hour < ?", hour - KEEP_HOURS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __del__(self) -> None:
        # Dropped without close() (a command's, a test's): close rather than leave the
        # connection to the collector, which Python 3.13 warns about.
        conn = self.__dict__.get("_conn")
        if conn is not None:
            conn.close()
