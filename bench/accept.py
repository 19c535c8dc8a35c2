"""Durable accept throughput on loopback: the box's two listeners against Postfix and smtp-sink.

Run: ``.venv/bin/python -m bench.accept [--quick] [--messages N] [--repeats R] [--json FILE]``.

Targets, all on 127.0.0.1, all measured in the same run, interleaved (every
repetition runs each target once, in turn, so drift hits all of them alike):

- ``box submission``: onionmail's SubmissionHandler (AUTH PLAIN, scrubbing)
  whose store callback is ``OutboundQueue.enqueue``, run with the scrubbing
  in one worker thread, as the box does: each message is encrypted, written
  as one file, renamed, fsynced (directory fsynced) before ``250``.
- ``box inbound``: the InboundHandler receiving plain, unsealed mail from a
  non-onion sender, delivered to a Maildir (file and directory fsynced).
- ``postfix``: a private Postfix instance (own config and queue directory
  under a temporary directory) whose smtpd accepts into its queue (fsync
  before ``250``), then discards. The reference of ``box inbound``.
- ``postfix submission``: a second smtpd of the same instance that, like
  the box's submission server, relays only after AUTH PLAIN (Cyrus SASL
  with its own sasldb; Debian's sasl2-bin creates it). The reference of
  ``box submission``: the same commands on the wire, one round trip more
  than plain SMTP.
- ``smtp-sink``: Postfix's test server that accepts and throws away: the ceiling.

The box's servers run in a child process (``--serve``), so the load
generator never shares their event loop. Two generators: Postfix's
``smtp-source`` (C; no AUTH, so not for the submission server) and a small
asyncio client that can AUTH PLAIN, used for every target so all are
compared with one tool. Both open a new connection per message. Messages of
5 KB and 100 KB, 1 and 20 concurrent sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import (
    add_arguments,
    free_port,
    print_table,
    ratio,
    serve_child,
    serve_or_report,
    summary,
)

PASSWORD = "bench password, loopback only"
SIZES = (5 * 1024, 100 * 1024)
CONCURRENCY = (1, 20)
PEER = "carol@example.org"
POSTFIX_RCPT = "b@y.test"

if TYPE_CHECKING:  # imported where used, in the box's child process
    from onionmail.box.inbound import InboundHandler
    from onionmail.seal.identity import Identity
    from onionmail.store.replay_cache import ReplayCache


# --- the box's servers, in a child process ----------------------------------------------


async def serve(directory: Path) -> None:
    """Start both listeners, print their ports and addresses, serve until stdin closes."""
    from onionmail.box.submission import Stored, SubmissionHandler
    from onionmail.core.files import use_storage_threads
    from onionmail.core.mail_address import MailAddress
    from onionmail.seal.identity import Identity
    from onionmail.smtp.server import server_port, start_smtp_server
    from onionmail.store.credentials import Credentials
    from onionmail.store.queue import OutboundQueue, queue_key
    from onionmail.store.replay_cache import ReplayCache

    use_storage_threads(asyncio.get_running_loop())  # as the box does
    identity = Identity.generate()
    queue = OutboundQueue(directory / "queue", queue_key(identity.seed))
    credentials = Credentials(directory / "submission.json")
    credentials.set_password("alice", PASSWORD)

    def store(sender: MailAddress, rcpts: list[MailAddress], message: bytes) -> Stored:
        # In the handler's worker thread, right after scrubbing, as the box's store.
        by_onion: dict[str, list[str]] = {}
        for rcpt in rcpts:
            by_onion.setdefault(rcpt.domain, []).append(str(rcpt))
        ids = []
        for onion, parts in by_onion.items():
            ids.append(queue.enqueue(onion, str(sender), tuple(parts), message).id)
        return Stored(ids)

    submission = SubmissionHandler(
        onion=identity.onion_address,
        local_parts=("alice",),
        credentials=credentials,
        store=store,
        max_recipients=100,
    )
    cache = ReplayCache(directory / "replay.sqlite")
    inbound = inbound_handler(identity, directory / "mail", cache)
    common: dict[str, Any] = {"data_size_limit": 32 * 1024 * 1024, "timeout": 60}
    sub_server = await start_smtp_server(
        submission,
        "127.0.0.1",
        0,
        name="submission",
        hostname="localhost",
        auth_required=True,
        auth_require_tls=False,
        authenticator=submission.authenticator,
        **common,
    )
    in_server = await start_smtp_server(
        inbound, "127.0.0.1", 0, name="inbound", hostname=identity.onion_address, **common
    )
    other = Identity.generate().onion_address
    print(
        server_port(sub_server),
        server_port(in_server),
        identity.onion_address,
        other,
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in (sub_server, in_server):
        server.close()
        await server.wait_closed()
    cache.close()


def inbound_handler(identity: Identity, mail_root: Path, cache: ReplayCache) -> InboundHandler:
    """The box's inbound handler as measured here: plain mail for ``bob``, into a Maildir."""
    from onionmail.box.inbound import InboundHandler

    return InboundHandler(
        identity=identity,
        local_parts=("bob",),
        mail_root=mail_root,
        replay_cache=cache,
        max_recipients=100,
    )


@dataclass
class BoxServers:
    submission_port: int
    inbound_port: int
    onion: str
    other_onion: str
    directory: Path


@contextmanager
def box_servers(root: Path) -> Iterator[BoxServers]:
    directory = root / "box"
    directory.mkdir()
    with serve_child("bench.accept", directory) as child:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        if len(line) != 4:
            raise RuntimeError("the box's servers did not start")
        yield BoxServers(int(line[0]), int(line[1]), line[2], line[3], directory)


# --- the references ---------------------------------------------------------------------


@dataclass(frozen=True)
class PostfixPorts:
    smtp: int
    submission: int


@contextmanager
def postfix_instance(root: Path) -> Iterator[PostfixPorts]:
    """A private Postfix on 127.0.0.1 that queues (fsync) and then discards.

    Two smtpd listeners: plain SMTP (loopback is in ``mynetworks``), and a
    submission one that relays only for AUTH PLAIN clients (user ``alice``,
    :data:`PASSWORD`, in a sasldb of its own).
    """
    config = root / "postfix"
    config.mkdir()
    port = free_port()
    submission = free_port()
    sasl = config / "sasl"
    sasl.mkdir()
    sasldb = root / "postfix-sasldb2"
    (sasl / "smtpd.conf").write_text(
        "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN\n"
        f"sasldb_path: {sasldb}\n"
    )
    made = subprocess.run(
        ["saslpasswd2", "-c", "-p", "-f", str(sasldb), "-u", "bench.test", "alice"],
        input=PASSWORD,
        text=True,
        capture_output=True,
        check=False,
    )
    if made.returncode:
        raise RuntimeError(f"saslpasswd2 failed: {made.stderr.strip()}")
    shutil.chown(sasldb, "postfix")
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "postfix-queue"),
        "data_directory": str(root / "postfix-data"),
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "myhostname": "bench.test",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "default_transport": "discard:benchmark",
        "relay_transport": "discard:benchmark",
        "local_transport": "discard:benchmark",
        "message_size_limit": str(64 * 1024 * 1024),
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "smtpd_client_message_rate_limit": "0",
        "default_process_limit": "200",
        "maillog_file": str(root / "postfix.log"),
        "maillog_file_prefixes": str(root),
        "cyrus_sasl_config_path": str(sasl),
        "smtpd_sasl_local_domain": "bench.test",
    }
    root.chmod(0o755)  # the postfix user reaches its queue below the temporary directory
    (root / "postfix-queue").mkdir()
    (root / "postfix-data").mkdir()
    shutil.chown(root / "postfix-data", "postfix")
    (config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    master = Path("/etc/postfix/master.cf").read_text().splitlines()
    lines = []
    for line in master:  # no chroot: the private queue has no copy of /etc in it
        fields = line.split()
        if line.startswith("smtp      inet"):
            continue
        if line[:1].isalpha() and len(fields) >= 8:
            fields[4] = "n"
            line = " ".join(fields)
        lines.append(line)
    lines.insert(0, f"127.0.0.1:{port} inet n - n - - smtpd")
    only_after_auth = "permit_sasl_authenticated,reject"
    lines.insert(
        1,
        f"127.0.0.1:{submission} inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes "
        f"-o smtpd_client_restrictions={only_after_auth} "
        f"-o smtpd_relay_restrictions={only_after_auth}",
    )
    (config / "master.cf").write_text("\n".join(lines) + "\n")
    run = ["postfix", "-c", str(config)]
    for step in ("check", "start"):
        if subprocess.run([*run, step], check=False, capture_output=True).returncode:
            log = root / "postfix.log"
            raise RuntimeError(f"postfix {step} failed: {log.read_text() if log.exists() else ''}")
    try:
        wait_for_port(port)
        wait_for_port(submission)
        yield PostfixPorts(port, submission)
    finally:
        subprocess.run([*run, "stop"], check=False, capture_output=True)


@contextmanager
def smtp_sink() -> Iterator[int]:
    port = free_port()
    child = subprocess.Popen(
        ["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        child.terminate()
        child.wait()


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# --- the load generators ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    mail_from: str
    rcpt: str
    auth: bool = False
    reference: str = "postfix"
    """Whose rate this target's ratio is taken against."""


def message(target: Target, size: int, number: int) -> bytes:
    head = (
        f"From: <{target.mail_from}>\r\nTo: <{target.rcpt}>\r\n"
        f"Subject: benchmark message {number}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"Message-ID: <bench-{number}-{os.getpid()}@bench.test>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return head + body[: max(0, size - len(head))].rsplit(b"\r\n", 1)[0] + b"\r\n"


async def reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise ConnectionError(f"short reply {line!r}")
        if line[3:4] != b"-":
            return int(line[:3])


async def one_message(target: Target, data: bytes) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        steps: list[tuple[bytes, int]] = [(b"EHLO bench.test\r\n", 250)]
        if target.auth:
            token = base64.b64encode(f"\0alice\0{PASSWORD}".encode())
            steps.append((b"AUTH PLAIN " + token + b"\r\n", 235))
        steps += [
            (f"MAIL FROM:<{target.mail_from}>\r\n".encode(), 250),
            (f"RCPT TO:<{target.rcpt}>\r\n".encode(), 250),
            (b"DATA\r\n", 354),
            (data + b".\r\n", 250),
        ]
        if await reply(reader) != 220:
            return False
        for command, expected in steps:
            writer.write(command)
            if await reply(reader) != expected:
                return False
        writer.write(b"QUIT\r\n")
        await reply(reader)
        return True
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def asyncio_load(target: Target, size: int, sessions: int, count: int) -> tuple[float, int]:
    """Send ``count`` messages over ``sessions`` parallel clients; (seconds, failures)."""
    data = message(target, size, 0)
    remaining = count
    failures = 0

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            if not await one_message(target, data):
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.perf_counter() - start, failures


def smtp_source_load(target: Target, size: int, sessions: int, count: int) -> tuple[float, int]:
    argv = [
        "smtp-source",
        "-4",
        "-s",
        str(sessions),
        "-m",
        str(count),
        "-l",
        str(size),
        "-f",
        target.mail_from,
        "-t",
        target.rcpt,
        "-M",
        "bench.test",
        f"127.0.0.1:{target.port}",
    ]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    # smtp-source is silent when every message got its 250; anything it says is a failure
    complained = done.returncode != 0 or bool(done.stdout.strip() or done.stderr.strip())
    return seconds, count if complained else 0


# --- the benchmark ----------------------------------------------------------------------

Load = Callable[[int, int, int], tuple[float, int]]
"""Send (size, sessions, count): (seconds, failures)."""


def run_asyncio(target: Target, size: int, sessions: int, count: int) -> tuple[float, int]:
    return asyncio.run(asyncio_load(target, size, sessions, count))


def measure_cells(loads: list[tuple[str, Load]], repeats: int, count: int) -> dict[str, Any]:
    """Every size x sessions cell: each load ``repeats`` times, interleaved; a summary each."""
    results: dict[str, Any] = {}
    for size in SIZES:
        for sessions in CONCURRENCY:
            key = f"{size // 1024}KB x{sessions}"
            rates: dict[str, list[float]] = {}
            for _ in range(repeats):
                for label, load in loads:
                    seconds, failed = load(size, sessions, count)
                    if failed:
                        raise RuntimeError(f"{label}: {failed} failed")
                    rates.setdefault(label, []).append(count / seconds)
            results[key] = {name: summary(r) for name, r in rates.items()}
            print(f"  measured {key}", file=sys.stderr, flush=True)
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    count = args.messages or (500 if args.quick else 5_000)
    if not all(shutil.which(tool) for tool in ("smtp-source", "postfix", "saslpasswd2")):
        raise SystemExit(
            "needs Postfix's smtp-source, smtp-sink and postfix, and sasl2-bin's saslpasswd2 "
            "(make bench-deps installs them)"
        )
    with tempfile.TemporaryDirectory(prefix="bench-accept-") as tmp:
        root = Path(tmp)
        with box_servers(root) as box, postfix_instance(root) as pf, smtp_sink() as sink:
            alice = f"alice@{box.onion}"
            targets = [
                Target(
                    "box submission",
                    box.submission_port,
                    alice,
                    f"dave@{box.other_onion}",
                    auth=True,
                    reference="postfix submission",
                ),
                Target("postfix submission", pf.submission, "a@x.test", POSTFIX_RCPT, auth=True),
                Target("box inbound", box.inbound_port, PEER, f"bob@{box.onion}"),
                Target("postfix", pf.smtp, "a@x.test", POSTFIX_RCPT),
                Target("smtp-sink", sink, "a@x.test", POSTFIX_RCPT),
            ]
            loads: list[tuple[str, Load]] = []
            for gen in ("asyncio", "smtp-source"):
                for target in targets:
                    if gen == "asyncio":
                        loads.append((f"{target.name} [{gen}]", partial(run_asyncio, target)))
                    elif not target.auth:  # smtp-source cannot AUTH
                        loads.append((f"{target.name} [{gen}]", partial(smtp_source_load, target)))
            results = measure_cells(loads, args.repeats, count)
            stored = sum(1 for _ in (box.directory / "mail" / "bob" / "new").iterdir())
            queued = sum(1 for _ in (box.directory / "queue" / "active").glob("*.msg"))
    return {
        "messages": count,
        "repeats": args.repeats,
        "references": {t.name: t.reference for t in targets if t.reference != t.name},
        "results": results,
        "box_stored": stored,
        "box_queued": queued,
    }


def report(data: dict[str, Any]) -> None:
    rows = []
    references = data.get("references", {})
    for key, by_target in data["results"].items():
        for gen in ("asyncio", "smtp-source"):
            sink = by_target.get(f"smtp-sink [{gen}]", {}).get("median", 0.0)
            for name, s in by_target.items():
                if not name.endswith(f"[{gen}]"):
                    continue
                target = name.rsplit(" [", 1)[0]
                reference = references.get(target, "postfix")
                pf = by_target.get(f"{reference} [{gen}]", {}).get("median", 0.0)
                rows.append(
                    [
                        key,
                        name,
                        s["median"],
                        s["min"],
                        s["max"],
                        ratio(s["median"], pf),
                        ratio(s["median"], sink),
                    ]
                )
    print_table(
        f"accept throughput, messages/s, {data['messages']} messages per run, "
        f"{data['repeats']} runs interleaved (new connection per message)",
        ["size x sessions", "target [generator]", "median", "min", "max", "/postfix", "/sink"],
        rows,
    )
    print("  /postfix: box submission against postfix submission (both AUTH PLAIN), others")
    print("  against postfix (plain SMTP)")
    print(
        f"  box: {data['box_stored']} in the Maildir, {data['box_queued']} in the queue "
        "(all fsynced)"
    )
    for line in verdicts(data):
        print(line)


def verdicts(data: dict[str, Any]) -> list[str]:
    """Issue 21's accept targets, judged on this run: every box cell at least its
    reference's median, and its slowest run above the reference's fastest; stretch 1.5x in
    the 20-session cells."""
    references = data.get("references", {})
    below: list[str] = []
    overlapping: list[str] = []
    short_of_stretch: list[str] = []
    for key, by_target in data["results"].items():
        for name, cell in by_target.items():
            target, _, gen = name.rpartition(" [")
            if not target.startswith("box "):
                continue
            ref = by_target.get(f"{references.get(target, 'postfix')} [{gen}")
            if not ref:
                continue
            label = f"{key} {name}"
            if cell["median"] < ref["median"]:
                below.append(f"{label} {cell['median'] / ref['median']:.3f}")
            if cell["min"] <= ref["max"]:
                overlapping.append(label)
            if key.endswith("x20") and cell["median"] < 1.5 * ref["median"]:
                short_of_stretch.append(label)
    return [
        "target: every cell >= 1.0x its reference: "
        + ("met" if not below else f"missed ({len(below)}: {', '.join(below)})"),
        "target: every cell's slowest run above its reference's fastest: "
        + ("met" if not overlapping else f"missed in {len(overlapping)} cell(s)"),
        "stretch: 1.5x in the 20-session cells: "
        + ("met" if not short_of_stretch else f"missed in {len(short_of_stretch)} cell(s)"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--messages", type=int, default=0, help="per run (5,000; quick 500)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    return serve_or_report(parser.parse_args(argv), "accept", serve, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
