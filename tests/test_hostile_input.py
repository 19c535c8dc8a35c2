"""Hostile input to both SMTP servers on loopback, one named regression test per attack.

Every refusal is a precise 5xx: the generic ``451`` of
:meth:`SafeHandler.handle_exception` is never the answer (the servers here
record whatever reaches it, and the test fails if anything did), no Python
detail reaches the peer, and the server keeps serving afterwards (``NOOP``
on the same connection, ``220`` on a fresh one).

Decisions these tests pin down:

* **EHLO/HELO names are accepted whatever bytes they hold.** The box never
  uses the name: it writes no ``Received`` field and does not log it
  (aiosmtpd's own command log is silenced unless ``--verbose``), so a NUL,
  CR or invalid UTF-8 in it has nowhere to go. The tests check it is not in
  the stored or queued message.
* **A bare CR or LF in a command line refuses the whole line** (``500
  5.5.2``, as Postfix's ``smtpd_forbid_bare_newline``): a command line ends
  at CRLF only, so a bare LF never splits one line into two commands.
* **8-bit data without ``BODY=8BITMIME`` is accepted and stored byte-exact.**
  Both servers announce 8BITMIME and neither converts anything: mail leaves
  a box sealed (base64), so no 7-bit hop ever sees the raw bytes.
* **Invalid UTF-8 in a header value is stored byte-exact**; only a field the
  box must read (submission's ``From``) is refused when it does not parse.
* **MIME is not parsed**: the box reads the header block only, so a broken
  multipart body is stored exactly as received.
"""

from __future__ import annotations

import base64
import email.utils
import secrets
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import nacl.public
import pytest

from onionmail.message.rfc5322 import MAX_HEADER_BYTES, MAX_HEADER_FIELDS, parse_message
from onionmail.seal.envelope import (
    HEADER,
    SealedContent,
    encode_for_smtp,
    seal,
)
from onionmail.seal.identity import Identity
from onionmail.seal.padding import pad
from tests.loopback_servers import (
    PASSWORD,
    PEER,
    InboundBox,
    SubmissionBox,
    assert_still_serving,
    inbound_fixture,  # noqa: F401 (the fixture ``inbound``)
    open_data,
    other_onion_rcpt,
    peer_session,
    sealing_session,
    submission_fixture,  # noqa: F401 (the fixture ``submission``)
    user_session,
)
from tests.smtp_client import RawSMTP, code

TEN_MB = 10 * 1024 * 1024
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


def lf(data: bytes) -> bytes:
    """``data`` with the line ends the inbound server stores (LF, as in any Maildir)."""
    return data.replace(b"\r\n", b"\n")


# --- the null sender (found by the DATA fuzz target) ------------------------------------


async def test_inbound_null_sender_is_accepted_once_and_delivered(inbound: InboundBox) -> None:
    # MAIL FROM:<> was answered 250, then every RCPT 503 "need MAIL": bounces never arrived.
    client = await peer_session(inbound)
    assert await client.cmd("MAIL FROM:<>") == "250 2.1.0 OK"
    assert (await client.cmd(f"MAIL FROM:<{PEER}>")).startswith("503 Error: nested MAIL")
    assert await client.cmd(f"RCPT TO:<{inbound.rcpt()}>") == "250 2.1.5 OK"
    assert code(await client.cmd("DATA")) == 354
    assert await client.cmd(b"Subject: bounce\r\n\r\nundeliverable\r\n.\r\n") == (
        "250 2.0.0 Delivered"
    )
    (stored,) = inbound.stored()
    assert stored.startswith(b"Return-Path: <>\n")
    assert b"smtp.mailfrom" not in stored


# --- control characters in command arguments ----------------------------------------

CONTROL_IN_MAIL = [
    pytest.param(b"MAIL FROM:<carol@example.org>\x00", "501 Syntax: MAIL", id="NUL-after"),
    pytest.param(b"MAIL FROM:<ca\x00rol@example.org>", "553 5.1.7", id="NUL-inside"),
    pytest.param(b"MAIL FROM:<carol@exa\x1bmple.org>", "553 5.1.7", id="ESC-inside"),
    pytest.param(b"MAIL FROM:<carol\x7f@example.org>", "553 5.1.7", id="DEL-inside"),
    pytest.param(b"MAIL FROM:<\x0bcarol@example.org>", "553 5.1.7", id="VT-leading"),
    pytest.param(b"MAIL FROM:<carol@example.org> \x01", "501 Syntax: MAIL", id="SOH-param"),
    pytest.param(b"MAIL FROM:<carol@example.org> X=\x01", "555 MAIL FROM parameters", id="param"),
    pytest.param(b"MAIL FROM:<carol@example.org>\rRCPT TO:<{rcpt}>", "500 5.5.2 Bare CR", id="CR"),
]

CONTROL_IN_RCPT = [
    pytest.param(b"RCPT TO:<{rcpt}>\x00", "501 Syntax: RCPT", id="NUL-after"),
    pytest.param(b"RCPT TO:<b\x00ob@{onion}>", "553 5.1.3", id="NUL-inside"),
    pytest.param(b"RCPT TO:<bob\x0b@{onion}>", "553 5.1.3", id="VT-inside"),
    pytest.param(b"RCPT TO:<bob\x1f@{onion}>", "553 5.1.3", id="US-inside"),
    pytest.param(b"RCPT TO:<{rcpt}> \x1b[31m", "501 Syntax: RCPT", id="ESC-param"),
    pytest.param(b"RCPT TO:<{rcpt}> NOTIFY=\x01", "555 RCPT TO parameters", id="param"),
    pytest.param(b"RCPT TO:<{rcpt}>\rDATA", "500 5.5.2 Bare CR", id="CR"),
]


def fill(template: bytes, rcpt: str, onion: str) -> bytes:
    return template.replace(b"{rcpt}", rcpt.encode()).replace(b"{onion}", onion.encode())


@pytest.mark.parametrize(("command", "expected"), CONTROL_IN_MAIL)
async def test_inbound_control_characters_in_mail_from_are_refused(
    inbound: InboundBox, command: bytes, expected: str
) -> None:
    client = await peer_session(inbound)
    reply = await client.cmd(fill(command, inbound.rcpt(), inbound.onion) + b"\r\n")
    assert reply.startswith(expected), reply
    assert (await client.cmd(f"RCPT TO:<{inbound.rcpt()}>")).startswith("503")  # no MAIL in effect
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize(("command", "expected"), CONTROL_IN_RCPT)
async def test_inbound_control_characters_in_rcpt_to_are_refused(
    inbound: InboundBox, command: bytes, expected: str
) -> None:
    client = await peer_session(inbound)
    assert code(await client.cmd(f"MAIL FROM:<{PEER}>")) == 250
    reply = await client.cmd(fill(command, inbound.rcpt(), inbound.onion) + b"\r\n")
    assert reply.startswith(expected), reply
    assert (await client.cmd("DATA")).startswith("503")  # no recipient in effect
    await assert_still_serving(client, inbound.port)


async def test_inbound_trailing_control_blanks_in_a_path_are_refused(
    inbound: InboundBox,
) -> None:
    # aiosmtpd's RFC 5322 path parser dropped what str.isspace() calls blank (VT, FF,
    # FS..US) at the end of a path; an RFC 5321 path has no room for them: refused.
    client = await peer_session(inbound)
    reply = await client.cmd(b"MAIL FROM:<carol@example.org\x0b\x1f>\r\n")
    assert reply.startswith("553 5.1.7"), reply
    assert code(await client.cmd(f"MAIL FROM:<{PEER}>")) == 250
    rcpt = inbound.rcpt().encode()
    reply = await client.cmd(b"RCPT TO:<" + rcpt + b"\x1c\x0c>\r\n")
    assert reply.startswith("553"), reply
    assert (await client.cmd("DATA")).startswith("503")  # no recipient in effect
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize(("command", "expected"), CONTROL_IN_MAIL)
async def test_submission_control_characters_in_mail_from_are_refused(
    submission: SubmissionBox, command: bytes, expected: str
) -> None:
    command = command.replace(b"carol@example.org", submission.sender.encode())
    client = await user_session(submission)
    reply = await client.cmd(fill(command, other_onion_rcpt(), submission.onion) + b"\r\n")
    assert reply.startswith(expected), reply
    assert (await client.cmd(f"RCPT TO:<{other_onion_rcpt()}>")).startswith("503")
    await assert_still_serving(client, submission.port)


@pytest.mark.parametrize(("command", "expected"), CONTROL_IN_RCPT)
async def test_submission_control_characters_in_rcpt_to_are_refused(
    submission: SubmissionBox, command: bytes, expected: str
) -> None:
    client = await user_session(submission)
    assert code(await client.cmd(f"MAIL FROM:<{submission.sender}>")) == 250
    rcpt = other_onion_rcpt()
    reply = await client.cmd(fill(command, rcpt, rcpt.split("@")[1]) + b"\r\n")
    assert reply.startswith(expected), reply
    assert (await client.cmd("DATA")).startswith("503")
    await assert_still_serving(client, submission.port)


async def test_bare_cr_in_ehlo_is_refused_on_both_servers(
    inbound: InboundBox, submission: SubmissionBox
) -> None:
    for port in (inbound.port, submission.port):
        client, _ = await RawSMTP.connect(port)
        reply = await client.cmd(b"EHLO mx\revil\r\n")
        assert reply.startswith("500 5.5.2 Bare CR or LF"), reply
        assert code(await client.cmd("EHLO localhost")) == 250
        await assert_still_serving(client, port)


async def test_bare_lf_in_a_command_line_is_refused(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    reply = await client.cmd(f"MAIL FROM:<{PEER}>\nRCPT TO:<{inbound.rcpt()}>\r\n".encode())
    assert 500 <= code(reply) < 600, reply
    assert (await client.cmd("DATA")).startswith("503")


EHLO_NAMES = [
    pytest.param(b"mx\x00evil", id="NUL"),
    pytest.param(b"mx\x01\x1b\x7fevil", id="C0-and-DEL"),
    pytest.param(b"mx.\xff\xfeevil", id="invalid-UTF-8"),
]


@pytest.mark.parametrize("name", EHLO_NAMES)
async def test_inbound_control_characters_in_ehlo_never_reach_the_mailbox(
    inbound: InboundBox, name: bytes
) -> None:
    client = await peer_session(inbound, greeting=b"EHLO " + name + b"\r\n")
    await open_data(client, PEER, inbound.rcpt())
    assert code(await client.cmd(b"Subject: hi\r\n\r\nhello\r\n.\r\n")) == 250
    (stored,) = inbound.stored()
    assert b"evil" not in stored
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("name", EHLO_NAMES)
async def test_submission_control_characters_in_ehlo_never_reach_the_queue(
    submission: SubmissionBox, name: bytes
) -> None:
    client = await user_session(submission, greeting=b"EHLO " + name + b"\r\n")
    await open_data(client, submission.sender, other_onion_rcpt())
    assert code(await client.cmd(b"Subject: hi\r\n\r\nhello\r\n.\r\n")) == 250
    (queued,) = submission.queued
    assert b"evil" not in queued.message
    await assert_still_serving(client, submission.port)


# --- NUL bytes and invalid UTF-8 ------------------------------------------------------

NUL_HEADERS = [
    pytest.param(b"Subject: a\x00b\r\n", id="in-a-value"),
    pytest.param(b"X-\x00: b\r\n", id="in-a-name"),
    pytest.param(b"Subject: a\r\n \x00folded\r\n", id="in-a-continuation"),
    pytest.param(b"\x00\r\n", id="alone"),
]
NUL_REFUSED = "554 5.6.0 Malformed message: NUL byte in the header block"


@pytest.mark.parametrize("header", NUL_HEADERS)
async def test_inbound_nul_in_data_headers_is_refused(inbound: InboundBox, header: bytes) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert await client.cmd(header + b"\r\nbody\r\n.\r\n") == NUL_REFUSED
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("header", NUL_HEADERS)
async def test_submission_nul_in_data_headers_is_refused(
    submission: SubmissionBox, header: bytes
) -> None:
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    assert await client.cmd(header + b"\r\nbody\r\n.\r\n") == NUL_REFUSED
    assert submission.queued == []
    await assert_still_serving(client, submission.port)


async def test_inbound_nul_in_the_body_is_stored_byte_exact(inbound: InboundBox) -> None:
    body = b"before\x00after\r\n\x00\r\n"
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert code(await client.cmd(b"Subject: nul\r\n\r\n" + body + b".\r\n")) == 250
    (stored,) = inbound.stored()
    assert stored.endswith(b"\n\n" + lf(body))


INVALID_UTF8_COMMANDS = [
    pytest.param(b"MAIL FROM:<\xff@example.org>", "553 5.1.7", id="MAIL-local-part"),
    # 0x28 is "(": no comment in an RFC 5321 path
    pytest.param(b"MAIL FROM:<carol@ex\xc3\x28mple.org>", "553 5.1.3", id="MAIL-domain"),
    pytest.param(b"\xff\xfe", "500 Error: bad syntax", id="command-name"),
    pytest.param(b"NO\xc0\xafOP", "500 Error: bad syntax", id="overlong-in-name"),
    pytest.param(b"MAIL FROM:<carol@example.org> \xed\xa0\x80=1", "501 Syntax", id="param"),
]


@pytest.mark.parametrize(("command", "expected"), INVALID_UTF8_COMMANDS)
async def test_inbound_invalid_utf8_in_commands_is_refused(
    inbound: InboundBox, command: bytes, expected: str
) -> None:
    client = await peer_session(inbound)
    reply = await client.cmd(command + b"\r\n")
    assert reply.startswith(expected), reply
    assert (await client.cmd(f"RCPT TO:<{inbound.rcpt()}>")).startswith("503")
    await assert_still_serving(client, inbound.port)


async def test_inbound_invalid_utf8_in_rcpt_to_is_refused(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    assert code(await client.cmd(f"MAIL FROM:<{PEER}>")) == 250
    reply = await client.cmd(b"RCPT TO:<b\xf0\x28\x8c\xbcb@" + inbound.onion.encode() + b">\r\n")
    assert reply == "553 5.1.3 Error: malformed address"  # 0x28 is "(": not in a path
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize(("command", "expected"), INVALID_UTF8_COMMANDS)
async def test_submission_invalid_utf8_in_commands_is_refused(
    submission: SubmissionBox, command: bytes, expected: str
) -> None:
    client = await user_session(submission)
    reply = await client.cmd(command + b"\r\n")
    assert reply.startswith(expected), reply
    await assert_still_serving(client, submission.port)


async def test_submission_invalid_utf8_in_auth_is_refused(submission: SubmissionBox) -> None:
    client, _ = await RawSMTP.connect(submission.port)
    await client.cmd("EHLO localhost")
    token = base64.b64encode(b"\0al\xffice\0" + PASSWORD.encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).startswith("535")
    assert (await client.cmd(b"AUTH PLAIN \xff\xfe\r\n")).startswith("501")
    assert (await client.cmd(f"MAIL FROM:<{submission.sender}>")).startswith("530")
    await assert_still_serving(client, submission.port)


async def test_inbound_invalid_utf8_in_headers_is_stored_byte_exact(inbound: InboundBox) -> None:
    message = (
        b"From: \xff\xfe <carol@example.org>\r\nSubject: caf\xc3\x28 \xed\xa0\x80\r\n\r\nhi\r\n"
    )
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert await client.cmd(message + b".\r\n") == "250 2.0.0 Delivered"
    (stored,) = inbound.stored()
    assert stored.endswith(lf(message))


async def test_submission_invalid_utf8_in_headers_is_queued_byte_exact(
    submission: SubmissionBox,
) -> None:
    subject = b"Subject: caf\xc3\x28 \xed\xa0\x80\r\n"
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    reply = await client.cmd(subject + b"X-Weird: \xff\r\n\r\nhi\r\n.\r\n")
    assert reply == "250 2.0.0 Queued as q1"
    (queued,) = submission.queued
    assert subject in queued.message and b"X-Weird: \xff\r\n" in queued.message


async def test_submission_invalid_utf8_in_from_is_refused(submission: SubmissionBox) -> None:
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    reply = await client.cmd(b"From: \xff\xfe@" + submission.onion.encode() + b"\r\n\r\nx\r\n.\r\n")
    assert reply == "550 5.7.1 From does not hold a valid address"
    assert submission.queued == []
    await assert_still_serving(client, submission.port)


@pytest.mark.parametrize(
    "date",
    [
        pytest.param(b"Fri, 31 Dec 9999 23:59:00 -0100", id="past-9999-in-UTC"),
        pytest.param(b"Mon, 99 Foo 99999 99:99:99 +9999", id="nonsense"),
        pytest.param(b"\xff\xfe", id="invalid-UTF-8"),
    ],
)
async def test_submission_date_out_of_range_is_replaced_by_the_submission_time(
    submission: SubmissionBox, date: bytes
) -> None:
    # A Date one hour before the end of year 9999, west of UTC, overflowed datetime
    # when scrubbing moved it to UTC: the client got the generic 451.
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    assert await client.cmd(b"Date: " + date + b"\r\n\r\nx\r\n.\r\n") == "250 2.0.0 Queued as q1"
    (queued,) = submission.queued
    stamped = parse_message(queued.message).get("Date") or b""
    age = datetime.now(UTC) - email.utils.parsedate_to_datetime(stamped.decode())
    assert timedelta(0) <= age < timedelta(minutes=5)
    await assert_still_serving(client, submission.port)


# --- 8-bit data and malformed MIME ---------------------------------------------------

EIGHT_BIT = (
    b"Subject: Gr\xfc\xdfe \xe2\x82\xac\r\n\r\n"
    b"Latin-1 \xe9t\xe9, UTF-8 \xc3\xa9t\xc3\xa9, \x80\xff\r\n"
)


@pytest.mark.parametrize("mail_params", ["", " BODY=7BIT"])
async def test_inbound_8bit_data_without_8bitmime_is_stored_byte_exact(
    inbound: InboundBox, mail_params: str
) -> None:
    client = await peer_session(inbound)
    assert code(await client.cmd(f"MAIL FROM:<{PEER}>{mail_params}")) == 250
    assert code(await client.cmd(f"RCPT TO:<{inbound.rcpt()}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    assert await client.cmd(EIGHT_BIT + b".\r\n") == "250 2.0.0 Delivered"
    (stored,) = inbound.stored()
    assert stored.endswith(lf(EIGHT_BIT))


@pytest.mark.parametrize("mail_params", ["", " BODY=7BIT"])
async def test_submission_8bit_data_without_8bitmime_is_queued_byte_exact(
    submission: SubmissionBox, mail_params: str
) -> None:
    client = await user_session(submission)
    assert code(await client.cmd(f"MAIL FROM:<{submission.sender}>{mail_params}")) == 250
    assert code(await client.cmd(f"RCPT TO:<{other_onion_rcpt()}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    assert await client.cmd(EIGHT_BIT + b".\r\n") == "250 2.0.0 Queued as q1"
    (queued,) = submission.queued
    assert EIGHT_BIT.split(b"\r\n")[0] + b"\r\n" in queued.message
    assert queued.message.endswith(EIGHT_BIT.split(b"\r\n\r\n", 1)[1])


MALFORMED_MIME = [
    pytest.param(
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain'
        b"\r\n\r\nnever closed\r\n",
        id="unterminated-boundary",
    ),
    pytest.param(
        b"Content-Type: multipart/mixed\r\n\r\n--\r\nno boundary parameter\r\n--\r\n",
        id="missing-boundary-parameter",
    ),
    pytest.param(
        b'Content-Type: multipart/alternative; boundary=""\r\n\r\n--\r\n--\r\n',
        id="empty-boundary",
    ),
    pytest.param(
        b"".join(
            f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n'.encode()
            for i in range(300)
        ),
        id="nested-300-deep-unterminated",
    ),
    pytest.param(
        b"Content-Type: text/plain; charset=x-no-such\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n!!!! not base64 ====\r\n",
        id="bad-base64-and-charset",
    ),
    pytest.param(
        b"Subject: =?utf-8?b?!!!?= =?x?q?=ZZ?= =?utf-8?q?\r\nContent-Type: ;;;=\r\n"
        b"MIME-Version: 99\r\n\r\nbody\r\n",
        id="garbage-encoded-words-and-content-type",
    ),
]


@pytest.mark.parametrize("message", MALFORMED_MIME)
async def test_inbound_malformed_mime_is_stored_byte_exact(
    inbound: InboundBox, message: bytes
) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert await client.cmd(message + b".\r\n") == "250 2.0.0 Delivered"
    (stored,) = inbound.stored()
    assert stored.endswith(lf(message))
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("message", MALFORMED_MIME)
async def test_submission_malformed_mime_is_queued_byte_exact(
    submission: SubmissionBox, message: bytes
) -> None:
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    assert await client.cmd(message + b".\r\n") == "250 2.0.0 Queued as q1"
    (queued,) = submission.queued
    head, _, body = message.partition(b"\r\n\r\n")
    assert queued.message.endswith(b"\r\n\r\n" + body)
    for line in head.split(b"\r\n"):
        assert line in queued.message
    await assert_still_serving(client, submission.port)


# --- headers of absurd size or count ---------------------------------------------------


def folded_header(total: int) -> bytes:
    """One field folded over 998-byte lines, ``total`` bytes or a little more."""
    continuation = b" " + b"a" * 997
    lines = [b"X-Huge: start"] + [continuation] * (total // len(continuation) + 1)
    return b"\r\n".join(lines) + b"\r\n"


ABSURD_HEADERS = [
    pytest.param(
        folded_header(MAX_HEADER_BYTES + 1000),
        f"554 5.6.0 Malformed message: header block over {MAX_HEADER_BYTES} bytes",
        id="size",
    ),
    pytest.param(
        b"X-A: b\r\n" * (MAX_HEADER_FIELDS + 1),
        f"554 5.6.0 Malformed message: more than {MAX_HEADER_FIELDS} header fields",
        id="count",
    ),
    pytest.param(b"Subject: " + b"s" * 2000 + b"\r\n", LINE_TOO_LONG, id="line-over-1000"),
]


@pytest.mark.parametrize(("header", "expected"), ABSURD_HEADERS)
async def test_inbound_absurd_headers_are_refused(
    inbound: InboundBox, header: bytes, expected: str
) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert await client.cmd(header + b"\r\nbody\r\n.\r\n") == expected
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize(("header", "expected"), ABSURD_HEADERS)
async def test_submission_absurd_headers_are_refused(
    submission: SubmissionBox, header: bytes, expected: str
) -> None:
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    assert await client.cmd(header + b"\r\nbody\r\n.\r\n") == expected
    assert submission.queued == []
    await assert_still_serving(client, submission.port)


async def test_inbound_headers_just_under_the_limits_are_stored(inbound: InboundBox) -> None:
    fields = b"X-A: b\r\n" * (MAX_HEADER_FIELDS - 1) + folded_header(MAX_HEADER_BYTES - 20_000)
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert await client.cmd(fields + b"\r\nbody\r\n.\r\n") == "250 2.0.0 Delivered"
    (stored,) = inbound.stored()
    assert stored.endswith(lf(fields + b"\r\nbody\r\n"))


# --- a 10 MB line ----------------------------------------------------------------------

TEN_MB_LINES = [
    pytest.param(b"Subject: x\r\n\r\n" + b"b" * TEN_MB + b"\r\n", id="in-the-body"),
    pytest.param(b"Subject: " + b"s" * TEN_MB + b"\r\n\r\nbody\r\n", id="in-a-header"),
    pytest.param(b"Subject: x\r\n\r\n" + b"b" * TEN_MB, id="unterminated-before-the-dot"),
]


@pytest.mark.parametrize("data", TEN_MB_LINES)
async def test_inbound_ten_megabyte_line_in_data_is_refused(
    inbound: InboundBox, data: bytes
) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    assert await client.cmd(data + b"\r\n.\r\n") == LINE_TOO_LONG
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


@pytest.mark.parametrize("data", TEN_MB_LINES)
async def test_submission_ten_megabyte_line_in_data_is_refused(
    submission: SubmissionBox, data: bytes
) -> None:
    client = await user_session(submission)
    await open_data(client, submission.sender, other_onion_rcpt())
    assert await client.cmd(data + b"\r\n.\r\n") == LINE_TOO_LONG
    assert submission.queued == []
    await assert_still_serving(client, submission.port)


async def test_inbound_ten_megabyte_mail_from_is_refused(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    reply = await client.cmd(b"MAIL FROM:<" + b"c" * TEN_MB + b"@example.org>\r\n")
    assert reply == "500 Command line too long"
    await assert_still_serving(client, inbound.port)


async def test_submission_ten_megabyte_rcpt_to_is_refused(submission: SubmissionBox) -> None:
    client = await user_session(submission)
    assert code(await client.cmd(f"MAIL FROM:<{submission.sender}>")) == 250
    reply = await client.cmd(b"RCPT TO:<" + b"d" * TEN_MB + b">\r\n")
    assert reply == "500 Command line too long"
    await assert_still_serving(client, submission.port)


# --- sealed envelopes: truncated, or with length fields that lie ------------------------

ALICE = Identity.generate()


def alice() -> str:
    return f"alice@{ALICE.onion_address}"


def sealed_message(box: InboundBox, challenge: bytes, message: bytes | None = None) -> bytes:
    """A valid envelope (Alice to bob) as DATA, bound to this session."""
    content = SealedContent(
        envelope_id=secrets.token_bytes(16),
        created=int(time.time()),
        session_challenge=challenge,
        mail_from=alice(),
        recipients=(box.rcpt(),),
        message=message or f"From: {alice()}\r\nSubject: sealed\r\n\r\nhello\r\n".encode(),
    )
    return encode_for_smtp(seal(content, sender=ALICE, recipient_onion=box.onion))


def sealed_fields(
    box: InboundBox,
    challenge: bytes,
    *,
    mail_from_length: int | None = None,
    recipient_count: int | None = None,
    recipient_length: int | None = None,
    message_length: int | None = None,
) -> bytes:
    """A validly boxed envelope whose inner length fields say what the caller wants.

    The MAC is right (Alice really sealed it), so only the parser behind it decides.
    """
    sender, rcpt = alice().encode(), box.rcpt().encode()
    message = f"From: {alice()}\r\n\r\nhi\r\n".encode()
    plaintext = b"".join(
        [
            HEADER,
            bytes(box.identity.x25519_public_key()),
            secrets.token_bytes(16),
            struct.pack(">Q", int(time.time())),
            challenge,
            struct.pack(">H", len(sender) if mail_from_length is None else mail_from_length),
            sender,
            struct.pack(">H", 1 if recipient_count is None else recipient_count),
            struct.pack(">H", len(rcpt) if recipient_length is None else recipient_length),
            rcpt,
            struct.pack(">I", len(message) if message_length is None else message_length),
            message,
        ]
    )
    box_ = nacl.public.Box(ALICE.x25519_private_key(), box.identity.x25519_public_key())
    nonce = secrets.token_bytes(24)
    envelope = HEADER + nonce + box_.encrypt(pad(plaintext), nonce).ciphertext
    return encode_for_smtp(envelope)


async def send_sealed(box: InboundBox, build: Any) -> str:
    """One sealing session; ``build(challenge)`` makes the DATA; returns the DATA reply."""
    client, challenge = await sealing_session(box)
    await open_data(client, alice(), box.rcpt())
    reply = await client.cmd(build(challenge) + b".\r\n")
    await assert_still_serving(client, box.port)
    return reply


NOT_BASE64 = "550 5.7.1 Envelope refused: the DATA is not a base64 sealed envelope"
TRUNCATED = "550 5.7.1 Envelope refused: the sealed envelope is truncated"
DOES_NOT_OPEN = "550 5.7.1 The seal does not open with the sender's onion key: forged sender"
LENGTH_PAST_END = (
    "550 5.7.1 Envelope refused: the sealed content is truncated (a length runs past its end)"
)
PADDING_NOT_ZERO = "550 5.7.1 Envelope refused: the sealed content's padding is not zero"


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(5, NOT_BASE64, id="inside-the-magic"),
        pytest.param(8, TRUNCATED, id="magic-only"),
        pytest.param(30, NOT_BASE64, id="mid-quad-in-the-nonce"),
        pytest.param(40, TRUNCATED, id="inside-the-nonce"),
        pytest.param(200, DOES_NOT_OPEN, id="inside-the-ciphertext"),
        pytest.param(-4, DOES_NOT_OPEN, id="last-quad-missing"),
        pytest.param(-1, NOT_BASE64, id="last-character-missing"),
    ],
)
async def test_truncated_sealed_envelope_is_refused(
    inbound: InboundBox, size: int, expected: str
) -> None:
    def build(challenge: bytes) -> bytes:
        text = b"".join(sealed_message(inbound, challenge).split())[:size]
        return b"".join(text[i : i + 76] + b"\r\n" for i in range(0, len(text), 76))

    assert await send_sealed(inbound, build) == expected
    assert inbound.stored() == []


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        pytest.param({"mail_from_length": 0xFFFF}, LENGTH_PAST_END, id="sender-too-long"),
        pytest.param({"mail_from_length": 3}, LENGTH_PAST_END, id="sender-too-short"),
        pytest.param({"recipient_count": 0xFFFF}, LENGTH_PAST_END, id="too-many-recipients"),
        pytest.param({"recipient_length": 0xFFFF}, LENGTH_PAST_END, id="recipient-too-long"),
        pytest.param({"message_length": 0xFFFFFFFF}, LENGTH_PAST_END, id="message-4-GiB"),
        pytest.param({"message_length": 2}, PADDING_NOT_ZERO, id="message-too-short"),
        pytest.param({"recipient_count": 0}, LENGTH_PAST_END, id="no-recipients"),
    ],
)
async def test_sealed_envelope_with_lying_length_fields_is_refused(
    inbound: InboundBox, lengths: dict[str, int], expected: str
) -> None:
    reply = await send_sealed(inbound, lambda ch: sealed_fields(inbound, ch, **lengths))
    assert reply == expected
    assert inbound.stored() == []


async def test_sealed_envelope_with_true_length_fields_is_delivered(inbound: InboundBox) -> None:
    assert await send_sealed(inbound, lambda ch: sealed_fields(inbound, ch)) == (
        "250 2.0.0 Delivered (sealed)"
    )
    assert len(inbound.stored()) == 1


async def test_sealed_envelope_with_nul_in_the_inner_headers_is_refused(
    inbound: InboundBox,
) -> None:
    message = f"From: {alice()}\r\nSubject: a\x00b\r\n\r\nhi\r\n".encode()
    reply = await send_sealed(inbound, lambda ch: sealed_message(inbound, ch, message))
    assert reply == (
        "554 5.6.0 Malformed message inside the envelope: NUL byte in the header block"
    )
    assert inbound.stored() == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"T01TRQI=\r\n", id="wrong-version"),
        pytest.param(b"T01TR" + b"A" * 71 + b"\r\n\r\nAAAA\r\n", id="blank-line"),
        pytest.param(b"T01TR!!!\r\n", id="outside-the-alphabet"),
        pytest.param(b"T01TR\x00\xff\r\n", id="binary"),
    ],
)
async def test_sealed_envelope_that_is_not_one_is_refused(inbound: InboundBox, data: bytes) -> None:
    reply = await send_sealed(inbound, lambda _ch: data)
    assert reply.startswith("550 5.7.1 Envelope refused: "), reply
    assert inbound.stored() == []
