"""The delivery agent's own logic (retry, backoff, lifetime, bounce) with an injectable clock.

Delivery itself is exercised over real tor in test_onion_delivery.py; here the
SOCKS port is a closed loopback port, so every attempt fails the way an
unreachable tor or peer does, and the clock jumps days ahead.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import mailbox
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onionmail.box.delivery import DeliveryAgent, sealed_time
from onionmail.config.box import DeliverySection
from onionmail.seal.envelope import decode_from_smtp, format_seal_keyword, open_envelope
from onionmail.seal.identity import Identity
from onionmail.smtp.server import SafeHandler
from onionmail.store.maildir import Maildir
from onionmail.store.queue import OutboundQueue, QueuedMessage, queue_key

DAY = 24 * 3600.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_agent(tmp_path: Path, clock: Clock) -> tuple[DeliveryAgent, OutboundQueue, Identity]:
    alice = Identity.generate()
    queue = OutboundQueue(tmp_path / "queue", queue_key(alice.seed))
    port = closed_port()
    agent = DeliveryAgent(
        queue=queue,
        identity=alice,
        settings=DeliverySection(retry_initial=30.0, retry_max=3600.0, max_lifetime=5 * DAY),
        socks_address=lambda: ("127.0.0.1", port),
        socks_timeout=5,
        sender_maildir=lambda part: Maildir(tmp_path / "mail" / part),
        clock=clock,
    )
    return agent, queue, alice


async def run_until(agent: DeliveryAgent, condition: object, timeout: float = 10) -> None:
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                await asyncio.sleep(0.02)
    finally:
        await agent.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_unreachable_peer_is_retried_with_growing_backoff(tmp_path: Path) -> None:
    import time

    clock = Clock(time.time())
    agent, queue, alice = make_agent(tmp_path, clock)
    peer = Identity.generate().onion_address
    queue.enqueue(
        peer, f"alice@{alice.onion_address}", (f"bob@{peer}",), b"Subject: x\r\n\r\nx\r\n"
    )
    waits = []
    for attempt in range(1, 5):
        await run_until(agent, lambda a=attempt: queue.states()[0].attempts == a)
        (state,) = queue.states()
        waits.append(state.next_try - clock.now)
        assert "SOCKS" in state.last_error or "tor" in state.last_error
        clock.now = state.next_try + 1
    # 30 s doubling, each with +-50 % jitter
    for n, wait in enumerate(waits):
        assert 0.5 * 30 * 2**n - 2 <= wait <= 1.5 * 30 * 2**n + 2, waits


class SilentPeerBehindTor:
    """tor's SOCKS side and, behind it, a peer that greets, answers EHLO and then says
    nothing more (or, with ``greets=False``, nothing at all), as a circuit whose far end
    was lost without a word; it records the isolation credentials (user, password) of
    every stream."""

    def __init__(self, greets: bool = True) -> None:
        self.greets = greets
        self.credentials: list[tuple[bytes, bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(3)
            writer.write(b"\x05\x02")
            _, ulen = await reader.readexactly(2)
            user = await reader.readexactly(ulen)
            password = await reader.readexactly((await reader.readexactly(1))[0])
            writer.write(b"\x01\x00")
            hlen = (await reader.readexactly(5))[4]
            await reader.readexactly(hlen + 2)  # the onion and the port
            self.credentials.append((user, password))
            writer.write(bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
            if self.greets:
                writer.write(b"220 peer ESMTP\r\n")
                await reader.readline()  # EHLO
                writer.write(b"250 peer\r\n")
            await reader.read()  # silence, until the client gives up
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("greets", [True, False], ids=["after EHLO", "before the greeting"])
async def test_a_peer_gone_silent_is_tried_again_on_a_new_circuit(
    tmp_path: Path, greets: bool
) -> None:
    """A peer that stops answering may sit behind a circuit lost without a word (the
    machine behind an onion gone), where a new stream would hang as well: the next
    attempt goes over a new circuit (tor sees other isolation credentials)."""
    import time

    fake = SilentPeerBehindTor(greets)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    alice = Identity.generate()
    queue = OutboundQueue(tmp_path / "queue", queue_key(alice.seed))
    agent = DeliveryAgent(
        queue=queue,
        identity=alice,
        settings=DeliverySection(smtp_timeout=0.5, retry_initial=0.05, max_lifetime=DAY),
        socks_address=lambda: ("127.0.0.1", port),
        socks_timeout=5,
        sender_maildir=lambda part: Maildir(tmp_path / "mail" / part),
        clock=time.time,
    )
    peer = Identity.generate().onion_address
    queue.enqueue(
        peer, f"alice@{alice.onion_address}", (f"bob@{peer}",), b"Subject: x\r\n\r\nx\r\n"
    )
    async with server:
        await run_until(agent, lambda: queue.states()[0].attempts >= 2, timeout=20)
    (state,) = queue.states()
    assert "did not answer in time" in state.last_error
    first, second = fake.credentials[:2]
    assert first != second, "the second attempt took the silent circuit again"


async def test_peer_down_past_the_lifetime_bounces_to_the_sender(tmp_path: Path) -> None:
    import time

    clock = Clock(time.time())
    agent, queue, alice = make_agent(tmp_path, clock)
    peer = Identity.generate().onion_address
    sender = f"alice@{alice.onion_address}"
    message = b"From: " + sender.encode() + b"\r\nSubject: lost cause\r\n\r\nhello\r\n"
    queue.enqueue(peer, sender, (f"bob@{peer}",), message)
    await run_until(agent, lambda: queue.states()[0].attempts == 1)
    assert queue.states(), "one failure must not bounce"
    clock.now += 5 * DAY + 60  # the peer stayed down for five days
    queue.reschedule_all(clock.now)
    await run_until(agent, lambda: not queue.states())
    store = mailbox.Maildir(tmp_path / "mail" / "alice", create=False)
    (key,) = store.keys()
    dsn = email.message_from_bytes(store.get_bytes(key), policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["To"] == sender
    assert isinstance(dsn, email.message.EmailMessage)
    report = list(dsn.iter_parts())[1]
    assert report.get_content_type() == "message/delivery-status"
    assert f"bob@{peer}" in str(report)
    assert "Action: failed" in str(report)


class RefusingPeer(SafeHandler):
    """A plain SMTP peer on loopback that answers RCPT with a chosen status."""

    def __init__(self, rcpt_status: str, commands: list[str]) -> None:
        self.rcpt_status = rcpt_status
        self.commands = commands

    async def handle_MAIL(
        self, server: object, session: object, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.commands.append("MAIL")
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        self.commands.append("RCPT")
        return self.rcpt_status

    async def handle_exception(self, error: Exception) -> str:
        raise AssertionError(f"peer failed: {error!r}")


async def attempt_against(
    tmp_path: Path,
    rcpt_status: str,
    *,
    plain_refusal: Callable[[str], str | None] | None = None,
    commands: list[str] | None = None,
) -> tuple[OutboundQueue, Path]:
    """One delivery attempt of one queued message to a peer answering RCPT with ``rcpt_status``."""
    import time

    from onionmail.smtp.server import server_port, start_smtp_server

    clock = Clock(time.time())
    agent, queue, alice = make_agent(tmp_path, clock)
    peer = Identity.generate().onion_address
    sender = f"alice@{alice.onion_address}"
    queue.enqueue(peer, sender, (f"bob@{peer}",), b"Subject: x\r\n\r\nx\r\n")
    refusing = RefusingPeer(rcpt_status, commands if commands is not None else [])
    server = await start_smtp_server(refusing, "127.0.0.1", 0, hostname="peer")
    agent.plain_refusal = plain_refusal

    async def connect_directly(destination: str) -> socket.socket:
        # The SOCKS hop is replaced by a direct loopback connection; the SMTP
        # dialogue and the decisions after it are the agent's own.
        return socket.create_connection(("127.0.0.1", server_port(server)), timeout=5)

    agent.connect = connect_directly  # type: ignore[method-assign]
    try:
        await run_until(agent, lambda: not queue.states() or queue.states()[0].attempts == 1)
    finally:
        server.close()
        await server.wait_closed()
    return queue, tmp_path / "mail" / "alice"


async def test_permanent_refusal_bounces_at_once(tmp_path: Path) -> None:
    queue, sender_mail = await attempt_against(tmp_path, "550 5.1.1 No such mailbox")
    assert queue.states() == []
    (key,) = mailbox.Maildir(sender_mail, create=False).keys()
    dsn = mailbox.Maildir(sender_mail, create=False).get_bytes(key)
    assert b"multipart/report" in dsn and b"Action: failed" in dsn


async def test_temporary_refusal_is_retried_not_bounced(tmp_path: Path) -> None:
    queue, sender_mail = await attempt_against(tmp_path, "451 4.3.0 Try again later")
    (state,) = queue.states()
    assert state.attempts == 1 and "451" in state.last_error
    assert not sender_mail.exists() or not mailbox.Maildir(sender_mail, create=False).keys()


async def test_a_backlog_stays_on_disk_not_in_memory(tmp_path: Path) -> None:
    """Regression: one waiting task per due message made memory grow with the backlog."""
    import time

    from onionmail.box.delivery import MAX_IN_FLIGHT

    clock = Clock(time.time())
    agent, queue, alice = make_agent(tmp_path, clock)
    peer = Identity.generate().onion_address
    for _ in range(60):
        queue.enqueue(peer, f"alice@{alice.onion_address}", (f"bob@{peer}",), b"Subject: x\r\n\r\n")
    most = 0

    def all_tried() -> bool:
        nonlocal most
        most = max(most, len(agent._tasks))
        return all(state.attempts >= 1 for state in queue.states())

    await run_until(agent, all_tried, timeout=20)
    assert 1 <= most <= MAX_IN_FLIGHT


async def test_the_queue_is_read_in_passes_not_once_per_attempt_or_submission(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """600 due entries (tor down) and 50 new submissions: a handful of passes over the queue.

    Regression: the agent re-read every state file each time an attempt ended
    and each time a message was queued, quadratic in the backlog.
    """
    import time

    import onionmail.box.delivery
    from onionmail.store.queue import scan_due

    passes = 0

    def counting_scan(*args: Any, **kwargs: Any) -> Any:
        nonlocal passes
        passes += 1
        return scan_due(*args, **kwargs)

    monkeypatch.setattr(onionmail.box.delivery, "scan_due", counting_scan)
    monkeypatch.setattr(onionmail.box.delivery, "SCAN_BATCH", 256)
    clock = Clock(time.time())
    agent, queue, alice = make_agent(tmp_path, clock)
    peer = Identity.generate().onion_address
    sender, rcpt = f"alice@{alice.onion_address}", (f"bob@{peer}",)
    for _ in range(600):
        queue.enqueue(peer, sender, rcpt, b"Subject: x\r\n\r\n")

    def submit_while_running() -> bool:
        if len(queue.states()) < 650:
            entry = queue.enqueue(peer, sender, rcpt, b"Subject: y\r\n\r\n")
            agent.offer(entry.first_state())
        return len(queue.states()) == 650 and all(s.attempts >= 1 for s in queue.states())

    await run_until(agent, submit_while_running, timeout=60)
    # 650 due: passes of at most 256 (3), plus the first; none per attempt or per offer
    assert passes <= 6, passes


@pytest.mark.parametrize(
    ("created", "first_try", "rounding", "expected"),
    [
        (1_000_059.7, 0.0, 60, 1_000_020),  # queued at 16:40:59.7 -> 16:40:00 (1_000_020)
        (1_000_059.7, 0.0, 1, 1_000_059),
        (1_000_059.7, 1_003_725.0, 60, 1_003_680),  # held by a delay policy: the release
        (1_000_059.7, 1_003_725.0, 3600, 1_000_800),
    ],
)
def test_the_sealed_time_is_the_release_rounded_as_date_is(
    created: float, first_try: float, rounding: int, expected: int
) -> None:
    entry = QueuedMessage(
        "q", "p.onion", "a@x.onion", ("b@p.onion",), b"m", b"\0" * 16, created, first_try=first_try
    )
    assert sealed_time(entry, rounding) == expected


def test_the_envelope_a_peer_opens_carries_the_rounded_time(tmp_path: Path) -> None:
    """Sealed by the agent and opened with the recipient's key: ``created`` holds no seconds."""
    import time

    clock = Clock(time.time())
    agent, queue, alice = make_agent(tmp_path, clock)
    agent.date_rounding = 60
    bob = Identity.generate()
    entry = queue.enqueue(
        bob.onion_address,
        f"alice@{alice.onion_address}",
        (f"bob@{bob.onion_address}",),
        b"Subject: s\r\n\r\nhi\r\n",
    )
    challenge = b"\x01" * 16
    params = format_seal_keyword(challenge).split(" ", 1)[1]
    wire = agent._seal(entry, params, None, list(entry.recipients))
    opened = open_envelope(decode_from_smtp(wire), recipient=bob, sender_onion=alice.onion_address)
    assert opened.created == int(entry.created) // 60 * 60
    assert opened.created % 60 == 0
