"""The gateway's shared state behind one interface: SQLite by default, PostgreSQL to scale out.

What lives here: the registrations (:mod:`gateway.registry`), the sending
limits' counters (:mod:`gateway.outbound.sending_limits`) and the box mail
keys. With ``[storage] url`` empty the engine is SQLite in
``GWDIR/state/gateway.sqlite`` (one machine, nothing to set up; a
``registrations.json`` from an older gateway is moved in once). With
``url = "postgresql://..."`` it is PostgreSQL through psycopg 3, shared by
every instance of the gateway, so an alias registered through one instance
is known to all and a limit of N holds whichever instance a message reaches.

The schema is plain versioned SQL (``gateway/migrations/NNNN_*.sql``),
applied in order, each in one transaction with its number recorded in
``schema_version``: the same files for both engines (their common SQL: ``ON
CONFLICT``, no engine-specific types). A write that must see a consistent
table (a registration's rules, a limit's check-and-count) runs in
:meth:`Database.transaction` with ``exclusive=True``: ``BEGIN IMMEDIATE`` in
SQLite, a transaction-scoped advisory lock in PostgreSQL.

Queued message bodies are not here: they stay sealed in each instance's own
queue directory (``docs/scale-out.md`` says why, and what that leaves).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import GatewayConfigError

log = logging.getLogger(__name__)

SQLITE_NAME = "gateway.sqlite"
LOCK_ID = 0x6F6E696F  # the advisory lock of exclusive transactions (PostgreSQL)


class Cursor(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


class _SqliteCursor:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(args)).fetchall()


class _PgCursor:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), tuple(args))
            return list(cur.fetchall()) if cur.description is not None else []


class Database:
    """One engine, opened and migrated; :meth:`transaction` gives a :class:`Cursor`.

    Thread-safe: one connection under a lock (SQLite); for PostgreSQL, connections
    kept in a small pool, one per transaction in progress (worker threads may run
    several at once).
    """

    def __init__(self, url: str, state_dir: Path) -> None:
        self.url = url
        self.engine = "postgresql" if url.startswith(("postgresql://", "postgres://")) else ""
        if url and not self.engine:
            raise GatewayConfigError(
                f"[storage] url: {url.split(':', 1)[0]!r} is not supported; "
                "leave it empty (SQLite) or give postgresql://user@host/db"
            )
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._all: list[Any] = []
        if self.engine:
            self.engine = "postgresql"
            self._check_psycopg()
        else:
            self.engine = "sqlite"
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = state_dir / SQLITE_NAME
            fresh = not path.exists()
            self._sqlite = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            if fresh:
                path.chmod(0o600)
            self._sqlite.execute("PRAGMA synchronous=FULL")
            self._sqlite.execute("PRAGMA busy_timeout=10000")
        self.opened = True
        """Whether there is something to close (``__init__`` got that far)."""
        self.migrate()

    @staticmethod
    def _check_psycopg() -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - a locked dependency
            raise GatewayConfigError("[storage] url: PostgreSQL needs psycopg 3") from None

    def _take(self) -> Any:
        import psycopg

        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        try:
            conn = psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        except psycopg.Error as exc:
            raise GatewayConfigError(f"[storage] url: cannot connect: {exc}") from None
        with self._lock:
            self._all.append(conn)
        return conn

    def _give_back(self, conn: Any) -> None:
        with self._lock:
            self._idle.append(conn)

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[Cursor]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        if self.engine == "sqlite":
            with self._lock:
                conn = self._sqlite
                conn.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
                try:
                    yield _SqliteCursor(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            return
        conn = self._take()
        try:
            cursor = _PgCursor(conn)
            if exclusive:
                cursor.execute("SELECT pg_advisory_xact_lock(?)", (LOCK_ID,))
            yield cursor
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            self._give_back(conn)

    def migrate(self) -> int:
        """Apply the migrations not applied yet; the schema version now."""
        files = sorted(
            (f for f in resources.files("gateway").joinpath("migrations").iterdir()
             if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )  # fmt: skip
        with self.transaction(exclusive=True) as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        version = 0
        for file in files:
            number = int(file.name.split("_", 1)[0])
            statements = [s.strip() for s in file.read_text().split(";") if s.strip()]
            # Checked again under the lock: instances starting together apply each once.
            with self.transaction(exclusive=True) as db:
                done = db.execute("SELECT 1 FROM schema_version WHERE version = ?", (number,))
                if not done:
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
                    log.info("storage: schema migrated to version %d (%s)", number, self.engine)
            version = number
        return version

    def __del__(self) -> None:
        # A Database dropped without close() (a short-lived one in a command or a
        # test) closes its connections rather than leaving them to the collector.
        if self.__dict__.get("opened"):
            self.close()

    def close(self) -> None:
        if self.engine == "sqlite":
            with self._lock:
                self._sqlite.close()
        else:
            with self._lock:
                for conn in self._all:
                    conn.close()
                self._all.clear()
                self._idle.clear()


class StoredReplay:
    """Envelope ids and registration nonces seen, in the shared database (the gateway's
    replay cache: ``seen`` before acting, ``record`` once done). Entries older than
    ``window`` (envelopes that old are refused as stale anyway) are pruned as it goes."""

    def __init__(self, db: Database, window: int, clock: Any = None) -> None:
        import time

        self.db = db
        self.window = window
        self._clock = clock or time.time
        self._records = 0

    def seen(self, envelope_id: bytes) -> bool:
        with self.db.transaction() as cur:
            return bool(cur.execute("SELECT 1 FROM replay WHERE id = ?", (envelope_id.hex(),)))

    def record(self, envelope_id: bytes, created: int) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO replay (id, created) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                (envelope_id.hex(), int(created)),
            )
            self._records += 1
            if self._records % 256 == 1:
                horizon = int(self._clock()) - self.window
                cur.execute("DELETE FROM replay WHERE created < ?", (horizon,))

    def close(self) -> None:
        """Nothing of its own to close: the database is the gateway's."""


def open_database(config: Any) -> Database:
    """The database of a gateway's configuration, an older ``registrations.json`` moved in."""
    db = Database(config.storage.url, config.gateway_dir / "state")
    import_registrations_json(db, config.gateway_dir / "registrations.json")
    return db


def import_registrations_json(db: Database, path: Path) -> int:
    """Move an older gateway's ``registrations.json`` into ``db`` once; how many entries.

    The file is renamed ``registrations.json.imported`` afterwards (kept, not
    deleted), so the import happens once and can be checked.
    """
    if not path.exists():
        return 0
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data.get("registrations", [])
    with db.transaction(exclusive=True) as cur:
        for e in entries:
            cur.execute(
                "INSERT INTO registrations (alias, box, onion, state, requested, decided, "
                "request, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (alias) DO NOTHING",
                (
                    e["alias"],
                    e["box"],
                    e["box"].rpartition("@")[2],
                    e["state"],
                    e["requested"],
                    e.get("decided", 0.0),
                    e.get("request", ""),
                    e.get("signature", ""),
                ),
            )
    path.rename(path.with_name(path.name + ".imported"))
    log.warning("storage: %d registration(s) moved from %s into the database", len(entries), path)
    return len(entries)
