"""Submission scrubbing: take out what the user's mail client leaks before mail leaves.

Applied by the submission server (:mod:`onionmail.box.submission`) to every
message from the user's own client, whatever the client; ``[scrub]`` in
``onionmail.toml`` tunes it, and its defaults are the safe ones (docs/design.md,
"Metadata is minimized at the box"). What real clients send is recorded in ``tests/data/clients/``
(swaks, neomutt, and Thunderbird's documented header set); every rule below
has a test on those messages and on the live clients.

**Removed, always** (:data:`TRACE_FIELDS`, :data:`TRACE_PREFIXES`): trace and
server fields. A client does not write them; they come along when a stored
message is submitted again (neomutt's ``-H`` draft, "edit as new", a
``sendmail < saved.eml``). ``Received`` names hosts and IP addresses,
``X-Originating-IP`` an address, ``Authentication-Results`` and ``ARC-*``
another server's verdicts (the receiving box adds its own, and a forged one
must not reach it), ``Return-Path``/``Delivered-To``/``X-Original-To`` an
earlier delivery, ``DKIM-Signature`` the old provider, ``X-Spam-*``,
``X-Virus-*``, ``X-Received``, ``X-Google-*`` and ``X-Gm-*`` server software
and internal addresses. ``[scrub] keep_headers`` cannot keep these.

**Removed by default** (:data:`CLIENT_FIELDS`, :data:`CLIENT_PREFIXES`; ``[scrub]
keep_headers`` may keep one by name): what names the client software or the
machine. ``User-Agent`` (Thunderbird ``Mozilla/5.0 (X11; Linux x86_64; ...)
Thunderbird/115.6.0``, neomutt with ``user_agent=yes``), ``X-Mailer`` (swaks,
Apple Mail, Claws, Evolution, Outlook), ``X-Newsreader``, ``X-MimeOLE``;
Thunderbird's folder fields ``X-Mozilla-*`` (Status, Status2, Keys,
Draft-Info), ``X-Identity-Key``, ``X-Account-Key`` and the POP ``X-UIDL``;
``X-MS-*`` and Outlook's ``Thread-Index`` (a time stamp and a GUID); KMail's
``X-KMail-*`` and Evolution's ``X-Evolution-*`` draft fields; Apple Mail's
``X-Apple-*``, ``X-Universally-Unique-Identifier`` and
``X-Uniform-Type-Identifier``.

**Removed if configured**: ``Content-Language`` (``[scrub]
remove_content_language``, default true): Thunderbird sets it from the spell
checker's dictionary, a trait of the user's machine rather than of the
message. ``[scrub] extra_remove_headers`` removes more, by name or ``Prefix-*``.

**Rewritten**: ``Message-ID`` becomes ``<32 hex digits@sender's onion>``
(neomutt and swaks put the machine's host name and the send time in it,
Thunderbird a UUID). With the box's key the digits are a keyed hash of the
client's own Message-ID, so the same client ID always becomes the same box
ID, and any ``In-Reply-To``/``References`` entry with the client's host (the
user's own earlier messages, which the box rewrote the same way) is
rewritten to match: threads stay intact and the host name goes. Without a
key (or a client ID) the digits are random. ``Date`` is put in UTC (no time zone) and rounded down
to ``[scrub] date_rounding`` seconds (default 60: no seconds); a missing
``Date`` is the submission time. ``From`` must name exactly the authenticated
sender, and is added if missing.

**Kept**: every other field, in the client's order, among them ``X-Priority``,
``Importance`` and ``Priority`` (the user's choice, shown by the recipient's
client; ``extra_remove_headers`` can drop them), ``Organization``, ``Reply-To``,
``References``/``In-Reply-To``, ``Disposition-Notification-To``. **The body is
the user's and is not touched**: attachment file names, MIME part headers,
the MIME boundary and the text stay as the client wrote them.

**The client's EHLO name** never reaches the message: the submission server
adds no ``Received`` line (nor any other), and the box greets peers as
``localhost``.

What scrubbing cannot hide: the order of the remaining fields, the MIME
boundary style and the encodings a client chooses still hint at the client
family (for example Thunderbird's ``------------`` boundaries), while its name,
version and the machine stay hidden (``threat_model`` says the same).
``References`` entries from other people's messages are kept as they are.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from datetime import UTC, datetime

import nacl.encoding
import nacl.hash

from onionmail.config.sections import ScrubSection
from onionmail.core.errors import OnionMailError
from onionmail.core.header_fields import (
    CONTENT_LANGUAGE,
    is_client_field,
    is_trace_field,
    pattern_matches,
)
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.message.rfc5322 import Message, parse_message
from onionmail.seal.identity import derive_subkey

DEFAULT_SCRUB = ScrubSection()


class SenderMismatchError(OnionMailError, ValueError):
    """The From field names someone other than the authenticated sender."""


def is_removed(name: str, settings: ScrubSection = DEFAULT_SCRUB) -> bool:
    """Whether scrubbing with ``settings`` drops every field called ``name``."""
    lower = name.lower()
    if is_trace_field(lower):
        return True
    if any(pattern_matches(kept, lower) for kept in settings.keep_headers):
        return False
    if is_client_field(lower):
        return True
    if lower == CONTENT_LANGUAGE and settings.remove_content_language:
        return True
    return any(pattern_matches(extra, lower) for extra in settings.extra_remove_headers)


def scrub_submission(
    data: bytes,
    *,
    sender: MailAddress,
    settings: ScrubSection = DEFAULT_SCRUB,
    now: datetime | None = None,
    message_id_key: bytes | None = None,
) -> tuple[bytes, str]:
    """Return the scrubbed message (CRLF) and its new Message-ID (without brackets).

    Raises :class:`~onionmail.message.rfc5322.MessageFormatError` for a malformed header
    block and :class:`SenderMismatchError` when From is not ``sender``.
    """
    message = parse_message(data)
    message.fields = [(k, v) for k, v in message.fields if not is_removed(k, settings)]
    _check_from(message, sender)
    client_id = _first_msg_id(message.get("Message-ID"))
    if message_id_key is not None and client_id is not None:
        message_id = _keyed_msg_id(client_id, sender.domain, message_id_key)
        _rewrite_own_references(message, client_id, sender.domain, message_id_key)
    else:
        message_id = f"{secrets.token_hex(16)}@{sender.domain}"
    message.set("Message-ID", f"<{message_id}>".encode("ascii"))
    date = _utc_rounded(message.get("Date"), now, settings.date_rounding)
    message.set("Date", date.encode("ascii"))
    if message.get("MIME-Version") is None and message.get("Content-Type") is not None:
        message.set("MIME-Version", b"1.0")
    return message.to_bytes(), message_id


_MSG_ID = re.compile(rb"<([^<>@\s]+@([^<>@\s]+))>")


def _first_msg_id(value: bytes | None) -> bytes | None:
    found = _MSG_ID.search(value or b"")
    return found.group(1) if found else None


def _keyed_msg_id(client_id: bytes, domain: str, key: bytes) -> str:
    digest = nacl.hash.blake2b(client_id, key=key, digest_size=16, encoder=nacl.encoding.HexEncoder)
    return f"{digest.decode('ascii')}@{domain}"


def _rewrite_own_references(message: Message, client_id: bytes, domain: str, key: bytes) -> None:
    """Rewrite the references to the user's own messages the way their IDs were rewritten."""
    host = client_id.rsplit(b"@", 1)[1].lower()

    def rewrite(found: re.Match[bytes]) -> bytes:
        if found.group(2).lower() != host:
            return found.group(0)
        return f"<{_keyed_msg_id(found.group(1), domain, key)}>".encode("ascii")

    message.fields = [
        (k, _MSG_ID.sub(rewrite, v) if k.lower() in ("in-reply-to", "references") else v)
        for k, v in message.fields
    ]


def message_id_key(seed: bytes) -> bytes:
    """The key of the Message-ID rewriting, domain-separated from other uses of the seed."""
    return derive_subkey(seed, b"om-msgid-v1")


def _check_from(message: Message, sender: MailAddress) -> None:
    values = message.get_all("From")
    if not values:
        message.prepend("From", str(sender).encode("ascii"))
        return
    if len(values) > 1:
        raise SenderMismatchError("more than one From field")
    text = values[0].decode("utf-8", errors="replace")
    if _is_plainly(text, sender):
        return
    addresses = email.utils.getaddresses([text])
    if len(addresses) != 1:
        raise SenderMismatchError("From must name exactly one address")
    try:
        named = parse_mail_address(addresses[0][1])
    except OnionMailError:
        raise SenderMismatchError("From does not hold a valid address") from None
    if named != sender:
        raise SenderMismatchError("From names an address other than the authenticated sender")


_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ \t]*")
"""A display name of atoms and blanks only: nothing in it can name or group addresses."""


def _is_plainly(text: str, sender: MailAddress) -> bool:
    """Whether a From value is ``sender`` in one of the common forms, exactly.

    ``addr``, ``<addr>`` or ``Name <addr>`` with a name of plain atoms: what
    the full parser (``email.utils``, ~30 µs a value: it walks it a
    character at a time in Python) would find too. Anything else is left to it.
    """
    value = text.strip(" \t").lower()
    if value == str(sender):
        return True
    bracketed = f"<{sender}>"
    return value.endswith(bracketed) and bool(
        _PLAIN_PHRASE.fullmatch(value, 0, len(value) - len(bracketed))
    )


def _utc_rounded(value: bytes | None, now: datetime | None, rounding: int) -> str:
    """The Date (or ``now``) in UTC, rounded down to ``rounding`` seconds (a divisor of a day)."""
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
    moment = moment.astimezone(UTC)
    of_day = moment.hour * 3600 + moment.minute * 60 + moment.second
    of_day -= of_day % rounding
    moment = moment.replace(
        hour=of_day // 3600, minute=of_day % 3600 // 60, second=of_day % 60, microsecond=0
    )
    return email.utils.format_datetime(moment, usegmt=True)
