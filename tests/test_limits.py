"""Limits against abuse on both SMTP servers: one named test per limit, driven byte by byte.

Two kinds of server: the box's real inbound and submission servers, started
by ``Box._start_inbound`` / ``Box._start_submission`` from an
``onionmail.toml`` with small limits (so the config really reaches the
servers), and a bare :func:`start_smtp_server` with a sink handler for the
boundaries of each limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onionmail.box.daemon import Box, _encoded_size
from onionmail.config.box import CONFIG_NAME, load_config
from onionmail.seal.identity import Identity, load_identity
from onionmail.smtp.server import ConnectionLimit, SafeHandler, server_port, start_smtp_server
from onionmail.store.replay_cache import ReplayCache
from tests.box_process import create_test_box
from tests.leaks import host_identity_in
from tests.loopback_servers import auth_plain_token, stop
from tests.smtp_client import RawSMTP, code

BUSY = "421 4.7.0 Too many connections, try again later"


# --- the box's two servers, configured from onionmail.toml ------------------------------


@dataclass
class BoxServers:
    box: Box
    password: str
    peer: Identity

    @property
    def inbound(self) -> int:
        return self.box.inbound_port

    @property
    def submission(self) -> int:
        return self.box.submission_port

    @property
    def alice(self) -> str:
        return f"alice@{self.box.onion}"

    async def session(self, server: str) -> RawSMTP:
        """Connected, EHLO done; on submission also authenticated; ready for MAIL."""
        client, banner = await RawSMTP.connect(getattr(self, server))
        assert code(banner) == 220, banner
        assert code(await client.cmd("EHLO localhost")) == 250
        if server == "submission":
            reply = await client.cmd(f"AUTH PLAIN {self.token(self.password)}")
            assert code(reply) == 235, reply
        return client

    def token(self, password: str) -> str:
        return auth_plain_token("alice", password)

    def envelope(self, server: str) -> tuple[str, str]:
        """A MAIL FROM and a RCPT TO the server accepts."""
        if server == "submission":
            return self.alice, f"bob@{self.peer.onion_address}"
        return f"bob@{self.peer.onion_address}", self.alice


LIMITS_TOML = """
[box]
local_parts = ["alice", "postmaster"]
max_connections_total = {total}

[submission]
port = 0
max_message_size = 4096
max_recipients = 2
max_connections = {submission}
max_bad_commands = 3
max_line_length = 1000
timeout = {timeout}

[inbound]
max_message_size = 4096
max_recipients = 2
max_connections = {inbound}
max_bad_commands = 3
max_line_length = 1000
timeout = {timeout}
strangers = "inbox"
pow_bits = 0
"""

ServerFactory = Callable[..., Awaitable[BoxServers]]


@pytest.fixture
async def box_servers(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start the box's inbound and submission servers (no tor) from a config with small limits."""
    started: list[Box] = []
    caches: list[ReplayCache] = []

    async def start(
        total: int = 5, submission: int = 3, inbound: int = 3, timeout: float = 10.0
    ) -> BoxServers:
        new = create_test_box(tmp_path / "box", "alice", submission_port=0)
        text = LIMITS_TOML.format(
            total=total, submission=submission, inbound=inbound, timeout=timeout
        )
        (new.box_dir / CONFIG_NAME).write_text(text)
        config = load_config(new.box_dir)
        box = Box(config, load_identity(new.box_dir / "keys" / "identity.key"))
        box.replay_cache = ReplayCache(tmp_path / "replay.sqlite")
        caches.append(box.replay_cache)
        started.append(box)
        await box._start_inbound()
        await box._start_submission()
        return BoxServers(box, new.password, Identity.generate())

    yield start
    await RawSMTP.close_all()
    for box in started:
        for server in (box.inbound_server, box.submission_server):
            if server is not None:
                await stop(server)
    for cache in caches:
        cache.close()
    for box in started:
        if box.senders is not None:
            box.senders.close()


SERVERS = ["inbound", "submission"]


@pytest.mark.parametrize("server", SERVERS)
async def test_size_is_announced_and_enforced(box_servers: ServerFactory, server: str) -> None:
    box = await box_servers()
    # Inbound's DATA limit is the sealed envelope's size for max_message_size.
    limit = 4096 if server == "submission" else _encoded_size(4096)
    client, _ = await RawSMTP.connect(getattr(box, server))
    assert f"250-SIZE {limit}" in await client.cmd("EHLO localhost")
    if server == "submission":
        assert code(await client.cmd(f"AUTH PLAIN {box.token(box.password)}")) == 235
    sender, rcpt = box.envelope(server)
    reply = await client.cmd(f"MAIL FROM:<{sender}> SIZE={limit + 1}")
    assert code(reply) == 552, reply
    assert code(await client.cmd(f"MAIL FROM:<{sender}> SIZE={limit}")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    body = (b"x" * 70 + b"\r\n") * (limit // 72 + 1)
    reply = await client.cmd(b"Subject: big\r\n\r\n" + body + b".\r\n")
    assert reply.startswith("552"), reply
    assert code(await client.cmd("NOOP")) == 250  # the session goes on


@pytest.mark.parametrize("server", SERVERS)
async def test_recipients_are_capped(box_servers: ServerFactory, server: str) -> None:
    box = await box_servers()
    client = await box.session(server)
    sender, rcpt = box.envelope(server)
    domain = rcpt.rsplit("@", 1)[1]
    assert code(await client.cmd(f"MAIL FROM:<{sender}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250  # a repeat: taken once
    assert code(await client.cmd(f"RCPT TO:<postmaster@{domain}>")) == 250
    reply = await client.cmd(f"RCPT TO:<third@{domain}>")
    assert reply.startswith("452 4.5.3"), reply


@pytest.mark.parametrize("server", SERVERS)
async def test_overlong_data_line_fails_the_message(
    box_servers: ServerFactory, server: str
) -> None:
    box = await box_servers()
    client = await box.session(server)
    sender, rcpt = box.envelope(server)
    assert code(await client.cmd(f"MAIL FROM:<{sender}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    reply = await client.cmd(b"Subject: long\r\n\r\n" + b"y" * 1000 + b"\r\n.\r\n")
    assert reply.startswith("500 Line too long"), reply


@pytest.mark.parametrize("server", SERVERS)
async def test_bad_commands_are_capped(box_servers: ServerFactory, server: str) -> None:
    box = await box_servers()
    client, _ = await RawSMTP.connect(getattr(box, server))
    assert code(await client.cmd("EHLO localhost")) == 250
    for _ in range(3):  # max_bad_commands = 3 in the config
        reply = await client.cmd("RCPT TO:<a@b.example>")  # no MAIL (nor AUTH) first
        assert code(reply) in (503, 530), reply
    reply = await client.cmd("RCPT TO:<a@b.example>")
    assert reply == "421 4.7.0 Too many errors; closing the connection"
    assert await client.reader.read() == b""


async def test_password_guessing_is_capped_per_session(box_servers: ServerFactory) -> None:
    box = await box_servers()
    client, _ = await RawSMTP.connect(box.submission)
    assert code(await client.cmd("EHLO localhost")) == 250
    for guess in ("a", "b", "c"):
        assert code(await client.cmd(f"AUTH PLAIN {box.token(guess)}")) == 535
    reply = await client.cmd(f"AUTH PLAIN {box.token('d')}")
    assert reply == "421 4.7.0 Too many errors; closing the connection"
    assert await client.reader.read() == b""


async def connect_refused(port: int) -> str:
    """Connect to a server at its limit: return its one reply, checking that it then closes."""
    client, reply = await RawSMTP.connect(port)
    assert await asyncio.wait_for(client.reader.read(), 5) == b""
    await client.close()
    return reply


async def test_connections_per_listener_and_in_total(box_servers: ServerFactory) -> None:
    box = await box_servers(total=5, submission=3, inbound=3)
    inbound = [await box.session("inbound") for _ in range(3)]
    assert await connect_refused(box.inbound) == BUSY  # the inbound listener's limit
    submission = [await box.session("submission") for _ in range(2)]
    assert await connect_refused(box.submission) == BUSY  # the total: 3 + 2 = 5
    for client in inbound + submission:  # the open sessions are served as before
        assert code(await client.cmd("NOOP")) == 250
    await inbound.pop().close()
    await asyncio.sleep(0.1)  # let the server see the close
    submission.append(await box.session("submission"))  # a slot came free in the total
    assert await connect_refused(box.submission) == BUSY


async def test_default_total_leaves_room_for_the_user(box_servers: ServerFactory) -> None:
    # Defaults: inbound 20, submission 10, total 25. Peers filling inbound
    # cannot lock the user's own mail client out.
    box = await box_servers(total=25, submission=10, inbound=20)
    peers = [await box.session("inbound") for _ in range(20)]
    assert await connect_refused(box.inbound) == BUSY
    user = [await box.session("submission") for _ in range(5)]
    assert await connect_refused(box.submission) == BUSY
    assert len(peers) + len(user) == 25


@pytest.mark.parametrize("server", SERVERS)
async def test_peer_stalling_in_data_is_dropped(box_servers: ServerFactory, server: str) -> None:
    box = await box_servers(timeout=0.5)
    client = await box.session(server)
    sender, rcpt = box.envelope(server)
    assert code(await client.cmd(f"MAIL FROM:<{sender}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await client.cmd(b"Subject: half\r\n\r\nthe first half of the mess")
    waited = loop.time() - started
    assert reply == "421 4.4.2 Idle timeout; closing the connection"
    assert 0.4 < waited < 3
    assert await client.reader.read() == b""


# --- boundaries, on a bare server -------------------------------------------------------


class Sink(SafeHandler):
    def __init__(self, store_delay: float = 0.0) -> None:
        self.messages: list[bytes] = []
        self.store_delay = store_delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.store_delay)
        self.messages.append(envelope.content)
        return "250 2.0.0 OK"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: SafeHandler | None = None, **kwargs: Any) -> int:
        server = await start_smtp_server(handler or Sink(), "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server_port(server)

    yield start
    await RawSMTP.close_all()
    for server in servers:
        await stop(server)


async def open_data(port: int) -> RawSMTP:
    client, _ = await RawSMTP.connect(port)
    assert code(await client.cmd("EHLO localhost")) == 250
    assert code(await client.cmd("MAIL FROM:<a@example.org>")) == 250
    assert code(await client.cmd("RCPT TO:<b@example.org>")) == 250
    assert code(await client.cmd("DATA")) == 354
    return client


async def test_line_length_boundaries(serve: Callable[..., Awaitable[int]]) -> None:
    sink = Sink()
    port = await serve(sink)
    text_line = b"a" * 998  # 1000 octets with CRLF: the most RFC 5321 allows
    client = await open_data(port)
    reply = await client.cmd(text_line + b"\r\n." + text_line + b"\r\n.\r\n")
    assert code(reply) == 250, reply
    # The second line was 1001 octets on the wire: transparency added a dot.
    assert sink.messages == [text_line + b"\r\n" + text_line + b"\r\n"]
    client = await open_data(port)
    assert (await client.cmd(b"a" * 1000 + b"\r\n.\r\n")).startswith("500 Line too long")
    assert code(await client.cmd("NOOP")) == 250  # the session goes on


async def test_line_length_is_configurable(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve(max_line_length=2000)
    client = await open_data(port)
    assert code(await client.cmd(b"a" * 1998 + b"\r\n.\r\n")) == 250
    client = await open_data(port)
    assert (await client.cmd(b"a" * 2000 + b"\r\n.\r\n")).startswith("500 Line too long")


async def test_overlong_command_line_is_refused(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve()
    client, _ = await RawSMTP.connect(port)
    assert (await client.cmd("NOOP " + "x" * 1200)).startswith("500")
    assert code(await client.cmd("NOOP")) == 250


async def test_repeated_ehlo_does_not_stretch_the_mail_line(
    serve: Callable[..., Awaitable[int]],
) -> None:
    # aiosmtpd grows the MAIL line limit by 36 octets at every EHLO, for every
    # session; here it is reset at each EHLO.
    port = await serve()
    client, _ = await RawSMTP.connect(port)
    for _ in range(30):
        assert code(await client.cmd("EHLO localhost")) == 250
    long_from = "MAIL FROM:<" + "a" * 580 + "@example.org>"
    assert (await client.cmd(long_from)).startswith("500 Command line too long")
    assert code(await client.cmd("MAIL FROM:<a@example.org> SIZE=100 SMTPUTF8")) == 250


async def test_21st_bad_command_gets_421_and_close(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve()  # the default cap: 20
    client, _ = await RawSMTP.connect(port)
    for _ in range(20):
        assert await client.cmd("HELO") == "501 Syntax: HELO hostname"
    assert await client.cmd("HELO") == "421 4.7.0 Too many errors; closing the connection"
    assert await client.reader.read() == b""


async def test_refusals_on_the_merits_are_not_bad_commands(
    serve: Callable[..., Awaitable[int]],
) -> None:
    class Refuser(Sink):
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
        ) -> str:
            return "550 5.1.1 No such mailbox here"

    port = await serve(Refuser(), max_bad_commands=2)
    client, _ = await RawSMTP.connect(port)
    assert code(await client.cmd("EHLO localhost")) == 250
    assert code(await client.cmd("MAIL FROM:<a@example.org>")) == 250
    for _ in range(5):
        assert code(await client.cmd("RCPT TO:<nobody@example.org>")) == 550
    assert code(await client.cmd("NOOP")) == 250


async def test_pipelined_commands_after_the_421_get_no_reply(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve(max_bad_commands=1)
    client, _ = await RawSMTP.connect(port)
    client.writer.write(b"HELO\r\nHELO\r\nNOOP\r\nNOOP\r\n")
    rest = await asyncio.wait_for(client.reader.read(), 5)
    assert rest == (
        b"501 Syntax: HELO hostname\r\n421 4.7.0 Too many errors; closing the connection\r\n"
    )


async def test_connection_over_the_limit_gets_421(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve(max_connections=2)
    first, _ = await RawSMTP.connect(port)
    second, _ = await RawSMTP.connect(port)
    reply = await connect_refused(port)
    assert reply == BUSY
    assert host_identity_in(reply) == []
    assert code(await first.cmd("EHLO localhost")) == 250
    await second.close()
    await asyncio.sleep(0.1)
    third, banner = await RawSMTP.connect(port)
    assert code(banner) == 220
    assert code(await third.cmd("NOOP")) == 250


async def test_total_is_shared_between_listeners(serve: Callable[..., Awaitable[int]]) -> None:
    total = ConnectionLimit("total", 2)
    a = await serve(max_connections=5, connections_total=total)
    b = await serve(max_connections=5, connections_total=total)
    clients = [(await RawSMTP.connect(a))[0], (await RawSMTP.connect(b))[0]]
    assert await connect_refused(a) == BUSY
    assert await connect_refused(b) == BUSY
    assert total.open == 2 and total.refused == 2
    for client in clients:
        await client.close()
    await asyncio.sleep(0.1)
    assert total.open == 0


def test_connection_limit_warns_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    limit = ConnectionLimit("inbound", 1)
    with caplog.at_level(logging.INFO, logger="onionmail.smtp.server"):
        assert limit.acquire()
        assert not limit.acquire()
        assert not limit.acquire()
        limit.release()
        assert limit.acquire()
        assert not limit.acquire()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].getMessage() == "inbound: 1 connections open, the limit; refusing new ones"
    assert limit.refused == 3


async def test_slow_but_steady_data_is_not_idle(serve: Callable[..., Awaitable[int]]) -> None:
    # aiosmtpd alone counts the whole DATA against the idle timeout.
    sink = Sink()
    port = await serve(sink, timeout=0.5)
    client = await open_data(port)
    for i in range(8):  # 1.6 s in all, never 0.5 s silent
        client.writer.write(b"line %d\r\n" % i)
        await asyncio.sleep(0.2)
    assert code(await client.cmd(b".\r\n")) == 250
    assert len(sink.messages) == 1


async def test_data_dripping_past_data_timeout_is_dropped(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve(timeout=0.5, data_timeout=1.0)
    client = await open_data(port)

    async def drip() -> None:
        while True:  # never silent for 0.5 s, never done
            client.writer.write(b"x\r\n")
            await client.writer.drain()
            await asyncio.sleep(0.1)

    loop = asyncio.get_running_loop()
    started = loop.time()
    dripping = asyncio.create_task(drip())
    try:
        reply = await asyncio.wait_for(client.reader.readline(), 5)
        waited = loop.time() - started
    finally:
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
    assert reply == b"421 4.4.2 DATA took too long; closing the connection\r\n"
    assert 0.9 < waited < 2.5
    assert await client.reader.read() == b""


async def test_storing_is_not_counted_against_data_timeout(
    serve: Callable[..., Awaitable[int]],
) -> None:
    sink = Sink(store_delay=1.0)
    port = await serve(sink, data_timeout=0.5)
    client = await open_data(port)
    assert code(await client.cmd(b"Subject: x\r\n\r\nbody\r\n.\r\n")) == 250
    assert code(await client.cmd("NOOP")) == 250
