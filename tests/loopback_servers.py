"""The box's two SMTP servers on 127.0.0.1, a free port, for tests that speak SMTP to them.

:func:`start_inbound` and :func:`start_submission` start a server the way the
box does (the inbound one named after its onion, the submission one behind
AUTH without TLS, as on loopback); :func:`serving` runs one for a ``with``
block. :func:`running_inbound` and :func:`running_submission` are whole boxes
whose handlers record whatever reaches the generic ``451`` boundary, and fail
the test if anything did; the fixtures ``inbound`` and ``submission`` run them (import
:func:`inbound_fixture` and :func:`submission_fixture` to use them).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from onionmail.box.inbound import InboundHandler
from onionmail.box.submission import Stored, SubmissionHandler
from onionmail.core.mail_address import MailAddress
from onionmail.seal.envelope import SEAL_KEYWORD, parse_seal_keyword_params
from onionmail.seal.identity import Identity
from onionmail.smtp.server import server_port, start_smtp_server
from onionmail.store.credentials import Credentials
from onionmail.store.replay_cache import ReplayCache
from tests.smtp_client import RawSMTP, code

PEER = "carol@example.org"
"""The sender of a plain SMTP peer (a Postfix reaching the onion through tor)."""
PASSWORD = "correct horse battery staple"
MAX_DATA = 1024 * 1024

H = TypeVar("H", bound=InboundHandler)


# --- starting and stopping one server ---------------------------------------------------


async def start_inbound(handler: InboundHandler, **kwargs: Any) -> asyncio.Server:
    """The inbound server for ``handler``, named after its onion, on 127.0.0.1, a free port."""
    kwargs.setdefault("chunking", True)  # as the box starts it
    return await start_smtp_server(
        handler, "127.0.0.1", 0, hostname=handler.identity.onion_address, **kwargs
    )


async def start_submission(handler: SubmissionHandler, **kwargs: Any) -> asyncio.Server:
    """The submission server for ``handler`` (AUTH required, no TLS) on 127.0.0.1, a free port."""
    return await start_smtp_server(
        handler,
        "127.0.0.1",
        0,
        hostname="localhost",
        auth_required=True,
        auth_require_tls=False,
        authenticator=handler.authenticator,
        **kwargs,
    )


async def stop(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


@asynccontextmanager
async def serving(starting: Awaitable[asyncio.Server]) -> AsyncIterator[int]:
    """Run the server ``starting`` starts for the block; yield its port."""
    server = await starting
    try:
        yield server_port(server)
    finally:
        await stop(server)


def inbound_handler(
    handler_class: type[H],
    identity: Identity,
    mail_root: Path,
    replay_cache: ReplayCache,
    local_parts: tuple[str, ...] = ("bob", "postmaster"),
) -> H:
    """An inbound handler for ``local_parts`` at ``identity``'s onion, five recipients at most."""
    return handler_class(
        identity=identity,
        local_parts=local_parts,
        mail_root=mail_root,
        replay_cache=replay_cache,
        max_recipients=5,
    )


def credentials_for(path: Path, password: str = PASSWORD, user: str = "alice") -> Credentials:
    credentials = Credentials(path)
    credentials.set_password(user, password)
    return credentials


# --- sessions ---------------------------------------------------------------------------


def auth_plain_token(user: str = "alice", password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def peer_session(box: InboundBox, greeting: bytes = b"EHLO mx.example.org\r\n") -> RawSMTP:
    client, _ = await RawSMTP.connect(box.port)
    assert code(await client.cmd(greeting)) == 250
    return client


async def sealing_session(box: InboundBox) -> tuple[RawSMTP, bytes]:
    """Connect and EHLO as a box would; return the client and the session's seal challenge."""
    client, _ = await RawSMTP.connect(box.port)
    for line in (await client.cmd("EHLO localhost")).splitlines():
        keyword, _, params = line[4:].partition(" ")
        if keyword == SEAL_KEYWORD:
            return client, parse_seal_keyword_params(params)
    raise AssertionError("no seal keyword in the EHLO reply")


async def user_session(box: SubmissionBox, greeting: bytes = b"EHLO localhost\r\n") -> RawSMTP:
    client, _ = await RawSMTP.connect(box.port)
    assert code(await client.cmd(greeting)) == 250
    assert code(await client.cmd(f"AUTH PLAIN {auth_plain_token()}")) == 235
    return client


async def open_data(client: RawSMTP, mail_from: str, *rcpts: str) -> None:
    assert code(await client.cmd(f"MAIL FROM:<{mail_from}>")) == 250
    for rcpt in rcpts:
        assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354


async def assert_still_serving(client: RawSMTP, port: int) -> None:
    assert await client.cmd("NOOP") == "250 OK"
    other, banner = await RawSMTP.connect(port)
    assert banner.startswith("220 ")
    await other.close()


def other_onion_rcpt() -> str:
    return f"dave@{Identity.generate().onion_address}"


# --- both servers, recording what reaches the generic 451 -------------------------------


class RecordingInboundHandler(InboundHandler):
    """The inbound handler; remembers every error that reached the generic 451 boundary."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.internal_errors: list[Exception] = []

    async def handle_exception(self, error: Exception) -> str:
        self.internal_errors.append(error)
        return await super().handle_exception(error)


class RecordingSubmissionHandler(SubmissionHandler):
    """The submission handler; remembers every error that reached the generic 451 boundary."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.internal_errors: list[Exception] = []

    async def handle_exception(self, error: Exception) -> str:
        self.internal_errors.append(error)
        return await super().handle_exception(error)


@dataclass
class InboundBox:
    identity: Identity
    port: int
    mail: Path
    handler: RecordingInboundHandler

    @property
    def onion(self) -> str:
        return self.identity.onion_address

    def rcpt(self, local_part: str = "bob") -> str:
        return f"{local_part}@{self.onion}"

    def stored(self, local_part: str = "bob") -> list[bytes]:
        new = self.mail / local_part / "new"
        return [path.read_bytes() for path in sorted(new.iterdir())] if new.exists() else []


@asynccontextmanager
async def running_inbound(directory: Path) -> AsyncIterator[InboundBox]:
    """The inbound server for ``bob`` and ``postmaster`` on 127.0.0.1, a free port."""
    identity = Identity.generate()
    cache = ReplayCache(directory / "replay.sqlite")
    handler = inbound_handler(RecordingInboundHandler, identity, directory / "mail", cache)
    try:
        async with serving(start_inbound(handler, data_size_limit=MAX_DATA, timeout=10)) as port:
            yield InboundBox(identity, port, directory / "mail", handler)
    finally:
        cache.close()
    assert handler.internal_errors == [], "hostile input reached the generic 451 boundary"


@dataclass
class Queued:
    sender: MailAddress
    recipients: list[MailAddress]
    message: bytes


@dataclass
class SubmissionBox:
    onion: str
    port: int
    handler: RecordingSubmissionHandler
    queued: list[Queued] = field(default_factory=list)

    @property
    def sender(self) -> str:
        return f"alice@{self.onion}"


@asynccontextmanager
async def running_submission(directory: Path) -> AsyncIterator[SubmissionBox]:
    """The submission server for ``alice`` on 127.0.0.1, a free port; queues into a list."""
    onion = Identity.generate().onion_address
    queued: list[Queued] = []

    def store(sender: MailAddress, rcpts: list[MailAddress], message: bytes) -> Stored:
        queued.append(Queued(sender, rcpts, message))
        return Stored([f"q{len(queued)}"])

    handler = RecordingSubmissionHandler(
        onion=onion,
        local_parts=("alice",),
        credentials=credentials_for(directory / "submission.json"),
        store=store,
        max_recipients=5,
    )
    async with serving(start_submission(handler, data_size_limit=MAX_DATA, timeout=10)) as port:
        yield SubmissionBox(onion, port, handler, queued)
    assert handler.internal_errors == [], "hostile input reached the generic 451 boundary"


@pytest.fixture(name="inbound")
async def inbound_fixture(tmp_path: Path) -> AsyncIterator[InboundBox]:
    async with running_inbound(tmp_path) as box:
        yield box


@pytest.fixture(name="submission")
async def submission_fixture(tmp_path: Path) -> AsyncIterator[SubmissionBox]:
    async with running_submission(tmp_path) as box:
        yield box
