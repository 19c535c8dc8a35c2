"""Cover traffic without tor: the flag inside the seal, the size on the wire, the receiver
that drops dummies, and the sender that never bounces or lists them.

The receiving box is the real inbound server on loopback; the sending side is
the real delivery agent, whose SOCKS hop alone is replaced by a direct
connection (as in test_delivery_agent.py). Onion delivery of dummies is in
test_cover_onion.py.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import mailbox
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.public
import pytest

from onionmail.box.delivery import DeliveryAgent
from onionmail.box.inbound import InboundHandler
from onionmail.config.box import DeliverySection
from onionmail.core.errors import EnvelopeError, QueueError
from onionmail.seal.envelope import (
    ENVELOPE_OVERHEAD,
    ENVELOPE_VERSION,
    SEAL_KEYWORD,
    SealedContent,
    decode_from_smtp,
    encode_for_smtp,
    open_envelope,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.identity import Identity
from onionmail.seal.padding import PADDING_FLOOR, pad
from onionmail.smtp.server import server_port, start_smtp_server
from onionmail.store import queue as outbound_queue
from onionmail.store.maildir import Maildir
from onionmail.store.queue import (
    OutboundQueue,
    list_queue,
    queue_key,
    reschedule_queue,
)
from onionmail.store.replay_cache import ReplayCache
from tests.loopback_servers import inbound_handler, serving, start_inbound
from tests.smtp_client import RawSMTP, code

ALICE = Identity.generate()
BOB = Identity.generate()
DAY = 24 * 3600.0
SHORT = (
    f"From: alice@{ALICE.onion_address}\r\nTo: bob@{BOB.onion_address}\r\n"
    "Subject: lunch?\r\n\r\nTomorrow at noon?\r\n"
).encode()


def content(
    *, cover: bool, message: bytes = SHORT, challenge: bytes = b"\x05" * 16
) -> SealedContent:
    return SealedContent(
        envelope_id=secrets.token_bytes(16),
        created=int(time.time()),
        session_challenge=challenge,
        mail_from=f"alice@{ALICE.onion_address}",
        recipients=(f"bob@{BOB.onion_address}",),
        message=message,
        cover=cover,
    )


def raw_envelope(plaintext: bytes) -> bytes:
    """A valid seal (Alice to Bob) around any plaintext, to test the parser's reading."""
    box = nacl.public.Box(ALICE.x25519_private_key(), BOB.x25519_public_key())
    nonce = secrets.token_bytes(24)
    return b"OMSE" + bytes([ENVELOPE_VERSION]) + nonce + box.encrypt(plaintext, nonce).ciphertext


def plaintext_fields(message: bytes = b"m") -> bytes:
    mail_from = b"a@b"
    return b"".join(
        [
            b"OMSE" + bytes([ENVELOPE_VERSION]) + bytes(BOB.x25519_public_key()),
            b"\x02" * 16,
            struct.pack(">Q", int(time.time())),
            b"\x05" * 16,
            struct.pack(">H", len(mail_from)) + mail_from,
            struct.pack(">H", 0),
            struct.pack(">I", len(message)) + message,
        ]
    )


def open_at_bob(envelope: bytes) -> SealedContent:
    return open_envelope(envelope, recipient=BOB, sender_onion=ALICE.onion_address)


# --- the flag inside the seal -------------------------------------------------------


@pytest.mark.parametrize("cover", [False, True])
def test_cover_flag_round_trips(cover: bool) -> None:
    sealed = content(cover=cover, message=b"" if cover else SHORT)
    opened = open_at_bob(seal(sealed, sender=ALICE, recipient_onion=BOB.onion_address))
    assert opened == sealed and opened.cover is cover


def test_an_envelope_sealed_before_the_flag_existed_opens_as_mail() -> None:
    """Old layout: zero padding (or nothing) right after the message."""
    for tail in (b"", bytes(3), bytes(PADDING_FLOOR)):
        assert open_at_bob(raw_envelope(plaintext_fields() + tail)).cover is False


def test_the_flag_is_the_byte_after_the_message() -> None:
    assert open_at_bob(raw_envelope(pad(plaintext_fields() + b"\x01"))).cover is True
    assert open_at_bob(raw_envelope(plaintext_fields() + b"\x01")).cover is True


@pytest.mark.parametrize("tail", [b"\x02", b"\xff", b"\x01\x00\x01", b"\x00\x00\x01"])
def test_any_other_flags_or_a_nonzero_tail_is_refused(tail: bytes) -> None:
    with pytest.raises(EnvelopeError, match="padding is not zero"):
        open_at_bob(raw_envelope(pad(plaintext_fields() + tail)))


def test_mail_sealed_now_reads_as_padded_mail_to_an_older_receiver() -> None:
    """The flags byte of a message is 0: to a receiver that predates it, more padding."""
    envelope = seal(content(cover=False), sender=ALICE, recipient_onion=BOB.onion_address)
    box = nacl.public.Box(BOB.x25519_private_key(), ALICE.x25519_public_key())
    plaintext = box.decrypt(envelope[29:], envelope[5:29])
    end = plaintext.index(SHORT) + len(SHORT)
    assert not any(plaintext[end:])


def test_cover_flag_must_be_a_bool() -> None:
    with pytest.raises(EnvelopeError, match="cover flag"):
        content(cover=1)  # type: ignore[arg-type]


# --- size on the wire ---------------------------------------------------------------


def test_a_dummy_and_a_short_message_have_the_same_data_length() -> None:
    dummy = encode_for_smtp(
        seal(content(cover=True, message=b""), sender=ALICE, recipient_onion=BOB.onion_address)
    )
    for message in (SHORT, SHORT + b"x" * 2000, SHORT + b"y" * 3500):
        real = encode_for_smtp(
            seal(
                content(cover=False, message=message),
                sender=ALICE,
                recipient_onion=BOB.onion_address,
            )
        )
        assert len(real) == len(dummy)
    assert len(decode_from_smtp(dummy)) == ENVELOPE_OVERHEAD + PADDING_FLOOR


# --- the receiving box ----------------------------------------------------------------


class RecordingInbound(InboundHandler):
    """The real inbound handler, noting what a wire observer at the peer end could see."""

    seen: list[dict[str, Any]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.seen.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "data_length": len(envelope.original_content),
                "reply": reply,
            }
        )
        return reply


@dataclass
class Peer:
    identity: Identity
    port: int
    root: Path
    cache: ReplayCache
    handler: RecordingInbound
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"bob@{self.identity.onion_address}"

    def stored(self) -> list[bytes]:
        folder = self.root / "mail" / "bob"
        if not folder.exists():
            return []
        store = mailbox.Maildir(folder, create=False)
        return [store.get_bytes(key) for key in store.keys()]


@pytest.fixture
async def bob(tmp_path: Path) -> AsyncIterator[Peer]:
    root = tmp_path / "bob"
    cache = ReplayCache(root / "state" / "replay.sqlite")
    handler = inbound_handler(RecordingInbound, BOB, root / "mail", cache, local_parts=("bob",))
    handler.seen = []
    async with serving(start_inbound(handler, data_size_limit=1 << 20, timeout=10)) as port:
        yield Peer(BOB, port, root, cache, handler, handler.seen)
    cache.close()


async def session(port: int) -> tuple[RawSMTP, bytes]:
    client, _ = await RawSMTP.connect(port)
    ehlo = await client.cmd("EHLO localhost")
    for line in ehlo.splitlines():
        keyword, _, params = line[4:].partition(" ")
        if keyword == SEAL_KEYWORD:
            return client, parse_seal_keyword_params(params)
    raise AssertionError("no seal keyword")


async def send(peer: Peer, build: Any) -> tuple[str, bytes]:
    client, challenge = await session(peer.port)
    assert code(await client.cmd(f"MAIL FROM:<alice@{ALICE.onion_address}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{peer.address}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    data = build(challenge)
    reply = await client.cmd(data + b".\r\n")
    await client.close()
    return reply, data


def sealed_dummy(envelope_id: bytes) -> Any:
    def build(challenge: bytes) -> bytes:
        dummy = SealedContent(
            envelope_id=envelope_id,
            created=int(time.time()),
            session_challenge=challenge,
            mail_from=f"alice@{ALICE.onion_address}",
            recipients=(f"bob@{BOB.onion_address}",),
            message=b"",
            cover=True,
        )
        return encode_for_smtp(seal(dummy, sender=ALICE, recipient_onion=BOB.onion_address))

    return build


async def test_inbound_answers_a_dummy_250_and_stores_nothing(
    bob: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reply, _ = await send(bob, sealed_dummy(b"\x09" * 16))
    assert reply == "250 2.0.0 Delivered (sealed)"  # word for word what mail gets
    assert bob.stored() == [] and not (bob.root / "mail").exists()
    assert len(bob.cache) == 1 and bob.cache.seen(b"\x09" * 16)
    assert bob.handler.cover_received == 1 and bob.handler.delivered == 0
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "cover" in r.message]


async def test_a_replayed_dummy_is_refused_like_a_replayed_message(bob: Peer) -> None:
    reply, captured = await send(bob, sealed_dummy(b"\x0a" * 16))
    assert code(reply) == 250
    replay, _ = await send(bob, lambda _challenge: captured)
    assert code(replay) == 550 and "challenge" in replay
    assert bob.stored() == [] and len(bob.cache) == 1


async def test_a_retried_dummy_is_acknowledged_once_like_a_retried_message(bob: Peer) -> None:
    for _ in range(2):  # same envelope id, fresh session
        reply, _ = await send(bob, sealed_dummy(b"\x0b" * 16))
        assert code(reply) == 250
    assert reply == "250 2.0.0 Already delivered"
    assert bob.stored() == [] and len(bob.cache) == 1 and bob.handler.cover_received == 1


# --- the sending box ------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_agent(
    tmp_path: Path, port: int | None, clock: Clock | None = None
) -> tuple[DeliveryAgent, OutboundQueue]:
    """Alice's agent; with ``port`` its connections go straight to that loopback server."""
    queue = OutboundQueue(tmp_path / "alice" / "queue", queue_key(ALICE.seed))
    closed = _closed_port()
    agent = DeliveryAgent(
        queue=queue,
        identity=ALICE,
        settings=DeliverySection(retry_initial=30.0, retry_max=3600.0, max_lifetime=5 * DAY),
        socks_address=lambda: ("127.0.0.1", closed),
        socks_timeout=5,
        sender_maildir=lambda part: Maildir(tmp_path / "alice" / "mail" / part),
        clock=clock or time.time,
    )
    if port is not None:

        async def connect_directly(destination: str) -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

        agent.connect = connect_directly  # type: ignore[method-assign]
    return agent, queue


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_until(agent: DeliveryAgent, condition: Any, timeout: float = 10) -> None:
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    finally:
        await agent.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def bounces(tmp_path: Path) -> list[str]:
    folder = tmp_path / "alice" / "mail" / "alice"
    return list(mailbox.Maildir(folder, create=False).keys()) if folder.exists() else []


async def test_dummy_and_message_look_alike_to_the_peer_until_the_seal_opens(
    tmp_path: Path, bob: Peer
) -> None:
    """Same SMTP envelope, same DATA length, same reply; only bob's Maildir tells."""
    agent, queue = make_agent(tmp_path, bob.port)
    sender, rcpt = f"alice@{ALICE.onion_address}", (bob.address,)
    real = queue.enqueue(BOB.onion_address, sender, rcpt, SHORT)
    queue.enqueue(BOB.onion_address, sender, rcpt, b"", cover=True)
    await run_until(agent, lambda: not queue.states())
    first, second = bob.seen
    assert first == second
    assert first["reply"] == "250 2.0.0 Delivered (sealed)"
    assert first["mail_from"] == sender and first["rcpt_tos"] == [bob.address]
    assert len(bob.stored()) == 1 and b"lunch?" in bob.stored()[0]
    assert len(bob.cache) == 2 and bob.handler.cover_received == 1
    (report,) = agent.reports  # the dummy is no delivery report
    assert report.queue_id == real.id
    assert bounces(tmp_path) == []


class PlainPeer:
    """An ordinary SMTP server (no seal keyword) that would store whatever it gets."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append("MAIL")
        envelope.mail_from = address
        return "250 OK"

    async def handle_exception(self, error: Exception) -> str:
        raise AssertionError(f"peer failed: {error!r}")


async def test_a_dummy_never_goes_to_a_plain_peer(tmp_path: Path) -> None:
    peer = PlainPeer()
    server = await start_smtp_server(peer, "127.0.0.1", 0, hostname="peer")  # type: ignore[arg-type]
    try:
        agent, queue = make_agent(tmp_path, server_port(server))
        queue.enqueue(
            BOB.onion_address, f"alice@{ALICE.onion_address}", ("bob@x",), b"", cover=True
        )
        await run_until(agent, lambda: not queue.states())
    finally:
        server.close()
        await server.wait_closed()
    assert peer.commands == []  # dropped before MAIL FROM
    assert bounces(tmp_path) == [] and agent.reports == []


async def test_a_refused_dummy_is_dropped_with_a_warning_and_no_bounce(
    tmp_path: Path, bob: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    agent, queue = make_agent(tmp_path, bob.port)
    nobody = f"nobody@{BOB.onion_address}"  # bob's box does not host it: 550
    queue.enqueue(BOB.onion_address, f"alice@{ALICE.onion_address}", (nobody,), b"", cover=True)
    await run_until(agent, lambda: not queue.states())
    assert bounces(tmp_path) == [] and bob.seen == []
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "cover envelope dropped" in warning.message and "cover_contacts" in warning.message
    assert BOB.onion_address not in warning.message and "@" not in warning.message


async def test_a_dummy_past_its_lifetime_is_dropped_not_bounced(tmp_path: Path) -> None:
    clock = Clock(time.time())
    agent, queue = make_agent(tmp_path, None, clock)  # SOCKS port closed: tor unreachable
    queue.enqueue(BOB.onion_address, f"alice@{ALICE.onion_address}", ("bob@x",), b"", cover=True)
    await run_until(agent, lambda: queue.states()[0].attempts == 1)
    clock.now += 5 * DAY + 60
    queue.reschedule_all(clock.now)
    await run_until(agent, lambda: not queue.states())
    assert bounces(tmp_path) == []


# --- the queue ------------------------------------------------------------------------


def test_dummies_are_queued_marked_and_left_out_of_the_listing(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", queue_key(ALICE.seed))
    real = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), SHORT)
    dummy = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), b"", cover=True)
    assert queue.load(dummy.id).cover and not queue.load(real.id).cover
    assert [s.id for s in list_queue(tmp_path / "q")] == [real.id]
    assert {s.id for s in queue.states()} == {real.id, dummy.id}
    (state,) = [s for s in queue.states() if s.cover]
    assert queue.record_failure(state, "offline", 1e10).cover  # the mark survives a retry
    (tmp_path / "q" / "active" / f"{dummy.id}.state").unlink()
    queue.recover()  # a crash right after the message's fsync: the mark comes back
    assert [s.id for s in queue.states() if s.cover] == [dummy.id]


def test_first_try_is_the_given_time(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", queue_key(ALICE.seed))
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), SHORT, next_try=2e9)
    (state,) = list_queue(tmp_path / "q")
    assert (state.id, state.next_try, state.attempts) == (entry.id, 2e9, 0)


def test_a_tor_restart_does_not_release_held_mail_but_queue_flush_does(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", queue_key(ALICE.seed))
    held = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), SHORT, next_try=2e9)
    failed = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), SHORT)
    (state,) = [s for s in queue.states() if s.id == failed.id]
    queue.record_failure(state, "offline", 2e9)
    queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), b"", next_try=2e9, cover=True)
    assert queue.reschedule_all(100.0) == 1  # the box's flush after tor came back
    times = {s.id: s.next_try for s in queue.states()}
    assert times[failed.id] == 100.0 and times[held.id] == 2e9
    assert reschedule_queue(tmp_path / "q", 100.0) == 1  # 'onionmail queue flush': the user's
    assert {s.next_try for s in queue.states()} == {100.0}  # dummies go too, uncounted


def test_a_failed_enqueue_leaves_no_state_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state is written first (so no listing sees a held entry as due); on failure, undone."""
    queue = OutboundQueue(tmp_path / "q", queue_key(ALICE.seed))

    def full_disk(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outbound_queue.os, "rename", full_disk)
    with pytest.raises(QueueError, match="No space"):
        queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), SHORT, next_try=2e9)
    assert list((tmp_path / "q" / "active").iterdir()) == []
