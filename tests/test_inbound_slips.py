"""Protocol slips of the inbound server found from outside, each attacked over a socket."""

from __future__ import annotations

import secrets
import time

import pytest

from onionmail.seal.envelope import SealedContent, encode_for_smtp, seal
from onionmail.store.replay_cache import ReplayCacheError
from tests.loopback_servers import (
    PEER,
    InboundBox,
    assert_still_serving,
    inbound_fixture,  # noqa: F401 (the fixture ``inbound``)
    open_data,
    peer_session,
    sealing_session,
)
from tests.smtp_client import code
from tests.test_hostile_input import ALICE, alice


@pytest.mark.parametrize(
    "repeated", [("bob", "bob", "bob"), ("bob", "BOB", "Bob")], ids=["same", "other-case"]
)
async def test_a_repeated_recipient_gets_one_copy(
    inbound: InboundBox, repeated: tuple[str, ...]
) -> None:
    client = await peer_session(inbound)
    assert code(await client.cmd(f"MAIL FROM:<{PEER}>")) == 250
    for local_part in repeated:
        reply = await client.cmd(f"RCPT TO:<{local_part}@{inbound.onion}>")
        assert code(reply) == 250, reply
    assert code(await client.cmd("DATA")) == 354
    assert code(await client.cmd(b"Subject: once\r\n\r\nhello\r\n.\r\n")) == 250
    assert len(inbound.stored()) == 1


async def test_plain_mail_is_held_to_max_message_size(inbound: InboundBox) -> None:
    # The listener's DATA limit is sized for sealed mail (base64 and padding: 1.45x +
    # 64 KiB); plain mail is held to the setting itself.
    inbound.handler.max_message_size = 10_000
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    big = b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n"
    reply = await client.cmd(big * 200 + b".\r\n")  # about 18 KB: under the DATA limit
    assert reply == "552 5.3.4 Message too big for this box (at most 10000 bytes)"
    await open_data(client, PEER, inbound.rcpt())
    assert code(await client.cmd(big * 50 + b".\r\n")) == 250
    assert len(inbound.stored()) == 1
    await assert_still_serving(client, inbound.port)


def sealed_retry(box: InboundBox, envelope_id: bytes, created: int, challenge: bytes) -> bytes:
    """The same envelope (id, creation) as a sender's retry seals it for a new session."""
    content = SealedContent(
        envelope_id=envelope_id,
        created=created,
        session_challenge=challenge,
        mail_from=alice(),
        recipients=(box.rcpt(),),
        message=f"From: {alice()}\r\nSubject: once\r\n\r\nonly once\r\n".encode(),
    )
    return encode_for_smtp(seal(content, sender=ALICE, recipient_onion=box.onion)) + b".\r\n"


@pytest.mark.parametrize("read_meanwhile", [False, True], ids=["in-new", "moved-to-cur"])
async def test_a_retry_after_a_crash_before_the_id_was_recorded_is_stored_once(
    inbound: InboundBox, monkeypatch: pytest.MonkeyPatch, read_meanwhile: bool
) -> None:
    # The message is durable, then the box dies before it records the envelope id, so
    # the sender never got its 250 and retries the same envelope in a new session.
    envelope_id, created = secrets.token_bytes(16), int(time.time())
    cache = inbound.handler.replay_cache
    recorded = cache.record

    def crash(envelope_id: bytes, created: int) -> None:
        raise ReplayCacheError("the box died here")

    monkeypatch.setattr(cache, "record", crash)
    client, challenge = await sealing_session(inbound)
    await open_data(client, alice(), inbound.rcpt())
    reply = await client.cmd(sealed_retry(inbound, envelope_id, created, challenge))
    assert reply.startswith("451"), reply  # not acknowledged
    inbound.handler.internal_errors.clear()  # that 451 was the point
    maildir = inbound.mail / "bob"
    (first,) = (maildir / "new").iterdir()
    if read_meanwhile:  # a mail client saw it and marked it read
        first.rename(maildir / "cur" / (first.name + ":2,S"))
    monkeypatch.setattr(cache, "record", recorded)
    for _ in range(2):  # the retry, then a replay of it
        client, challenge = await sealing_session(inbound)
        await open_data(client, alice(), inbound.rcpt())
        assert code(await client.cmd(sealed_retry(inbound, envelope_id, created, challenge))) == 250
    stored = [*(maildir / "new").iterdir(), *(maildir / "cur").iterdir()]
    assert len(stored) == 1, stored
