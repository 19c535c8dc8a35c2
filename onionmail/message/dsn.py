"""Delivery status notifications (RFC 3464) written to the sender's own Maildir.

A bounce never travels: the sender is always a local part of this box, so
the report is delivered locally, and it quotes only the original headers
(RFC 3462 ``text/rfc822-headers``), never the body.
"""

from __future__ import annotations

import email.utils
import secrets
from datetime import UTC, datetime

from onionmail.message.rfc5322 import MessageFormatError, parse_message


def build_dsn(
    *,
    box_onion: str,
    sender: str,
    recipients: tuple[str, ...],
    original: bytes,
    reason: str,
    status: str = "5.0.0",
    now: datetime | None = None,
) -> bytes:
    """A multipart/report DSN with LF line ends, ready for a Maildir."""
    moment = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    boundary = secrets.token_hex(12)
    date = email.utils.format_datetime(moment, usegmt=True)
    per_recipient = "\n".join(
        f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {_one_line(reason)}\n"
        for rcpt in recipients
    )
    try:
        headers = parse_message(original)
        quoted = b"\n".join(
            name.encode() + b":" + value.replace(b"\r\n", b"\n") for name, value in headers.fields
        ).decode("utf-8", errors="replace")
    except MessageFormatError:
        quoted = "(the original headers could not be parsed)"
    text = f"""From: Mail Delivery System <mailer-daemon@{box_onion}>
To: {sender}
Subject: Undelivered mail returned to sender
Date: {date}
Message-ID: <{secrets.token_hex(16)}@{box_onion}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=utf-8

Your message could not be delivered to: {", ".join(recipients)}

Reason: {_one_line(reason)}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {box_onion}
Arrival-Date: {date}

{per_recipient}
--{boundary}
Content-Type: text/rfc822-headers

{quoted}

--{boundary}--
"""
    return text.encode("utf-8")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
