"""Cost as work grows: the box's RSS and accept rate with its Maildir and its queue filled.

Run: ``.venv/bin/python -m bench.growth [--quick] [--messages M] [--repeats R] [--json FILE]``.

A real :class:`onionmail.box.daemon.Box` (made with ``create_box``) runs in a
child process (``--serve``), started with ``Box.start()`` but without tor: its
:class:`~onionmail.tor.control.BoxTor` is replaced by one that launches
nothing, "publishes" nothing and whose SOCKS port is a closed port on
127.0.0.1, so every delivery attempt fails and is rescheduled, as with tor
down (as in ``bench.memory``, which runs the same servers and agent in its
own process). The load generator is ``bench.accept``'s asyncio client, in
this process: a new connection per message, 5 KB messages, M messages
(2,000; quick 500) per run over 1 and over 8 concurrent sessions, to

- the **inbound** server: plain SMTP from a contact (``carol@example.org``,
  in the address book) to ``alice``, stored in her INBOX (fsynced);
- the **submission** server: AUTH PLAIN as ``alice`` to an onion recipient,
  queued (fsynced), with the box's copy in ``.Sent``.

The work the box already holds grows between runs:

- **Maildir**: ``alice``'s INBOX holds 0, 10,000, 100,000, 1,000,000 messages
  (quick: 0, 1,000, 10,000) in ``cur/``, small realistic mails written
  straight to disk (no fsync). One box, its Maildir grown from one size to the
  next, restarted for each.
- **queue**: a second fresh box with 100,000 entries (quick: 10,000) in its
  outbound queue, queued with ``OutboundQueue.enqueue`` and marked failed
  once (``record_failure``: "tor down"), next try 6 to 7 hours on: the
  agent reads them at every pass over the queue but tries none during the
  run.

For each size: the box's start (``Box.start()``, seconds), then, after 2 s,
the box process's ``VmRSS`` and ``VmHWM`` (from ``/proc/<pid>/status``);
then R runs (3) of each server x sessions cell, interleaved; then RSS
again. What a run delivered or queued is removed before the next run, so
every run sees the size it is labelled with.

**Reference**: the empty box (empty Maildir, empty queue), measured in the
same run. Each size's rate is given as a ratio to it, and its RSS as a
difference. **Threshold**: per-message cost stays flat when the median
accept rate at every size is at least 0.9x the empty box's, for both
session counts, judged on the inbound server for the Maildir sizes and on
the submission server for the queue sizes ("met"/"missed"; the other
server's ratios are shown too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.accept import PASSWORD, PEER, Target, asyncio_load
from bench.common import (
    add_arguments,
    free_port,
    print_table,
    ratio,
    serve_child,
    serve_or_report,
    summary,
)
from onionmail.box.create import NewBox, create_box
from onionmail.box.daemon import Box, BoxPaths
from onionmail.config.box import load_config
from onionmail.seal.identity import Identity, load_identity
from onionmail.store.contacts import AddressBook
from onionmail.store.credentials import Credentials
from onionmail.store.queue import OutboundQueue, queue_key
from onionmail.tor.control import BoxTor, Progress

MAILDIR_SIZES, QUICK_MAILDIR_SIZES = (0, 10_000, 100_000, 1_000_000), (0, 1_000, 10_000)
QUEUE_SIZES, QUICK_QUEUE_SIZES = (100_000,), (10_000,)
MESSAGE_BYTES = 5 * 1024
SESSIONS = (1, 8)
SERVERS = ("inbound", "submission")
FLAT = 0.9
"""Accept rate at every size, as a fraction of the empty box's, for "met"."""
SETTLE = 2.0
"""Seconds between the box's start and the first RSS reading (its agent's first pass)."""
START_TIMEOUT, STOP_TIMEOUT = 900.0, 120.0
FILL_THREADS = 8
"""Concurrent enqueues while filling the queue (each one fsyncs)."""
HOLD = 6 * 3600.0
"""The pre-filled entries' next try is HOLD to HOLD + 1 h on: none is due during the run."""
BASE_TIME = 1_700_000_000
PROGRESS_EVERY = 100_000


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- the box, in a child process --------------------------------------------------------


class NoTor(BoxTor):
    """A tor that is down: nothing launched, nothing published, SOCKS on a closed port."""

    async def start(self, progress: Progress | None = None) -> None:
        self.socks_address = ("127.0.0.1", free_port())  # nothing listens there
        self.bootstrap_percent, self.bootstrap_summary = 100, "no tor (benchmark)"

    async def publish(
        self, identity: Identity, target_port: int, progress: Progress | None = None
    ) -> None:
        self.published = True

    def alive(self) -> bool:
        return True  # the supervisor never restarts it

    async def stop(self) -> None:
        return None


async def serve(box_dir: Path) -> None:
    """Start the box, print its ports and start time, serve until stdin closes, stop."""
    config = load_config(box_dir)
    box = Box(config, load_identity(BoxPaths(box_dir).identity))
    box.tor = NoTor(config.tor, box.paths.tor, {})
    box.devices.tor = box.tor
    started = time.perf_counter()
    await box.start()
    start_seconds = time.perf_counter() - started
    await asyncio.sleep(SETTLE)
    ready = {
        "inbound": box.inbound_port,
        "submission": box.submission_port,
        "onion": box.onion,
        "start_seconds": start_seconds,
    }
    print(json.dumps(ready), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        started = time.perf_counter()
        async with asyncio.timeout(STOP_TIMEOUT):
            await box.stop()
        print(json.dumps({"stop_seconds": time.perf_counter() - started}), flush=True)


@dataclass
class BoxProcess:
    pid: int
    ports: dict[str, int]
    onion: str
    start_seconds: float
    stop_seconds: float = 0.0


def read_line(child: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The child's next line, as JSON, waiting at most ``timeout`` seconds."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    line = child.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"the box said nothing in {timeout:.0f} s (exit {child.poll()})")
    result: dict[str, Any] = json.loads(line)
    return result


@contextmanager
def box_process(box_dir: Path) -> Iterator[BoxProcess]:
    with serve_child("bench.growth", box_dir, STOP_TIMEOUT + 10) as child:
        ready = read_line(child, START_TIMEOUT)
        ports = {name: int(ready[name]) for name in SERVERS}
        running = BoxProcess(child.pid, ports, str(ready["onion"]), float(ready["start_seconds"]))
        yield running
        assert child.stdin is not None
        child.stdin.close()
        running.stop_seconds = float(read_line(child, STOP_TIMEOUT + 10)["stop_seconds"])


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of process ``pid``, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


# --- filling ----------------------------------------------------------------------------


def make_box(directory: Path) -> NewBox:
    """A fresh box: ``alice``, the benchmark's password, ``carol@example.org`` a contact."""
    new = create_box(directory, "alice", submission_port=0)
    Credentials(BoxPaths(new.box_dir).credentials).set_password("alice", PASSWORD)
    AddressBook(new.box_dir).put("carol", PEER)
    return new


TEMPLATES = (
    b"Hello Alice,\n\nthe minutes of Tuesday's meeting are below; tell me what I missed.\n\n"
    + b"- item: the budget for next year, to be agreed by the end of the month\n" * 12,
    b"Hi,\n\nare we still on for Friday? I can bring the books back then.\n\nCarol\n",
    b"Dear Alice,\n\nthank you for your order. It will ship within three days.\n\n"
    + b"  1 x something useful                                 12.00 EUR\n" * 30,
    b"> quoted text from the message before, as replies carry it along\n" * 40
    + b"\nAgreed, let us do it that way.\n",
)


def stored_message(onion: str, n: int) -> bytes:
    """Message ``n`` of the pre-filled INBOX: as the box stores mail (LF line ends)."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(BASE_TIME + n * 60))
    head = (
        f"Return-Path: <{PEER}>\n"
        f"Authentication-Results: {onion}; onionmail=none smtp.mailfrom={PEER}\n"
        f"From: Carol <{PEER}>\nTo: alice@{onion}\nSubject: growth message {n}\n"
        f"Date: {date}\nMessage-ID: <growth-{n}@example.org>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
    )
    return head.encode() + TEMPLATES[n % len(TEMPLATES)]


def fill_maildir(folder: Path, onion: str, first: int, last: int) -> int:
    """Write messages ``first`` to ``last - 1`` into ``folder/cur`` (read); bytes written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    written = 0
    directory = os.open(folder / "cur", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in range(first, last):
            data = stored_message(onion, n)
            name = f"{BASE_TIME + n * 60}.growth{n:07d}.onionmail:2,S"
            fd = os.open(name, flags, 0o600, dir_fd=directory)
            try:
                written += os.write(fd, data)
            finally:
                os.close(fd)
            if (n + 1) % PROGRESS_EVERY == 0:
                say(f"  Maildir: {n + 1:,} messages")
    finally:
        os.close(directory)
    return written


def fill_queue(new: NewBox, first: int, last: int) -> None:
    """Queue entries ``first`` to ``last - 1``, each failed once, next try HOLD on."""
    queue = OutboundQueue(BoxPaths(new.box_dir).queue, queue_key(new.identity.seed))
    onions = [Identity.generate().onion_address for _ in range(20)]
    sender = new.address

    def one(n: int) -> None:
        onion = onions[n % len(onions)]
        body = TEMPLATES[n % len(TEMPLATES)].replace(b"\n", b"\r\n")
        message = (
            f"From: {sender}\r\nTo: friend{n % 50}@{onion}\r\nSubject: queued {n}\r\n"
            f"Message-ID: <queued-{n}@{new.identity.onion_address}>\r\n\r\n"
        ).encode() + body
        later = time.time() + HOLD + random.uniform(0, 3600)
        entry = queue.enqueue(onion, sender, (f"friend{n % 50}@{onion}",), message, next_try=later)
        queue.record_failure(entry.first_state(), "tor down (growth benchmark)", later)

    step = 1_000
    with ThreadPoolExecutor(FILL_THREADS) as pool:
        for start in range(first, last, step):
            list(pool.map(one, range(start, min(last, start + step))))
            if (start + step) % (PROGRESS_EVERY // 10) == 0:
                say(f"  queue: {start + step:,} entries")


def disk_used(path: Path) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


# --- one size: start, measure, stop -----------------------------------------------------


def clear(directory: Path) -> int:
    """Remove every file in ``directory`` (if it exists); how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            os.unlink(entry.path)
            removed += 1
    return removed


def remove_new(box_dir: Path, cutoff: float) -> tuple[int, int]:
    """Remove what a run delivered and queued (INBOX ``new/``, ``.Sent``, queue files
    written after ``cutoff``); how many INBOX messages and queue entries that was."""
    time.sleep(1.0)  # the last messages' .Sent copies and first attempts, after their 250
    paths = BoxPaths(box_dir)
    inbox = paths.maildir("alice")
    stored = clear(inbox / "new")  # the pre-filled messages are in cur/
    for sub in ("new", "cur"):
        clear(inbox / ".Sent" / sub)
    queued = 0
    with os.scandir(paths.queue / "active") as entries:
        for entry in entries:
            try:
                if entry.stat().st_mtime >= cutoff:
                    os.unlink(entry.path)
                    queued += entry.name.endswith(".msg")
            except FileNotFoundError:
                continue  # the agent's temporary state file, renamed meanwhile
    return stored, queued


async def bounded_load(target: Target, sessions: int, count: int) -> tuple[float, int]:
    async with asyncio.timeout(60 + count):  # at least 1 message/s, or something hangs
        return await asyncio_load(target, MESSAGE_BYTES, sessions, count)


def measure(
    new: NewBox, label: str, sizes: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    say(f"{label}: starting the box")
    with box_process(new.box_dir) as box:
        say(f"{label}: box started in {box.start_seconds:.2f} s")
        after_start = rss(box.pid)
        targets = {
            "inbound": Target("inbound", box.ports["inbound"], PEER, f"alice@{box.onion}"),
            "submission": Target(
                "submission",
                box.ports["submission"],
                new.address,
                f"dave@{Identity.generate().onion_address}",
                auth=True,
            ),
        }
        cutoff = time.time()
        rates: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for server, target in targets.items():
                for sessions in SESSIONS:
                    seconds, failed = asyncio.run(bounded_load(target, sessions, args.messages))
                    if failed:
                        raise RuntimeError(f"{label}: {server} x{sessions}: {failed} failed")
                    stored, queued = remove_new(new.box_dir, cutoff)
                    expected = (args.messages, 0) if server == "inbound" else (0, args.messages)
                    if (stored, queued) != expected:
                        raise RuntimeError(f"{label}: {server}: {stored} stored, {queued} queued")
                    rates.setdefault(f"{server} x{sessions}", []).append(args.messages / seconds)
        after = rss(box.pid)
    say(f"{label}: measured; box stopped in {box.stop_seconds:.2f} s")
    return {
        "label": label,
        **sizes,
        "start_seconds": box.start_seconds,
        "stop_seconds": box.stop_seconds,
        "rss_kib": {"after start": after_start, "after accepts": after},
        "rates": {cell: summary(values) for cell, values in rates.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.messages = args.messages or (500 if args.quick else 2_000)
    maildir_sizes = args.maildir_sizes or (QUICK_MAILDIR_SIZES if args.quick else MAILDIR_SIZES)
    queue_sizes = args.queue_sizes or (QUICK_QUEUE_SIZES if args.quick else QUEUE_SIZES)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        root = Path(tmp)
        base = disk_used(root)
        new = make_box(root / "maildir-box")
        folder = BoxPaths(new.box_dir).maildir("alice")
        filled = written = 0
        for size in sorted(maildir_sizes):
            started = time.perf_counter()
            if size > filled:
                say(f"filling the Maildir: {filled:,} -> {size:,} messages")
                written += fill_maildir(folder, new.identity.onion_address, filled, size)
                filled = size
            fill = time.perf_counter() - started
            if fill > 0.1:
                say(f"  filled in {fill:.1f} s ({written / 2**20:,.0f} MiB of messages)")
            result = measure(new, f"Maildir {size:,}", {"maildir": size, "queue": 0}, args)
            result.update(
                fill_seconds=fill, maildir_bytes=written, disk_delta=disk_used(root) - base
            )
            runs.append(result)
        new = make_box(root / "queue-box")
        queued = 0
        for size in sorted(s for s in queue_sizes if s):
            started = time.perf_counter()
            say(f"filling the queue: {queued:,} -> {size:,} entries")
            fill_queue(new, queued, size)
            queued = size
            fill = time.perf_counter() - started
            say(f"  filled in {fill:.1f} s")
            result = measure(new, f"queue {size:,}", {"maildir": 0, "queue": size}, args)
            result.update(fill_seconds=fill, disk_delta=disk_used(root) - base)
            runs.append(result)
        say("removing the temporary directory")
    judge(runs)
    return {
        "messages": args.messages,
        "message_bytes": MESSAGE_BYTES,
        "repeats": args.repeats,
        "sessions": list(SESSIONS),
        "threshold": FLAT,
        "reference": runs[0]["label"],
        "runs": runs,
    }


def judge(runs: list[dict[str, Any]]) -> None:
    """Ratios to the first run (the empty box) and the verdict of every other run."""
    reference = runs[0]
    for result in runs:
        result["ratios"] = {
            cell: ratio(s["median"], reference["rates"][cell]["median"])
            for cell, s in result["rates"].items()
        }
        server = "submission" if result["queue"] else "inbound"
        judged = [r for cell, r in result["ratios"].items() if cell.startswith(server)]
        result["judged_on"] = server
        result["flat"] = all(r is not None and r >= FLAT for r in judged)


# --- the report -------------------------------------------------------------------------


def report(data: dict[str, Any]) -> None:
    runs = data["runs"]
    rows = []
    for result in runs:
        for cell, s in result["rates"].items():
            mark = "*" if cell.startswith(result["judged_on"]) else ""
            rows.append([result["label"], cell + mark, s["median"], s["min"], s["max"]])
            rows[-1].append(result["ratios"][cell])
    print_table(
        f"accept rate, messages/s, {data['messages']:,} messages of "
        f"{data['message_bytes'] // 1024} KB per run, {data['repeats']} runs interleaved "
        "(new connection per message)",
        ["box holds", "server x sessions", "median", "min", "max", "/empty"],
        rows,
    )
    print("  * the server judged at that size (inbound: Maildir sizes; submission: queue sizes)")
    ref = runs[0]["rss_kib"]
    mib = 1024
    print_table(
        "the box process: start, stop and memory (MiB); delta against the empty box",
        ["box holds", "fill s", "start s", "stop s", "RSS", "delta", "RSS after", "delta", "peak"],
        [
            [
                r["label"],
                r["fill_seconds"],
                r["start_seconds"],
                r["stop_seconds"],
                r["rss_kib"]["after start"]["VmRSS"] / mib,
                (r["rss_kib"]["after start"]["VmRSS"] - ref["after start"]["VmRSS"]) / mib,
                r["rss_kib"]["after accepts"]["VmRSS"] / mib,
                (r["rss_kib"]["after accepts"]["VmRSS"] - ref["after accepts"]["VmRSS"]) / mib,
                r["rss_kib"]["after accepts"]["VmHWM"] / mib,
            ]
            for r in runs
        ],
    )
    print("  RSS: after start (+2 s); RSS after: after the accepts; peak: VmHWM at the end")
    disk = max(r.get("disk_delta", 0) for r in runs)
    print(
        f"  disk used by the run, at most (approximate, whole file system): {disk / 2**20:,.0f} MiB"
    )
    print(f"\nflat per-message cost: median rate >= {FLAT:g}x the empty box's, both session counts")
    for result in runs[1:]:
        judged = [v for c, v in result["ratios"].items() if c.startswith(result["judged_on"])]
        verdict = "met" if result["flat"] else "missed"
        lowest = min((v for v in judged if v is not None), default=0.0)
        print(f"  {result['label']} ({result['judged_on']}): lowest {lowest:.2f}x, {verdict}")


def sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--messages", type=int, default=0, help="per run (2,000; quick 500)")
    parser.add_argument(
        "--maildir-sizes", type=sizes, help="e.g. 0,10000 (the smallest: the reference)"
    )
    parser.add_argument("--queue-sizes", type=sizes, help="e.g. 100000 (0: none)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    return serve_or_report(parser.parse_args(argv), "growth", serve, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
