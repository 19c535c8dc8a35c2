"""The strict header splitter: what it accepts is exactly what a reader will see."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onionmail.message.rfc5322 import MessageFormatError, parse_message

FUZZ_EXAMPLES = int(os.environ.get("ONIONMAIL_FUZZ_EXAMPLES", "0"))
"""Examples per property test in a long fuzz session (0: each test's short default)."""


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
@settings(max_examples=FUZZ_EXAMPLES or 100)
def test_parse_raises_only_message_format_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except MessageFormatError:
        return
    assert parse_message(message.to_bytes()).fields == message.fields


# --- property tests on well-formed messages ------------------------------------------------

names = st.from_regex(rb"\A[\x21-\x39\x3b-\x7e]{1,24}\Z", fullmatch=True)
text_bytes = st.binary(max_size=60).filter(lambda v: not any(c in v for c in b"\r\n\0"))
continuations = st.builds(
    lambda blank, rest: blank + rest, st.sampled_from([b" ", b"\t"]), text_bytes
)
fields = st.lists(
    st.builds(
        lambda name, value, folds: (name.decode(), value + b"".join(b"\r\n" + c for c in folds)),
        names,
        text_bytes,
        st.lists(continuations, max_size=3),
    ),
    min_size=1,
    max_size=12,
)


def assemble(fields: list[tuple[str, bytes]], body: bytes) -> bytes:
    return b"".join(n.encode() + b":" + v + b"\r\n" for n, v in fields) + b"\r\n" + body


@given(fields, st.binary(max_size=500))
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_well_formed_messages_parse_to_their_fields_and_serialize_byte_exact(
    fields: list[tuple[str, bytes]], body: bytes
) -> None:
    data = assemble(fields, body)
    message = parse_message(data)
    assert message.fields == fields and message.body == body
    assert message.to_bytes() == data
    assert message.to_bytes(b"\n") == data.replace(b"\r\n", b"\n")
    for name, _ in fields:
        assert b"\r\n" not in (message.get(name) or b"")


@given(fields, st.binary(max_size=100), st.sampled_from([b"\r", b"\n", b"\0"]), st.data())
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_a_bare_cr_lf_or_nul_anywhere_in_the_header_block_is_refused(
    fields: list[tuple[str, bytes]], body: bytes, bad: bytes, data: st.DataObject
) -> None:
    head = assemble(fields, b"").removesuffix(b"\r\n\r\n")
    at = data.draw(st.integers(0, len(head)), label="insert at")
    with pytest.raises(MessageFormatError):
        parse_message(head[:at] + bad + head[at:] + b"\r\n\r\n" + body)


@given(fields, names, text_bytes)
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_set_leaves_exactly_one_field_and_remove_none(
    fields: list[tuple[str, bytes]], name: bytes, value: bytes
) -> None:
    message = parse_message(assemble(fields, b"body\r\n"))
    key = name.decode()
    message.set(key, value)
    assert message.get_all(key.upper()) == [value.strip(b" \t")]
    assert parse_message(message.to_bytes()).fields == message.fields
    assert message.remove(key.lower()) == 1
    assert message.get(key) is None
