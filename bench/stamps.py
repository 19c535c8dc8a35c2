"""Proof of work for strangers: what a stamp costs, what checking it costs, a flood's effect.

``python -m bench.stamps [--quick] [--repeats N]``

1. **The sender's cost**: seconds to make a stamp at the default cost
   (``[inbound] pow_bits = 9``, 8 MiB argon2id), median and p95 over many
   stamps (the tries are geometric: the spread is the point).
2. **The receiver's cost**: seconds to check one, median; target: under 1 %
   of the median stamp.
3. **A flood**: the accept rate of a box's inbound server (a child process,
   loopback, no tor) for a contact's sealed mail, alone and while another
   process's 10 sessions send stranger RCPTs without stamps as fast as the
   server answers them (each gets ``450 4.7.0``); alternated runs. Target:
   the flooded rate within 10 % of the quiet one. The flood stays below the
   listener's session limit: filling every slot is another attack, bounded by
   ``max_connections`` and tor's own proof-of-work defence.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    add_arguments,
    percentile,
    print_table,
    ratio,
    run_and_report,
    summary,
)

FLOOD_SESSIONS = 10


def stamp_costs(count: int) -> tuple[list[float], list[float]]:
    from onionmail.admission.stamps import StampCost, check_stamp, make_stamp

    cost = StampCost()
    made, checked = [], []
    for n in range(count):
        fields = {"recipient": "bob@b.onion", "sender": f"s{n}@a.onion", "challenge": bytes(16)}
        start = time.perf_counter()
        stamp = make_stamp(cost, **fields)  # type: ignore[arg-type]
        made.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert check_stamp(stamp, cost, **fields) is None  # type: ignore[arg-type]
        checked.append(time.perf_counter() - start)
    return made, checked


# --- the inbound server, in a child process --------------------------------------------


async def serve(directory: Path) -> None:
    from onionmail.admission.gate import Admission
    from onionmail.admission.senders import SenderBook, senders_key
    from onionmail.box.inbound import InboundHandler
    from onionmail.config.sections import InboundSection
    from onionmail.core.files import use_storage_threads
    from onionmail.seal.identity import Identity
    from onionmail.smtp.server import server_port, start_smtp_server
    from onionmail.store.contacts import AddressBook
    from onionmail.store.replay_cache import ReplayCache

    use_storage_threads(asyncio.get_running_loop())
    bob, contact = Identity.generate(), Identity.generate()
    AddressBook(directory).put("contact", f"c@{contact.onion_address}")
    cache = ReplayCache(directory / "replay.sqlite")
    senders = SenderBook(directory / "senders.sqlite", senders_key(bob.seed))
    handler = InboundHandler(
        identity=bob,
        local_parts=("bob",),
        mail_root=directory / "mail",
        replay_cache=cache,
        max_recipients=100,
    )
    handler.admission = Admission(InboundSection(), directory, senders)
    server = await start_smtp_server(
        handler, "127.0.0.1", 0, hostname=bob.onion_address, chunking=True, timeout=60
    )
    print(server_port(server), bob.seed.hex(), contact.seed.hex(), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()
    await server.wait_closed()
    cache.close()
    senders.close()


async def contact_load(port: int, bob_seed: str, contact_seed: str, count: int) -> float:
    """Messages per second a contact's kept session gets accepted (sealed, 5 KB)."""
    from onionmail.seal.envelope import (
        SEAL_KEYWORD,
        SealedContent,
        encode_for_smtp,
        parse_seal_keyword_params,
        seal,
    )
    from onionmail.seal.identity import Identity
    from onionmail.smtp.client import PeerSession

    bob, contact = Identity(bytes.fromhex(bob_seed)), Identity(bytes.fromhex(contact_seed))
    rcpt, mail_from = f"bob@{bob.onion_address}", f"c@{contact.onion_address}"
    body = b"x" * 5000
    start = time.perf_counter()
    sent = 0
    while sent < count:  # a session per 100 messages: the listener caps commands per session
        sock = socket.create_connection(("127.0.0.1", port))
        session = await PeerSession.open(sock, ehlo_name="localhost", timeout=60)
        challenge = parse_seal_keyword_params(session.extensions[SEAL_KEYWORD])
        for _ in range(min(100, count - sent)):
            content = SealedContent(
                envelope_id=time.time_ns().to_bytes(16, "big"),
                created=int(time.time()),
                session_challenge=challenge,
                mail_from=mail_from,
                recipients=(rcpt,),
                message=f"From: {mail_from}\r\nSubject: {sent}\r\n\r\n".encode() + body,
            )
            data = encode_for_smtp(seal(content, sender=contact, recipient_onion=bob.onion_address))

            async def payload(accepted: tuple[str, ...], data: bytes = data) -> bytes:
                return data

            await session.send(mail_from, (rcpt,), payload, prepared=data)
            sent += 1
        await session.quit()
    elapsed = time.perf_counter() - start
    return count / elapsed


async def flood(port: int, bob_onion: str, seconds: float) -> int:
    """Stranger RCPTs without stamps from FLOOD_SESSIONS sessions for ``seconds``: how many."""
    from onionmail.seal.identity import Identity

    deadline = time.monotonic() + seconds
    answered = 0

    async def one() -> None:
        nonlocal answered
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readline()
            writer.write(b"EHLO flood\r\n")
            while not (await reader.readline())[3:4] == b" ":
                pass
            stranger = Identity.generate().onion_address
            for _ in range(300):  # under the session's command limit, then a new session
                if time.monotonic() >= deadline:
                    break
                writer.write(
                    f"MAIL FROM:<s@{stranger}>\r\nRCPT TO:<bob@{bob_onion}>\r\nRSET\r\n".encode()
                )
                for _ in range(3):
                    await reader.readline()
                answered += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(FLOOD_SESSIONS)))
    return answered


def run(args: argparse.Namespace) -> dict[str, Any]:
    made, checked = stamp_costs(8 if args.quick else 40)
    messages = 100 if args.quick else 400
    quiet: list[float] = []
    flooded: list[float] = []
    flood_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.stamps", "--serve", tmp],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port_text, bob_seed, contact_seed = server.stdout.readline().split()
            port = int(port_text)
            from onionmail.seal.identity import Identity

            bob_onion = Identity(bytes.fromhex(bob_seed)).onion_address
            for _ in range(args.repeats):
                quiet.append(asyncio.run(contact_load(port, bob_seed, contact_seed, messages)))
                # long enough to cover the flooded run twice over
                seconds = 2.0 + 2 * messages / quiet[-1]
                flooder = subprocess.Popen(
                    [sys.executable, "-m", "bench.stamps", "--flood", str(port), bob_onion]
                    + [f"{seconds:.1f}"],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(1.0)  # the flood is under way
                flooded.append(asyncio.run(contact_load(port, bob_seed, contact_seed, messages)))
                out, _ = flooder.communicate(timeout=seconds + 60)
                flood_rates.append(int(out.split()[0]) / seconds)
        finally:
            if server.stdin is not None:
                server.stdin.close()
            server.wait(30)
    return {
        "stamp_seconds": {**summary(made), "p95": percentile(made, 95)},
        "check_seconds": summary(checked),
        "check_share": ratio(statistics.median(checked), statistics.median(made)),
        "contact_quiet_per_s": summary(quiet),
        "contact_flooded_per_s": summary(flooded),
        "flood_rcpts_per_s": summary(flood_rates),
        "flooded_ratio": ratio(statistics.median(flooded), statistics.median(quiet)),
    }


def report(data: dict[str, Any]) -> None:
    made, checked = data["stamp_seconds"], data["check_seconds"]
    print_table(
        "proof of work (default cost: 9 bits, 8 MiB argon2id)",
        ["", "median s", "p95 s", "min s", "max s"],
        [
            ["make a stamp", made["median"], made["p95"], made["min"], made["max"]],
            ["check a stamp", checked["median"], "-", checked["min"], checked["max"]],
        ],
    )
    share = data["check_share"]
    verdict = "met" if share < 0.01 else "missed"
    print(f"check / make (medians): {share:.3%}  (target < 1 %: {verdict})")
    quiet, flooded = data["contact_quiet_per_s"], data["contact_flooded_per_s"]
    print_table(
        "a contact's sealed 5 KB mail, accepted per second",
        ["", "median", "min", "max"],
        [
            ["quiet", quiet["median"], quiet["min"], quiet["max"]],
            ["flooded", flooded["median"], flooded["min"], flooded["max"]],
        ],
    )
    rate = data["flood_rcpts_per_s"]["median"]
    flooded_ratio = data["flooded_ratio"]
    verdict = "met" if flooded_ratio >= 0.9 else "missed"
    print(f"flood: {rate:.0f} stamp-less stranger RCPTs/s refused with 450 meanwhile")
    print(f"flooded / quiet: {flooded_ratio:.2f}  (target >= 0.90: {verdict})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--flood", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if args.flood:
        port, onion, seconds = args.flood
        print(asyncio.run(flood(int(port), onion, float(seconds))))
        return 0
    return run_and_report(args, "stamps", run, report)


if __name__ == "__main__":
    sys.exit(main())
