"""The delivery client session: pipelining, resealing for a partial refusal, reuse between messages.

Against real servers on loopback: the box's own inbound server (sealed mail,
PIPELINING announced) and scripted peers that fail unless the client
pipelines, or that refuse one recipient. The tor hop is replaced by a direct
loopback connection (``DeliveryAgent.connect``); delivery over real tor is
in test_onion_delivery.py and bench/onion.py.
"""

from __future__ import annotations

import asyncio
import mailbox
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from onionmail.box.delivery import DeliveryAgent
from onionmail.box.inbound import InboundHandler
from onionmail.seal.identity import Identity
from onionmail.smtp.client import (
    CHUNK_BYTES,
    SPLIT_BYTES,
    PeerSession,
    Reply,
    bdat_chunks,
    data_block,
)
from onionmail.store.queue import OutboundQueue
from onionmail.store.replay_cache import ReplayCache
from tests.loopback_servers import inbound_handler, serving, start_inbound
from tests.test_delivery_agent import Clock, make_agent

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` on a free loopback port; every connection is closed and awaited after."""
    done: list[asyncio.Task[None]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done.append(asyncio.ensure_future(run(reader, writer)))

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*done, return_exceptions=True), 10)


def message(sender: str, rcpt: str, subject: str) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n.dot\r\nbody\r\n".encode()


class Scripted:
    """A peer that reads the client's bytes and answers from a script, recording what it got."""

    def __init__(self, pipelined_envelope: int, rcpt_codes: list[str]) -> None:
        self.pipelined_envelope = pipelined_envelope
        self.rcpt_codes = rcpt_codes
        self.data: bytes = b""
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"220 peer ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-peer\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        # MAIL, the RCPTs and DATA are read before anything is answered: a
        # client that waits for the MAIL reply first would stall here.
        lines = [await reader.readuntil(b"\r\n") for _ in range(self.pipelined_envelope)]
        assert lines[0].startswith(b"MAIL FROM:") and lines[-1] == b"DATA\r\n"
        replies = [b"250 ok\r\n", *[c.encode() + b"\r\n" for c in self.rcpt_codes], b"354 go\r\n"]
        writer.write(b"".join(replies))
        self.data = await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 stored\r\n")
        await writer.drain()
        await reader.read()  # until the client closes


@pytest.fixture
async def scripted_two_rcpts() -> AsyncIterator[tuple[Scripted, int]]:
    peer = Scripted(4, ["250 ok", "550 no such user"])
    async with scripted_server(peer.serve) as port:
        yield peer, port


async def test_envelope_is_pipelined_and_a_partial_refusal_reseals_for_the_rest(
    scripted_two_rcpts: tuple[Scripted, int],
) -> None:
    peer, port = scripted_two_rcpts
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    session = await PeerSession.open(sock, ehlo_name="localhost", timeout=5)
    made_for: list[tuple[str, ...]] = []

    async def payload_for(accepted: tuple[str, ...]) -> bytes:
        made_for.append(accepted)
        return b"for " + b",".join(a.encode() for a in accepted) + b"\r\n.x\r\n"

    refused = await asyncio.wait_for(
        session.send(
            "a@x.test",
            ("b@y.test", "c@y.test"),
            payload_for,
            prepared=b"prepared for both\r\n",
        ),
        10,
    )
    session.close()
    assert refused == ["c@y.test"]
    assert made_for == [("b@y.test",)]  # the prepared payload named a refused recipient
    assert peer.data == b"for b@y.test\r\n..x\r\n.\r\n"


def test_data_block_ends_lines_with_crlf_and_stuffs_dots() -> None:
    assert data_block(b".a\nb\r.c") == b"..a\r\nb\r\n..c\r\n.\r\n"
    assert data_block(b"x\r\n") == b"x\r\n.\r\n"


async def test_malformed_reply_is_a_protocol_failure_not_a_hang() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello there\r\n")
        await writer.drain()
        await reader.read()

    async with scripted_server(garbage) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        with pytest.raises(Exception, match="malformed reply"):
            await PeerSession.open(sock, ehlo_name="localhost", timeout=5)


async def test_silent_peer_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with scripted_server(silent) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        with pytest.raises(Exception, match="did not answer in time"):
            await PeerSession.open(sock, ehlo_name="localhost", timeout=0.5)
        assert time.monotonic() - started < 3


def test_reply_string_form() -> None:
    assert str(Reply(250, "ok")) == "250 ok"


class CountingInbound(InboundHandler):
    ehlos = 0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        CountingInbound.ehlos += 1
        return await super().handle_EHLO(server, session, envelope, hostname, responses)


def box_and_agent(
    tmp_path: Path,
) -> tuple[Identity, ReplayCache, CountingInbound, DeliveryAgent, OutboundQueue]:
    """Bob's inbound handler (counting EHLOs, from 0) and alice's agent on the real clock."""
    bob = Identity.generate()
    cache = ReplayCache(tmp_path / "replay.sqlite")
    handler = inbound_handler(CountingInbound, bob, tmp_path / "bob", cache)
    CountingInbound.ehlos = 0
    agent, queue, _alice = make_agent(tmp_path, Clock(time.time()))
    agent.clock = time.time
    return bob, cache, handler, agent, queue


async def drained(queue: OutboundQueue, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while queue.states():
        assert time.monotonic() < deadline, queue.states()
        await asyncio.sleep(0.02)


def sealed_subjects(tmp_path: Path) -> list[str]:
    """The subjects in bob's Maildir, sorted; every message there must have come sealed."""
    store = mailbox.Maildir(tmp_path / "bob" / "bob", create=False)
    assert all(b"onionmail=pass" in store.get_bytes(k) for k in store.keys())
    return sorted(store.get_message(k)["Subject"] for k in store.keys())


@pytest.mark.parametrize("idle_timeout", [30.0, 0.6], ids=["kept", "peer-closed-it"])
async def test_sealed_messages_reuse_one_session_and_survive_the_peer_closing_it(
    tmp_path: Path, idle_timeout: float
) -> None:
    """Three sealed messages, one after the other, to the same peer.

    Kept: all three on the session of the first (one EHLO). With a peer idle
    timeout shorter than the pause after the first message, the kept session
    is found closed: a new one carries the second, and the third reuses it.
    """
    bob, cache, handler, agent, queue = box_and_agent(tmp_path)
    sender, rcpt = agent.identity.onion_address, f"bob@{bob.onion_address}"
    sender = f"alice@{sender}"
    server = start_inbound(handler, data_size_limit=1 << 20, timeout=idle_timeout)
    async with serving(server) as port:

        async def connect_directly(destination: str) -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

        agent.connect = connect_directly  # type: ignore[method-assign]
        running = asyncio.create_task(agent.run())
        try:
            for n in range(3):
                queue.enqueue(bob.onion_address, sender, (rcpt,), message(sender, rcpt, f"m{n}"))
                agent.wake()
                await drained(queue, 20)
                if n == 0 and idle_timeout < 1:
                    await asyncio.sleep(idle_timeout + 0.5)  # the peer drops the idle session
        finally:
            await agent.stop()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    cache.close()
    assert sealed_subjects(tmp_path) == ["m0", "m1", "m2"]
    assert CountingInbound.ehlos == (1 if idle_timeout > 1 else 2)


async def test_express_greeting_gets_the_whole_first_transaction_in_one_write() -> None:
    """An onionmail greeting (seal challenge + EXPRESS): EHLO, MAIL, RCPT, BDAT and data
    arrive before the peer answers anything; a client that waited would stall here."""
    got: list[bytes] = []

    async def express_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer ESMTP X-ONIONMAIL-SEAL v1 AAAAAAAAAAAAAAAAAAAAAA EXPRESS\r\n")
        for _ in range(4):  # EHLO, MAIL, RCPT, BDAT
            got.append(await reader.readuntil(b"\r\n"))
        size = int(got[-1].split()[1])
        got.append(await reader.readexactly(size))
        writer.write(
            b"250-peer\r\n250-PIPELINING\r\n250 CHUNKING\r\n250 ok\r\n250 ok\r\n250 stored\r\n"
        )
        await writer.drain()
        await reader.read()

    async with scripted_server(express_peer) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        session = await PeerSession.open(sock, ehlo_name="localhost", timeout=5)
        assert session.extensions["X-ONIONMAIL-SEAL"] == "v1 AAAAAAAAAAAAAAAAAAAAAA"

        async def never(accepted: tuple[str, ...]) -> bytes:
            raise AssertionError("the prepared data serves when every recipient is accepted")

        refused = await asyncio.wait_for(
            session.send("a@x.test", ("b@y.test",), never, prepared=b".dot\nline"), 10
        )
        session.close()
    assert refused == []
    assert got[:3] == [
        b"EHLO localhost\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@y.test>\r\n",
    ]
    assert got[3] == b"BDAT 12 LAST\r\n" and got[4] == b".dot\r\nline\r\n"  # no dot-stuffing
    assert session.supports("CHUNKING")


def test_bdat_chunks_split_the_start_of_a_message_only() -> None:
    """Small chunks first (a reply every few tor cells), the rest in one LAST chunk."""
    assert bdat_chunks(b"x" * 10) == [b"BDAT 10 LAST\r\n" + b"x" * 10]
    body = bytes(range(256)) * 200  # 51,200 octets
    chunks = bdat_chunks(body)
    heads = [c.split(b"\r\n", 1)[0] for c in chunks]
    n = SPLIT_BYTES // CHUNK_BYTES
    assert heads == [b"BDAT %d" % CHUNK_BYTES] * n + [b"BDAT %d LAST" % (len(body) - SPLIT_BYTES)]
    assert b"".join(c.split(b"\r\n", 1)[1] for c in chunks) == body


async def test_express_message_in_several_chunks_reads_every_chunk_reply() -> None:
    """A message over CHUNK_BYTES goes as several BDAT chunks in the one write; the
    session reads a reply per chunk and stays in step for the next message."""
    heads: list[bytes] = []
    body = b"line of text\n" * 400  # 5,600 octets with CRLF line ends

    async def express_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer ESMTP X-ONIONMAIL-SEAL v1 AAAAAAAAAAAAAAAAAAAAAA EXPRESS\r\n")
        replies = [b"250-peer\r\n250-PIPELINING\r\n250 CHUNKING\r\n"]
        while True:
            line = await reader.readuntil(b"\r\n")
            heads.append(line)
            if line.startswith(b"BDAT "):
                words = line.split()
                await reader.readexactly(int(words[1]))
                if len(words) == 2:
                    replies.append(b"250 %s octets received\r\n" % words[1])
                    continue
                writer.write(b"".join(replies) + b"250 stored\r\n")
                await writer.drain()
                replies = []
            elif not line.startswith(b"EHLO"):
                replies.append(b"250 ok\r\n")

    async with scripted_server(express_peer) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        session = await PeerSession.open(sock, ehlo_name="localhost", timeout=5)

        async def never(accepted: tuple[str, ...]) -> bytes:
            raise AssertionError("the prepared data serves when every recipient is accepted")

        for _ in range(2):
            refused = await asyncio.wait_for(
                session.send("a@x.test", ("b@y.test",), never, prepared=body), 10
            )
            assert refused == []
        session.close()
    bdats = [h for h in heads if h.startswith(b"BDAT")]
    assert bdats == [b"BDAT 2048\r\n", b"BDAT 2048\r\n", b"BDAT 1504 LAST\r\n"] * 2
    assert session.messages == 2


async def test_express_with_a_refused_recipient_reseals_for_the_accepted_one(
    tmp_path: Path,
) -> None:
    """Against the box's own inbound server: the all-recipients seal fails for the
    accepted one alone, so it is sealed again for it and delivered; the other is refused."""
    bob = Identity.generate()
    cache = ReplayCache(tmp_path / "replay.sqlite")
    handler = inbound_handler(InboundHandler, bob, tmp_path / "bob", cache)
    agent, queue, alice = make_agent(tmp_path, Clock(time.time()))
    agent.clock = time.time
    sender = f"alice@{alice.onion_address}"
    rcpts = (f"bob@{bob.onion_address}", f"nobody@{bob.onion_address}")
    async with serving(start_inbound(handler, data_size_limit=1 << 20)) as port:

        async def connect_directly(destination: str) -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

        agent.connect = connect_directly  # type: ignore[method-assign]
        entry = queue.enqueue(bob.onion_address, sender, rcpts, message(sender, rcpts[0], "two"))
        sealed, refused = await asyncio.wait_for(agent.deliver(entry), 20)
        await agent.stop()
    cache.close()
    assert sealed and refused == [rcpts[1]]
    store = mailbox.Maildir(tmp_path / "bob" / "bob", create=False)
    (key,) = store.keys()
    assert store.get_message(key)["Subject"] == "two"
    assert b"onionmail=pass" in store.get_bytes(key)


async def test_every_recipient_refused_is_reported_in_the_peer_s_words() -> None:
    """A bounce for an all-recipients refusal carries the peer's reason and status (a
    gateway's "550 5.7.1 ..."), not a generic sentence with 5.0.0."""
    from onionmail.core.errors import PermanentDeliveryError
    from onionmail.message.dsn import build_dsn

    async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-peer\r\n250 PIPELINING\r\n")
        for _ in range(3):  # MAIL, RCPT, DATA in one write
            await reader.readuntil(b"\r\n")
        writer.write(
            b"250 ok\r\n550 5.7.1 this gateway refuses mail to that domain\r\n"
            b"554 5.5.1 no valid recipients\r\n"
        )
        while line := await reader.readline():  # RSET, QUIT
            writer.write(b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n")

    async with scripted_server(refusing) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        session = await PeerSession.open(sock, ehlo_name="localhost", timeout=5)

        async def never(accepted: tuple[str, ...]) -> bytes:
            raise AssertionError("no data for nobody")

        with pytest.raises(PermanentDeliveryError) as refused:
            await asyncio.wait_for(session.send("a@x.test", ("b@y.test",), never), 10)
        session.close()
    reason = str(refused.value)
    assert "550 5.7.1 this gateway refuses mail to that domain" in reason
    dsn = build_dsn(
        box_onion="x.test", sender="a@x.test", recipients=("b@y.test",), original=b"", reason=reason
    )
    assert b"Status: 5.7.1" in dsn and b"refuses mail to that domain" in dsn


async def test_a_plain_mta_that_stored_for_the_accepted_recipient_gets_it_once() -> None:
    """A plain peer with PIPELINING and CHUNKING refuses one of two recipients and stores
    the data for the other (as Postfix does): the message is not sent a second time.

    Regression: the client sent it again for the accepted recipient whenever one
    was refused, which only a box (it refuses data sealed for a recipient it did
    not take) needs; the MTA delivered it twice.
    """
    transactions: list[bytes] = []

    async def chunking_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-peer\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        while line := await reader.readline():
            if line.startswith(b"MAIL"):
                transactions.append(line)
                writer.write(b"250 ok\r\n")
            elif line.startswith(b"RCPT"):
                writer.write(b"550 no such user\r\n" if b"c@" in line else b"250 ok\r\n")
            elif line.startswith(b"BDAT"):
                await reader.readexactly(int(line.split()[1]))
                writer.write(b"250 stored\r\n")
            else:
                writer.write(b"221 bye\r\n")

    async with scripted_server(chunking_peer) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        session = await PeerSession.open(sock, ehlo_name="localhost", timeout=5)

        async def again(accepted: tuple[str, ...]) -> bytes:
            return b"made again\r\n"

        refused = await asyncio.wait_for(
            session.send("a@x.test", ("b@y.test", "c@y.test"), again, prepared=b"body\r\n"), 10
        )
        await session.quit()
    assert refused == ["c@y.test"]
    assert len(transactions) == 1


async def test_a_burst_to_one_box_is_pipelined_on_a_few_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 sealed messages due at once for one box: more in flight than sessions open.

    The agent opens at most MAX_SESSIONS sessions (EHLOs counted at the box)
    and carries several transactions on each before their replies are back
    (seen by the client: a session with more than one pending); one message
    larger than SMALL_MESSAGE goes too, in a slot below MAX_PARALLEL. Every
    message is stored once and sealed.
    """
    from onionmail.box.delivery import SMALL_MESSAGE
    from onionmail.smtp import client as smtp_client
    from onionmail.smtp.peer_pool import MAX_SESSIONS

    bob, cache, handler, agent, queue = box_and_agent(tmp_path)
    sender, rcpt = agent.identity.onion_address, f"bob@{bob.onion_address}"
    sender = f"alice@{sender}"
    for n in range(60):
        queue.enqueue(bob.onion_address, sender, (rcpt,), message(sender, rcpt, f"m{n}"))
    large = message(sender, rcpt, "large") + b"y" * (SMALL_MESSAGE + 1) + b"\r\n"
    queue.enqueue(bob.onion_address, sender, (rcpt,), large)
    most_pending = 0
    sending = smtp_client.PeerSession._send_in_one_write

    async def watched(session: PeerSession, *args: Any) -> tuple[list[str], bool]:
        nonlocal most_pending
        result = sending(session, *args)
        most_pending = max(most_pending, session.pending + 1)
        return await result

    server = start_inbound(handler, data_size_limit=1 << 20)
    async with serving(server) as port:

        async def connect_directly(destination: str) -> socket.socket:
            return socket.create_connection(("127.0.0.1", port), timeout=5)

        agent.connect = connect_directly  # type: ignore[method-assign]
        monkeypatch.setattr(smtp_client.PeerSession, "_send_in_one_write", watched)
        running = asyncio.create_task(agent.run())
        try:
            await drained(queue, 30)
        finally:
            await agent.stop()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    cache.close()
    assert sealed_subjects(tmp_path) == sorted([f"m{n}" for n in range(60)] + ["large"])
    assert 1 <= CountingInbound.ehlos <= MAX_SESSIONS
    assert most_pending > 1
