"""A box under attack on its onion listener still takes its mail, in bounded memory.

Run: ``.venv/bin/python -m bench.hostile [--quick] [--messages N] [--json FILE]``.

Starts the private Tor network, a box *bob* with the default limits (as
``onionmail run``, its own process and tor) and a box *alice* that sends to
it, then an attacker: a plain tor client holding bob's configured maximum of
inbound sessions (``[inbound] max_connections``) through Tor, each one of
four kinds, reconnecting as soon as it is closed:

* **bdat-flood**: ``BDAT 9999999999 LAST`` and junk streamed behind it;
* **slow-drip**: a DATA transfer at one line every few seconds;
* **keep-alive**: ``NOOP`` every few seconds, never a message;
* **garbage**: unknown commands and bare line feeds, pipelined.

While they hold the slots, alice's mail client submits N messages to bob
(100; quick 20). Reported: whether all N arrived and how long that took,
bob's peak RSS (its Python process, sampled every 0.5 s; the target with
the default limits is under 150 MiB), and what the attacker's sessions met
(opened, refused, closed by a limit). Every loop is bounded by
:data:`DEADLINE`; only 127.0.0.1 is ever connected to.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.common import RESULTS, write_results
from onionmail.config.box import load_config
from onionmail.tor.socks import SocksError, new_isolation_token, open_tor_stream
from onionmail.tor.testnet.network import (
    client_tor_options,
    load_testnet,
    start_testnet,
    stop_testnet,
)
from tests.box_process import RunningBox, start_box, start_client_tor

DEADLINE = 900.0
"""Seconds the whole attack may last; the messages must arrive within it."""
KINDS = ("bdat-flood", "slow-drip", "keep-alive", "garbage")
MIB = 1024 * 1024


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid``, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Attack:
    socks_port: int
    onion: str
    rcpt: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    seen: Counter[str] = field(default_factory=Counter)
    holding: int = 0
    """Sessions the box has greeted and not yet closed, now."""

    async def session(self, kind: str) -> None:
        sock = await open_tor_stream(
            "127.0.0.1",
            self.socks_port,
            self.onion,
            25,
            timeout=60,
            isolation=new_isolation_token(),
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        self.seen["opened"] += 1
        try:
            banner = await asyncio.wait_for(reader.readline(), 60)
            if not banner.startswith(b"220"):
                self.seen["refused at connect"] += 1
                return
            self.holding += 1
            try:
                writer.write(b"EHLO attacker.test\r\n")
                await getattr(self, kind.replace("-", "_"))(reader, writer)
            finally:
                self.holding -= 1
        finally:
            writer.close()

    async def _replies(self, reader: asyncio.StreamReader) -> None:
        """Read replies until the server closes; count the closing reason."""
        while not self.stop.is_set():
            line = await reader.readline()
            if not line:
                return
            if line.startswith((b"421", b"502 5.5.1")):
                self.seen[f"closed: {line[:60].decode(errors='replace').strip()}"] += 1

    async def _while_open(self, reader: asyncio.StreamReader, send: Any) -> None:
        replies = asyncio.create_task(self._replies(reader))
        try:
            while not replies.done() and not self.stop.is_set():
                await send()
        finally:
            replies.cancel()

    def _envelope(self, writer: asyncio.StreamWriter) -> None:
        writer.write(f"MAIL FROM:<x@example.org>\r\nRCPT TO:<{self.rcpt}>\r\n".encode())

    async def bdat_flood(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._envelope(writer)
        writer.write(b"BDAT 9999999999 LAST\r\n")
        junk = os.urandom(64 * 1024)

        async def send() -> None:
            writer.write(junk)
            await writer.drain()

        await self._while_open(reader, send)

    async def slow_drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._envelope(writer)
        writer.write(b"DATA\r\nSubject: slow\r\n\r\n")

        async def send() -> None:
            writer.write(b"a line, now and then\r\n")
            await writer.drain()
            await asyncio.sleep(3)

        await self._while_open(reader, send)

    async def keep_alive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            writer.write(b"NOOP\r\n")
            await writer.drain()
            await asyncio.sleep(3)

        await self._while_open(reader, send)

    async def garbage(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            writer.write(b"XJUNK 1\r\nbare\nline\r\n" * 4 + b"NOOP\r\n")
            await writer.drain()
            await asyncio.sleep(0.5)

        await self._while_open(reader, send)

    async def worker(self, kind: str) -> None:
        while not self.stop.is_set():
            try:
                await self.session(kind)
            except (OSError, SocksError, TimeoutError) as exc:
                self.seen[f"failed: {type(exc).__name__}"] += 1
            await asyncio.sleep(0.5)


async def send_mail(alice: RunningBox, to: str, count: int) -> None:
    async def client(numbers: range) -> None:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=alice.submission_port,
            local_hostname="localhost",
            start_tls=False,
            timeout=60,
        )
        async with smtp:
            await smtp.login(alice.new.local_part, alice.new.password)
            for n in numbers:
                body = f"Subject: message {n}\r\n\r\n" + "legitimate mail\r\n" * 300
                await smtp.sendmail(alice.address, [to], body.encode())

    await asyncio.gather(*(client(range(i, count, 4)) for i in range(4)))


async def measure(root: Path, messages: int, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    network = root / "testnet"
    say("starting the private Tor network")
    await asyncio.to_thread(start_testnet, network, take_ownership=True, progress=None)
    boxes: list[RunningBox] = []
    client_tor = None
    try:
        bob = await asyncio.to_thread(start_box, root, "bob", network)
        boxes.append(bob)
        alice = await asyncio.to_thread(start_box, root, "alice", network)
        boxes.append(alice)
        slots = load_config(bob.new.box_dir).inbound.max_connections
        client_tor = await asyncio.to_thread(
            start_client_tor, root / "attacker", client_tor_options(load_testnet(network))
        )
        attack = Attack(client_tor.socks_port, bob.onion, bob.address)
        say(f"attacking bob with {slots} sessions ({', '.join(kinds)})")
        workers = [asyncio.create_task(attack.worker(kinds[i % len(kinds)])) for i in range(slots)]
        peak = 0
        samples: list[int] = []
        held: list[int] = []
        inbox = bob.maildir / "new"
        try:
            await asyncio.sleep(20)  # let the attacker take every slot first
            say(f"alice submits {messages} messages while the attacker holds {attack.holding}")
            began = time.monotonic()
            await send_mail(alice, bob.address, messages)
            arrived = 0
            while time.monotonic() - began < DEADLINE:
                current, peak = rss_kib(bob.process.pid)
                samples.append(current)
                held.append(attack.holding)
                arrived = sum(1 for _ in inbox.iterdir()) if inbox.exists() else 0
                if arrived >= messages:
                    break
                await asyncio.sleep(0.5)
            took = time.monotonic() - began
        finally:
            attack.stop.set()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        say(
            f"{arrived} of {messages} arrived in {took:.0f} s; bob's peak RSS {peak / 1024:.1f} MiB"
        )
        return {
            "messages": messages,
            "arrived": arrived,
            "seconds": took,
            "hostile_sessions": slots,
            "kinds": list(kinds),
            "peak_rss_mib": peak / 1024,
            "median_rss_mib": sorted(samples)[len(samples) // 2] / 1024 if samples else None,
            "attacker": dict(attack.seen),
            "attacker_sessions_held_min_max": [min(held), max(held)] if held else None,
        }
    finally:
        if client_tor is not None:
            client_tor.stop()
        for box in boxes:
            box.stop()
        await asyncio.to_thread(stop_testnet, network)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 messages instead of 100")
    parser.add_argument("--messages", type=int, default=0, help="legitimate messages (100)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file (merged)")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"the attacker's session kinds, comma-separated (default: {','.join(KINDS)})",
    )
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--kinds: choose among {', '.join(KINDS)}")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    messages = args.messages or (20 if args.quick else 100)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        data = asyncio.run(measure(Path(tmp), messages, kinds))
    write_results(args.json, "hostile" if kinds == KINDS else "hostile " + ",".join(kinds), data)
    print(
        f"\nunder attack: {data['arrived']} of {messages} messages arrived in "
        f"{data['seconds']:.0f} s; bob's peak RSS {data['peak_rss_mib']:.1f} MiB "
        f"(target: under 150 MiB)\nattacker's sessions held meanwhile (min, max): "
        f"{data['attacker_sessions_held_min_max']}\nattacker's sessions: {data['attacker']}"
    )
    return 0 if data["arrived"] >= messages else 1


if __name__ == "__main__":
    raise SystemExit(main())
