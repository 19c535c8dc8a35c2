"""BDAT (RFC 3030) against the box's inbound server, as a hostile peer sends it, over a socket.

Three holes, one rule each: a chunk's declared size is checked before a
byte of it is kept (memory stays bounded whatever a peer declares); a
refused chunk is still read to its end and dropped, so its bytes are never
taken for commands (no smuggling through a 503 or 552); ``BDAT 0 LAST`` is
answered at once, and a message of no bytes is refused.
"""

from __future__ import annotations

import asyncio
import resource

import pytest

from tests.loopback_servers import (
    MAX_DATA,
    PEER,
    InboundBox,
    assert_still_serving,
    inbound_fixture,  # noqa: F401 (the fixture ``inbound``)
    peer_session,
)
from tests.smtp_client import RawSMTP, code
from tests.test_smuggling import smuggled


async def no_reply_yet(client: RawSMTP, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(client.reader.read(1), wait)
    except TimeoutError:
        return True
    return False


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def transaction(client: RawSMTP, box: InboundBox) -> None:
    assert code(await client.cmd(f"MAIL FROM:<{PEER}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{box.rcpt()}>")) == 250


async def test_a_huge_declared_chunk_is_read_and_dropped_not_held(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    await transaction(client, inbound)
    declared = 64 * MAX_DATA  # 64 MiB against a 1 MiB limit
    slab = b"x" * (1024 * 1024)
    before = peak_rss_kib()
    client.writer.write(f"BDAT {declared} LAST\r\n".encode())
    for sent in range(declared // len(slab)):
        client.writer.write(slab)
        await client.writer.drain()
        if sent == 8:
            assert await no_reply_yet(client, 0.05), "answered before the chunk was read"
    client.writer.write(b"NOOP\r\n")
    assert (await client.reply()).startswith("552")
    assert await client.reply() == "250 OK"  # the NOOP behind it: a command again
    grown_mib = (peak_rss_kib() - before) / 1024
    assert grown_mib < 16, f"the server held {grown_mib:.0f} MiB of a refused chunk"
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


async def test_a_chunk_over_the_limit_ends_the_transaction(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    await transaction(client, inbound)
    first = b"Subject: s\r\n\r\n" + b"a" * 100
    assert await client.cmd(f"BDAT {len(first)}\r\n".encode() + first) == (
        f"250 2.0.0 {len(first)} octets received"
    )
    reply = await client.cmd(f"BDAT {MAX_DATA} LAST\r\n".encode() + b"b" * MAX_DATA)
    assert reply.startswith("552"), reply
    assert (await client.cmd("BDAT 3 LAST\r\nabc")).startswith("503")  # nothing in effect
    assert inbound.stored() == []


@pytest.mark.parametrize("with_rcpt", [False, True], ids=["refused-503", "refused-552"])
async def test_a_refused_chunk_is_never_read_as_commands(
    inbound: InboundBox, with_rcpt: bool
) -> None:
    client = await peer_session(inbound)
    if with_rcpt:
        await transaction(client, inbound)
    inside = smuggled(PEER, inbound.rcpt()) + b".\r\n"
    declared = MAX_DATA + 1 if with_rcpt else len(inside)
    payload = inside + b"z" * (declared - len(inside))
    client.writer.write(f"BDAT {declared} LAST\r\n".encode() + payload)
    await client.writer.drain()
    reply = await client.reply()
    assert reply.startswith("552" if with_rcpt else "503"), reply
    assert await no_reply_yet(client), "the chunk's bytes were answered as commands"
    assert (await client.cmd(f"RCPT TO:<{inbound.rcpt()}>")).startswith("503")  # no MAIL
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


async def test_pipelined_chunks_after_a_refusal_are_consumed(inbound: InboundBox) -> None:
    client = await peer_session(inbound)  # no MAIL: every BDAT is refused, every chunk read
    inside = smuggled(PEER, inbound.rcpt()) + b".\r\n"
    chunk = f"BDAT {len(inside)}\r\n".encode() + inside
    client.writer.write(chunk * 3 + f"BDAT {len(inside)} LAST\r\n".encode() + inside)
    await client.writer.drain()
    replies = [await client.reply() for _ in range(4)]
    assert all(reply.startswith("503 5.5.1") for reply in replies), replies
    assert await no_reply_yet(client)
    assert inbound.stored() == []


async def test_bdat_0_last_ends_a_message_at_once(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    await transaction(client, inbound)
    message = b"Subject: chunked\r\n\r\nin two chunks\r\n"
    assert code(await client.cmd(f"BDAT {len(message)}\r\n".encode() + message)) == 250
    client.writer.write(b"BDAT 0 LAST\r\n")
    await client.writer.drain()
    reply = await asyncio.wait_for(client.reply(), 5)  # with no byte more from the client
    assert code(reply) == 250, reply
    (stored,) = inbound.stored()
    assert stored.endswith(b"in two chunks\n")


async def test_an_empty_message_is_refused(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    await transaction(client, inbound)
    client.writer.write(b"BDAT 0 LAST\r\n")
    await client.writer.drain()
    assert await asyncio.wait_for(client.reply(), 5) == (
        "554 5.6.0 Error: an empty message is not accepted"
    )
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


async def test_a_bdat_with_a_bad_keyword_still_consumes_its_chunk(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    await transaction(client, inbound)
    inside = b"NOOP\r\nNOOP\r\n"
    reply = await client.cmd(f"BDAT {len(inside)} FIRST\r\n".encode() + inside)
    assert reply == "501 5.5.4 Syntax: BDAT <size> [LAST]"
    assert await no_reply_yet(client)
