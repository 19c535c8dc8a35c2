"""What the box's accept rate pays for: its directory fsync, and its one event loop.

Run: ``.venv/bin/python -m bench.accept_cost [--quick] [--messages N] [--repeats R] [--json FILE]``.

A diagnostic for issue 21's first target (every ``bench.accept`` cell at
least Postfix's rate), not a target of its own. The box's inbound server
(plain mail from a non-onion sender, stored in a Maildir, as ``bench.accept``'s
``box inbound``) is run four ways, each in child processes of its own, beside
the same private Postfix, all on 127.0.0.1 and driven by Postfix's
``smtp-source`` (a new connection per message), interleaved:

- ``box``: as the box runs it, one process: the message's file fsynced, renamed
  into ``new/``, then ``new/`` fsynced, before ``250``.
- ``box, no directory fsync``: the same, without the fsync of ``new/``. **Not
  durable** (a crash right after ``250`` can lose the message's name): it exists
  only here, to measure the one fsync per message that the box makes and Postfix
  does not (Postfix fsyncs the queue file, not its directory).
- ``box, 2 processes``: two processes serving one port (``SO_REUSEPORT``, the
  kernel spreads the connections), each with its own event loop and storage
  threads, storing into the same Maildir: what a listener per core would give.
  The box itself serves each listener from one process.
- ``box, 2 processes, no directory fsync``: both of the above (not durable).

The ratios are against ``postfix`` (queue with fsync, then discard) in the same
run. ``postfix, a second instance`` is an identical Postfix beside it: how far
two equal servers differ on this machine, run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.accept import (
    PEER,
    POSTFIX_RCPT,
    Target,
    inbound_handler,
    measure_cells,
    postfix_instance,
    smtp_source_load,
    wait_for_port,
)
from bench.common import add_arguments, free_port, print_table, run_and_report


@dataclass(frozen=True)
class Variant:
    name: str
    processes: int = 1
    directory_fsync: bool = True


VARIANTS = (
    Variant("box"),
    Variant("box, no directory fsync", directory_fsync=False),
    Variant("box, 2 processes", processes=2),
    Variant("box, 2 processes, no directory fsync", processes=2, directory_fsync=False),
)


# --- the box's inbound server, in child processes ---------------------------------------


async def serve(directory: Path, port: int, directory_fsync: bool) -> None:
    """Serve the box's inbound handler on ``port`` (shared with siblings) until stdin closes."""
    from onionmail.core.files import use_storage_threads
    from onionmail.seal.identity import Identity
    from onionmail.smtp.protocol import SMTPProtocol
    from onionmail.smtp.session import Listener
    from onionmail.store import maildir
    from onionmail.store.replay_cache import ReplayCache

    if not directory_fsync:  # the variant that is not durable: see the module's text
        maildir.fsync_dir = lambda path: None  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    use_storage_threads(loop)
    identity = Identity((directory / "seed").read_bytes())
    with tempfile.TemporaryDirectory(dir=directory) as own:  # each process its replay cache
        cache = ReplayCache(Path(own) / "replay.sqlite")
        handler = inbound_handler(identity, directory / "mail", cache)
        listener = Listener(
            handler,
            connection_limits=[],
            hostname=identity.onion_address,
            data_size_limit=32 * 1024 * 1024,
            timeout=60,
        )
        server = await loop.create_server(
            lambda: SMTPProtocol(listener, loop), "127.0.0.1", port, backlog=128, reuse_port=True
        )
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()
        cache.close()


@contextmanager
def box_variant(root: Path, variant: Variant, seed: bytes) -> Iterator[int]:
    """Start ``variant``'s processes on one free port; yield the port."""
    directory = root / f"box-{VARIANTS.index(variant)}"
    directory.mkdir()
    (directory / "seed").touch(mode=0o600)  # a throwaway identity, still kept private
    (directory / "seed").write_bytes(seed)
    port = free_port()
    argv = [sys.executable, "-m", "bench.accept_cost", "--serve", str(directory)]
    argv += ["--port", str(port)] + ([] if variant.directory_fsync else ["--no-directory-fsync"])
    children = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(variant.processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{variant.name}: the box's server did not start")
        wait_for_port(port)
        yield port
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# --- the benchmark ----------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    from onionmail.seal.identity import Identity

    count = args.messages or (500 if args.quick else 3_000)
    identity = Identity.generate()
    rcpt = f"bob@{identity.onion_address}"
    with tempfile.TemporaryDirectory(prefix="bench-accept-cost-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        pf = stack.enter_context(postfix_instance(root))
        targets = [
            Target(v.name, stack.enter_context(box_variant(root, v, identity.seed)), PEER, rcpt)
            for v in VARIANTS
        ]
        targets.append(Target("postfix", pf.smtp, "a@x.test", POSTFIX_RCPT))
        (root / "second").mkdir()
        twin = stack.enter_context(postfix_instance(root / "second"))
        targets.append(Target("postfix, a second instance", twin.smtp, "a@x.test", POSTFIX_RCPT))
        loads = [(target.name, partial(smtp_source_load, target)) for target in targets]
        results = measure_cells(loads, args.repeats, count)
    return {"messages": count, "repeats": args.repeats, "generator": "smtp-source", **results}


def report(data: dict[str, Any]) -> None:
    rows = []
    for key, cell in data.items():
        if not isinstance(cell, dict) or "postfix" not in cell:
            continue
        postfix, box = cell["postfix"]["median"], cell["box"]["median"]
        for name, s in cell.items():
            rows.append([key, name, s["median"], s["min"], s["max"]])
            rows[-1] += [s["median"] / postfix, s["median"] / box]
    print_table(
        f"what accepting costs, messages/s, {data['messages']} messages per run, "
        f"{data['repeats']} runs interleaved, smtp-source (new connection per message)",
        ["size x sessions", "server", "median", "min", "max", "/postfix", "/box"],
        rows,
    )
    print("  'no directory fsync' is not durable: it measures the fsync Postfix does not make")
    twin = "postfix, a second instance"
    for key, cell in data.items():
        if isinstance(cell, dict) and twin in cell:
            above = cell[twin]["min"] > cell["postfix"]["max"]
            print(
                f"  {key}: the second Postfix's slowest run "
                f"{'above' if above else 'not above'} the first's fastest "
                f"({cell[twin]['min']:.0f} vs {cell['postfix']['max']:.0f}/s)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--messages", type=int, default=0, help="per run (3,000; quick 500)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-directory-fsync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.port, not args.no_directory_fsync))
        return 0
    return run_and_report(args, "accept_cost", run, report)


if __name__ == "__main__":
    raise SystemExit(main())
