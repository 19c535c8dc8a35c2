"""Protocol slips of the inbound server found from outside, each attacked over a socket."""

from __future__ import annotations

import pytest

from tests.loopback_servers import (
    PEER,
    InboundBox,
    assert_still_serving,
    inbound_fixture,  # noqa: F401 (the fixture ``inbound``)
    open_data,
    peer_session,
)
from tests.smtp_client import code


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
