"""Submission scrubbing: what clients leak does not leave the box."""

from __future__ import annotations

import email.utils
import os
import re
import socket
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from onionmail.config.box import ScrubSection
from onionmail.core.errors import AddressError
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.message.rfc5322 import MessageFormatError, parse_message
from onionmail.message.scrub import SenderMismatchError, scrub_submission
from tests.leaks import host_identity_in

FUZZ_EXAMPLES = int(os.environ.get("ONIONMAIL_FUZZ_EXAMPLES", "0"))
"""Examples per property test in a long fuzz session (0: each test's short default)."""

ONION = "a" * 56 + ".onion"
SENDER = MailAddress("alice", ONION)

CLIENT_MESSAGE = (
    "Received: from [192.168.1.20] (laptop.home.lan [192.168.1.20])\r\n"
    f"From: Alice <alice@{ONION}>\r\n"
    "To: bob@example.onion\r\n"
    "Subject: plans\r\n"
    "Date: Sat, 28 Nov 2026 15:42:17 +0100\r\n"
    f"Message-ID: <1234.5678@{socket.gethostname()}.home.lan>\r\n"
    "User-Agent: NeoMutt/20220429\r\n"
    "X-Mailer: swaks v20240103.0 jetmore.org/john/code/swaks/\r\n"
    "X-Originating-IP: [192.168.1.20]\r\n"
    "X-MS-Exchange-Organization-SCL: 1\r\n"
    "\r\n"
    "See you at 8.\r\n"
).encode()


def test_client_fields_removed_and_ids_normalized() -> None:
    scrubbed, message_id = scrub_submission(CLIENT_MESSAGE, sender=SENDER)
    message = parse_message(scrubbed)
    names = {k.lower() for k, _ in message.fields}
    assert names == {"from", "to", "subject", "date", "message-id"}
    assert message.get("Message-ID") == f"<{message_id}>".encode()
    assert message_id.endswith("@" + ONION)
    assert host_identity_in(scrubbed) == []
    assert b"192.168" not in scrubbed and b"laptop" not in scrubbed
    assert message.get("Date") == b"Sat, 28 Nov 2026 14:42:00 GMT"
    assert message.body == b"See you at 8.\r\n"


def test_missing_from_and_date_are_added() -> None:
    now = datetime(2026, 11, 28, 10, 11, 12, tzinfo=UTC)
    scrubbed, _ = scrub_submission(b"Subject: x\r\n\r\nbody\r\n", sender=SENDER, now=now)
    message = parse_message(scrubbed)
    assert message.get("From") == str(SENDER).encode()
    assert message.get("Date") == b"Sat, 28 Nov 2026 10:11:00 GMT"


@pytest.mark.parametrize(
    "from_field",
    [
        b"From: mallory@" + ONION.encode(),
        b"From: a@b.example, alice@" + ONION.encode(),
        b"From: <alice@" + ONION.encode() + b">, <mallory@x.example>",
        b"From: <alice@" + ONION.encode() + b".example>",
        b"From: alice <mallory@x.example>",
        b"From: mallory@x.example <alice@" + ONION.encode() + b">",
        b"From: a <mallory@x.example>, b <alice@" + ONION.encode() + b">",
        b"From: list: mallory@x.example; <alice@" + ONION.encode() + b">",
        b"From: alice@" + ONION.encode() + b"\r\nFrom: alice@" + ONION.encode(),
    ],
)
def test_from_must_be_the_authenticated_sender(from_field: bytes) -> None:
    with pytest.raises(SenderMismatchError):
        scrub_submission(from_field + b"\r\n\r\nbody\r\n", sender=SENDER)


@pytest.mark.parametrize(
    "from_value",
    [
        f"alice@{ONION}",
        f" <ALICE@{ONION.upper()}>",
        f"<alice@{ONION}>\t",
        f"Alice Liddell <alice@{ONION}>",
        f'"Liddell, Alice" <alice@{ONION}>',
        f"=?utf-8?q?Al=C3=AFce?= <alice@{ONION}>",
    ],
)
def test_the_sender_in_every_common_form_is_accepted_and_kept(from_value: str) -> None:
    scrubbed, _ = scrub_submission(f"From:{from_value}\r\n\r\nbody\r\n".encode(), sender=SENDER)
    assert parse_message(scrubbed).get("From") == from_value.strip().encode()


# --- property tests ----------------------------------------------------------------------

CLIENT_FIELDS = ["Received", "User-Agent", "X-Mailer", "X-MS-Has-Attach", "Return-Path"]
KEPT_FIELDS = ["To", "Cc", "Subject", "In-Reply-To", "X-Custom", "Content-Type"]
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
field_values = st.one_of(printable.map(str.encode), st.binary(max_size=40)).filter(
    lambda v: not any(c in v for c in b"\r\n\0")
)
fields = st.lists(
    st.tuples(st.sampled_from(CLIENT_FIELDS + KEPT_FIELDS + ["Date", "Message-ID"]), field_values),
    max_size=10,
)
from_fields = st.sampled_from(
    [None, f"alice@{ONION}", f"Alice <ALICE@{ONION.upper()}>", f'"A, B" <alice@{ONION}>']
)


def assemble(fields: list[tuple[str, bytes]], from_field: str | None, body: bytes) -> bytes:
    lines = [b"X-Fixed: 1"] + [name.encode() + b": " + value for name, value in fields]
    if from_field is not None:
        lines.insert(len(lines) // 2, b"From: " + from_field.encode())
    return b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


@given(st.binary(max_size=2000))
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_scrub_arbitrary_bytes_raises_only_onionmail_errors(data: bytes) -> None:
    try:
        scrub_submission(data, sender=SENDER)
    except (MessageFormatError, SenderMismatchError):
        pass


@given(fields, from_fields, st.binary(max_size=500))
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_scrubbed_message_keeps_body_and_user_fields_and_drops_client_ones(
    fields: list[tuple[str, bytes]], from_field: str | None, body: bytes
) -> None:
    scrubbed, message_id = scrub_submission(assemble(fields, from_field, body), sender=SENDER)
    message = parse_message(scrubbed)
    assert message.body == body
    names = [k.lower() for k, _ in message.fields]
    assert not {n.lower() for n in CLIENT_FIELDS} & set(names)
    assert names.count("from") == names.count("date") == names.count("message-id") == 1
    assert message.get("Message-ID") == f"<{message_id}>".encode()
    assert re.fullmatch(rb"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:00 GMT", message.get("Date") or b"")
    kept = [(k, v) for k, v in fields if k in KEPT_FIELDS]
    assert [(k, v) for k, v in message.fields if k in KEPT_FIELDS] == [
        (k, b" " + v) for k, v in kept
    ]
    assert host_identity_in(message.get("Message-ID") or b"") == []


@given(fields, st.binary(max_size=200))
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_scrubbing_twice_changes_only_the_message_id(
    fields: list[tuple[str, bytes]], body: bytes
) -> None:
    once, _ = scrub_submission(assemble(fields, None, body), sender=SENDER)
    twice, _ = scrub_submission(once, sender=SENDER)
    first, second = parse_message(once), parse_message(twice)
    first.remove("Message-ID")
    second.remove("Message-ID")
    assert first == second


rfc5322_zones = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)  # +-hhmm: whole minutes, as a Date field can say


@given(st.datetimes(timezones=rfc5322_zones))
@example(datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-1))))
@example(datetime(100, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=23, minutes=59))))
@example(datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))))
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_any_date_becomes_its_utc_minute_or_the_submission_time(moment: datetime) -> None:
    now = datetime(2026, 11, 28, 10, 11, 12, tzinfo=UTC)
    data = b"Date: " + email.utils.format_datetime(moment).encode() + b"\r\n\r\nx\r\n"
    scrubbed, _ = scrub_submission(data, sender=SENDER, now=now)
    date = parse_message(scrubbed).get("Date")
    assert date is not None
    stamped = email.utils.parsedate_to_datetime(date.decode())
    assert stamped.second == 0 and stamped.utcoffset() == timedelta(0)
    try:
        expected = moment.astimezone(UTC).replace(second=0, microsecond=0)
    except (OverflowError, ValueError):  # outside datetime's range once in UTC
        expected = now.replace(second=0)
    if 100 <= moment.year and 100 <= expected.year:
        assert stamped == expected


DAY_DIVISORS = [d for d in range(1, 86401) if 86400 % d == 0]


@given(st.datetimes(timezones=rfc5322_zones), st.sampled_from(DAY_DIVISORS))
@settings(max_examples=FUZZ_EXAMPLES or 200)
def test_date_rounds_down_to_any_divisor_of_a_day(moment: datetime, rounding: int) -> None:
    try:
        utc = moment.astimezone(UTC).replace(microsecond=0)
    except (OverflowError, ValueError):
        return  # outside datetime's range in UTC: the submission time is used instead
    if min(utc.year, moment.year) < 100:
        return  # a year below 100 is read as 19xx/20xx
    data = b"Date: " + email.utils.format_datetime(moment).encode() + b"\r\n\r\nx\r\n"
    scrubbed, _ = scrub_submission(data, sender=SENDER, settings=ScrubSection(rounding))
    stamped = email.utils.parsedate_to_datetime(parse_message(scrubbed).get("Date").decode())  # type: ignore[union-attr]
    assert stamped.utcoffset() == timedelta(0)
    assert timedelta(0) <= utc - stamped < timedelta(seconds=rounding)
    assert (stamped.hour * 3600 + stamped.minute * 60 + stamped.second) % rounding == 0


def test_keyed_message_ids_keep_the_users_own_threads_and_drop_the_host() -> None:
    """A follow-up to one's own message: References names the client's old ID; both map alike."""
    key = b"\x05" * 32
    first = (
        f"From: alice@{ONION}\r\nSubject: plans\r\n"
        "Message-ID: <20261129062005.c2gdx36lnoxabc47@laptop.home.lan>\r\n\r\nhi\r\n"
    ).encode()
    follow_up = (
        f"From: alice@{ONION}\r\nSubject: Re: plans\r\n"
        "Message-ID: <20261129070000.zz@laptop.home.lan>\r\n"
        "In-Reply-To: <20261129062005.c2gdx36lnoxabc47@laptop.home.lan>\r\n"
        "References: <bob-1@other.example>\r\n"
        " <20261129062005.c2gdx36lnoxabc47@laptop.home.lan>\r\n\r\nand more\r\n"
    ).encode()
    _, first_id = scrub_submission(first, sender=SENDER, message_id_key=key)
    scrubbed, second_id = scrub_submission(follow_up, sender=SENDER, message_id_key=key)
    assert re.fullmatch(rf"[0-9a-f]{{32}}@{ONION}", first_id)
    assert second_id != first_id and second_id.endswith("@" + ONION)
    message = parse_message(scrubbed)
    assert message.get("In-Reply-To") == f"<{first_id}>".encode()
    assert message.get("References") == f"<bob-1@other.example> <{first_id}>".encode()
    assert b"laptop" not in scrubbed
    # the same client message submitted again gets the same box ID; another key another one
    assert scrub_submission(first, sender=SENDER, message_id_key=key)[1] == first_id
    assert scrub_submission(first, sender=SENDER, message_id_key=b"\x06" * 32)[1] != first_id
    # without a key the ID is random
    assert scrub_submission(first, sender=SENDER)[1] != scrub_submission(first, sender=SENDER)[1]


@given(st.text(alphabet="Ab9!#$%&'*+-/=?^_`{|}~ \t<>@,;:\".()", max_size=30))
@settings(max_examples=FUZZ_EXAMPLES or 300)
def test_from_is_judged_as_the_full_address_parser_judges_it(name: str) -> None:
    """The shortcut for common From forms never accepts what email.utils would not."""
    value = f"{name} <alice@{ONION}>"
    found = email.utils.getaddresses([value])
    try:
        expected = len(found) == 1 and parse_mail_address(found[0][1]) == SENDER
    except AddressError:
        expected = False
    try:
        scrub_submission(f"From: {value}\r\n\r\nbody\r\n".encode(), sender=SENDER)
    except (SenderMismatchError, MessageFormatError):
        assert not expected
    else:
        assert expected
