"""Strangers, contacts, stamps and limits, on the inbound server over a real socket (no tor).

Bob's inbound server with its :class:`Admission`; senders are fresh onion
identities that seal as a real box does (version 1, enough here: the seal
is not what these tests attack). The Tor side, with real boxes paying and
retrying, is tests/test_admission_onion.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onionmail.admission.gate import Admission
from onionmail.admission.requests import Requests
from onionmail.admission.senders import SenderBook, senders_key
from onionmail.admission.stamps import StampCost, check_stamp, make_stamp
from onionmail.box.inbound import InboundHandler
from onionmail.config.sections import InboundSection
from onionmail.seal.envelope import SealedContent, encode_for_smtp, seal
from onionmail.seal.identity import Identity
from onionmail.store.contacts import AddressBook
from onionmail.store.replay_cache import ReplayCache
from tests.loopback_servers import inbound_handler, serving, start_inbound
from tests.smtp_client import RawSMTP, code
from tests.test_inbound_server import open_session, sealed_data

CHEAP = StampCost(bits=4, memory_kib=64, passes=1)
KEY = b"\x05" * 32


@dataclass
class Box:
    bob: Identity
    port: int
    root: Path
    handler: InboundHandler
    senders: SenderBook

    @property
    def address(self) -> str:
        return f"bob@{self.bob.onion_address}"

    def folder(self, sub: str = "") -> list[Path]:
        root = self.root / "mail" / "bob" / sub
        return sorted(
            p for d in ("new", "cur") if (root / d).exists() for p in (root / d).iterdir()
        )


def settings(**changes: object) -> InboundSection:
    base = InboundSection(
        pow_bits=CHEAP.bits, pow_memory_kib=CHEAP.memory_kib, stranger_refusal_delay=0.0
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def box(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Box]:
    bob = Identity.generate()
    cache = ReplayCache(tmp_path / "replay.sqlite")
    senders = SenderBook(tmp_path / "state" / "senders.sqlite", senders_key(bob.seed))
    handler = inbound_handler(InboundHandler, bob, tmp_path / "mail", cache)
    marker = request.node.get_closest_marker("inbound")
    handler.admission = Admission(settings(**(marker.kwargs if marker else {})), tmp_path, senders)
    async with serving(start_inbound(handler, data_size_limit=1024 * 1024, timeout=10)) as port:
        yield Box(bob, port, tmp_path, handler, senders)
    cache.close()
    senders.close()


async def send(
    box: Box,
    sender: Identity,
    *,
    stamp: str | None = None,
    make: bool = False,
    envelope_id: bytes | None = None,
) -> tuple[str, str]:
    """One sealed message from ``sender``: the RCPT reply, and the final reply ("" if
    RCPT refused). ``make``: a right stamp for this session."""
    client, challenge = await open_session(box.port)
    mail_from = f"alice@{sender.onion_address}"
    try:
        assert code(await client.cmd(f"MAIL FROM:<{mail_from}>")) == 250
        if make:
            stamp = make_stamp(CHEAP, recipient=box.address, sender=mail_from, challenge=challenge)
        param = f" POW={stamp}" if stamp else ""
        rcpt = await client.cmd(f"RCPT TO:<{box.address}>{param}")
        if code(rcpt) != 250:
            return rcpt, ""
        assert code(await client.cmd("DATA")) == 354
        data = sealed_data(
            sender,
            box.bob,
            challenge,
            envelope_id=envelope_id or time.time_ns().to_bytes(16, "big"),
        )
        return rcpt, await client.cmd(data + b".\r\n")
    finally:
        await client.close()


def test_a_stamp_pays_only_for_its_recipient_sender_session_and_time() -> None:
    good = {"recipient": "bob@x.onion", "sender": "alice@y.onion", "challenge": b"\1" * 16}
    stamp = make_stamp(CHEAP, **good)  # type: ignore[arg-type]
    assert check_stamp(stamp, CHEAP, **good) is None  # type: ignore[arg-type]
    assert check_stamp(stamp.upper(), CHEAP, **good) is None  # type: ignore[arg-type]
    assert check_stamp("12.zz", CHEAP, **good) == "malformed stamp"  # type: ignore[arg-type]
    later = time.time() + 3600
    assert "too old" in str(check_stamp(stamp, CHEAP, **good, now=later))  # type: ignore[arg-type]


def test_an_announced_cost_is_read_back_and_bounded() -> None:
    text = "450 4.7.0 Proof of work needed (no stamp): " + StampCost().announcement()
    assert StampCost.from_text(text) == StampCost()
    assert StampCost.from_text("X-ONIONMAIL-POW argon2id bits=40 m=8192 t=1") is None
    assert StampCost.from_text("X-ONIONMAIL-POW argon2id bits=9 m=99999999 t=1") is None
    assert StampCost.from_text("250 OK") is None


def test_the_sender_book_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "senders.sqlite"
    book = SenderBook(path, KEY)
    book.know("a.onion", "wrote-to")
    book.block("b.onion")
    book.record(["c.onion", "c.onion", "*strangers"])
    book.close()
    again = SenderBook(path, KEY)
    assert again.is_known("a.onion") and again.is_blocked("b.onion")
    assert again.count("c.onion") == 2 and again.count("*strangers") == 1
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"a.onion" not in path.read_bytes()  # keyed hashes only
    again.close()


async def test_a_stranger_without_a_stamp_is_told_the_cost(box: Box) -> None:
    rcpt, _ = await send(box, Identity.generate())
    assert rcpt.startswith("450 4.7.0 Proof of work needed")
    assert StampCost.from_text(rcpt) == CHEAP
    client, _ = await RawSMTP.connect(box.port)
    assert CHEAP.announcement() in await client.cmd("EHLO localhost")
    await client.close()
    assert box.folder() == [] and box.folder(".Requests") == []


async def test_a_stranger_with_a_stamp_lands_in_requests(box: Box) -> None:
    rcpt, final = await send(box, Identity.generate(), make=True)
    assert rcpt == "250 2.1.5 OK, stamp accepted" and code(final) == 250
    assert box.folder() == [] and len(box.folder(".Requests")) == 1


def wrong_stamp(box: Box, mail_from: str, session: bytes, **other: object) -> str:
    """A stamp made for ``other`` (another challenge or recipient) that does not also pay,
    by chance (1 in 2**bits), for this session's recipient and challenge."""
    made = {"recipient": box.address, "sender": mail_from, "challenge": session, **other}
    while True:
        stamp = make_stamp(CHEAP, **made)  # type: ignore[arg-type]
        here = check_stamp(stamp, CHEAP, recipient=box.address, sender=mail_from, challenge=session)
        if here is not None:
            return stamp


async def test_stamps_for_another_session_or_recipient_or_time_are_refused(box: Box) -> None:
    mail_from = f"alice@{Identity.generate().onion_address}"
    client, challenge = await open_session(box.port)
    await client.cmd(f"MAIL FROM:<{mail_from}>")
    other_session = wrong_stamp(box, mail_from, challenge, challenge=b"\0" * 16)
    reply = await client.cmd(f"RCPT TO:<{box.address}> POW={other_session}")
    assert reply.startswith("450 4.7.0") and "does not pay" in reply
    postmaster = f"postmaster@{box.bob.onion_address}"
    other_rcpt = wrong_stamp(box, mail_from, challenge, recipient=postmaster)
    assert "does not pay" in await client.cmd(f"RCPT TO:<{box.address}> POW={other_rcpt}")
    old = make_stamp(
        CHEAP, recipient=box.address, sender=mail_from, challenge=challenge, now=time.time() - 3600
    )
    assert "too old" in await client.cmd(f"RCPT TO:<{box.address}> POW={old}")
    await client.close()


async def test_a_contact_goes_to_inbox_and_never_pays(box: Box) -> None:
    carol = Identity.generate()
    AddressBook(box.root).put("carol", f"carol@{carol.onion_address}")
    rcpt, final = await send(box, carol)  # another local part of carol's onion: same party
    assert rcpt == "250 2.1.5 OK" and code(final) == 250
    assert len(box.folder()) == 1 and box.folder(".Requests") == []


async def test_accept_moves_the_requests_and_later_mail_goes_to_inbox(box: Box) -> None:
    dave = Identity.generate()
    for _ in range(2):
        assert code((await send(box, dave, make=True))[1]) == 250
    requests = Requests(box.root, ("bob", "postmaster"), box.bob.seed)
    (first, second) = requests.pending("bob")
    assert first.sender == f"alice@{dave.onion_address}"
    assert requests.accept("bob", first.sender) == 2
    assert len(box.folder()) == 2 and box.folder(".Requests") == []
    assert f"alice@{dave.onion_address}" in AddressBook(box.root).entries().values()
    rcpt, final = await send(box, dave)  # no stamp now
    assert code(final) == 250 and len(box.folder()) == 3


async def test_block_refuses_at_rcpt_and_deletes_the_requests(box: Box) -> None:
    eve = Identity.generate()
    assert code((await send(box, eve, make=True))[1]) == 250
    requests = Requests(box.root, ("bob", "postmaster"), box.bob.seed)
    assert requests.block("bob", f"alice@{eve.onion_address}") == 1
    assert box.folder(".Requests") == []
    rcpt, _ = await send(box, eve, make=True)
    assert rcpt.startswith("550 5.7.1")
    assert requests.unblock(f"other@{eve.onion_address}")  # by onion: every address
    assert code((await send(box, eve, make=True))[1]) == 250


async def test_ignore_deletes_one_request(box: Box) -> None:
    frank = Identity.generate()
    for _ in range(2):
        await send(box, frank, make=True)
    requests = Requests(box.root, ("bob", "postmaster"), box.bob.seed)
    requests.ignore("bob", requests.pending("bob")[0].key)
    assert len(box.folder(".Requests")) == 1


@pytest.mark.inbound(stranger_messages_per_hour=2, strangers_messages_per_hour=3)
async def test_limits_per_stranger_and_for_all_strangers(box: Box) -> None:
    grace = Identity.generate()
    assert [code((await send(box, grace, make=True))[1]) for _ in range(2)] == [250, 250]
    rcpt, _ = await send(box, grace, make=True)
    assert rcpt.startswith("450 4.7.1 Too much mail from you this hour (at most 2")
    assert code((await send(box, Identity.generate(), make=True))[1]) == 250
    rcpt, _ = await send(box, Identity.generate(), make=True)
    assert rcpt.startswith("450 4.7.1 This box takes at most 3 messages an hour")
    carol = Identity.generate()
    AddressBook(box.root).put("carol", f"carol@{carol.onion_address}")
    assert code((await send(box, carol))[1]) == 250  # contacts are not counted


@pytest.mark.inbound(strangers="refuse")
async def test_strangers_refused(box: Box) -> None:
    rcpt, _ = await send(box, Identity.generate(), make=True)
    assert rcpt == "550 5.7.1 This box takes mail only from its contacts"


@pytest.mark.inbound(strangers="inbox", pow_bits=0)
async def test_strangers_to_inbox_without_stamps(box: Box) -> None:
    assert code((await send(box, Identity.generate()))[1]) == 250
    assert len(box.folder()) == 1 and box.folder(".Requests") == []


async def test_gateway_mail_is_sorted_by_its_clearnet_sender(box: Box) -> None:
    """A configured gateway pays no stamp; what it relays lands by the clearnet sender:
    a stranger's in Requests, a contact's in INBOX, a blocked address's refused."""
    from onionmail.gateway_link.protocol import GATEWAY_SENDER_LOCAL_PART, seal_for_box

    gateway = Identity.generate()
    box.handler.gateways = frozenset({gateway.onion_address})
    relay = f"{GATEWAY_SENDER_LOCAL_PART}@{gateway.onion_address}"

    async def relay_from(sender: str) -> str:
        client, challenge = await open_session(box.port)
        try:
            assert code(await client.cmd(f"MAIL FROM:<{relay}>")) == 250
            assert code(await client.cmd(f"RCPT TO:<{box.address}>")) == 250  # no stamp asked
            assert code(await client.cmd("DATA")) == 354
            inner = seal_for_box(
                box.bob.onion_address,
                mail_from=sender,
                recipients=(box.address,),
                message=f"From: {sender}\r\nSubject: hi\r\n\r\nhello\r\n".encode(),
            )
            content = SealedContent(
                envelope_id=time.time_ns().to_bytes(16, "big"),
                created=int(time.time()),
                session_challenge=challenge,
                mail_from=relay,
                recipients=(box.address,),
                message=inner,
            )
            sealed = seal(content, sender=gateway, recipient_onion=box.bob.onion_address)
            return await client.cmd(encode_for_smtp(sealed) + b".\r\n")
        finally:
            await client.close()

    assert code(await relay_from("carol@clear.example")) == 250
    assert len(box.folder(".Requests")) == 1 and box.folder() == []
    AddressBook(box.root).put("dave", "dave@clear.example")
    assert code(await relay_from("Dave@Clear.example")) == 250
    assert len(box.folder()) == 1
    box.senders.block("eve@clear.example")
    assert (await relay_from("eve@clear.example")).startswith("550 5.7.1")


def test_the_policy_rule_never_from_strangers_refuses_them(tmp_path: Path) -> None:
    from onionmail.box.create import create_box
    from onionmail.config.box import load_config

    new = create_box(tmp_path / "box", "alice")
    config_path = new.box_dir / "onionmail.toml"
    text = config_path.read_text().replace("# rules = []", 'rules = ["never-from-strangers"]', 1)
    config_path.write_text(text)
    config = load_config(new.box_dir)
    senders = SenderBook(tmp_path / "senders.sqlite", KEY)
    admission = Admission(
        config.inbound,
        new.box_dir,
        senders,
        refuse_strangers="never-from-strangers" in config.policy.rules,
    )
    stranger = f"x@{Identity.generate().onion_address}"
    assert admission.at_rcpt(stranger, new.address, None, None) == (
        "550 5.7.1 This box takes mail only from its contacts"
    )
    senders.close()


@pytest.mark.inbound(stranger_refusal_delay=0.5)
async def test_a_refused_stranger_waits_for_its_answer_a_contact_does_not(box: Box) -> None:
    start = time.monotonic()
    rcpt, _ = await send(box, Identity.generate())
    assert rcpt.startswith("450 4.7.0") and time.monotonic() - start >= 0.5
    carol = Identity.generate()
    AddressBook(box.root).put("carol", f"carol@{carol.onion_address}")
    start = time.monotonic()
    assert code((await send(box, carol))[1]) == 250
    assert time.monotonic() - start < 0.5


async def test_the_sending_box_pays_and_its_queue_says_so_meanwhile(
    box: Box, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery agent against the real inbound server (loopback instead of tor): a
    450 naming the cost, the queue's note while stamps are made, then delivery."""
    import socket

    import onionmail.box.delivery as delivery
    from onionmail.config.box import DeliverySection
    from onionmail.store.maildir import Maildir
    from onionmail.store.queue import OutboundQueue, queue_key

    alice = Identity.generate()
    queue = OutboundQueue(tmp_path / "alice-queue", queue_key(alice.seed))
    agent = delivery.DeliveryAgent(
        queue=queue,
        identity=alice,
        settings=DeliverySection(retry_initial=30.0),
        socks_address=lambda: ("127.0.0.1", 9),
        socks_timeout=5,
        sender_maildir=lambda part: Maildir(tmp_path / "alice-mail" / part),
    )

    async def connect_directly(destination: str) -> socket.socket:
        return socket.create_connection(("127.0.0.1", box.port), timeout=5)

    agent.connect = connect_directly  # type: ignore[method-assign]
    notes: list[str] = []

    def watched_make_stamp(*args: object, **kwargs: object) -> str:
        notes.extend(state.last_error for state in queue.states())
        return make_stamp(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(delivery, "make_stamp", watched_make_stamp)
    sender = f"alice@{alice.onion_address}"
    queue.enqueue(
        box.bob.onion_address,
        sender,
        (box.address,),
        f"From: {sender}\r\nTo: {box.address}\r\nSubject: hi\r\n\r\nhello\r\n".encode(),
    )
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(30):
            while queue.states():
                await asyncio.sleep(0.05)
    finally:
        await agent.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert notes == [delivery.STAMPING]  # what `onionmail queue` and the TUI show meanwhile
    assert agent.stamp_costs[box.bob.onion_address] == CHEAP
    assert len(box.folder(".Requests")) == 1
