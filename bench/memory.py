"""Resident memory of an idle box, and after queueing many small messages (the queue is on disk).

Run: ``.venv/bin/python -m bench.memory [--quick] [--messages N] [--json FILE]``.

A real :class:`onionmail.box.daemon.Box` (created with ``create_box``) runs in this
process without tor: its inbound and submission servers and its delivery
agent start, the agent's SOCKS port is a closed port on 127.0.0.1 (every
delivery attempt fails and is rescheduled, as with tor down). RSS
(``VmRSS``, and the peak ``VmHWM``) is read from ``/proc/self/status``:

1. reference: the interpreter with onionmail imported, before the box starts;
2. the idle box, after 2 s;
3. after ``Box.submit`` of half, then all of N small (1 KB) messages
   (100,000; quick 10,000), 16 submissions in flight — the path behind
   the submission server's ``250`` (durable, fsynced), then ``gc.collect()``.

Growth per message over the second half says whether memory is bounded: a
queue kept on disk should add nearly nothing per queued message. The Python
objects' allocated blocks are counted at each point too: the part of the
growth that objects kept alive would show. The agent's
attempt tasks and in-flight set at the end are reported next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import add_arguments, free_port, print_table, write_results
from onionmail.box.create import create_box
from onionmail.box.daemon import Box
from onionmail.config.box import load_config
from onionmail.core.mail_address import parse_mail_address
from onionmail.seal.identity import Identity

IN_FLIGHT = 16


def rss() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB, and the Python objects' allocated blocks.

    ``blocks`` (``sys.getallocatedblocks``) counts what the interpreter holds:
    if it does not grow with the queue, RSS growth is the C allocator's
    (freed memory kept in its per-thread arenas), not objects kept alive.
    """
    values: dict[str, int] = {"blocks": sys.getallocatedblocks()}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def small_message(sender: str, rcpt: str, number: int) -> bytes:
    body = ("memory benchmark line\r\n" * 40)[:900]
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: small {number}\r\n"
        f"Message-ID: <mem-{number}@bench.test>\r\n\r\n{body}"
    ).encode()


async def measure(root: Path, count: int) -> dict[str, Any]:
    gc.collect()
    points: dict[str, Any] = {"python + onionmail imported (reference)": rss()}
    new = create_box(root / "box", "alice", submission_port=0)
    box = Box(load_config(new.box_dir), new.identity)
    box.tor.socks_address = ("127.0.0.1", free_port())  # nothing listens: tor is "down"
    box._lock.acquire()
    try:
        ensure = box.paths.state
        ensure.mkdir(parents=True, exist_ok=True)
        from onionmail.store.replay_cache import ReplayCache

        box.replay_cache = ReplayCache(ensure / "replay.sqlite")
        await box._start_inbound()
        await box._start_submission()
        box._start_agent()
        await asyncio.sleep(2)
        gc.collect()
        points["idle box (servers + agent, no tor)"] = rss()
        sender = parse_mail_address(box.address("alice"))
        rcpt = parse_mail_address(f"bob@{Identity.generate().onion_address}")
        started = time.perf_counter()
        sent = 0

        async def submit_range(first: int, last: int) -> None:
            nonlocal sent
            for base in range(first, last, IN_FLIGHT):
                await asyncio.gather(
                    *(
                        box.submit(sender, [rcpt], small_message(str(sender), str(rcpt), n))
                        for n in range(base, min(last, base + IN_FLIGHT))
                    )
                )
                sent = min(last, base + IN_FLIGHT)

        await submit_range(0, count // 2)
        gc.collect()
        points[f"after {count // 2:,} queued"] = rss()
        await submit_range(count // 2, count)
        seconds = time.perf_counter() - started
        gc.collect()
        points[f"after {count:,} queued"] = rss()
        queued = sum(1 for _ in (box.paths.queue / "active").glob("*.msg"))
        assert box.agent is not None
        # what the agent holds in memory for the queue: one task per due message
        agent_tasks = len(box.agent._tasks)
        agent_in_flight = len(box.agent._in_flight)
    finally:
        await box.stop()
    return {
        "points_kib": points,
        "queued": queued,
        "submit_rate": sent / seconds,
        "agent_tasks": agent_tasks,
        "agent_in_flight": agent_in_flight,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    count = args.messages or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        data = asyncio.run(measure(Path(tmp), count))
    points = data["points_kib"]
    names = list(points)
    ref, idle, half, full = (points[n]["VmRSS"] for n in names)
    data["messages"] = count
    data["idle_over_reference"] = idle / ref
    data["growth_kib"] = full - idle
    data["bytes_per_message_second_half"] = (full - half) * 1024 / (count - count // 2)
    blocks = [points[n]["blocks"] for n in names]
    data["python_blocks_second_half"] = blocks[3] - blocks[2]
    return data


def report(data: dict[str, Any]) -> None:
    points = data["points_kib"]
    ref = points[next(iter(points))]["VmRSS"]
    print_table(
        f"box memory (RSS), {data['messages']:,} small messages queued "
        f"at {data['submit_rate']:,.0f}/s, {data['queued']:,} on disk",
        ["point", "RSS MiB", "peak MiB", "/reference"],
        [[n, p["VmRSS"] / 1024, p["VmHWM"] / 1024, p["VmRSS"] / ref] for n, p in points.items()],
    )
    print(
        f"  growth idle -> full queue: {data['growth_kib'] / 1024:.1f} MiB; "
        f"second half: {data['bytes_per_message_second_half']:.0f} bytes per queued message; "
        f"Python objects' blocks over the second half: {data['python_blocks_second_half']:+,}"
    )
    print(
        f"  delivery agent at the end: {data['agent_tasks']:,} attempt tasks, "
        f"{data['agent_in_flight']:,} messages in flight (SOCKS port closed)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, repeats=1)
    parser.add_argument("--messages", type=int, default=0, help="queued (100,000; quick 10,000)")
    args = parser.parse_args(argv)
    data = run(args)
    report(data)
    write_results(args.json, "memory", data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
