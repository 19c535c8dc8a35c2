"""Fuzzing the command, DATA and BDAT parsers of the SMTP core through a real socket.

Hypothesis writes a whole session in one go: commands, message data and
BDAT chunks drawn from the known smuggling vectors (bare CR or LF, fake ends
of DATA, BDAT sizes that lie), the RFC 3030 edge cases (BDAT before RCPT,
``BDAT 0 LAST``, DATA after BDAT, a refused chunk followed by commands) and
random bytes, pipelined, split into random segments. Whatever it sends:

* every message the handler stored was acknowledged with its ``250``, and
  every such ``250`` stands for a stored message (nothing smuggled past a
  reply, nothing acknowledged and lost);
* a message is stored only from bytes the client sent as message content;
* nothing reaches the generic ``451`` error boundary;
* the session either still answers ``NOOP`` or ended with a ``421``/``221``
  reply: never a silent drop.

Short in CI; ``ONIONMAIL_FUZZ_EXAMPLES=<n>`` for a long session (README).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.test_smtp_protocol import Recorder, Start
from tests.test_smtp_protocol import start_fixture as start_fixture

FUZZ_EXAMPLES = int(os.environ.get("ONIONMAIL_FUZZ_EXAMPLES", "0"))
QUIET = 0.3
"""Seconds of silence after which a session still open is taken as waiting for more."""
MARK = b"FUZZ-MESSAGE"
"""Every message body the fuzzer means as content carries it."""

COMMANDS = [
    b"EHLO fuzz.test\r\n",
    b"HELO fuzz.test\r\n",
    b"MAIL FROM:<a@b.test>\r\n",
    b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\n",
    b"RCPT TO:<c@d.test>\r\n",
    b"RCPT TO:<c@d.test>\nRCPT TO:<e@f.test>\r\n",  # a bare LF inside one line
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY <a@b.test>\r\n",
    b"HELP\r\n",
    b"DATA\r\n",
    b"XJUNK\r\n",
    b"\r\n",
    b"MAIL FROM:<a@b.test>\rRCPT TO:<c@d.test>\r\n",
]
content = st.binary(max_size=40).map(lambda junk: b"Subject: f\r\n\r\n" + MARK + junk)
fake_ends = st.sampled_from(
    [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r\n.\r\r\n", b"\r\n\x00.\r\n", b"\r\n .\r\n"]
)
data_blocks = st.builds(
    lambda body, fake, tail: body + fake + tail + b"\r\n.\r\n",
    content,
    fake_ends,
    st.sampled_from([b"", b"MAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n"]),
)


def bdat(payload: bytes, declared: int, last: bool) -> bytes:
    return f"BDAT {declared}{' LAST' if last else ''}\r\n".encode() + payload


chunks = st.builds(
    lambda payload, lie, last: bdat(payload, max(0, len(payload) + lie), last),
    st.one_of(content, st.binary(max_size=30)),
    st.sampled_from([0, 0, 0, -3, 5]),
    st.booleans(),
)
pieces = st.one_of(
    st.sampled_from(COMMANDS),
    data_blocks,
    chunks,
    st.just(b"BDAT 0 LAST\r\n"),
    st.just(b"BDAT 99999999 LAST\r\n"),
    st.binary(max_size=20),
)
sessions = st.lists(pieces, min_size=1, max_size=14).map(b"".join)
splits = st.lists(st.integers(min_value=1, max_value=64), max_size=6)


class Watching(Recorder):
    """The recorder; remembers whatever reached the generic error boundary."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[Exception] = []

    async def handle_exception(self, error: Exception) -> str:
        self.errors.append(error)
        return "451 4.3.0 recorded"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def run_session(port: int, stream: bytes, cuts: list[int]) -> tuple[bytes, bool]:
    """What the server answered to ``stream`` sent in pieces, and whether it closed.

    Replies are read while the pieces go out (a server that closes on a limit
    resets a connection still written to, and a reset drops unread replies).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    closed = asyncio.Event()

    async def read() -> None:
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
        except ConnectionError:
            pass  # reset after the server closed: what it said before is in received
        closed.set()

    reading = asyncio.create_task(read())
    try:
        at = 0
        for size in [*cuts, len(stream), 64]:
            piece = stream[at : at + size] if at < len(stream) else b"\r\nNOOP\r\nQUIT\r\n"
            at += size
            if closed.is_set():
                break
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
    except ConnectionError:
        pass  # the server closed on us; it said why (checked by the caller)
    seen = -1
    while not closed.is_set() and seen != len(received):  # until closed, or QUIET of silence
        seen = len(received)
        try:
            await asyncio.wait_for(closed.wait(), QUIET)
        except TimeoutError:
            pass
    reading.cancel()
    writer.close()
    return bytes(received), closed.is_set()


@settings(
    max_examples=FUZZ_EXAMPLES or 100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=sessions, cuts=splits)
@example(
    stream=b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nBDAT 60 LAST\r\n" + b"MAIL FROM:<s@e.test>\r\n" * 3,
    cuts=[],
)
@example(stream=b"EHLO x\r\nBDAT 0 LAST\r\nNOOP\r\n", cuts=[1, 1])
async def test_a_fuzzed_session_stores_exactly_what_it_acknowledged(
    start: Start, stream: bytes, cuts: list[int]
) -> None:
    handler = Watching()
    port = await start(handler, chunking=True, data_size_limit=4096, timeout=5)
    received, closed = await run_session(port, stream, cuts)
    replies = received.split(b"\r\n")
    stored_replies = sum(1 for line in replies if line.startswith(b"250 2.0.0 Stored"))
    assert len(handler.messages) == stored_replies, (received, handler.messages)
    for message in handler.messages:
        assert message and message in stream.replace(b"\r\n..", b"\r\n."), message
    assert handler.errors == []
    if closed:  # it said why: QUIT's 221, a limit's 421, or too many unknown verbs
        last = [line for line in replies if line][-1]
        assert last.startswith((b"221", b"421", b"502 5.5.1")), received
