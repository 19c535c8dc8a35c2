"""Submission scrubbing: take out what the user's mail client leaks before mail leaves.

Applied to every message submitted by the user's own client, whatever the
client. The defaults are the safe ones (DESIGN.md decision 3):

- trace and client fields are removed: ``Received``, ``User-Agent``,
  ``X-Mailer``, ``X-Originating-IP``, ``X-MimeOLE``, ``X-MS-*`` client
  fields and any ``Authentication-Results`` the client invented;
- ``Message-ID`` is regenerated as ``<random>@<sender onion>``, so it names
  no local host;
- ``Date`` is rewritten in UTC (no time zone) with the seconds dropped;
- ``From`` must name exactly the authenticated sender (added if missing).

The SMTP envelope carries no client EHLO name onward: the box speaks to
peers in its own name. (The full, configurable scrubber with per-client
tests belongs to the metadata issue; this is its safe core.)
"""

from __future__ import annotations

import email.utils
import secrets
from datetime import UTC, datetime

from onionmail.errors import OnionMailError
from onionmail.mail_address import MailAddress, parse_mail_address
from onionmail.rfc5322 import Message, parse_message

REMOVED_FIELDS = (
    "Received",
    "User-Agent",
    "X-Mailer",
    "X-Originating-IP",
    "X-MimeOLE",
    "X-Newsreader",
    "Authentication-Results",
    "Return-Path",
    "Delivered-To",
)
REMOVED_PREFIXES = ("x-ms-",)


class SenderMismatchError(OnionMailError, ValueError):
    """The From field names someone other than the authenticated sender."""


def scrub_submission(
    data: bytes, *, sender: MailAddress, now: datetime | None = None
) -> tuple[bytes, str]:
    """Return the scrubbed message (CRLF) and its new Message-ID (without brackets)."""
    message = parse_message(data)
    for name in REMOVED_FIELDS:
        message.remove(name)
    message.fields = [
        (k, v) for k, v in message.fields if not k.lower().startswith(REMOVED_PREFIXES)
    ]
    _check_from(message, sender)
    message_id = f"{secrets.token_hex(16)}@{sender.domain}"
    message.set("Message-ID", f"<{message_id}>".encode("ascii"))
    message.set("Date", _utc_minute(message.get("Date"), now).encode("ascii"))
    if message.get("MIME-Version") is None and message.get("Content-Type") is not None:
        message.set("MIME-Version", b"1.0")
    return message.to_bytes(), message_id


def _check_from(message: Message, sender: MailAddress) -> None:
    values = message.get_all("From")
    if not values:
        message.prepend("From", str(sender).encode("ascii"))
        return
    if len(values) > 1:
        raise SenderMismatchError("more than one From field")
    text = values[0].decode("utf-8", errors="replace")
    addresses = email.utils.getaddresses([text])
    if len(addresses) != 1:
        raise SenderMismatchError("From must name exactly one address")
    try:
        named = parse_mail_address(addresses[0][1])
    except OnionMailError:
        raise SenderMismatchError("From does not hold a valid address") from None
    if named != sender:
        raise SenderMismatchError("From names an address other than the authenticated sender")


def _utc_minute(value: bytes | None, now: datetime | None) -> str:
    moment = now or datetime.now(UTC)
    if value is not None:
        try:
            parsed = email.utils.parsedate_to_datetime(value.decode("ascii", errors="replace"))
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(UTC)  # overflows at datetime's edges (year 9999)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            moment = parsed
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return email.utils.format_datetime(moment, usegmt=True)
