"""A private PostgreSQL cluster for tests: ``initdb`` and ``postgres`` in a temp directory.

Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin``), a
cluster of its own with trust authentication for one user on 127.0.0.1 and a
unix socket in the cluster's directory; the system's cluster and service are
never touched. PostgreSQL refuses to run as root, so as root the server runs
as an ordinary user in a user namespace (:data:`tests.device_clients.AS_USER`).
A missing PostgreSQL fails the test that needs it: it never skips.
"""

from __future__ import annotations

import glob
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.box_process import free_port
from tests.device_clients import AS_USER

USER = "onionmail"


def postgres_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise AssertionError("PostgreSQL is not installed (Debian: apt install postgresql)")
    return Path(found[-1]).parent


@dataclass
class PrivatePostgres:
    port: int
    process: subprocess.Popen[bytes]

    def url(self, database: str = "gateway") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def private_postgres(root: Path) -> Iterator[PrivatePostgres]:
    """Start a cluster in ``root``; stopped (by its PID) when the block ends."""
    bindir = postgres_bin()
    data = root / "pgdata"
    subprocess.run(
        [*AS_USER, str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
         "-E", "UTF8", "--locale=C", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [*AS_USER, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
         "-k", str(root), "-c", "listen_addresses=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = PrivatePostgres(port, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(server.url("postgres"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the private PostgreSQL did not start") from None
                time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGINT)  # fast shutdown: clients still connected are cut
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
