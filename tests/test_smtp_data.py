"""The chunked DATA reader accepts, refuses and stores exactly what aiosmtpd's line reader does.

The oracle is aiosmtpd itself: a stock ``SMTP`` server on loopback (its own
``smtp_DATA``, one line at a time) receives the same bytes, and its handler
records what it stored. The chunked reader gets them in generated pieces, so
the end-of-data marker and long lines also fall across chunk boundaries.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onionmail.smtp.data import DataBlock, DataOutcome, DataReader
from tests.box_process import free_port

LINE_LIMIT = 24  # small, so generated data hits it often
SIZE_LIMIT = 160

PIECES = [b"a", b"bc", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b".\r\n", b"x" * 30]
PIECES += [b"\r\n" + b"y" * n for n in range(LINE_LIMIT - 4, LINE_LIMIT)]  # lines at the limit
data_strategy = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)


class Recorder:
    def __init__(self) -> None:
        self.stored: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.stored.append(envelope.original_content)
        return "250 OK"


class StockController(Controller):
    def __init__(self, handler: Recorder, size_limit: int | None) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=free_port())
        self.size_limit = size_limit

    def factory(self) -> SMTP:
        smtp = SMTP(
            self.handler,
            hostname="oracle",
            data_size_limit=self.size_limit,
            decode_data=False,
            enable_SMTPUTF8=True,
        )
        smtp.line_length_limit = LINE_LIMIT
        return smtp


@pytest.fixture(scope="module", params=[None, SIZE_LIMIT], ids=["no-size-limit", "size-limit"])
def oracle(request: pytest.FixtureRequest) -> Iterator[tuple[StockController, Recorder]]:
    recorder = Recorder()
    controller = StockController(recorder, request.param)
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()


def aiosmtpd_verdict(controller: StockController, recorder: Recorder, data: bytes) -> str:
    """Send ``data`` + the terminator through aiosmtpd; its reply code and what it stored."""
    port = controller.port
    recorder.stored.clear()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()
        for command in (b"HELO x", b"MAIL FROM:<a@b.test>", b"RCPT TO:<c@d.test>", b"DATA"):
            sock.sendall(command + b"\r\n")
            stream.readline()
        sock.sendall(data + b"\r\n.\r\n")
        reply = stream.readline().decode()
        sock.sendall(b"QUIT\r\n")
        stream.readline()
    if reply.startswith("250"):
        return "250 " + recorder.stored[0].hex()
    return reply[:3]


def chunked_verdict(data: bytes, cuts: list[int], size_limit: int | None) -> tuple[str, bytes]:
    stream = data + b"\r\n.\r\nNOOP\r\n"
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    pieces = [stream[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]

    # The parser gets the pieces one by one, as the server feeds it each segment.
    parser = DataReader(line_limit=LINE_LIMIT, size_limit=size_limit)
    block: DataBlock | None = None
    for number, piece in enumerate(pieces):
        block = parser.feed(piece)
        if block is not None:
            block.rest += b"".join(pieces[number + 1 :])  # what the server reads next
            break
    assert block is not None
    if block.outcome is DataOutcome.OK:
        return "250 " + block.content.hex(), block.rest
    return block.outcome.value[:3], block.rest


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=data_strategy, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_chunked_reader_agrees_with_aiosmtpd(
    oracle: tuple[StockController, Recorder], data: bytes, cuts: list[int]
) -> None:
    controller, recorder = oracle
    expected = aiosmtpd_verdict(controller, recorder, data)
    got, rest = chunked_verdict(data, cuts, controller.size_limit)
    if {expected[:3], got[:3]} == {"500", "552"}:
        return  # both too large and a too-long line: either reply (smtp_data docstring)
    assert got == expected
    # What followed the first terminator is handed back as the next commands.
    stream = data + b"\r\n.\r\nNOOP\r\n"
    first = (b"\r\n" + stream).find(b"\r\n.\r\n")
    assert rest == stream[first + 3 :]


def test_a_line_without_end_is_refused_without_holding_it_in_memory() -> None:
    parser = DataReader(line_limit=1001, size_limit=None)
    for _ in range(200):  # 12.8 MB without a CRLF, then the terminator
        assert parser.feed(b"x" * 64_000) is None
    block = parser.feed(b"\r\n.\r\n")
    assert block is not None and block.outcome is DataOutcome.TOO_LONG


def test_dot_stuffing_undone_and_what_follows_handed_back() -> None:
    parser = DataReader(line_limit=1001, size_limit=None)
    assert parser.feed(b"Subject: s\r\n\r\n") is None
    block = parser.feed(b"..leading\r\n.\r\nQUIT\r\n")
    assert block is not None
    assert block.content == b"Subject: s\r\n\r\n.leading\r\n"
    assert block.rest == b"QUIT\r\n"


@pytest.mark.parametrize("piece", [1, 3, 4096])
def test_stuffed_lines_and_lines_at_the_limit_in_a_large_message(piece: int) -> None:
    """Every line dot-stuffed, lines exactly at the limit, fed in pieces of every size.

    Past the first stuffed line the reader only looks for the terminator; the
    stuffing is still undone on every line, and a line one byte longer fails.
    """
    at_limit = b"." + b"y" * (LINE_LIMIT - 3) + b"\r\n"  # LINE_LIMIT bytes with its CRLF
    lines = [b"..a\r\n", at_limit, b"x\r\n", b"..\r\n"] * 300
    wire = b"".join(lines) + b".\r\nNOOP\r\n"
    parser = DataReader(line_limit=LINE_LIMIT, size_limit=None)
    block, start = None, 0
    while block is None:
        block = parser.feed(wire[start : start + piece])
        start += piece
    assert block.outcome is DataOutcome.OK
    assert block.content == b"".join(line[1:] if line[:1] == b"." else line for line in lines)
    assert block.rest + wire[start:] == b"NOOP\r\n"
    too_long = DataReader(line_limit=LINE_LIMIT, size_limit=None)
    result = too_long.feed(b"x\r\n" * 500 + b"y" * (LINE_LIMIT - 1) + b"\r\n.\r\n")
    assert result is not None and result.outcome is DataOutcome.TOO_LONG
