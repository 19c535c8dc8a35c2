"""The submission server on loopback: AUTH, own-address rule, routing refusals, scrubbing."""

from __future__ import annotations

import asyncio
import base64
import itertools
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from onionmail.box.submission import Stored, SubmissionHandler
from onionmail.core.errors import QueueError
from onionmail.core.mail_address import MailAddress
from onionmail.message.rfc5322 import parse_message
from onionmail.message.scrub import scrub_submission
from onionmail.seal.identity import Identity
from tests.leaks import host_identity_in
from tests.loopback_servers import (
    PASSWORD,
    auth_plain_token,
    credentials_for,
    serving,
    start_submission,
)
from tests.smtp_client import RawSMTP, code


@dataclass
class Submission:
    onion: str
    port: int
    queued: list[tuple[MailAddress, list[MailAddress], bytes]] = field(default_factory=list)
    fail: bool = False
    store_threads: list[int] = field(default_factory=list)


@pytest.fixture
async def submission(tmp_path: Path) -> AsyncIterator[Submission]:
    onion = Identity.generate().onion_address
    state = Submission(onion, 0)

    def store(sender: MailAddress, rcpts: list[MailAddress], message: bytes) -> Stored:
        state.store_threads.append(threading.get_ident())
        if state.fail:
            raise QueueError(28, "No space left on device")
        state.queued.append((sender, rcpts, message))
        return Stored(["q1"])

    handler = SubmissionHandler(
        onion=onion,
        local_parts=("alice", "bob"),
        credentials=credentials_for(tmp_path / "submission.json"),
        store=store,
        max_recipients=3,
    )
    async with serving(start_submission(handler, data_size_limit=100_000)) as port:
        state.port = port
        yield state


async def authed(sub: Submission, user: str = "alice", password: str = PASSWORD) -> RawSMTP:
    client, _ = await RawSMTP.connect(sub.port)
    await client.cmd("EHLO localhost")
    reply = await client.cmd(f"AUTH PLAIN {auth_plain_token(user, password)}")
    assert code(reply) == 235, reply
    return client


async def test_mail_without_auth_is_refused(submission: Submission) -> None:
    client, _ = await RawSMTP.connect(submission.port)
    await client.cmd("EHLO localhost")
    reply = await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    assert code(reply) == 530
    assert submission.queued == []


async def test_wrong_password_and_unknown_user_are_refused(submission: Submission) -> None:
    for user, password in (("alice", "wrong"), ("bob", PASSWORD), ("mallory", PASSWORD)):
        client, _ = await RawSMTP.connect(submission.port)
        await client.cmd("EHLO localhost")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        assert code(await client.cmd(f"AUTH PLAIN {token}")) == 535
        await client.close()


async def test_client_sends_and_message_is_scrubbed(submission: Submission) -> None:
    bob = f"bob@{Identity.generate().onion_address}"
    sender = f"alice@{submission.onion}"
    message = (
        f"From: {sender}\r\nTo: {bob}\r\nSubject: s\r\nUser-Agent: Mutt\r\n"
        f"Message-ID: <1@{socket.gethostname()}>\r\n\r\nbody\r\n"
    )
    await aiosmtplib.send(
        message,
        sender=sender,
        recipients=[bob],
        hostname="127.0.0.1",
        port=submission.port,
        username="alice",
        password=PASSWORD,
        local_hostname="localhost",
        start_tls=False,
    )
    ((queued_from, rcpts, data),) = submission.queued
    assert str(queued_from) == sender and [str(r) for r in rcpts] == [bob]
    parsed = parse_message(data)
    assert parsed.get("User-Agent") is None
    assert host_identity_in(data) == []
    assert parsed.body == b"body\r\n"


async def test_scrubbing_and_storing_run_off_the_event_loop_in_one_hop(
    submission: Submission, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: scrubbing ran on the event loop and held up every other session."""
    scrub_threads: list[int] = []

    def recording_scrub(*args: Any, **kwargs: Any) -> tuple[bytes, str]:
        scrub_threads.append(threading.get_ident())
        return scrub_submission(*args, **kwargs)

    monkeypatch.setattr("onionmail.box.submission.scrub_submission", recording_scrub)
    client = await authed(submission)
    await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    await client.cmd(f"RCPT TO:<bob@{Identity.generate().onion_address}>")
    await client.cmd("DATA")
    reply = await client.cmd(f"From: alice@{submission.onion}\r\n\r\nx\r\n.\r\n".encode())
    assert code(reply) == 250 and reply.startswith("250 2.0.0 Queued as q1")
    assert scrub_threads == submission.store_threads
    assert scrub_threads[0] != threading.get_ident()  # not the event loop's thread


async def test_sending_as_someone_else_is_refused(submission: Submission) -> None:
    client = await authed(submission)
    for sender in (f"bob@{submission.onion}", "alice@example.org", f"alice@{'b' * 56}.onion"):
        reply = await client.cmd(f"MAIL FROM:<{sender}>")
        assert code(reply) == 553 and "only as alice@" in reply


async def test_from_header_of_someone_else_is_refused(submission: Submission) -> None:
    client = await authed(submission)
    await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    await client.cmd(f"RCPT TO:<bob@{Identity.generate().onion_address}>")
    await client.cmd("DATA")
    reply = await client.cmd(f"From: bob@{submission.onion}\r\n\r\nx\r\n.\r\n".encode())
    assert code(reply) == 550
    assert submission.queued == []


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("bob@example.org", "550 5.7.1 Only .onion recipients"),
        ("bob@" + "a" * 56 + ".onion", "553 5.1.2 Bad onion address"),  # checksum wrong
        ("bob@abc.onion", "553 5.1.2 Bad onion address"),  # v2-length
        ("bob", "553 5.1.3"),
        ("<bob@x@y.onion>", "553 5.1.3"),
        ("b\tob@x.onion", "553 5.1.3"),
    ],
)
async def test_unroutable_and_malformed_recipients(
    submission: Submission, rcpt: str, expected: str
) -> None:
    client = await authed(submission)
    await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    assert expected in reply, reply
    assert code(await client.cmd("NOOP")) == 250


async def test_too_many_recipients(submission: Submission) -> None:
    client = await authed(submission)
    await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    replies = [
        await client.cmd(f"RCPT TO:<u{i}@{Identity.generate().onion_address}>") for i in range(4)
    ]
    assert [code(r) for r in replies] == [250, 250, 250, 452]


async def test_store_failure_is_451_and_nothing_acknowledged(submission: Submission) -> None:
    submission.fail = True
    client = await authed(submission)
    await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    await client.cmd(f"RCPT TO:<bob@{Identity.generate().onion_address}>")
    await client.cmd("DATA")
    reply = await client.cmd(b"Subject: x\r\n\r\nx\r\n.\r\n")
    assert code(reply) == 451 and "No space" not in reply


async def test_oversize_message_is_552(submission: Submission) -> None:
    client = await authed(submission)
    await client.cmd(f"MAIL FROM:<alice@{submission.onion}>")
    await client.cmd(f"RCPT TO:<bob@{Identity.generate().onion_address}>")
    await client.cmd("DATA")
    reply = await client.cmd(b"Subject: x\r\n\r\n" + (b"y" * 998 + b"\r\n") * 120 + b".\r\n")
    assert code(reply) == 552
    assert code(await client.cmd("NOOP")) == 250


async def test_banner_and_ehlo_name_nothing(submission: Submission) -> None:
    client, banner = await RawSMTP.connect(submission.port)
    ehlo = await client.cmd("EHLO localhost")
    assert banner == "220 localhost ESMTP"
    assert host_identity_in(banner + "\n" + ehlo) == []
    assert "AUTH" in ehlo


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n",
        b"\x00\x01\x02\xff\xfe\r\n",
        b"RCPT TO:<x>\r\n",  # out of sequence
        b"A" * (10 * 1024 * 1024) + b"\r\n",  # a 10 MB line
        b"MAIL FROM:<not an address>\r\n",
        b"MAIL FROM:<alice@" + b"x" * 300 + b".onion>\r\n",
        b"MAIL FROM:<alice@abc.onion>\r\n",
    ],
)
async def test_garbage_gets_5xx_and_server_keeps_serving(
    submission: Submission, garbage: bytes
) -> None:
    client = await authed(submission)
    reply = await client.cmd(garbage)
    assert 500 <= code(reply) < 600, reply
    assert code(await client.cmd("NOOP")) == 250
    other, banner = await RawSMTP.connect(submission.port)
    assert banner.startswith("220")


@dataclass
class Bookkeeping:
    """A submission server whose store records, and whose bookkeeping waits for ``go``."""

    handler: SubmissionHandler
    port: int
    onion: str
    go: asyncio.Event
    done: list[int] = field(default_factory=list)


@pytest.fixture
async def bookkeeping(tmp_path: Path) -> AsyncIterator[Bookkeeping]:
    onion = Identity.generate().onion_address
    go = asyncio.Event()
    done: list[int] = []
    numbers = itertools.count(1)

    def store(sender: MailAddress, rcpts: list[MailAddress], message: bytes) -> Stored:
        number = next(numbers)

        async def then() -> None:
            await go.wait()
            done.append(number)

        return Stored([f"q{number}"], then)

    handler = SubmissionHandler(
        onion=onion,
        local_parts=("alice",),
        credentials=credentials_for(tmp_path / "submission.json"),
        store=store,
        max_recipients=3,
    )
    async with serving(start_submission(handler)) as port:
        state = Bookkeeping(handler, port, onion, go, done)
        yield state
        go.set()
        await handler.drain()


async def send_one(sub: Bookkeeping, client: RawSMTP) -> str:
    await client.cmd(f"MAIL FROM:<alice@{sub.onion}>")
    await client.cmd(f"RCPT TO:<bob@{Identity.generate().onion_address}>")
    await client.cmd("DATA")
    return await client.cmd(f"From: alice@{sub.onion}\r\n\r\nx\r\n.\r\n".encode())


async def test_the_250_does_not_wait_for_the_sent_copy_and_ledger(
    bookkeeping: Bookkeeping,
) -> None:
    """What the 250 promises is the queue's fsynced entry; the bookkeeping after it (the
    .Sent copy, the ledger's forecast) overlaps the next transaction, and stopping waits
    for it."""
    client, _ = await RawSMTP.connect(bookkeeping.port)
    await client.cmd("EHLO localhost")
    await client.cmd(f"AUTH PLAIN {auth_plain_token('alice', PASSWORD)}")
    for _ in range(3):
        assert code(await send_one(bookkeeping, client)) == 250
    assert bookkeeping.done == []  # all three still pending
    drained = asyncio.create_task(bookkeeping.handler.drain())
    await asyncio.sleep(0.1)
    assert not drained.done()  # stopping waits for it
    bookkeeping.go.set()
    await asyncio.wait_for(drained, 5)
    assert len(bookkeeping.done) == 3


async def test_a_backlog_of_bookkeeping_holds_the_next_reply(
    bookkeeping: Bookkeeping, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("onionmail.smtp.server.AFTER_LIMIT", 2)
    client, _ = await RawSMTP.connect(bookkeeping.port)
    await client.cmd("EHLO localhost")
    await client.cmd(f"AUTH PLAIN {auth_plain_token('alice', PASSWORD)}")
    for _ in range(2):
        assert code(await send_one(bookkeeping, client)) == 250
    third = asyncio.create_task(send_one(bookkeeping, client))
    await asyncio.sleep(0.3)
    assert not third.done()  # two pending: the third's bookkeeping runs before its reply
    bookkeeping.go.set()
    assert code(await asyncio.wait_for(third, 5)) == 250
    assert len(bookkeeping.done) >= 1
