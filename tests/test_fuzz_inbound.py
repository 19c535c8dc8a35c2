"""Fuzzing the inbound DATA path through a real server on loopback.

Hypothesis sends arbitrary bytes as DATA (properly dot-stuffed, so the
server sees exactly them) from a plain peer, a null sender or an onion
sender, to one :class:`InboundHandler` serving on 127.0.0.1. The only
outcomes allowed are ``250`` with exactly one more message stored, holding
the body byte for byte (line ends as in a Maildir), or a ``5xx`` with
nothing stored. Never ``451`` (the server's fixture fails the test if
anything reaches the generic error boundary), never a dropped connection.

The run is short by default; ``ONIONMAIL_FUZZ_EXAMPLES=<n>`` sets the
number of examples for a long session (see the README).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from onionmail.seal.envelope import HEADER, encode_for_smtp
from tests.loopback_servers import PEER, InboundBox, running_inbound
from tests.smtp_client import RawSMTP, code
from tests.test_hostile_input import ALICE

FUZZ_EXAMPLES = int(os.environ.get("ONIONMAIL_FUZZ_EXAMPLES", "0"))
"""Examples per property test in a long fuzz session (0: each test's short default)."""

SENDERS = [PEER, "", f"alice@{ALICE.onion_address}"]

FIELD_NAMES = [
    "From",
    "To",
    "Subject",
    "Date",
    "Content-Type",
    "Return-Path",
    "Authentication-Results",
    "X-A",
    "Bad Name",
    "X-\x00",
    "",
]

header_values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.encode),
    st.binary(max_size=60),
)
header_lines = st.builds(
    lambda name, value, folded: name.encode() + b":" + value + (b"\r\n\tmore" if folded else b""),
    st.sampled_from(FIELD_NAMES),
    header_values,
    st.booleans(),
)
line_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n.", b"\r\n..", b"\x00"])
bodies = st.lists(st.one_of(st.binary(max_size=80), line_ends), max_size=12).map(b"".join)
messages = st.builds(
    lambda lines, sep, body: b"\r\n".join(lines) + sep + body,
    st.lists(header_lines, max_size=8),
    st.sampled_from([b"\r\n\r\n", b"\r\n", b"\n\n", b""]),
    bodies,
)
sealed_lookalikes = st.binary(max_size=600).map(lambda raw: encode_for_smtp(HEADER + raw))
payloads = st.one_of(st.binary(max_size=2000), messages, sealed_lookalikes)


def as_received(payload: bytes) -> bytes:
    """What the server's DATA content is for ``payload`` (a last CRLF added if missing)."""
    return payload if not payload or payload.endswith(b"\r\n") else payload + b"\r\n"


def dot_stuffed(content: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency over CRLF lines, as the server will undo it."""
    lines = content.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


@pytest.fixture
async def inbound(tmp_path: Path) -> AsyncIterator[InboundBox]:
    async with running_inbound(tmp_path) as box:
        yield box


def mailbox_names(box: InboundBox) -> set[str]:
    new = box.mail / "bob" / "new"
    return set(os.listdir(new)) if new.exists() else set()


@settings(
    max_examples=FUZZ_EXAMPLES or 200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=payloads, sender=st.sampled_from(SENDERS))
@example(payload=b"", sender=PEER)
@example(payload=b".\r\n..\r\n.", sender=PEER)
@example(payload=b"Subject: x\r\n\r\n" + b"b" * 2000, sender=PEER)
@example(payload=b"T01TR\r\n", sender="")
async def test_arbitrary_data_is_stored_or_refused_with_5xx(
    inbound: InboundBox, payload: bytes, sender: str
) -> None:
    content = as_received(payload)
    before = mailbox_names(inbound)
    client, _ = await RawSMTP.connect(inbound.port)
    try:
        assert code(await client.cmd("EHLO mx.example.org")) == 250
        assert code(await client.cmd(f"MAIL FROM:<{sender}>")) == 250
        assert code(await client.cmd(f"RCPT TO:<{inbound.rcpt()}>")) == 250
        assert code(await client.cmd("DATA")) == 354
        reply = await client.cmd(dot_stuffed(content) + b".\r\n")
        assert await client.cmd("NOOP") == "250 OK", "the server stopped serving"
    finally:
        await client.close()
    event(f"answered {reply[:9]}")
    added = mailbox_names(inbound) - before
    if code(reply) == 250:
        (name,) = added
        stored = (inbound.mail / "bob" / "new" / name).read_bytes()
        assert stored.startswith(f"Return-Path: <{sender}>\n".encode())
        _, separator, body = content.partition(b"\r\n\r\n")
        assert stored.endswith(b"\n\n" + body.replace(b"\r\n", b"\n") if separator else b"\n\n")
    else:
        assert 500 <= code(reply) < 600, reply
        assert added == set()
