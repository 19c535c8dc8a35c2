"""The gateway scaled out: clearnet accepts per second with 1, 2 and 3 instances.

``python -m bench.gateway_scale [--quick] [--repeats N] [--json FILE]``

Each instance is a gateway process (:class:`gateway.daemon.Gateway`) running its
clearnet side alone, with no tor and no delivery: the accept path, which is
what an MX instance spends per message (the SMTP session, SPF and DMARC
through a real validating Unbound, the alias looked up in the PostgreSQL all
instances share, the message sealed to its box and fsynced in the instance's
own queue before the ``250``). Postfix's ``smtp-source`` sends 5 KB messages
to registered aliases, 10 sessions per instance, to every instance at once.
Reported: messages per second over the slowest instance's time, median and
min-max over the repeats, and the ratio to one instance. On 2 cores it cannot
be linear: the instances, PostgreSQL, Unbound and the load generator share
them.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.accept import Target, smtp_source_load
from bench.common import add_arguments, free_port, print_table, run_and_report

DOMAIN = "gw.test"
SENDER = "bob@clear.test"
SIZE = 5 * 1024
SESSIONS = 10
ALIASES = 100


async def serve(gw_dir: Path) -> None:
    """In a child process: one instance's clearnet side; prints its port, runs until killed."""
    from gateway.config import load_gateway_config
    from gateway.daemon import Gateway, GatewayPaths
    from onionmail.seal.identity import load_identity

    config = load_gateway_config(gw_dir)
    gateway = Gateway(config, load_identity(GatewayPaths(gw_dir).identity))
    await asyncio.to_thread(gateway.box_queue.recover)
    await gateway._start_clearnet_side()  # the accept path only: no tor, no agents
    print(gateway.smtp_port, flush=True)
    await asyncio.Event().wait()


def register_aliases(url: str, state: Path) -> list[str]:
    """``ALIASES`` approved aliases, each for a box of its own; their names."""
    from gateway.storage import Database
    from onionmail.seal.identity import Identity

    db = Database(url, state)
    aliases = [f"u{n:03d}" for n in range(ALIASES)]
    with db.transaction(exclusive=True) as cur:
        for alias in aliases:
            onion = Identity.generate().onion_address
            cur.execute(
                "INSERT INTO registrations (alias, box, onion, state, requested) "
                "VALUES (?, ?, ?, 'approved', 0)",
                (alias, f"{alias}@{onion}", onion),
            )
    db.close()
    return aliases


def make_instances(root: Path, count: int, url: str, dns: Any) -> list[Path]:
    """``count`` gateway directories sharing one identity (``keys/``) and database."""
    first = root / "gw1"
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "init", "--dir", str(first), "--domain", DOMAIN],
        check=True,
        capture_output=True,
    )
    dirs = [first]
    for n in range(2, count + 1):
        other = root / f"gw{n}"
        other.mkdir(mode=0o700)
        shutil.copytree(first / "keys", other / "keys")
        dirs.append(other)
    for gw_dir in dirs:
        (gw_dir / "gateway.toml").write_text(
            f'[gateway]\ndomain = "{DOMAIN}"\nrequire_approval = false\n'
            f'[smtp]\nport = {free_port()}\nrate_allow = ["127.0.0.1"]\n'
            f'[dns]\nresolver = "{dns.resolver_host}"\nport = {dns.resolver_port}\n'
            f'[storage]\nurl = "{url}"\n'
        )
    return dirs


@contextmanager
def running(gw_dir: Path) -> Iterator[int]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_scale", "--serve", str(gw_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the instance in {gw_dir} did not start")
        yield int(line)
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def accept_rate(dirs: list[Path], aliases: list[str], per_instance: int) -> float:
    """Messages per second accepted by every instance in ``dirs`` loaded at once."""
    with ExitStack() as stack:
        ports = [stack.enter_context(running(d)) for d in dirs]
        results: list[tuple[float, int]] = []
        threads = [
            threading.Thread(
                target=lambda port=port, alias=alias: results.append(
                    smtp_source_load(
                        Target("gateway", port, SENDER, f"{alias}@{DOMAIN}"),
                        SIZE,
                        SESSIONS,
                        per_instance,
                    )
                )
            )
            for port, alias in zip(ports, aliases, strict=False)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    failures = sum(f for _, f in results)
    if failures:
        raise RuntimeError(f"{failures} message(s) refused: the benchmark measures accepts")
    return len(dirs) * per_instance / max(seconds for seconds, _ in results)


def run(args: argparse.Namespace) -> dict[str, Any]:
    # dnspython's DNSSEC module (the test DNS server signs zones) warns about DSA on import.
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    from tests.dns_server import Zone, running_dns, txt
    from tests.postgres import private_postgres

    if not shutil.which("smtp-source"):
        raise SystemExit("smtp-source (Postfix) is needed: make bench-deps")
    per_instance = 200 if args.quick else 1000
    zones = [Zone("clear.test", [txt("@", "v=spf1 ip4:127.0.0.1 -all")])]
    rates: dict[str, list[float]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        private_postgres(Path(tmp) / "pg") as pg,
        running_dns(zones, Path(tmp) / "dns") as dns,
    ):
        for repeat in range(args.repeats):
            for count in (1, 2, 3):
                root = Path(tmp) / f"run{repeat}-{count}"
                url = pg.create_database(f"accept{repeat}x{count}")
                aliases = register_aliases(url, root / "state")
                dirs = make_instances(root, count, url, dns)
                rates.setdefault(str(count), []).append(accept_rate(dirs, aliases, per_instance))
    return {
        "per_instance": per_instance,
        "size": SIZE,
        "sessions_per_instance": SESSIONS,
        "accepts_per_s": {
            n: {"median": statistics.median(v), "min": min(v), "max": max(v)}
            for n, v in rates.items()
        },
    }


def report(data: dict[str, Any]) -> None:
    rates = data["accepts_per_s"]
    one = rates["1"]["median"]
    print_table(
        f"clearnet accepts per second, N instances on one PostgreSQL "
        f"({data['size'] // 1024} KB, {data['sessions_per_instance']} sessions each)",
        ["instances", "median", "min", "max", "vs 1"],
        [[n, r["median"], r["min"], r["max"], r["median"] / one] for n, r in rates.items()],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    return run_and_report(args, "gateway_scale", run, report)


if __name__ == "__main__":
    sys.exit(main())
