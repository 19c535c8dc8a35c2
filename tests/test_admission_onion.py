"""Strangers over the private Tor network: Requests, a real box paying, accept and block.

Alice's box (``onionmail run``, a cheap stamp so that 200 of them take
seconds) is written to by Bob's real box, a stranger that gets ``450`` with
the cost, makes a stamp and succeeds; and by 50 fresh onions (identities
made here, sealing as a box does, through a client tor), 4 messages each,
all of which land in Requests. Then Alice accepts Bob (his later mail goes
to INBOX without a stamp) and blocks one onion (refused at RCPT). The tests
run in file order on one world.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onionmail.admission.stamps import StampCost, check_stamp, make_stamp
from onionmail.core.errors import DeliveryError
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.identity import Identity
from onionmail.smtp.client import PeerSession
from onionmail.tor.socks import open_tor_stream
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import ClientTor, RunningBox, start_box, start_client_tor, submit

pytestmark = pytest.mark.tor

COST = StampCost(bits=4, memory_kib=8192, passes=1)
STRANGERS, EACH = 50, 4


@dataclass
class World:
    alice: RunningBox
    bob: RunningBox
    tor: ClientTor
    strangers: list[Identity]


@pytest.fixture(scope="module")
def world(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("strangers")
    alice = start_box(
        root,
        "alice",
        testnet.directory,
        settings={
            "inbound.pow_bits": COST.bits,
            "inbound.strangers_messages_per_hour": 1000,
        },
        strangers_to_inbox=False,  # a real box's default: Requests, behind a stamp
    )
    started: list[Any] = [alice]
    try:
        started.append(bob := start_box(root, "bob", testnet.directory, verbose=True))
        started.append(tor := start_client_tor(root / "tor", client_tor_options(testnet)))
        yield World(alice, bob, tor, [Identity.generate() for _ in range(STRANGERS)])
    finally:
        for running in reversed(started):
            running.stop()


def folder(box: RunningBox, sub: str = "") -> list[Path]:
    root = box.maildir / sub
    return [p for d in ("new", "cur") if (root / d).is_dir() for p in (root / d).iterdir()]


def wait_until(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def requests_cli(box: RunningBox, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "onionmail.cli", "requests", *args, "--dir", str(box.new.box_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


async def stranger_session(world: World) -> tuple[PeerSession, bytes]:
    for attempt in range(5):  # a fresh circuit may fail once on the small network
        try:
            sock = await open_tor_stream(
                "127.0.0.1", world.tor.socks_port, world.alice.onion, 25, timeout=60
            )
            break
        except DeliveryError:
            if attempt == 4:
                raise
            await asyncio.sleep(1)
    session = await PeerSession.open(sock, ehlo_name="localhost", timeout=60)
    return session, parse_seal_keyword_params(session.extensions[SEAL_KEYWORD])


def paid(stamp: str, world: World, mail_from: str, challenge: bytes) -> bool:
    reason = check_stamp(
        stamp, COST, recipient=world.alice.address, sender=mail_from, challenge=challenge
    )
    return reason is None


async def send_as(
    world: World, stranger: Identity, count: int, *, stamp_for: bytes | None = None
) -> list[str]:
    """``count`` sealed messages from ``stranger`` in one session, each with a stamp (made
    for ``stamp_for`` instead of the session's challenge when given): the outcomes."""
    session, challenge = await stranger_session(world)
    mail_from = f"someone@{stranger.onion_address}"
    outcomes = []
    try:
        for n in range(count):
            stamp = await asyncio.to_thread(
                make_stamp,
                COST,
                recipient=world.alice.address,
                sender=mail_from,
                challenge=stamp_for or challenge,
            )
            while stamp_for is not None and paid(stamp, world, mail_from, challenge):
                # made for another session, yet paying for this one by chance (1 in 2**bits)
                stamp = make_stamp(
                    COST, recipient=world.alice.address, sender=mail_from, challenge=stamp_for
                )
            content = SealedContent(
                envelope_id=time.time_ns().to_bytes(16, "big"),
                created=int(time.time()),
                session_challenge=challenge,
                mail_from=mail_from,
                recipients=(world.alice.address,),
                message=(
                    f"From: {mail_from}\r\nTo: {world.alice.address}\r\n"
                    f"Subject: offer {n}\r\n\r\nBuy now.\r\n"
                ).encode(),
            )
            data = encode_for_smtp(
                seal(content, sender=stranger, recipient_onion=world.alice.onion)
            )

            async def payload(accepted: tuple[str, ...], data: bytes = data) -> bytes:
                return data

            try:
                await session.send(
                    mail_from,
                    (world.alice.address,),
                    payload,
                    prepared=data,
                    rcpt_options={world.alice.address: (f"POW={stamp}",)},
                )
                outcomes.append("250")
            except DeliveryError as exc:
                outcomes.append(str(exc))
                break
    finally:
        session.close()
    return outcomes


def test_a_real_box_pays_the_stamp_and_lands_in_requests(world: World) -> None:
    asyncio.run(submit(world.bob, world.alice.address, "hello stranger", "Hi Alice.\n"))
    wait_until(lambda: len(folder(world.alice, ".Requests")) == 1, "Bob's mail in Requests")
    assert folder(world.alice) == []
    log = "".join(world.bob.stderr_lines)
    assert log.count("the recipient asks for proof of work; computing it") == 1
    assert log.count("proof-of-work stamp(s)") == 1


def test_fifty_fresh_onions_land_in_requests(world: World) -> None:
    async def all_of_them() -> list[list[str]]:
        gate = asyncio.Semaphore(10)

        async def one(stranger: Identity) -> list[str]:
            async with gate:
                return await send_as(world, stranger, EACH)

        return await asyncio.gather(*(one(s) for s in world.strangers))

    outcomes = asyncio.run(all_of_them())
    assert all(o == ["250"] * EACH for o in outcomes), outcomes
    assert len(folder(world.alice, ".Requests")) == 1 + STRANGERS * EACH
    assert folder(world.alice) == []


def test_a_stamp_for_another_session_is_refused_over_tor(world: World) -> None:
    (outcome,) = asyncio.run(send_as(world, Identity.generate(), 1, stamp_for=b"\0" * 16))
    assert "450 4.7.0" in outcome and COST.announcement() in outcome


def test_accepted_sender_moves_to_inbox_and_stops_paying(world: World) -> None:
    out = requests_cli(world.alice, "accept", world.bob.address)
    assert "1 message(s) moved to INBOX" in out
    assert len(folder(world.alice)) == 1
    asyncio.run(submit(world.bob, world.alice.address, "again", "Hi again.\n"))
    wait_until(lambda: len(folder(world.alice)) == 2, "Bob's second mail in INBOX")
    asyncio.run(submit(world.bob, world.alice.address, "third", "And again.\n"))
    wait_until(lambda: len(folder(world.alice)) == 3, "Bob's third mail in INBOX")
    log = "".join(world.bob.stderr_lines)
    assert log.count("the recipient asks for proof of work; computing it") == 1
    # The second message still paid (Bob's box learns from its 250 that no stamp was
    # needed); the third did not.
    assert log.count("proof-of-work stamp(s)") == 2


def test_a_blocked_onion_is_refused_at_rcpt(world: World) -> None:
    spammer = world.strangers[0]
    out = requests_cli(world.alice, "block", f"someone@{spammer.onion_address}")
    assert f"{EACH} message(s) deleted" in out
    (outcome,) = asyncio.run(send_as(world, spammer, 1))
    assert "550 5.7.1 This box does not accept mail from you" in outcome
