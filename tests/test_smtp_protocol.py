"""The SMTP protocol core on real loopback sockets: what is specific to it, one test per behaviour.

The box's handlers run on it in the other SMTP tests; here a small recording
handler does, so each test sees what reached the hooks. The last part
compares it with aiosmtpd itself: the same scripted sessions against a stock
aiosmtpd server and against the core, reply for reply.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.headerregistry import Address
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmail.smtp.paths import split_path
from onionmail.smtp.server import SafeHandler, serve, server_port, start_smtp_server
from onionmail.smtp.session import Listener
from tests.box_process import free_port
from tests.loopback_servers import stop
from tests.smtp_client import RawSMTP, code

PASSWORD = b"correct horse"


class Recorder(SafeHandler):
    """Stores every message (through :meth:`SafeHandler.finish`), counts hook calls."""

    def __init__(self, store_delay: float = 0.0, mail_delay: float = 0.0) -> None:
        self.messages: list[bytes] = []
        self.store_delay = store_delay
        self.mail_delay = mail_delay
        self.sessions: list[Any] = []

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = auth_data.login == b"alice" and auth_data.password == PASSWORD
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_delay:
            await asyncio.sleep(self.mail_delay)  # a hook that suspends
        if address == "boom@example.org":
            raise KeyError("internal detail")
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.append(session)
        return await self.finish(self._store(envelope.original_content))

    async def _store(self, content: bytes) -> str:
        await asyncio.sleep(self.store_delay)
        self.messages.append(content)
        return "250 2.0.0 Stored"


Start = Callable[..., Awaitable[int]]


@pytest.fixture(name="start")
async def start_fixture() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def run(handler: Any, **kwargs: Any) -> int:
        kwargs.setdefault("hostname", "core.test")
        server = await start_smtp_server(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return server_port(server)

    yield run
    await RawSMTP.close_all()
    for server in servers:
        await stop(server)


async def read_replies(client: RawSMTP, count: int) -> list[str]:
    return [await client.reply() for _ in range(count)]


# --- pipelining and packet boundaries ---------------------------------------------------


async def test_pipelined_transaction_in_one_packet_is_answered_in_order(start: Start) -> None:
    recorder = Recorder()
    client, banner = await RawSMTP.connect(await start(recorder))
    assert banner == "220 core.test ESMTP"
    client.writer.write(
        b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
        b"RCPT TO:<c@example.org>\r\nDATA\r\nSubject: s\r\n\r\n..dot\r\n.\r\n"
        b"NOOP\r\nQUIT\r\n"
    )
    replies = await read_replies(client, 7)
    assert [code(r) for r in replies] == [250, 250, 250, 250, 354, 250, 250]
    assert replies[5] == "250 2.0.0 Stored"
    assert await client.reply() == "221 Bye"
    assert await client.reader.read() == b""
    assert recorder.messages == [b"Subject: s\r\n\r\n.dot\r\n"]


async def test_commands_behind_a_suspended_hook_wait_their_turn(start: Start) -> None:
    recorder = Recorder(mail_delay=0.05)
    client, _ = await RawSMTP.connect(await start(recorder))
    client.writer.write(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
        b"hello\r\n.\r\nNOOP\r\n"
    )
    replies = await read_replies(client, 6)
    assert [code(r) for r in replies] == [250, 250, 250, 354, 250, 250]
    assert recorder.messages == [b"hello\r\n"]


async def test_commands_and_data_split_into_single_bytes(start: Start) -> None:
    recorder = Recorder()
    client, _ = await RawSMTP.connect(await start(recorder))
    script = [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<a@example.org> SIZE=20\r\n",
        b"RCPT TO:<b@example.org>\r\n",
        b"DATA\r\n",
        b"line one\r\n.two\r\n\r\n.\r\n",
    ]
    replies = []
    for command in script:
        for i in range(len(command)):
            client.writer.write(command[i : i + 1])
            await client.writer.drain()
            await asyncio.sleep(0)
        replies.append(code(await client.reply()))
    assert replies == [250, 250, 250, 354, 250]
    assert recorder.messages == [b"line one\r\ntwo\r\n\r\n"]


async def test_sessions_reading_into_one_buffer_keep_their_own_bytes(start: Start) -> None:
    """Sessions of a listener share its receive buffer: interleaved pieces stay apart."""
    recorder = Recorder()
    port = await start(recorder)
    clients = [(await RawSMTP.connect(port))[0] for _ in range(3)]
    for number, client in enumerate(clients):
        client.writer.write(f"EHLO c{number}\r\nMAIL FROM:<a@example.org>\r\n".encode())
        client.writer.write(b"RCPT TO:<b@example.org>\r\nDATA\r\n")
        assert [code(r) for r in await read_replies(client, 4)] == [250, 250, 250, 354]
    bodies = [(bytes([ord("a") + n]) * 76 + b"\r\n") * 900 for n in range(3)]  # 70 KB each
    for start_at in range(0, len(bodies[0]), 9_000):  # a piece of each body, in turn
        for client, body in zip(clients, bodies, strict=True):
            client.writer.write(body[start_at : start_at + 9_000])
            await client.writer.drain()
        await asyncio.sleep(0.001)
    for client in clients:
        client.writer.write(b".\r\n")
        assert await client.reply() == "250 2.0.0 Stored"
    assert sorted(recorder.messages) == bodies


async def test_bare_lf_splits_nothing_even_across_packets(start: Start) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder()))
    client.writer.write(b"NOOP\n")
    await client.writer.drain()
    await asyncio.sleep(0.05)
    client.writer.write(b"RSET\r\n")
    assert (await client.reply()).startswith("500 5.5.2 Bare CR or LF")
    assert await client.cmd("NOOP") == "250 OK"


async def test_overlong_command_streamed_without_crlf_is_dropped_as_it_comes(
    start: Start,
) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder()))
    for _ in range(160):  # 10 MB in 64 KB pieces, no CRLF until the end
        client.writer.write(b"x" * 65536)
        await client.writer.drain()
    assert await client.cmd("\r\nNOOP") == "500 Command line too long"
    assert await client.reply() == "250 OK"


# --- hang-ups, errors -------------------------------------------------------------------


async def test_storing_completes_when_the_peer_hangs_up(start: Start) -> None:
    recorder = Recorder(store_delay=0.3)
    client, _ = await RawSMTP.connect(await start(recorder))
    client.writer.write(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nkept\r\n.\r\n"
    )
    await read_replies(client, 4)
    await asyncio.sleep(0.05)  # the handler is storing
    await client.close()
    await asyncio.sleep(0.1)
    assert recorder.messages == []
    await recorder.drain()
    assert recorder.messages == [b"kept\r\n"]


async def test_hook_errors_reach_the_peer_as_a_bare_451(start: Start) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder()))
    await client.cmd("EHLO c")
    reply = await client.cmd("MAIL FROM:<boom@example.org>")
    assert reply == "451 4.3.0 Temporary server error; please try again later"
    assert "KeyError" not in reply and "internal" not in reply
    assert code(await client.cmd("MAIL FROM:<a@example.org>")) == 250


async def test_a_handler_without_handle_exception_still_gets_a_bare_451(start: Start) -> None:
    class Bare:
        async def handle_RCPT(self, *args: Any) -> str:
            raise RuntimeError("secret path /home/x")

    client, _ = await RawSMTP.connect(await start(Bare()))
    await client.cmd("EHLO c")
    await client.cmd("MAIL FROM:<a@example.org>")
    reply = await client.cmd("RCPT TO:<b@example.org>")
    assert reply == "451 4.3.0 Temporary server error; please try again later"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("MAIL FROM:<", "553 5.1.3 Error: malformed address"),
        ('MAIL FROM:<"', "553 5.1.3 Error: malformed address"),
        ("VRFY a@", "502 Could not VRFY a@"),
    ],
)
async def test_paths_that_crash_the_stdlib_parser_are_refused_cleanly(
    start: Start, command: str, expected: str
) -> None:
    # aiosmtpd answered these 451 (through handle_exception) or 500 with the
    # IndexError's text.
    recorder = Recorder()
    errors: list[Exception] = []

    async def record(error: Exception) -> str:
        errors.append(error)
        return "451 4.3.0 recorded"

    recorder.handle_exception = record  # type: ignore[method-assign]
    client, _ = await RawSMTP.connect(await start(recorder))
    await client.cmd("EHLO c")
    assert await client.cmd(command) == expected
    assert errors == []


def test_unsupported_handler_hooks_are_refused_at_start() -> None:
    class Proxy:
        async def handle_PROXY(self, *args: Any) -> bool:
            return True

    with pytest.raises(TypeError, match="handle_PROXY"):
        Listener(Proxy())


async def test_closing_the_server_closes_its_sessions() -> None:
    recorder = Recorder(store_delay=0.3)
    server = await start_smtp_server(recorder, "127.0.0.1", 0)
    idle, _ = await RawSMTP.connect(server_port(server))
    storing, _ = await RawSMTP.connect(server_port(server))
    storing.writer.write(
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nkept\r\n.\r\n"
    )
    await read_replies(storing, 4)
    await asyncio.sleep(0.05)
    await stop(server)
    for client in (idle, storing):
        assert await asyncio.wait_for(client.reader.read(), 5) == b""
    await recorder.drain()
    assert recorder.messages == [b"kept\r\n"]


# --- AUTH ---------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
async def auth_port(start: Start) -> int:
    recorder = Recorder()
    return await start(
        recorder,
        auth_required=True,
        auth_require_tls=False,
        authenticator=recorder.authenticator,
    )


async def test_auth_login_with_challenges(auth_port: int) -> None:
    client, _ = await RawSMTP.connect(auth_port)
    assert "250-AUTH LOGIN PLAIN" in await client.cmd("EHLO c")
    assert await client.cmd("MAIL FROM:<a@example.org>") == "530 5.7.0 Authentication required"
    assert await client.cmd("AUTH LOGIN") == "334 " + b64(b"User Name\x00")
    assert await client.cmd(b64(b"alice")) == "334 " + b64(b"Password\x00")
    assert await client.cmd(b64(PASSWORD)) == "235 2.7.0 Authentication successful"
    assert await client.cmd("AUTH LOGIN") == "503 Already authenticated"
    assert code(await client.cmd("MAIL FROM:<a@example.org>")) == 250


async def test_auth_login_with_initial_response_and_wrong_password(auth_port: int) -> None:
    client, _ = await RawSMTP.connect(auth_port)
    await client.cmd("EHLO c")
    assert await client.cmd(f"AUTH LOGIN {b64(b'alice')}") == "334 " + b64(b"Password\x00")
    assert await client.cmd(b64(b"wrong")) == "535 5.7.8 Authentication credentials invalid"


async def test_auth_plain_with_empty_challenge(auth_port: int) -> None:
    client, _ = await RawSMTP.connect(auth_port)
    await client.cmd("EHLO c")
    assert await client.cmd("AUTH PLAIN") == "334 "
    assert code(await client.cmd(b64(b"\x00alice\x00" + PASSWORD))) == 235


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("*", "501 5.7.0 Auth aborted"),
        ("not base64!", "501 5.5.2 Can't decode base64"),
        (b64(b"no separators"), "501 5.5.2 Can't split auth value"),
        ("A" * 2000, "501 5.5.2 Can't decode base64"),  # over the line limit
    ],
)
async def test_auth_plain_refusals(auth_port: int, response: str, expected: str) -> None:
    client, _ = await RawSMTP.connect(auth_port)
    await client.cmd("EHLO c")
    assert await client.cmd("AUTH PLAIN") == "334 "
    assert await client.cmd(response) == expected
    assert await client.cmd("NOOP") == "250 OK"


async def test_auth_mechanism_names_and_arguments(auth_port: int) -> None:
    client, _ = await RawSMTP.connect(auth_port)
    assert await client.cmd("AUTH PLAIN x") == "503 Error: send EHLO first"
    await client.cmd("EHLO c")
    assert await client.cmd("AUTH CRAM-MD5") == "504 5.5.4 Unrecognized authentication type"
    assert await client.cmd("AUTH") == "501 Not enough value"
    assert await client.cmd("AUTH PLAIN a b") == "501 Too many values"


async def test_silence_during_an_auth_challenge_times_out(start: Start) -> None:
    recorder = Recorder()
    port = await start(
        recorder, timeout=0.3, auth_require_tls=False, authenticator=recorder.authenticator
    )
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c")
    assert await client.cmd("AUTH LOGIN") == "334 " + b64(b"User Name\x00")
    assert await client.reply() == "421 4.4.2 Idle timeout; closing the connection"


async def test_no_auth_is_offered_without_an_authenticator(start: Start) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder(), auth_require_tls=False))
    assert "AUTH" not in await client.cmd("EHLO c")


# --- STARTTLS -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) from a trustme CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("core.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def tls_session(port: int, client_context: ssl.SSLContext, extra: bytes = b"") -> RawSMTP:
    client, _ = await RawSMTP.connect(port)
    ehlo = await client.cmd("EHLO c")
    assert "250-STARTTLS" in ehlo and "AUTH" not in ehlo
    client.writer.write(b"STARTTLS\r\n" + extra)
    assert await client.reply() == "220 Ready to start TLS"
    await client.writer.start_tls(client_context, server_hostname="core.test")
    return client


async def test_starttls_then_auth_and_mail(
    start: Start, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    recorder = Recorder()
    port = await start(recorder, tls_context=tls[0], authenticator=recorder.authenticator)
    client = await tls_session(port, tls[1])
    # A new session: the client greets again; STARTTLS is no longer offered.
    assert await client.cmd("MAIL FROM:<a@example.org>") == "503 Error: send HELO first"
    ehlo = await client.cmd("EHLO c")
    assert "STARTTLS" not in ehlo and "250-AUTH LOGIN PLAIN" in ehlo
    token = b64(b"\x00alice\x00" + PASSWORD)
    assert code(await client.cmd(f"AUTH PLAIN {token}")) == 235
    assert code(await client.cmd("MAIL FROM:<a@example.org>")) == 250
    assert code(await client.cmd("RCPT TO:<b@example.org>")) == 250
    assert code(await client.cmd("DATA")) == 354
    assert await client.cmd(b"over tls\r\n.\r\n") == "250 2.0.0 Stored"
    assert await client.cmd("STARTTLS") == "554 5.5.1 Error: TLS already active"
    assert recorder.messages == [b"over tls\r\n"]
    (session,) = recorder.sessions
    assert session.ssl is not None and session.ssl["cipher"] is not None


async def test_plaintext_pipelined_behind_starttls_is_discarded(
    start: Start, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port = await start(Recorder(), tls_context=tls[0])
    client = await tls_session(port, tls[1], extra=b"MAIL FROM:<injected@example.org>\r\n")
    await client.cmd("EHLO c")
    assert code(await client.cmd("MAIL FROM:<a@example.org>")) == 250  # nothing nested


async def test_require_starttls_refuses_mail_in_clear(
    start: Start, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port = await start(Recorder(), tls_context=tls[0], require_starttls=True)
    client, _ = await RawSMTP.connect(port)
    assert code(await client.cmd("EHLO c")) == 250
    assert await client.cmd("MAIL FROM:<a@b.c>") == "530 Must issue a STARTTLS command first"
    assert await client.cmd("NOOP") == "250 OK"


async def test_failed_handshake_closes_and_frees_the_slot(
    start: Start, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port = await start(Recorder(), tls_context=tls[0], max_connections=1)
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c")
    assert await client.cmd("STARTTLS") == "220 Ready to start TLS"
    client.writer.write(b"this is not a TLS client hello\r\n" * 10)
    assert await asyncio.wait_for(client.reader.read(), 10) == b""
    await client.close()
    await asyncio.sleep(0.1)
    other, banner = await RawSMTP.connect(port)  # the one slot is free again
    assert banner == "220 core.test ESMTP"


async def test_silent_tls_handshake_times_out(
    start: Start, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    port = await start(Recorder(), tls_context=tls[0], timeout=0.5)
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client.cmd("STARTTLS") == "220 Ready to start TLS"
    try:  # no ClientHello: the server gives up after the idle timeout
        assert await asyncio.wait_for(client.reader.read(), 10) == b""
    except ConnectionResetError:
        pass
    assert 0.4 < loop.time() - started < 5


async def test_starttls_without_a_context(start: Start) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder()))
    assert "STARTTLS" not in await client.cmd("EHLO c")
    assert await client.cmd("STARTTLS") == "454 TLS not available"


# --- limits -------------------------------------------------------------------------------


async def test_five_unknown_verbs_end_the_session(start: Start) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder()))
    for verb in ("XA", "XB", "XC", "XD"):
        assert await client.cmd(verb) == f'500 Error: command "{verb}" not recognized'
    assert await client.cmd("XE") == "502 5.5.1 Too many unrecognized commands, goodbye."
    assert await client.reader.read() == b""


async def test_oversize_declared_and_sent(start: Start) -> None:
    recorder = Recorder()
    client, _ = await RawSMTP.connect(await start(recorder, data_size_limit=100))
    assert "250-SIZE 100" in await client.cmd("EHLO c")
    reply = await client.cmd("MAIL FROM:<a@example.org> SIZE=101")
    assert reply == "552 Error: message size exceeds fixed maximum message size"
    await client.cmd("MAIL FROM:<a@example.org>")
    await client.cmd("RCPT TO:<b@example.org>")
    await client.cmd("DATA")
    assert await client.cmd(b"x" * 90 + b"\r\n" + b"y" * 20 + b"\r\n.\r\n") == (
        "552 Error: Too much mail data"
    )
    assert recorder.messages == []
    assert await client.cmd("RCPT TO:<b@example.org>") == "503 Error: need MAIL command"


async def test_a_client_that_reads_no_replies_is_not_buffered_for_without_end() -> None:
    # NOOPs sent without reading a reply: once its replies pile up unread, the
    # server stops reading, so the client's writing stalls instead of the
    # server's memory growing. Small socket buffers on both ends (accepted
    # sockets inherit the listening socket's) make the pile-up come early.
    count = 200_000
    server = await start_smtp_server(Recorder(), "127.0.0.1", 0, max_commands=count + 1)
    small = 4096
    for listening in server.sockets:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, small)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, small)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, small)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, small)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server_port(server)))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"NOOP\r\n" * count)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 1.0)
        expected = b"220 localhost ESMTP\r\n" + b"250 OK\r\n" * count
        received = bytearray()
        while len(received) < len(expected):
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            assert chunk
            received += chunk
        assert received == expected
    finally:
        writer.close()
        await writer.wait_closed()
        await stop(server)


# --- the same replies as aiosmtpd ---------------------------------------------------------


class _Stock(Controller):
    def factory(self) -> SMTP:
        return SMTP(self.handler, hostname="core.test", ident="ESMTP", enable_SMTPUTF8=True)


class _Core:
    """The core with a handler that has no hooks, in a loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        listener = Listener(object(), hostname="core.test", max_bad_commands=1000)
        server = asyncio.run_coroutine_threadsafe(serve(listener, "127.0.0.1", 0), self.loop)
        self.server = server.result(10)
        self.port = server_port(self.server)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    stock = _Stock(object(), hostname="127.0.0.1", port=free_port())
    stock.start()
    core = _Core()
    try:
        yield stock.port, core.port
    finally:
        core.stop()
        stock.stop()


COMMANDS = [
    b"EHLO client.test",
    b"HELO client.test",
    b"EHLO",
    b"HELO",
    b"MAIL FROM:<a@b.test>",
    b"MAIL FROM:<a@b.test> SIZE=100 BODY=8BITMIME SMTPUTF8",
    b"MAIL FROM:<a@b.test> SIZE=99999999999",
    b"MAIL FROM:<a@b.test> SIZE=x",
    b"MAIL FROM:<a@b.test> BODY=9BIT",
    b"MAIL FROM:<a@b.test> SMTPUTF8=yes",
    b"MAIL FROM:<a@b.test> X-UNKNOWN=1",
    b"MAIL FROM:<a@b.test> =1",
    b"MAIL FROM:<>",
    b"mail from:a@b.test",
    b"MAIL FROM:<a@b@c.test>",
    b'MAIL FROM:<"quoted local"@b.test>',
    b"MAIL TO:<a@b.test>",
    b"MAIL",
    b"MAIL FROM:<" + b"a" * 1100 + b"@b.test>",  # (aiosmtpd stretches the limit under 1001)
    b"RCPT TO:<c@d.test>",
    b"RCPT TO:<c@d.test> NOTIFY=NEVER",
    b"RCPT TO:",
    b"RCPT TO:<[127.0.0.1]>",
    b"RCPT",
    b"DATA",
    b"DATA now",
    b"RSET",
    b"RSET all",
    b"NOOP",
    b"NOOP anything",
    b"VRFY <a@b.test>",
    b"VRFY postmaster",
    b"VRFY",
    b"EXPN list",
    b"HELP",
    b"HELP mail",
    b"HELP STARTTLS",
    b"HELP EXPN",
    b"STARTTLS",
    b"STARTTLS now",
    b"AUTH PLAIN AGFAYg==",
    b"XUNKNOWN",
    b"",
    b" NOOP",
    b"\xff\xfe",
    b"NOOP " + b"x" * 600,
    b"QUIT now",
]


def _session(port: int, script: list[bytes]) -> list[bytes]:
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")

        def reply() -> bytes:
            lines = []
            while True:
                line = stream.readline()
                lines.append(line)
                if line[3:4] != b"-":
                    return b"".join(lines)

        replies.append(reply())
        for command in [*script, b"QUIT"]:
            sock.sendall(command + b"\r\n")
            answer = reply()
            replies.append(answer)
            if answer.startswith(b"354"):
                sock.sendall(b"Subject: s\r\n\r\nbody\r\n.\r\n")
                replies.append(reply())
            if not answer or answer.startswith((b"221", b"502 5.5.1")):
                break
        stream.close()
    return replies


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(st.sampled_from(COMMANDS), max_size=10))
def test_replies_are_aiosmtpds(servers: tuple[int, int], script: list[bytes]) -> None:
    stock, core = servers
    assert _session(core, script) == _session(stock, script)


# --- paths (RFC 5321 4.1.2) -----------------------------------------------------------

ATOM = st.text(st.sampled_from("aZ9!#$%&'*+/=?^_`{|}~-\xe9"), min_size=1, max_size=4)
DOT_STRING = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
QUOTED = st.lists(st.sampled_from(["a", " ", "@", "<", ">", '\\"', "\\\\", "("]), max_size=5).map(
    lambda pieces: '"' + "".join(pieces) + '"'
)
DOMAIN = DOT_STRING | st.sampled_from(["[127.0.0.1]", "[IPv6:::1]"])
MAILBOX = st.tuples(DOT_STRING | QUOTED, DOMAIN).map("@".join)
PARAMETERS = st.sampled_from(["", " SIZE=1", "  BODY=8BITMIME SMTPUTF8", "\tSIZE=9"])


@given(MAILBOX, PARAMETERS, st.sampled_from(["", "@r.test:", "@r.test,@[1.2.3.4]:"]))
def test_every_rfc5321_path_is_read_whole(mailbox: str, parameters: str, route: str) -> None:
    assert split_path(f"<{route}{mailbox}>{parameters}") == (mailbox, parameters.lstrip())
    if not route:
        assert split_path(f"{mailbox}{parameters}") == (mailbox, parameters.lstrip())


@pytest.mark.parametrize(
    "arg",
    [
        "<a@b.test>(c)",
        "<a(c)@b.test>",
        "<a..b@c.test>",
        "<.a@c.test>",
        "<a@b.test.>",
        "<a @b.test>",
        "<a@b",
        '<"a@b.test>',
        "<a@b.test>>",
        "a@b.test(c)",
    ],
)
def test_comments_and_obsolete_forms_are_refused(arg: str) -> None:
    address, rest = split_path(arg)
    # either refused, or (a comment after the path) left for the parameters' parser to refuse
    assert address is None or (rest is not None and rest.startswith(("(", ">")))


PATH_PIECES = ["<", ">", "@", ".", "a", "Z9", "!#$%&'*+/=?^_`{|}~-", " ", "\t", "(c)"]
PATH_PIECES += ['"', "[1.2.3.4]", "SIZE=1", ",", ":", "\\"]


@given(st.lists(st.sampled_from(PATH_PIECES), max_size=12).map("".join))
def test_an_accepted_path_is_an_address_the_stdlib_accepts_too(tail: str) -> None:
    # One-sided, on printable ASCII: nothing the protocol takes as an address is
    # something the RFC 5322 parser (public API) would refuse as an addr-spec. Control
    # and non-ASCII characters pass the protocol on purpose: the handlers refuse them
    # with their own replies (tests/test_hostile_input.py).
    for arg in ("<" + tail, "<a@b.test>" + tail, "<a.b@c" + tail, tail):
        address, _ = split_path(arg)
        has_domain = address is not None and "@" in address[address.rfind('"') + 1 :]
        if address and has_domain:  # not "<>", nor a local part alone (<Postmaster>)
            assert Address(addr_spec=address).addr_spec, arg


async def test_a_comment_after_the_path_is_refused(start: Start) -> None:
    client, _ = await RawSMTP.connect(await start(Recorder()))
    await client.cmd("EHLO c")
    reply = await client.cmd("MAIL FROM: <a.b@c.test>  (a comment) SIZE=1")
    assert reply.startswith("501 Syntax: MAIL FROM: <address>"), reply
    assert code(await client.cmd("MAIL FROM:<a.b@c.test> SIZE=1")) == 250


class WritesOnRcpt(Recorder):
    """Makes the client send its next bytes from inside the server's RCPT hook."""

    def __init__(self) -> None:
        super().__init__(store_delay=0.05)
        self.then: Callable[[], None] | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        then, self.then = self.then, None
        if then is not None:
            asyncio.get_running_loop().call_soon(then)
        return "250 2.1.5 OK"


async def test_a_transaction_pipelined_behind_bdat_last_waits_for_the_message(
    start: Start,
) -> None:
    """Regression (Python 3.11, where a command's task starts a loop turn later): the
    chunk of a ``BDAT n LAST`` and the next transaction arrive in the very turn its
    BDAT command's task finished, before that task was settled; the late settling
    forgot the message's own task, and the next MAIL ran while the message was
    being stored ("503 nested MAIL"). The client's second write is timed from the
    server's RCPT hook to land in exactly that turn. The delivery agent pipelines
    whole transactions like this to a box.
    """
    handler = WritesOnRcpt()
    client, _ = await RawSMTP.connect(await start(handler, chunking=True))
    client.writer.write(b"EHLO client.test\r\n")
    assert code(await client.reply()) == 250
    first, second = b"Subject: 1\r\n\r\none\r\n", b"Subject: 2\r\n\r\ntwo\r\n"
    envelope = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
    handler.then = lambda: client.writer.write(
        first + envelope + b"BDAT %d LAST\r\n" % len(second) + second
    )
    client.writer.write(envelope + b"BDAT %d LAST\r\n" % len(first))
    replies = await read_replies(client, 6)
    assert [code(r) for r in replies] == [250] * 6, replies
    assert handler.messages == [first, second]
