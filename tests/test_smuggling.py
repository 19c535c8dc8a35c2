"""SMTP smuggling against both servers: no fake end-of-data ever ends a message.

The attack (SEC Consult, December 2023): an outbound server passes a bare
``<LF>.<LF>`` (or another near-miss of ``<CR><LF>.<CR><LF>``) through
inside one message; an inbound server that takes it for the end of DATA
reads the rest as new commands, and delivers a second message whose sender
nobody checked. aiosmtpd 1.4.6 ends DATA only at ``<CR><LF>.<CR><LF>``; its
own regression test is ``aiosmtpd/tests/test_smtpsmuggling.py``. These
tests hold the box's two servers to the same, for every near-miss: each
payload is sent in one write with a complete second transaction behind the
fake end, and the tests check that exactly one reply comes back, that at most
one message is stored or queued, and that the smuggled MAIL and RCPT never
took effect (the next RCPT is answered ``503 need MAIL``).

Where the near-miss sits decides the one answer: in the body it is data
(stored byte-exact, smuggled commands and all, inside the one message); in
the header block a bare CR, bare LF or NUL makes the message malformed
(``554 5.6.0``, nothing stored).
"""

from __future__ import annotations

import pytest

from tests.loopback_servers import (
    PEER,
    InboundBox,
    SubmissionBox,
    assert_still_serving,
    inbound_fixture,  # noqa: F401 (the fixture ``inbound``)
    open_data,
    other_onion_rcpt,
    peer_session,
    sealing_session,
    submission_fixture,  # noqa: F401 (the fixture ``submission``)
    user_session,
)
from tests.smtp_client import RawSMTP
from tests.test_hostile_input import ALICE, alice, sealed_message

FAKE_ENDS = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\r.\r", id="CR.CR"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
    pytest.param(b"\r.\n", id="CR.LF"),
    pytest.param(b"\n.\r", id="LF.CR"),
    pytest.param(b"\r\n.\r\r\n", id="CRLF.CRCRLF"),
    pytest.param(b"\r\n\x00.\r\n", id="CRLF-NUL.CRLF"),
    pytest.param(b"\r\n.\x00\r\n", id="CRLF.NUL-CRLF"),
    pytest.param(b"\r\n .\r\n", id="CRLF-SP.CRLF"),
]


def smuggled(mail_from: str, rcpt: str) -> bytes:
    """A whole second transaction, as it would follow a real end of DATA."""
    return (
        f"MAIL FROM:<{mail_from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
        f"From: {mail_from}\r\nSubject: smuggled\r\n\r\nNO SMUGGLING\r\n"
    ).encode()


def in_body(fake_end: bytes, second: bytes) -> bytes:
    return b"Subject: first\r\n\r\nTesting" + fake_end + second + b".\r\n"


def in_header(fake_end: bytes, second: bytes) -> bytes:
    return b"Subject: first" + fake_end + second + b".\r\n"


async def one_reply_then_nothing_in_effect(client: RawSMTP, payload: bytes, rcpt: str) -> str:
    """Send ``payload`` in one write; return its one reply; check no MAIL is left in effect."""
    client.writer.write(payload)
    await client.writer.drain()
    reply = await client.reply()
    assert (await client.cmd(f"RCPT TO:<{rcpt}>")).startswith("503"), "a smuggled MAIL is live"
    return reply


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
async def test_inbound_smuggled_end_of_data_in_the_body_stays_inside_one_message(
    inbound: InboundBox, fake_end: bytes
) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    second = smuggled("smuggler@example.net", inbound.rcpt("postmaster"))
    reply = await one_reply_then_nothing_in_effect(
        client, in_body(fake_end, second), inbound.rcpt("postmaster")
    )
    assert reply == "250 2.0.0 Delivered"
    (stored,) = inbound.stored()
    assert b"NO SMUGGLING" in stored and b"MAIL FROM:<smuggler@example.net>" in stored
    assert inbound.stored("postmaster") == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
async def test_inbound_smuggled_end_of_data_in_the_header_is_refused(
    inbound: InboundBox, fake_end: bytes
) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    second = smuggled("smuggler@example.net", inbound.rcpt("postmaster"))
    reply = await one_reply_then_nothing_in_effect(
        client, in_header(fake_end, second), inbound.rcpt("postmaster")
    )
    assert reply.startswith("554 5.6.0 Malformed message: "), reply
    assert inbound.stored() == [] and inbound.stored("postmaster") == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
async def test_inbound_smuggling_behind_a_sealed_envelope_is_refused(
    inbound: InboundBox, fake_end: bytes
) -> None:
    client, challenge = await sealing_session(inbound)
    await open_data(client, alice(), inbound.rcpt())
    envelope = sealed_message(inbound, challenge)
    second = smuggled(f"mallory@{ALICE.onion_address}", inbound.rcpt("postmaster"))
    payload = envelope.removesuffix(b"\r\n") + fake_end + second + b".\r\n"
    reply = await one_reply_then_nothing_in_effect(client, payload, inbound.rcpt("postmaster"))
    assert reply.startswith("550 5.7.1 Envelope refused: "), reply
    assert inbound.stored() == [] and inbound.stored("postmaster") == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
async def test_submission_smuggled_end_of_data_in_the_body_stays_inside_one_message(
    submission: SubmissionBox, fake_end: bytes
) -> None:
    client = await user_session(submission)
    first_rcpt, smuggled_rcpt = other_onion_rcpt(), other_onion_rcpt()
    await open_data(client, submission.sender, first_rcpt)
    second = smuggled(submission.sender, smuggled_rcpt)
    reply = await one_reply_then_nothing_in_effect(client, in_body(fake_end, second), smuggled_rcpt)
    assert reply == "250 2.0.0 Queued as q1"
    (queued,) = submission.queued
    assert [str(r) for r in queued.recipients] == [first_rcpt]
    assert b"NO SMUGGLING" in queued.message
    await assert_still_serving(client, submission.port)


@pytest.mark.parametrize("fake_end", FAKE_ENDS)
async def test_submission_smuggled_end_of_data_in_the_header_is_refused(
    submission: SubmissionBox, fake_end: bytes
) -> None:
    client = await user_session(submission)
    smuggled_rcpt = other_onion_rcpt()
    await open_data(client, submission.sender, other_onion_rcpt())
    second = smuggled(submission.sender, smuggled_rcpt)
    reply = await one_reply_then_nothing_in_effect(
        client, in_header(fake_end, second), smuggled_rcpt
    )
    assert reply.startswith("554 5.6.0 Malformed message: "), reply
    assert submission.queued == []
    await assert_still_serving(client, submission.port)


async def test_only_crlf_dot_crlf_ends_data_and_pipelined_commands_after_it_count(
    inbound: InboundBox,
) -> None:
    # The control case: after the real end, the same bytes are ordinary pipelined
    # commands, so the tests above would see a second message if a fake end worked.
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    second = smuggled("carol@example.org", inbound.rcpt("postmaster"))
    client.writer.write(b"Subject: first\r\n\r\nTesting\r\n.\r\n" + second + b".\r\n")
    await client.writer.drain()
    replies = [await client.reply() for _ in range(5)]
    assert [r[:3] for r in replies] == ["250", "250", "250", "354", "250"]
    assert len(inbound.stored()) == 1 and len(inbound.stored("postmaster")) == 1
