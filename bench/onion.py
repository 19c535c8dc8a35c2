"""Onion delivery latency and throughput between two boxes on a private Tor network.

Run: ``.venv/bin/python -m bench.onion [--quick] [--latency N] [--throughput N] [--json FILE]``.

Starts the private network (``onionmail.tor.testnet.network``: 3 authorities, 3 relays on
127.0.0.1) and two real boxes, each with its own tor: alice
(:class:`onionmail.box.daemon.Box` in this process, so that a cold sample can drop
her sessions) and bob, the recipient, as its own process (``onionmail run``), as
a recipient's box runs on another machine: the two boxes do not share one
interpreter (since 2026-12-06).

Latency: alice's mail client (aiosmtplib, AUTH) submits a 5 KB message; the
clock runs from the submission's ``250`` to the moment the message's file
is in bob's Maildir ``new/`` (polled every 2 ms). *cold*: the agent's
isolation token for bob's onion is dropped first, so the delivery builds a
new rendezvous circuit (the descriptor stays cached); *warm*: the circuit
of the previous delivery is reused. Cold and warm alternate, N of each
(≥ 50; default 100, quick 50); p50/p95 reported, and the median of the
box/raw ratios taken sample by sample. Whether the box or the reference goes
first alternates from one round to the next. Before each cold sample, box or
raw, an untimed pause of :data:`SETTLE` lets the streams just closed finish
their teardown (and the box's cold sample first waits for the previous
delivery's session to be back in the agent's pool, so it is really dropped).

Reference, in the same run and the same alternation: through alice's tor
SOCKS port (``onionmail.tor.socks.open_tor_stream``, the box's own SOCKS
code) to an echo server behind an ephemeral onion published by bob's tor
with the same ADD_ONION defences as bob's own onion (MaxStreams, and
proof-of-work when bob's tor offers it),
sending as many bytes as a sealed 5 KB message is on the wire and reading
them back; cold = new SOCKS credentials (new circuit) and a new stream, warm =
the stream of the previous sample, kept open, as the box keeps its session
(like for like: the box's warm sample opens no stream either).

Throughput: N messages of 5 KB (2,000; quick 200, made before the clock starts)
submitted by 4 client sessions of a mail client in its own process (as a
user's client is); messages/s from the first submission to the
last file in bob's Maildir. Reference: the same number of wire bytes streamed
through one onion stream to the echo server, expressed as messages/s. Both
are measured ``--repeats`` times (5), alternating which goes first, each
time on new circuits: the rate depends on the circuit drawn (the raw
stream's from 160 to 600 messages/s on the same machine, 2026-12-06), so
medians, min-max and the median of the rounds' box/raw ratios are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import email.message
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import aiosmtplib
import stem.response

from bench.common import add_arguments, percentile, print_table, ratio, write_results
from bench.padding_overhead import measure as padding_measure
from onionmail.box.create import NewBox, create_box
from onionmail.box.daemon import Box, BoxPaths
from onionmail.config.box import load_config
from onionmail.config.sections import TorSection
from onionmail.seal.identity import Identity
from onionmail.store.contacts import AddressBook
from onionmail.tor.control import ONION_VIRTUAL_PORT, add_onion_command
from onionmail.tor.socks import SocksError, new_isolation_token, open_tor_stream
from onionmail.tor.testnet.checks import _EchoHandler, _EchoServer
from onionmail.tor.testnet.network import (
    client_tor_options,
    load_testnet,
    start_testnet,
    stop_testnet,
)

SIZE = 5 * 1024
POLL = 0.002
THROUGHPUT_POLL = 0.05
SETTLE = 0.15
"""Untimed pause before every cold latency sample, box and raw, so that the teardown of a
stream just closed (the kept sessions a cold sample drops, the raw stream just used)
does not share the relays' TCP connections with the next circuit's build: tor's relays
write without TCP_NODELAY, so a CREATE/EXTEND cell written while an END cell is
unacknowledged waits ~40 ms for a delayed ACK, and on 127.0.0.1 tor learns a circuit
build timeout of ~70 ms: one such stall times the build out and the stream waits
0.5-1 s for tor to relaunch. A real cold delivery finds its old session long closed."""
TIMEOUT = 120.0
PER_CONNECTION = 200
"""Messages one submission connection carries in the throughput run."""
RAW_ATTEMPTS = 3


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def make_message(sender: str, rcpt: str, number: int) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = f"bench {number}"
    line = "onion benchmark " * 4 + "\n"
    msg.set_content((line * (SIZE // len(line) + 1))[:SIZE])
    return msg


def count_new(folder: Path) -> int:
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


async def wait_count(folder: Path, target: int, poll: float = POLL) -> float:
    deadline = time.monotonic() + TIMEOUT
    while count_new(folder) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder}: {count_new(folder)} of {target} messages arrived")
        await asyncio.sleep(poll)
    return time.perf_counter()


class Recipient:
    """Bob's box, run as its own process (``onionmail run``) until :meth:`stop`."""

    def __init__(self, new: NewBox) -> None:
        self.new = new
        self.onion = new.identity.onion_address
        self.paths = BoxPaths(new.box_dir)
        self.tor_settings: TorSection = load_config(new.box_dir).tor
        self.log = new.box_dir.parent / "bob.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "onionmail.cli", "run", "--dir", str(self.new.box_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + TIMEOUT
        while b"submission:" not in self.log.read_bytes():  # printed once it takes mail
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bob's box did not start:\n{self.log.read_text()}")
            await asyncio.sleep(0.2)

    def control(self) -> Any:
        """A controller of bob's tor (its control socket; cookie authentication)."""
        controller = stem.control.Controller.from_socket_file(str(self.paths.tor / "control.sock"))
        controller.authenticate()
        return controller

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self.process.wait, 60)


class Bench:
    def __init__(self, alice: Box, alice_new: NewBox, bob: Recipient) -> None:
        self.alice, self.alice_new, self.bob = alice, alice_new, bob
        self.inbox = bob.paths.maildir("bob") / "new"
        self.sent = 0

    async def submit(self, client: aiosmtplib.SMTP | None = None) -> float:
        self.sent += 1
        msg = make_message(self.alice_new.address, self.bob.new.address, self.sent)
        if client is None:
            await aiosmtplib.send(
                msg,
                hostname="127.0.0.1",
                port=self.alice.submission_port,
                username=self.alice_new.local_part,
                password=self.alice_new.password,
                local_hostname="localhost",
                start_tls=False,
                timeout=30,
            )
        else:
            await client.send_message(msg)
        return time.perf_counter()

    async def drop_sessions(self) -> None:
        """Alice's next delivery to bob builds a new circuit and opens a new session.

        The previous delivery's session is kept only once its 250 is back
        (after its file is in the Maildir): wait for that, or it would be kept
        after the drop and the next delivery would reuse it.
        """
        assert self.alice.agent is not None
        deadline = time.monotonic() + TIMEOUT
        while len(self.alice.agent.reports) < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(POLL)
        self.alice.agent.forget_peer(self.bob.onion)
        await asyncio.sleep(SETTLE)

    async def one_latency(self, cold: bool) -> float:
        if cold:
            await self.drop_sessions()
        before = count_new(self.inbox)
        accepted = await self.submit()
        return await wait_count(self.inbox, before + 1) - accepted

    async def throughput(self, count: int, sessions: int = 4) -> float:
        """Messages/s from the first submission to the last file in bob's Maildir.

        The mail client is a process of its own (:func:`submit_all`), as a
        user's mail client is: its work is not counted against alice's box.
        """
        before = count_new(self.inbox)
        spec = {
            "port": self.alice.submission_port,
            "user": self.alice_new.local_part,
            "password": self.alice_new.password,
            "sender": self.alice_new.address,
            "rcpt": self.bob.new.address,
            "count": count,
            "sessions": sessions,
            "first": self.sent + 1,
        }
        self.sent += count
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.onion",
            "--submit-child",
            json.dumps(spec),
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(child.communicate(), TIMEOUT)
        if child.returncode != 0:
            raise RuntimeError(f"the submitting client failed ({child.returncode})")
        start = float(out.split()[-1])  # CLOCK_MONOTONIC: the same clock in both processes
        # Polled every THROUGHPUT_POLL: listing a directory of thousands of files every
        # 2 ms took alice's box (in this process) some of its interpreter.
        end = await wait_count(self.inbox, before + count, THROUGHPUT_POLL)
        return count / (end - start)


async def submit_all(spec: dict[str, Any]) -> float:
    """The throughput run's mail client: ``count`` messages over ``sessions`` AUTH sessions;
    returns ``time.perf_counter()`` when the first submission began (messages made before)."""
    count, sessions = int(spec["count"]), int(spec["sessions"])
    messages = [
        make_message(spec["sender"], spec["rcpt"], spec["first"] + n).as_bytes()
        for n in range(count)
    ]
    per = [count // sessions + (1 if i < count % sessions else 0) for i in range(sessions)]

    async def session(n: int) -> None:
        # A new connection every PER_CONNECTION messages: a session may send
        # [submission] max_commands commands in all (three a message).
        while n > 0:
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1",
                port=spec["port"],
                local_hostname="localhost",
                start_tls=False,
                timeout=60,
            )
            async with client:
                await client.login(spec["user"], spec["password"])
                for _ in range(min(n, PER_CONNECTION)):
                    await client.sendmail(spec["sender"], [spec["rcpt"]], messages.pop())
            n -= PER_CONNECTION

    start = time.perf_counter()
    await asyncio.gather(*(session(n) for n in per))
    return start


class _NoDelayEcho(_EchoHandler):
    """The echo with ``TCP_NODELAY``, as every asyncio socket of the box has: without it,
    each echoed chunk after the first waits for the previous one's delayed ACK (Nagle),
    about 40 ms a sample that the reference would pay and the box would not."""

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class EchoOnion:
    """An echo server behind an ephemeral onion of bob's tor, reached through alice's tor."""

    def __init__(self, alice: Box, bob: Recipient) -> None:
        self.alice, self.bob = alice, bob
        self.server = _EchoServer(("127.0.0.1", 0), _NoDelayEcho)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)
        self.onion = ""
        self.controller: Any = None
        self.token = new_isolation_token()
        self.kept: socket.socket | None = None
        """The stream of the last sample, open for the next warm one."""
        self.failures = 0
        """Streams tor failed to open, tried again (:meth:`exchange`)."""

    async def start(self) -> None:
        self.thread.start()
        # Published the way bob's box publishes its own onion (the same ADD_ONION
        # defences: MaxStreams, proof-of-work when bob's tor has it), so the
        # reference pays what a client of bob's onion pays to reach it.
        self.controller = await asyncio.to_thread(self.bob.control)
        key, target = (
            Identity.generate().tor_key_blob(),
            f"127.0.0.1:{self.server.server_address[1]}",
        )
        settings = self.bob.tor_settings
        reply = None
        for pow_defenses in dict.fromkeys((bool(settings.pow_defenses), False)):
            line = add_onion_command(key, target, settings, pow_defenses=pow_defenses)
            reply = await asyncio.to_thread(self.controller.msg, line)
            if reply.is_ok():
                break  # (an older tor refuses the proof-of-work keywords: without, as bob)
        assert reply is not None
        if not reply.is_ok():
            raise RuntimeError(f"tor refused the echo onion: {reply}")
        stem.response.convert("ADD_ONION", reply)
        self.onion = f"{reply.service_id}.onion"
        deadline = time.monotonic() + TIMEOUT
        while True:  # a fresh onion is often not found at once
            try:
                await self.exchange(64, cold=True)
                self.failures = 0  # a fresh onion's first misses are not the measurement's
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    def drop_kept(self) -> None:
        if self.kept is not None:
            self.kept.close()
            self.kept = None

    def stop(self) -> None:
        self.drop_kept()
        if self.controller is not None:
            self.controller.close()
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    async def exchange(self, size: int, cold: bool) -> float:
        """Connect, send ``size`` bytes, read them back; seconds from connect to the last byte.

        A stream tor fails to open (SOCKS general failure: a circuit that did
        not build) is counted in :attr:`failures` and tried again with new
        credentials; the sample is the attempt that worked. The box's samples
        include any retry its agent makes, so this can only favour the
        reference.
        """
        for _ in range(RAW_ATTEMPTS - 1):
            try:
                return await self._exchange(size, cold)
            except SocksError:
                self.failures += 1
                cold = True
        return await self._exchange(size, cold)

    async def _exchange(self, size: int, cold: bool) -> float:
        if not cold and self.kept is not None:
            start = time.perf_counter()
            try:
                await stream(self.kept, size)
            except BaseException:
                self.drop_kept()
                raise
            return time.perf_counter() - start
        self.drop_kept()
        if cold:
            self.token = new_isolation_token()
        host, port = self.alice.tor.socks_address
        start = time.perf_counter()
        sock = await open_tor_stream(
            host, port, self.onion, ONION_VIRTUAL_PORT, timeout=TIMEOUT, isolation=self.token
        )
        try:
            await stream(sock, size)
        except BaseException:
            sock.close()
            raise
        self.kept = sock  # for the warm samples that follow
        return time.perf_counter() - start


async def stream(sock: socket.socket, size: int) -> None:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio sets the box's
    payload = os.urandom(size)
    sender = asyncio.ensure_future(loop.sock_sendall(sock, payload))
    received = 0
    while received < size:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), TIMEOUT)
        if not chunk:
            raise ConnectionError("the echo stream closed early")
        received += len(chunk)
    await sender


async def measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    latency_n = args.latency or (50 if args.quick else 100)
    rounds = max(1, args.repeats)
    bulk_n = args.throughput or (200 if args.quick else 2_000)
    network = root / "testnet"
    say("starting the private Tor network")
    await asyncio.to_thread(start_testnet, network, take_ownership=True, progress=None)
    try:
        options = client_tor_options(load_testnet(network))
        news = {
            name: create_box(
                root / name, name, testnet=network, submission_port=0, retry_initial=2.0
            )
            for name in ("alice", "bob")
        }
        # Contacts, as in the demo: a stranger's mail would wait for a proof of work and
        # land in Requests, which is not what this measures (bench.stamps does).
        AddressBook(news["alice"].box_dir).put("bob", news["bob"].address)
        AddressBook(news["bob"].box_dir).put("alice", news["alice"].address)
        alice = Box(
            load_config(news["alice"].box_dir), news["alice"].identity, testnet_options=options
        )
        bob = Recipient(news["bob"])
        echo = EchoOnion(alice, bob)
        try:
            await asyncio.gather(alice.start(), bob.start())
            say("boxes running; publishing the echo onion")
            await echo.start()
            bench = Bench(alice, news["alice"], bob)
            await bench.one_latency(cold=True)  # the first delivery fetches bob's descriptor
            wire = int(padding_measure(SIZE, alice.identity, news["bob"].identity)["wire_bytes"])
            lat: dict[str, list[float]] = {
                k: [] for k in ("box cold", "box warm", "raw cold", "raw warm")
            }
            say(f"latency: {latency_n} cold and {latency_n} warm, box and raw, alternating")
            for i in range(latency_n):
                # Who goes first alternates: tor's state (its spare circuits) left
                # by one measurement must not always favour the same side.
                box_first = i % 2 == 0
                for cold in (True, False):
                    kind = "cold" if cold else "warm"
                    for side in ("box", "raw") if box_first else ("raw", "box"):
                        if side == "box":
                            sample = await bench.one_latency(cold=cold)
                        else:
                            if cold:
                                echo.drop_kept()  # before the pause, as the box drops its own
                                await asyncio.sleep(SETTLE)
                            sample = await echo.exchange(wire, cold=cold)
                        lat[f"{side} {kind}"].append(sample)
            rates: dict[str, list[float]] = {"box": [], "raw stream": []}
            for round_ in range(rounds):
                say(f"throughput: {bulk_n} messages, round {round_ + 1} of {rounds}")
                for side in ("box", "raw stream") if round_ % 2 == 0 else ("raw stream", "box"):
                    # New circuits for both at every round: on this network one circuit
                    # carries a stream 3 times faster than another (172 against 603
                    # messages/s for the raw stream in two runs of one day), so each
                    # round draws its circuits afresh and the medians compare the two
                    # over the same spread rather than over two draws.
                    if side == "box":
                        await bench.drop_sessions()
                        rates[side].append(await bench.throughput(bulk_n))
                    else:
                        echo.drop_kept()
                        await asyncio.sleep(SETTLE)
                        rates[side].append(bulk_n / await echo.exchange(wire * bulk_n, cold=True))
        finally:
            echo.stop()
            await asyncio.gather(alice.stop(), bob.stop())
    finally:
        await asyncio.to_thread(stop_testnet, network)
        say("private Tor network stopped")
    return {
        "message_bytes": SIZE,
        "wire_bytes": wire,
        "latency_messages": latency_n,
        "latency_s": {
            k: {
                "p50": percentile(v, 50),
                "p95": percentile(v, 95),
                "min": min(v),
                "max": max(v),
                "runs": v,
            }
            for k, v in lat.items()
        },
        "paired_ratio_p50": {
            kind: percentile(
                [b / r for b, r in zip(lat[f"box {kind}"], lat[f"raw {kind}"], strict=True)], 50
            )
            for kind in ("cold", "warm")
        },
        "raw_stream_failures": echo.failures,
        "throughput_messages": bulk_n,
        "throughput_per_s": {k: percentile(v, 50) for k, v in rates.items()},
        "throughput_runs": rates,
        "throughput_paired_ratio": percentile(
            [b / r for b, r in zip(rates["box"], rates["raw stream"], strict=True)], 50
        ),
    }


def report(data: dict[str, Any]) -> None:
    lat = data["latency_s"]
    rows = []
    for kind in ("cold", "warm"):
        box, raw = lat[f"box {kind}"], lat[f"raw {kind}"]
        rows.append(
            [
                f"box {kind}",
                box["p50"] * 1000,
                box["p95"] * 1000,
                box["min"] * 1000,
                box["max"] * 1000,
                ratio(box["p50"], raw["p50"]),
            ]
        )
        rows.append(
            [
                f"raw stream {kind}",
                raw["p50"] * 1000,
                raw["p95"] * 1000,
                raw["min"] * 1000,
                raw["max"] * 1000,
                1.0,
            ]
        )
    paired = data.get("paired_ratio_p50", {})
    print_table(
        f"onion delivery latency, ms, {data['latency_messages']} of each, 5 KB "
        f"({data['wire_bytes']:,} bytes on the wire); box: 250 -> file in the recipient's Maildir",
        ["path", "p50", "p95", "min", "max", "p50/raw"],
        rows,
    )
    if paired:
        print(
            f"  median of the paired ratios (box / raw, sample by sample): cold "
            f"{paired['cold']:.2f}, warm {paired['warm']:.2f}; raw streams tor failed "
            f"to open (retried): {data.get('raw_stream_failures', 0)}"
        )
    warm_box, warm_raw = lat["box warm"], lat["raw warm"]
    for name, value, target in (
        ("warm p50", warm_box["p50"] / warm_raw["p50"], 1.0),
        ("warm p95", warm_box["p95"] / warm_raw["p95"], 1.1),
    ):
        verdict = "met" if value <= target else "missed"
        print(f"  {name}: box / raw (kept stream) {value:.2f}, target <= {target:.1f}: {verdict}")
    tp = data["throughput_per_s"]
    runs = data.get("throughput_runs", {k: [v] for k, v in tp.items()})
    share = data.get("throughput_paired_ratio", tp["box"] / tp["raw stream"])
    verdict = "met" if share >= 0.9 else "missed"
    print(
        f"  throughput: box / raw {share:.2f} (median of the rounds' ratios), "
        f"target >= 0.9: {verdict}"
    )
    print_table(
        f"onion throughput, {data['throughput_messages']:,} messages of 5 KB, "
        f"{len(runs['box'])} round(s), box and raw alternating",
        ["path", "messages/s", "min", "max", "/raw"],
        [
            [
                "box (submit -> Maildir)",
                tp["box"],
                min(runs["box"]),
                max(runs["box"]),
                ratio(tp["box"], tp["raw stream"]),
            ],
            [
                "raw stream (same bytes, one stream)",
                tp["raw stream"],
                min(runs["raw stream"]),
                max(runs["raw stream"]),
                1.0,
            ],
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, repeats=5)
    parser.add_argument("--latency", type=int, default=0, help="cold and warm each (100; quick 50)")
    parser.add_argument("--throughput", type=int, default=0, help="messages (2,000; quick 200)")
    parser.add_argument("--submit-child", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.submit_child:  # the throughput run's mail client (Bench.throughput)
        print(asyncio.run(submit_all(json.loads(args.submit_child))), flush=True)
        return 0
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's AUTH-without-TLS note
    warnings.filterwarnings("ignore", message="Session.login_data")
    warnings.filterwarnings("ignore", message="auth_required == True")
    with tempfile.TemporaryDirectory(prefix="bench-onion-") as tmp:
        data = asyncio.run(measure(Path(tmp), args))
    report(data)
    write_results(args.json, "onion", data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
