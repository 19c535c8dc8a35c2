"""A session cannot hold a connection slot by talking without sending mail, over real sockets.

Each accepted command used to re-arm the idle timer and a session had no
lifetime, so peers sending NOOP every few seconds held every slot for as
long as they liked. Now a session must complete a transaction within
``transaction_timeout`` (its DATA transfers not counted), may last
``max_session_time`` in all and send ``max_commands``; past any of them it
gets ``421`` and is closed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.smtp_client import RawSMTP, code
from tests.test_smtp_protocol import (
    Recorder,
    Start,
    start_fixture,  # noqa: F401 (the fixture ``start``)
)

MESSAGE = b"Subject: s\r\n\r\nbody\r\n.\r\n"


async def keep_alive(client: RawSMTP, verb: str, every: float, budget: float) -> tuple[str, float]:
    """Send ``verb`` every ``every`` seconds until a reply is not 2xx; (that reply, when)."""
    began = time.monotonic()
    while time.monotonic() - began < budget:
        reply = await client.cmd(verb)
        if not reply.startswith("2"):
            return reply, time.monotonic() - began
        await asyncio.sleep(every)
    raise AssertionError(f"{verb} kept the session alive for {budget} s")


async def send_message(client: RawSMTP) -> str:
    assert code(await client.cmd("MAIL FROM:<a@b.test>")) == 250
    assert code(await client.cmd("RCPT TO:<c@d.test>")) == 250
    assert code(await client.cmd("DATA")) == 354
    return await client.cmd(MESSAGE)


@pytest.mark.parametrize("verb", ["NOOP", "RSET", "EHLO c.test", "VRFY <a@b.test>", "HELP"])
async def test_commands_that_make_no_progress_do_not_keep_a_session(
    start: Start, verb: str
) -> None:
    port = await start(Recorder(), transaction_timeout=1.0, timeout=30)
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c.test")
    reply, after = await keep_alive(client, verb, 0.1, 5.0)
    assert reply == "421 4.4.2 No mail transaction completed in time; closing the connection"
    assert 0.9 < after < 2.0
    assert await client.reader.read() == b""  # closed


async def test_an_accepted_message_restarts_the_clock(start: Start) -> None:
    recorder = Recorder()
    port = await start(recorder, transaction_timeout=1.0, timeout=30)
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c.test")
    await asyncio.sleep(0.7)
    assert code(await send_message(client)) == 250
    reply, after = await keep_alive(client, "NOOP", 0.1, 5.0)  # the clock started at the 250
    assert reply.startswith("421 4.4.2 No mail transaction")
    assert 0.8 < after < 2.0
    assert len(recorder.messages) == 1


async def test_a_slow_data_transfer_is_not_cut_by_the_transaction_clock(start: Start) -> None:
    recorder = Recorder()
    port = await start(recorder, transaction_timeout=1.0, timeout=30, data_timeout=10)
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c.test")
    assert code(await client.cmd("MAIL FROM:<a@b.test>")) == 250
    assert code(await client.cmd("RCPT TO:<c@d.test>")) == 250
    assert code(await client.cmd("DATA")) == 354
    client.writer.write(b"Subject: slow\r\n\r\n")
    for _ in range(8):  # 2 s of a steady trickle, twice the transaction timeout
        await asyncio.sleep(0.25)
        client.writer.write(b"a line of the body\r\n")
    assert code(await client.cmd(b".\r\n")) == 250
    assert len(recorder.messages) == 1


async def test_a_session_has_a_maximum_lifetime(start: Start) -> None:
    recorder = Recorder()
    port = await start(recorder, transaction_timeout=30, max_session_time=1.5, timeout=30)
    client, _ = await RawSMTP.connect(port)
    await client.cmd("EHLO c.test")
    began = time.monotonic()
    transaction = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n" + MESSAGE
    last = b""
    while time.monotonic() - began < 5:  # a message every 0.2 s: busy all along
        client.writer.write(transaction)
        replies = [await client.reply() for _ in range(4)]
        assert [code(reply) for reply in replies] == [250, 250, 354, 250]
        try:  # the pause between two messages, listening for the server's last words
            last = await asyncio.wait_for(client.reader.readline(), 0.2)
            break
        except TimeoutError:
            continue
    assert last == b"421 4.4.2 Session time limit reached; closing the connection\r\n"
    assert 1.4 < time.monotonic() - began < 3.0
    assert len(recorder.messages) >= 3


async def test_a_session_has_a_maximum_number_of_commands(start: Start) -> None:
    port = await start(Recorder(), max_commands=10)
    client, _ = await RawSMTP.connect(port)
    client.writer.write(b"NOOP\r\n" * 12)
    replies = [await client.reply() for _ in range(11)]
    assert replies[:10] == ["250 OK"] * 10
    assert replies[10] == "421 4.7.0 Too many commands; closing the connection"
    assert await client.reader.read() == b""


async def test_mail_gets_a_slot_while_idle_sessions_hold_them_all(start: Start) -> None:
    """Slots held by talk (NOOP keep-alives) cannot keep mail out: a new connection takes
    the slot of the session that has gone longest without sending mail."""
    recorder = Recorder()
    port = await start(recorder, max_connections=3, evict_after=0.5, timeout=30)
    holders = []
    for _ in range(3):
        client, banner = await RawSMTP.connect(port)
        assert banner.startswith("220")
        await client.cmd("EHLO holder.test")
        holders.append(client)
    young, banner = await RawSMTP.connect(port)  # every holder is under evict_after
    assert banner.startswith("421 4.7.0 Too many connections")
    await asyncio.sleep(0.6)
    for client in holders[1:]:
        assert await client.cmd("NOOP") == "250 OK"  # talk, but no mail
    for _ in range(3):  # three messages, one connection each, all while the slots are held
        sender, banner = await RawSMTP.connect(port)
        assert banner.startswith("220"), banner
        await sender.cmd("EHLO mail.test")
        assert code(await send_message(sender)) == 250
        await sender.cmd("QUIT")
    assert len(recorder.messages) == 3
    room = b"421 4.7.0 Idle session closed to make room; closing the connection\r\n"
    assert await asyncio.wait_for(holders[0].reader.read(), 5) == room  # the stalest
    for client in holders[1:]:
        await client.close()


async def test_a_session_in_data_is_never_evicted(start: Start) -> None:
    recorder = Recorder()
    port = await start(recorder, max_connections=1, evict_after=0.1, timeout=30)
    busy, _ = await RawSMTP.connect(port)
    await busy.cmd("EHLO busy.test")
    assert code(await busy.cmd("MAIL FROM:<a@b.test>")) == 250
    assert code(await busy.cmd("RCPT TO:<c@d.test>")) == 250
    assert code(await busy.cmd("DATA")) == 354
    busy.writer.write(b"Subject: slow\r\n\r\nstill coming\r\n")
    await asyncio.sleep(0.3)
    _, banner = await RawSMTP.connect(port)
    assert banner.startswith("421 4.7.0 Too many connections")
    assert code(await busy.cmd(b".\r\n")) == 250
    assert len(recorder.messages) == 1
