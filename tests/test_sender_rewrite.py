"""The box's message rewritten to leave the gateway as its alias (outbound/sender_rewrite)."""

from __future__ import annotations

import pytest

from gateway.errors import SenderRewriteError
from gateway.outbound.sender_rewrite import display_name, rewrite_sender
from onionmail.message.rfc5322 import parse_message

ONION = "b" * 56 + ".onion"
BOX = f"alice@{ONION}"
ALIAS = "k3x9@gw.test"


def message(from_value: str = f"Alice Example <{BOX}>", extra: str = "") -> bytes:
    return (
        f"From: {from_value}\r\n"
        "To: bob@clear.test\r\n"
        "Subject: hi\r\n"
        f"Message-ID: <0123abcd@{ONION}>\r\n"
        f"{extra}"
        "\r\n"
        "body\r\n"
    ).encode()


def test_envelope_and_from_become_the_alias_keeping_the_display_name() -> None:
    out = rewrite_sender(message(), box_address=BOX, alias=ALIAS)
    assert out.envelope_sender == ALIAS
    parsed = parse_message(out.message)
    assert parsed.get_all("From") == [f"Alice Example <{ALIAS}>".encode()]
    assert ONION.encode() not in out.message
    assert parsed.get("Message-ID") == b"<0123abcd@gw.test>"  # same unique part, our domain
    assert parsed.get("Subject") == b"hi" and parsed.body == b"body\r\n"
    assert parsed.get("To") == b"bob@clear.test"


def test_non_ascii_display_name_round_trips_as_encoded_words() -> None:
    out = rewrite_sender(message(f"=?utf-8?q?J=C3=BCrgen?= <{BOX}>"), box_address=BOX, alias=ALIAS)
    new_from = parse_message(out.message).get("From")
    assert new_from is not None and new_from.isascii()
    assert display_name(new_from) == "Jürgen"


@pytest.mark.parametrize(
    ("from_value", "expected"),
    [
        (f'"ceo@bank.test" <{BOX}>', ""),  # an address as a name: display-name spoofing
        (BOX, ""),
        (f"<{BOX}>", ""),
        (f"=?bogus-charset?q?x?= <{BOX}>", ""),
        (f'"Alice\tExample" <{BOX}>', "Alice Example"),  # a real TAB
        (f'"{"x" * 200}" <{BOX}>', "x" * 64),
    ],
)
def test_display_names_that_are_dropped_or_cleaned(from_value: str, expected: str) -> None:
    out = rewrite_sender(message(from_value), box_address=BOX, alias=ALIAS)
    new_from = parse_message(out.message).get("From")
    assert new_from is not None and display_name(new_from) == expected
    assert new_from.endswith(f"<{ALIAS}>".encode()) or new_from == ALIAS.encode()


def test_display_name_can_be_dropped_always() -> None:
    out = rewrite_sender(message(), box_address=BOX, alias=ALIAS, keep_display_name=False)
    assert parse_message(out.message).get_all("From") == [ALIAS.encode()]


def test_headers_naming_the_box_are_removed_or_pointed_at_the_alias() -> None:
    extra = f"Sender: {BOX}\r\nReturn-Path: <{BOX}>\r\nReply-To: Alice <{BOX}>\r\n"
    out = rewrite_sender(message(extra=extra), box_address=BOX, alias=ALIAS)
    parsed = parse_message(out.message)
    assert parsed.get("Sender") is None and parsed.get("Return-Path") is None
    assert parsed.get("Reply-To") == f"<{ALIAS}>".encode()
    assert ONION.encode() not in out.message


def test_a_reply_to_elsewhere_is_kept() -> None:
    out = rewrite_sender(
        message(extra="Reply-To: list@lists.test\r\n"), box_address=BOX, alias=ALIAS
    )
    assert parse_message(out.message).get("Reply-To") == b"list@lists.test"


@pytest.mark.parametrize(
    "data",
    [
        message().replace(b"To:", b"From: other@x.test\r\nTo:"),  # two From fields
        message().replace(f"From: Alice Example <{BOX}>\r\n".encode(), b""),
        message().replace(b"Subject: hi\r\n", b"Subject: hi\nX-Evil: 1\r\n"),  # bare LF
    ],
    ids=["two From", "no From", "bare LF"],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(SenderRewriteError):
        rewrite_sender(data, box_address=BOX, alias=ALIAS)


def test_a_bad_alias_is_refused() -> None:
    with pytest.raises(SenderRewriteError):
        rewrite_sender(message(), box_address=BOX, alias="Name <x@gw.test>")
