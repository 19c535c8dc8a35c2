"""Rewrite a box's outgoing message so it leaves the gateway under the box's alias.

A box sends as ``user@<onion>``; on the clearnet the message must come from
an address in the gateway's domain (``alias@gateway.example``) so that the
gateway's DKIM signature, SPF and DMARC line up, and so that replies come back
through the gateway. Decisions:

- **The envelope sender and From become the alias.** Whatever the box wrote
  in From is replaced (the gateway signs for its domain and never vouches for
  another address). A message without exactly one From is refused: a second
  From is the classic way to show a reader one sender and a verifier another.
- **The display name is kept**, because the user typed it for the recipient,
  who would see it on any other path too (the ledger counts it as content the
  recipient learns). It is dropped when it contains ``@`` (``"ceo@bank.test"
  <alias@gw>`` would make the gateway's signature carry a fake address) or
  cannot be decoded; control characters are removed and it is cut to
  :data:`MAX_DISPLAY_NAME` characters. ``keep_display_name=False`` drops it
  always, for users who want the alias alone.
- **Nothing names the onion address any more**: ``Sender`` and
  ``Return-Path`` are removed; a ``Reply-To`` that names the box becomes the
  alias; a ``Message-ID`` at the box's onion domain moves to the gateway's
  domain with the same unique part, so the gateway can map replies
  (``In-Reply-To``) back by swapping the domain. Other headers are left as
  the box scrubbed them.
- Headers are handled as bytes with :mod:`onionmail.message.rfc5322` (strict, no
  stdlib re-serialization that might re-fold or re-encode other fields);
  only the display name goes through :mod:`email.utils`, inside a boundary
  that turns parser failures into "no display name".
"""

from __future__ import annotations

import email.errors
import email.header
import email.utils
import re
from dataclasses import dataclass

from gateway.errors import SenderRewriteError
from onionmail.core.errors import AddressError
from onionmail.core.mail_address import parse_mail_address
from onionmail.message.rfc5322 import MessageFormatError, parse_message

MAX_DISPLAY_NAME = 64

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class SenderRewrite:
    """The message as it leaves the gateway, and the envelope sender to use."""

    envelope_sender: str
    message: bytes


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded; raises ValueError when they are broken."""
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (email.errors.HeaderParseError, LookupError, UnicodeDecodeError) as exc:
        raise ValueError("undecodable display name") from exc


def display_name(from_value: bytes) -> str:
    """The display name of a From field value, cleaned; ``""`` when unusable or absent."""
    text = from_value.decode("utf-8", "replace")
    try:
        pairs = email.utils.getaddresses([text])
        name = _decode_words(pairs[0][0]) if pairs else ""
    except (ValueError, IndexError, AttributeError):
        return ""
    name = " ".join(_CONTROL.sub(" ", name).split())
    if "@" in name:
        return ""
    return name[:MAX_DISPLAY_NAME].strip()


def rewrite_sender(
    message: bytes,
    *,
    box_address: str,
    alias: str,
    keep_display_name: bool = True,
) -> SenderRewrite:
    """``message`` (CRLF) from ``box_address`` rewritten to leave as ``alias``.

    Raises :class:`~gateway.errors.SenderRewriteError` for a malformed header
    block, a From missing or repeated, or an alias that is not a plain address.
    """
    try:
        alias_address = parse_mail_address(alias)
        box = parse_mail_address(box_address)
    except AddressError as exc:
        raise SenderRewriteError(f"cannot rewrite the sender: {exc}") from exc
    try:
        parsed = parse_message(message)
    except MessageFormatError as exc:
        raise SenderRewriteError(f"cannot rewrite the sender: {exc}") from exc
    froms = parsed.get_all("From")
    if len(froms) != 1:
        raise SenderRewriteError(
            f"the message has {len(froms)} From header fields; exactly one is required"
        )
    name = display_name(froms[0]) if keep_display_name else ""
    new_from = email.utils.formataddr((name, str(alias_address)), charset="utf-8")
    parsed.set("From", new_from.encode("ascii"))
    parsed.remove("Sender")
    parsed.remove("Return-Path")
    for reply_to in parsed.get_all("Reply-To"):
        if str(box).encode("ascii") in reply_to.lower():
            parsed.set("Reply-To", f"<{alias_address}>".encode("ascii"))
            break
    message_id = parsed.get("Message-ID")
    box_domain = f"@{box.domain}>".encode("ascii")
    if message_id is not None and message_id.lower().endswith(box_domain):
        unique = message_id[: -len(box_domain)]
        parsed.set("Message-ID", unique + f"@{alias_address.domain}>".encode("ascii"))
    return SenderRewrite(envelope_sender=str(alias_address), message=parsed.to_bytes())
