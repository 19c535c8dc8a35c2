"""The gateway's registry at scale: lookups among 100,000 aliases, registrations per second.

``python -m bench.registry [--quick] [--repeats N]``

1. **Lookup**: ``Registry.get`` of random aliases among 100,000 (10,000 with
   ``--quick``), on SQLite and on a private PostgreSQL (tests/postgres.py),
   p50 and p95; target: p95 under 1 ms on both.
2. **Registrations per second** with 1, 2 and 3 processes (gateway instances'
   storage, without their tor) against one PostgreSQL, each registering new
   aliases through ``Registry.request`` (a signed request, verified rules, an
   exclusive transaction): the total rate and its ratio to one process. On
   2 cores it cannot be linear, and the exclusive transaction (the registry's
   rules must see every other instance's writes) serializes the writes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import add_arguments, percentile, print_table, run_and_report


def fill(url: str, state: Path, count: int) -> list[str]:
    """``count`` registrations written straight into the table (fast), their aliases."""
    from gateway.storage import Database

    db = Database(url, state)
    aliases = [f"a{n:06d}" for n in range(count)]
    with db.transaction(exclusive=True) as cur:
        for alias in aliases:
            cur.execute(
                "INSERT INTO registrations (alias, box, onion, state, requested) "
                "VALUES (?, ?, ?, 'approved', 0)",
                (alias, f"{alias}@{alias}.onion", f"{alias}.onion"),
            )
    db.close()
    return aliases


def lookups(url: str, state: Path, aliases: list[str], count: int) -> list[float]:
    from gateway.registry import Registry
    from gateway.storage import Database

    db = Database(url, state)
    registry = Registry(db)
    times = []
    for alias in random.sample(aliases, min(count, len(aliases))):
        start = time.perf_counter()
        found = registry.get(alias)
        times.append(time.perf_counter() - start)
        assert found is not None
    db.close()
    return times


def register_for(url: str, count: int) -> tuple[int, float]:
    """In a child process: ``count`` registrations through Registry.request (signed in
    advance); how many went through and the seconds they took."""
    from gateway.registry import Registry
    from gateway.storage import Database
    from onionmail.gateway_link.protocol import build_registration
    from onionmail.seal.identity import Identity

    gateway = Identity.generate().onion_address
    boxes = [Identity.generate() for _ in range(100)]
    requests = [
        build_registration(b, f"u{n}@{b.onion_address}", gateway, f"r{uuid.uuid4().hex[:16]}")
        for n in range(count)
        for b in [boxes[n % len(boxes)]]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Database(url, Path(tmp)))
        done = 0
        start = time.perf_counter()
        for request in requests:
            registry.request(request, require_approval=False, max_per_box=10**6)
            done += 1
        elapsed = time.perf_counter() - start
        registry.db.close()
    return done, elapsed


def registrations(url: str, processes: int, count: int) -> float:
    """Registrations per second of ``processes`` at once, ``count`` each."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.registry", "--register", url, str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = [child.communicate(timeout=600)[0].split() for child in children]
    done = sum(int(r[0]) for r in results)
    return done / max(float(r[1]) for r in results)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.postgres import private_postgres

    count = 10_000 if args.quick else 100_000
    per_process = 300 if args.quick else 2000
    result: dict[str, Any] = {"aliases": count}
    with tempfile.TemporaryDirectory() as tmp, private_postgres(Path(tmp)) as pg:
        for engine, url in (("sqlite", ""), ("postgresql", pg.create_database("lookups"))):
            state = Path(tmp) / engine
            aliases = fill(url, state, count)
            times = lookups(url, state, aliases, 2000 if args.quick else 10_000)
            result[f"lookup_{engine}"] = {
                "p50": statistics.median(times),
                "p95": percentile(times, 95),
                "max": max(times),
            }
        rates: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for n in (1, 2, 3):
                url = pg.create_database(f"reg{uuid.uuid4().hex[:10]}")
                rates.setdefault(str(n), []).append(registrations(url, n, per_process))
        result["registrations_per_s"] = {
            n: {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for n, v in rates.items()
        }
    return result


def report(data: dict[str, Any]) -> None:
    rows = []
    for engine in ("sqlite", "postgresql"):
        cell = data[f"lookup_{engine}"]
        met = "met" if cell["p95"] < 0.001 else "missed"
        rows.append([engine, cell["p50"] * 1000, cell["p95"] * 1000, cell["max"] * 1000, met])
    print_table(
        f"Registry.get among {data['aliases']:,} aliases (ms)",
        ["engine", "p50", "p95", "max", "p95 < 1 ms"],
        rows,
    )
    regs = data["registrations_per_s"]
    one = regs["1"]["median"]
    print_table(
        "registrations per second, N processes on one PostgreSQL",
        ["processes", "median", "min", "max", "vs 1"],
        [[n, r["median"], r["min"], r["max"], r["median"] / one] for n, r in regs.items()],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--register", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.register:
        done, elapsed = register_for(args.register[0], int(args.register[1]))
        print(done, elapsed)
        return 0
    return run_and_report(args, "registry", run, report)


if __name__ == "__main__":
    sys.exit(main())
