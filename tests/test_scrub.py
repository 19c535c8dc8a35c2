"""Submission scrubbing: what clients leak does not leave the box."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from onionmail.mail_address import MailAddress
from onionmail.rfc5322 import parse_message
from onionmail.scrub import SenderMismatchError, scrub_submission
from tests.leaks import host_identity_in

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
    [b"From: mallory@" + ONION.encode(), b"From: a@b.example, alice@" + ONION.encode()],
)
def test_from_must_be_the_authenticated_sender(from_field: bytes) -> None:
    with pytest.raises(SenderMismatchError):
        scrub_submission(from_field + b"\r\n\r\nbody\r\n", sender=SENDER)
