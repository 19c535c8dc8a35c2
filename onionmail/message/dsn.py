"""Delivery status notifications (RFC 3464).

A box's bounce never travels: the sender is always a local part of the box,
so the report is delivered locally, and it quotes only the original headers
(RFC 3462 ``text/rfc822-headers``), never the body. A gateway's report to a
clearnet sender (:mod:`gateway.inbound.undeliverable`) quotes nothing: the
gateway holds the message only sealed to the box.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from datetime import UTC, datetime

from onionmail.message.rfc5322 import MessageFormatError, parse_message


def build_dsn(
    *,
    box_onion: str,
    sender: str,
    recipients: tuple[str, ...],
    original: bytes | None,
    reason: str,
    status: str = "",
    now: datetime | None = None,
) -> bytes:
    """A multipart/report DSN with LF line ends, ready for a Maildir.

    ``box_onion``: the reporting host (a box's onion, or a gateway's domain).
    ``original``: the message, whose header fields are quoted; None quotes
    nothing. ``status``: the RFC 3463 code; by default the one the reason
    carries (``550 5.1.1 ...``), else ``5.0.0``.
    """
    status = status or enhanced_status(reason)
    moment = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    boundary = secrets.token_hex(12)
    date = email.utils.format_datetime(moment, usegmt=True)
    per_recipient = "\n".join(
        f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {_one_line(reason)}\n"
        for rcpt in recipients
    )
    quoted = "" if original is None else _quoted_headers(original)
    headers_part = (
        f"\n--{boundary}\nContent-Type: text/rfc822-headers\n\n{quoted}\n" if quoted else ""
    )
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

{per_recipient}{headers_part}
--{boundary}--
"""
    return text.encode("utf-8")


_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def enhanced_status(reason: str) -> str:
    """The RFC 3463 status a failure's text carries (``... 550 5.7.1 ...``): the first
    permanent one, else ``5.0.0``."""
    found = [code for code in _ENHANCED.findall(reason) if code.startswith("5")]
    return found[0] if found else "5.0.0"


def _quoted_headers(original: bytes) -> str:
    try:
        headers = parse_message(original)
    except MessageFormatError:
        return "(the original headers could not be parsed)"
    return b"\n".join(
        name.encode() + b":" + value.replace(b"\r\n", b"\n") for name, value in headers.fields
    ).decode("utf-8", errors="replace")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]
