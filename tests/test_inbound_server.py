"""The inbound onion server on loopback (no tor): sealing, forgery, replay, relay, hostile input.

The same server sits behind the onion in the real-tor tests; here each
attack is driven byte by byte, one named test per attack.
"""

from __future__ import annotations

import asyncio
import base64
import mailbox
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onionmail.box.inbound import InboundHandler
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.identity import Identity
from onionmail.smtp.server import server_port
from onionmail.store.maildir import Maildir
from onionmail.store.replay_cache import ReplayCache
from tests.leaks import host_identity_in
from tests.loopback_servers import inbound_handler, serving, start_inbound
from tests.smtp_client import RawSMTP, code

BODY = b"Hello Bob,\r\n.leading dot\r\nbye\r\n"


@dataclass
class Inbound:
    bob: Identity
    port: int
    mail: Path

    def stored(self, local_part: str = "bob") -> list[bytes]:
        folder = self.mail / local_part
        if not folder.exists():
            return []
        store = mailbox.Maildir(folder, create=False)
        return [store.get_bytes(key) for key in store.keys()]


@pytest.fixture
async def inbound(tmp_path: Path) -> AsyncIterator[Inbound]:
    bob = Identity.generate()
    cache = ReplayCache(tmp_path / "replay.sqlite")
    handler = inbound_handler(InboundHandler, bob, tmp_path / "mail", cache)
    async with serving(start_inbound(handler, data_size_limit=1024 * 1024, timeout=10)) as port:
        yield Inbound(bob, port, tmp_path / "mail")
    cache.close()


def message_from(sender: str, to: str) -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: test\r\n\r\n".encode() + BODY


async def open_session(port: int) -> tuple[RawSMTP, bytes]:
    """Connect and EHLO; return the client and the session's seal challenge."""
    client, _ = await RawSMTP.connect(port)
    ehlo = await client.cmd("EHLO localhost")
    for line in ehlo.splitlines():
        keyword, _, params = line[4:].partition(" ")
        if keyword == SEAL_KEYWORD:
            return client, parse_seal_keyword_params(params)
    raise AssertionError("no seal keyword in EHLO")


def sealed_data(
    sender: Identity,
    recipient: Identity,
    challenge: bytes,
    *,
    local: str = "alice",
    rcpts: tuple[str, ...] | None = None,
    envelope_id: bytes = b"\x07" * 16,
    claimed_onion: str | None = None,
) -> bytes:
    onion = claimed_onion or sender.onion_address
    mail_from = f"{local}@{onion}"
    rcpts = rcpts or (f"bob@{recipient.onion_address}",)
    content = SealedContent(
        envelope_id=envelope_id,
        created=int(time.time()),
        session_challenge=challenge,
        mail_from=mail_from,
        recipients=rcpts,
        message=message_from(mail_from, rcpts[0]),
    )
    return encode_for_smtp(seal(content, sender=sender, recipient_onion=recipient.onion_address))


async def send_sealed(port: int, mail_from: str, rcpt: str, build: object) -> tuple[str, bytes]:
    client, challenge = await open_session(port)
    assert code(await client.cmd(f"MAIL FROM:<{mail_from}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    data = build(challenge)  # type: ignore[operator]
    reply = await client.cmd(data + b".\r\n")
    await client.close()
    return reply, data


async def test_sealed_mail_is_delivered_and_marked_verified(inbound: Inbound) -> None:
    alice = Identity.generate()
    rcpt = f"bob@{inbound.bob.onion_address}"
    reply, _ = await send_sealed(
        inbound.port,
        f"alice@{alice.onion_address}",
        rcpt,
        lambda ch: sealed_data(alice, inbound.bob, ch),
    )
    assert code(reply) == 250
    (stored,) = inbound.stored()
    assert stored.startswith(f"Return-Path: <alice@{alice.onion_address}>\n".encode())
    assert b"onionmail=pass" in stored
    assert stored.endswith(BODY.replace(b"\r\n", b"\n"))


async def test_forged_sender_with_own_key_is_refused(inbound: Inbound) -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    rcpt = f"bob@{inbound.bob.onion_address}"
    reply, _ = await send_sealed(
        inbound.port,
        f"alice@{alice.onion_address}",
        rcpt,
        lambda ch: sealed_data(mallory, inbound.bob, ch, claimed_onion=alice.onion_address),
    )
    assert code(reply) == 550 and "forged sender" in reply
    assert inbound.stored() == []


async def test_unsealed_onion_sender_is_refused(inbound: Inbound) -> None:
    alice = f"alice@{Identity.generate().onion_address}"
    client, _ = await open_session(inbound.port)
    await client.cmd(f"MAIL FROM:<{alice}>")
    await client.cmd(f"RCPT TO:<bob@{inbound.bob.onion_address}>")
    await client.cmd("DATA")
    reply = await client.cmd(message_from(alice, "bob") + b".\r\n")
    assert code(reply) == 550 and "must be sealed" in reply
    assert inbound.stored() == []


async def test_replayed_capture_is_refused(inbound: Inbound) -> None:
    alice = Identity.generate()
    sender, rcpt = f"alice@{alice.onion_address}", f"bob@{inbound.bob.onion_address}"
    reply, captured = await send_sealed(
        inbound.port, sender, rcpt, lambda ch: sealed_data(alice, inbound.bob, ch)
    )
    assert code(reply) == 250
    replay, _ = await send_sealed(inbound.port, sender, rcpt, lambda _ch: captured)
    assert code(replay) == 550 and "challenge" in replay.lower()
    assert len(inbound.stored()) == 1


async def test_retry_of_a_delivered_envelope_is_acknowledged_and_stored_once(
    inbound: Inbound,
) -> None:
    alice = Identity.generate()
    sender, rcpt = f"alice@{alice.onion_address}", f"bob@{inbound.bob.onion_address}"
    for _ in range(2):  # same envelope id, fresh session: the sender lost our 250
        reply, _ = await send_sealed(
            inbound.port, sender, rcpt, lambda ch: sealed_data(alice, inbound.bob, ch)
        )
        assert code(reply) == 250
    assert len(inbound.stored()) == 1


@pytest.fixture
def slow_maildir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Maildir write takes 0.3 s longer: a slow disk that widens race windows."""
    real_deliver = Maildir.deliver

    def deliver(self: Maildir, data: bytes, name: str | None = None) -> object:
        time.sleep(0.3)
        return real_deliver(self, data, name)

    monkeypatch.setattr(Maildir, "deliver", deliver)


@pytest.mark.usefixtures("slow_maildir")
async def test_retries_racing_the_first_session_are_stored_once(inbound: Inbound) -> None:
    """A sender killed mid-session retries while its first session is still storing.

    Regression: both sessions found the id unrecorded (it is recorded only
    once the Maildir copy is durable) and each stored a copy. A slow disk
    (``slow_maildir``) makes the window wide.
    """
    alice = Identity.generate()
    sender, rcpt = f"alice@{alice.onion_address}", f"bob@{inbound.bob.onion_address}"
    replies = await asyncio.gather(
        *(
            send_sealed(inbound.port, sender, rcpt, lambda ch: sealed_data(alice, inbound.bob, ch))
            for _ in range(4)
        )
    )
    assert [code(reply) for reply, _ in replies] == [250] * 4
    assert len(inbound.stored()) == 1
    assert sum("Already delivered" in reply for reply, _ in replies) == 3


@pytest.mark.usefixtures("slow_maildir")
async def test_sender_hanging_up_while_its_mail_is_stored_then_retrying_gets_one_copy(
    inbound: Inbound,
) -> None:
    """The sender is killed right after its end of data, while the Maildir write runs.

    Regression (the SIGKILL crash test in CI delivered a message twice):
    aiosmtpd cancels the handler when the peer hangs up; the Maildir write in
    its worker thread finished, the replay cache was never told, and the
    sender's retry was stored a second time.
    """
    alice = Identity.generate()
    sender, rcpt = f"alice@{alice.onion_address}", f"bob@{inbound.bob.onion_address}"
    client, challenge = await open_session(inbound.port)
    assert code(await client.cmd(f"MAIL FROM:<{sender}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    client.writer.write(sealed_data(alice, inbound.bob, challenge) + b".\r\n")
    await client.writer.drain()
    await asyncio.sleep(0.1)  # the server is inside the slow Maildir write
    await client.close()  # killed: no reply read
    await asyncio.sleep(0.5)  # the write has ended; then the sender's retry
    reply, _ = await send_sealed(
        inbound.port, sender, rcpt, lambda ch: sealed_data(alice, inbound.bob, ch)
    )
    assert code(reply) == 250 and "Already delivered" in reply
    assert len(inbound.stored()) == 1


async def test_envelope_redirected_to_other_recipients_is_refused(inbound: Inbound) -> None:
    alice = Identity.generate()
    sender = f"alice@{alice.onion_address}"
    reply, _ = await send_sealed(
        inbound.port,
        sender,
        f"postmaster@{inbound.bob.onion_address}",
        lambda ch: sealed_data(alice, inbound.bob, ch),
    )
    assert code(reply) == 550
    assert inbound.stored("postmaster") == [] and inbound.stored() == []


async def test_plain_peer_with_ordinary_domain_is_delivered_unverified(inbound: Inbound) -> None:
    client, _ = await RawSMTP.connect(inbound.port)
    await client.cmd("HELO mx.example.org")
    await client.cmd("MAIL FROM:<carol@example.org>")
    await client.cmd(f"RCPT TO:<bob@{inbound.bob.onion_address}>")
    await client.cmd("DATA")
    reply = await client.cmd(message_from("carol@example.org", "bob") + b".\r\n")
    assert code(reply) == 250
    (stored,) = inbound.stored()
    assert b"onionmail=none" in stored


async def test_peer_cannot_inject_a_verified_result(inbound: Inbound) -> None:
    fake = f"Authentication-Results: {inbound.bob.onion_address}; onionmail=pass\r\n".encode()
    client, _ = await RawSMTP.connect(inbound.port)
    await client.cmd("HELO mx.example.org")
    await client.cmd("MAIL FROM:<carol@example.org>")
    await client.cmd(f"RCPT TO:<bob@{inbound.bob.onion_address}>")
    await client.cmd("DATA")
    assert code(await client.cmd(fake + message_from("carol@example.org", "b") + b".\r\n")) == 250
    (stored,) = inbound.stored()
    assert b"onionmail=pass" not in stored


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("bob@{other}", "550 5.7.1 Relaying denied"),
        ("bob@example.org", "550 5.7.1 Relaying denied"),
        ("nobody@{own}", "550 5.1.1"),
        ("bob@@{own}", "553"),
        ("bob", "553"),
        ("<>", "553"),
        ("b\x01ob@{own}", "553"),
    ],
)
async def test_relay_and_bad_recipients_are_refused(
    inbound: Inbound, rcpt: str, expected: str
) -> None:
    other = Identity.generate().onion_address
    rcpt = rcpt.format(own=inbound.bob.onion_address, other=other)
    client, _ = await RawSMTP.connect(inbound.port)
    await client.cmd("EHLO localhost")
    await client.cmd("MAIL FROM:<carol@example.org>")
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    assert reply.startswith(expected[:3]) and expected in reply, reply
    assert code(await client.cmd("NOOP")) == 250  # still serving
    await client.close()


async def test_banner_and_ehlo_name_no_software_version_or_host(inbound: Inbound) -> None:
    client, banner = await RawSMTP.connect(inbound.port)
    ehlo = await client.cmd("EHLO localhost")
    await client.close()
    assert host_identity_in(banner + "\n" + ehlo) == [], banner + ehlo
    # The onion, "ESMTP", then only the session's seal challenge (no name, no version).
    words = banner.split()
    assert words[:3] == ["220", inbound.bob.onion_address, "ESMTP"], banner
    assert words[3:5] == [SEAL_KEYWORD, "v1"] and words[6:] == ["EXPRESS"], banner
    assert f"{SEAL_KEYWORD} {words[4]} {words[5]}" in ehlo  # the same challenge


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n",
        b"\x00\x01\x02\xff\xfe\r\n",
        b"MAIL FROM:<a@b>\x00 X\r\n",
        b"RCPT TO:<x>\r\n",  # out of sequence
        b"DATA\r\n",  # out of sequence
        b"A" * (10 * 1024 * 1024) + b"\r\n",  # a 10 MB line
        b"MAIL FROM:<not an address>\r\n",
        b"MAIL FROM:<a@" + b"x" * 300 + b".onion>\r\n",
    ],
)
async def test_garbage_gets_5xx_and_server_keeps_serving(inbound: Inbound, garbage: bytes) -> None:
    client, _ = await RawSMTP.connect(inbound.port)
    await client.cmd("EHLO localhost")
    reply = await client.cmd(garbage)
    assert 500 <= code(reply) < 600, reply
    assert code(await client.cmd("NOOP")) == 250
    await client.close()
    other, banner = await RawSMTP.connect(inbound.port)
    assert banner.startswith("220")
    await other.close()


async def test_malformed_sealed_envelope_is_refused(inbound: Inbound) -> None:
    alice = Identity.generate()
    sender, rcpt = f"alice@{alice.onion_address}", f"bob@{inbound.bob.onion_address}"

    def truncated(ch: bytes) -> bytes:
        raw = base64.b64decode(b"".join(sealed_data(alice, inbound.bob, ch).split()))
        return base64.b64encode(raw[:100]) + b"\r\n"

    reply, _ = await send_sealed(inbound.port, sender, rcpt, truncated)
    assert code(reply) == 550
    assert inbound.stored() == []


async def test_idle_peer_is_dropped(tmp_path: Path) -> None:
    bob = Identity.generate()
    cache = ReplayCache(tmp_path / "r.sqlite")
    handler = inbound_handler(InboundHandler, bob, tmp_path / "m", cache, local_parts=("bob",))
    server = await start_inbound(handler, timeout=0.5)
    client, _ = await RawSMTP.connect(server_port(server))
    reply = await asyncio.wait_for(client.reply(), 5)
    assert reply.startswith("421")
    await client.close()
    server.close()
    cache.close()


async def test_relayed_mail_from_a_gateway_not_yet_read_is_deferred_then_stored(
    tmp_path: Path,
) -> None:
    """The registration race: a gateway relays mail before the running box has read the
    registration from its configuration. The box answers 450 (the gateway keeps the mail
    and retries), reads its gateways again on the next try, and stores it: never the
    permanent 554 about line ends it gave when it took the inner envelope for a message."""
    from onionmail.gateway_link.protocol import GATEWAY_SENDER_LOCAL_PART, seal_for_box

    bob, gateway = Identity.generate(), Identity.generate()
    cache = ReplayCache(tmp_path / "replay.sqlite")
    handler = inbound_handler(InboundHandler, bob, tmp_path / "mail", cache)
    configured: frozenset[str] = frozenset()
    handler.refresh_gateways = lambda: configured
    rcpt = f"bob@{bob.onion_address}"
    relay = f"{GATEWAY_SENDER_LOCAL_PART}@{gateway.onion_address}"

    def relayed(challenge: bytes) -> bytes:
        inner = seal_for_box(
            bob.onion_address,
            mail_from="carol@clear.example",
            recipients=(rcpt,),
            message=message_from("carol@clear.example", rcpt),
        )
        content = SealedContent(
            envelope_id=secrets.token_bytes(16),
            created=int(time.time()),
            session_challenge=challenge,
            mail_from=relay,
            recipients=(rcpt,),
            message=inner,
        )
        sealed = seal(content, sender=gateway, recipient_onion=bob.onion_address)
        return encode_for_smtp(sealed)

    async with serving(start_inbound(handler, data_size_limit=1024 * 1024, timeout=10)) as port:
        reply, _ = await send_sealed(port, relay, rcpt, relayed)
        assert reply.startswith("450 4.7.0"), reply
        assert not (tmp_path / "mail" / "bob").exists()
        configured = frozenset({gateway.onion_address})  # the registration, now written
        reply, _ = await send_sealed(port, relay, rcpt, relayed)
        assert code(reply) == 250, reply
    cache.close()
    (stored,) = mailbox.Maildir(tmp_path / "mail" / "bob", create=False)
    assert "onionmail=gateway" in stored["Authentication-Results"]
    assert stored["From"] == "carol@clear.example"
