"""The strict header splitter: what it accepts is exactly what a reader will see."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmail.rfc5322 import MessageFormatError, parse_message


def test_fields_body_and_folding_roundtrip() -> None:
    data = b"From: a@b.example\r\nSubject: one\r\n two\r\n\r\nbody\r\n.dot\r\n"
    message = parse_message(data)
    assert [k for k, _ in message.fields] == ["From", "Subject"]
    assert message.get("subject") == b"one two"
    assert message.body == b"body\r\n.dot\r\n"
    assert message.to_bytes() == data
    assert message.to_bytes(b"\n") == data.replace(b"\r\n", b"\n")


def test_set_replaces_all_and_remove_counts() -> None:
    message = parse_message(b"A: 1\r\nB: 2\r\nA: 3\r\n\r\n")
    message.set("A", b"x")
    assert message.fields == [("A", b" x"), ("B", b" 2")]
    assert message.remove("b") == 1


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: a\nX-Evil: b\r\n\r\nbody\r\n",  # bare LF would split into two fields later
        b"Subject: a\rX-Evil: b\r\n\r\n",  # bare CR
        b"Subject: a\0b\r\n\r\n",  # NUL
        b" folded first\r\n\r\n",  # continuation before any field
        b"No colon here\r\n\r\n",
        b"Bad Name: x\r\n\r\n",
        b"Subject: x",  # no CRLF at all
    ],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(MessageFormatError):
        parse_message(data)


def test_absurd_header_count_is_refused() -> None:
    data = b"".join(b"X-A: b\r\n" for _ in range(1001)) + b"\r\n"
    with pytest.raises(MessageFormatError, match="more than"):
        parse_message(data)


def test_absurd_header_size_is_refused() -> None:
    data = b"X-A: " + b"a" * (300 * 1024) + b"\r\n\r\n"
    with pytest.raises(MessageFormatError, match="header block over"):
        parse_message(data)


@given(st.binary(max_size=2000))
def test_parse_raises_only_message_format_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except MessageFormatError:
        return
    assert parse_message(message.to_bytes()).fields == message.fields
