"""What a box and a clearnet gateway say to each other over the gateway's onion.

Both sides import this module (the gateway imports :mod:`onionmail`; the box
never imports the gateway), so the wire format is defined once.

Registration: a message to a special address, not a new SMTP verb
------------------------------------------------------------------

A box registers an alias (``alice@gw.example``) by sending one ordinary
SMTP transaction over Tor to the gateway's onion: ``MAIL FROM:<box
address>``, ``RCPT TO:<register@<gateway onion>>`` and, as DATA, a sealed
envelope (:mod:`onionmail.seal.envelope`) holding a signed request. The
gateway answers in the final reply: ``250 2.0.0 registered <alias>``,
``250 2.0.0 pending <alias> ...`` or a ``550`` with the reason.

Why this rather than an SMTP extension verb or a separate protocol:

* nothing new listens on the onion, and the gateway's box-facing SMTP
  server (with its limits, timeouts and error boundary) handles it;
* the seal already gives confidentiality (the requested alias is not in
  the clear even inside Tor), sender authentication by the onion key, and
  replay protection bound to the session's EHLO challenge;
* an aiosmtpd extension verb would need a subclass of the shared SMTP
  server class; a special recipient needs only a handler.

The request is *also* signed with the box's identity key
(:meth:`~onionmail.seal.identity.Identity.sign`, context
:data:`REGISTRATION_CONTEXT`, so no other use of the key can produce a
valid registration). The seal is deniable by design — the gateway could
have made it itself — whereas the registration is a record the operator
keeps and may have to show ("this box asked for this alias"), so it needs
a signature only the box can make. The signed bytes name the gateway's
onion (a request cannot be replayed to another gateway), the box address,
the alias, a time (accepted within :data:`MAX_REQUEST_SKEW` seconds) and a
16-byte random nonce (the gateway remembers nonces for longer than the
skew window, so a captured request cannot be submitted twice).

Mail from the gateway to a box: a seal inside the seal
------------------------------------------------------

Clearnet mail for an alias is sealed to the box *the moment it arrives*, so
the gateway's queue holds only ciphertext while the box is offline. A
normal envelope cannot be made that early: it is bound to the EHLO
challenge of the SMTP session that delivers it. So the gateway makes an
*inner* envelope at arrival (:func:`seal_for_box`: the same content, sealed
to the box's certified mail key under a one-time key, so that neither the
gateway's keys nor the box's tor can open it, with an all-zero challenge,
the clearnet envelope sender and the box's recipients), queues it, and
later sends it
as the message of an ordinary, session-bound outer envelope from
``gateway@<gateway onion>``. The box opens both (:func:`open_from_gateway`)
and accepts the inner one only from a gateway it has configured.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from onionmail.core.errors import (
    AddressError,
    EnvelopeError,
    EnvelopeMismatchError,
    IdentityError,
    RegistrationError,
)
from onionmail.core.mail_address import is_valid_local_part, parse_mail_address
from onionmail.message.header_claims import claimed_onions
from onionmail.message.rfc5322 import Message, MessageFormatError, parse_message
from onionmail.seal.envelope import (
    ANONYMOUS_MAGIC,
    ANONYMOUS_VERSION_2,
    CHALLENGE_SIZE,
    MAGIC,
    SealedContent,
    mail_key_id,
    open_anonymous,
    open_envelope,
    open_sealed_to_mail_key,
    seal_anonymously,
    seal_to_mail_key,
)
from onionmail.seal.identity import Identity, verify_signature
from onionmail.seal.mail_key import MailKeyring

REGISTRATION_LOCAL_PART = "register"
"""``register@<gateway onion>`` takes registration requests."""
GATEWAY_SENDER_LOCAL_PART = "gateway"
"""The gateway delivers to boxes as ``gateway@<gateway onion>``."""
QUARANTINE_FIELD = "Onionmail-Quarantine"
"""Written by the gateway, inside the seal, on clearnet mail whose From domain asks for
quarantine (DMARC ``p=quarantine``) and which fails it; the box files such mail in its
Junk folder. The gateway removes any copy a clearnet sender wrote."""
REGISTRATION_CONTEXT = b"onionmail gateway registration v1"
"""Signature context (domain separation) of a registration request."""
REGISTRATION_VERSION = 1
MAX_REQUEST_SKEW = 600
"""Seconds a request's time may differ from the gateway's clock."""
NONCE_SIZE = 16
MAX_REQUEST_SIZE = 4096
INNER_CHALLENGE = bytes(CHALLENGE_SIZE)
"""The challenge of an inner envelope: none (it is bound to no session; the outer one is)."""
RESERVED_ALIASES = frozenset(
    {"postmaster", "abuse", "hostmaster", "webmaster", "mailer-daemon", "root", "admin"}
    | {REGISTRATION_LOCAL_PART, GATEWAY_SENDER_LOCAL_PART, "noreply", "security"}
)
"""Aliases a box may not take: they belong to the gateway's operator (RFC 2142)."""


@dataclass(frozen=True)
class RegistrationRequest:
    """What a box asks a gateway for, and its signature."""

    gateway: str
    """The gateway's onion host."""
    box: str
    """The box address the alias stands for (``alice@<box onion>``)."""
    alias: str
    """The local part wanted at the gateway's domain."""
    time: int
    nonce: bytes
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        fields = {
            "v": REGISTRATION_VERSION,
            "gateway": self.gateway,
            "box": self.box,
            "alias": self.alias,
            "time": self.time,
            "nonce": self.nonce.hex(),
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        """The DATA message of a registration (sealed by the caller)."""
        return json.dumps(
            {
                "request": json.loads(self.signed_bytes()),
                "signature": base64.b64encode(self.signature).decode("ascii"),
            },
            sort_keys=True,
        ).encode()


def check_alias(alias: str) -> str:
    """``alias`` lowercased, or :class:`RegistrationError` if it cannot be an alias."""
    value = alias.strip().lower()
    if not is_valid_local_part(value) or len(value) > 64:
        raise RegistrationError(f"{alias!r} is not a valid alias (a mail local part)")
    if value in RESERVED_ALIASES:
        raise RegistrationError(f"the alias {value!r} is reserved for the gateway's operator")
    return value


def build_registration(
    identity: Identity, box_address: str, gateway_onion: str, alias: str, now: float | None = None
) -> RegistrationRequest:
    """A signed request of ``box_address`` (hosted by ``identity``) for ``alias``."""
    box = parse_mail_address(box_address)
    if box.domain != identity.onion_address:
        raise RegistrationError("the box address is not at this box's onion")
    request = RegistrationRequest(
        gateway=gateway_onion.lower(),
        box=str(box),
        alias=check_alias(alias),
        time=int(time.time() if now is None else now),
        nonce=secrets.token_bytes(NONCE_SIZE),
    )
    signature = identity.sign(REGISTRATION_CONTEXT, request.signed_bytes())
    return RegistrationRequest(**{**request.__dict__, "signature": signature})


def parse_registration(data: bytes) -> RegistrationRequest:
    """The request in a registration message; :class:`RegistrationError` if malformed."""
    if len(data) > MAX_REQUEST_SIZE:
        raise RegistrationError("the registration request is too large")
    try:
        outer = json.loads(data)
        fields = outer["request"]
        if fields["v"] != REGISTRATION_VERSION:
            raise RegistrationError("unsupported registration version")
        request = RegistrationRequest(
            gateway=str(fields["gateway"]),
            box=str(fields["box"]),
            alias=str(fields["alias"]),
            time=int(fields["time"]),
            nonce=bytes.fromhex(str(fields["nonce"])),
            signature=base64.b64decode(str(outer["signature"]), validate=True),
        )
    except RegistrationError:
        raise
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise RegistrationError(f"malformed registration request ({type(exc).__name__})") from None
    if len(request.nonce) != NONCE_SIZE:
        raise RegistrationError("the registration nonce must be 16 bytes")
    return request


def verify_registration(
    request: RegistrationRequest, *, sender: str, gateway_onion: str, now: float
) -> None:
    """Check a parsed request against the SMTP sender (the sealed one) and this gateway.

    Raises :class:`RegistrationError` for another gateway, another sender, a
    stale or future time, an invalid alias or a bad signature. The nonce's
    freshness is the caller's to check (it keeps the nonces).
    """
    if request.gateway != gateway_onion.lower():
        raise RegistrationError("the request names another gateway")
    try:
        box = parse_mail_address(request.box)
    except AddressError as exc:
        raise RegistrationError(f"the request's box address is malformed: {exc}") from None
    if str(box) != sender.lower():
        raise RegistrationError("the request's box address differs from the sender")
    if abs(now - request.time) > MAX_REQUEST_SKEW:
        raise RegistrationError("the request is stale or dated in the future (check the clock)")
    if check_alias(request.alias) != request.alias:
        raise RegistrationError("the alias must be given in lower case")
    try:
        verify_signature(
            box.domain, REGISTRATION_CONTEXT, request.signed_bytes(), request.signature
        )
    except (IdentityError, AddressError) as exc:
        raise RegistrationError(f"the request's signature does not verify: {exc}") from None


@dataclass(frozen=True)
class RegistrationReply:
    """The gateway's answer as the box reads it."""

    state: str
    """``registered`` or ``pending``."""
    alias: str
    """The full alias address, ``alice@gw.example``."""


def format_registration_reply(state: str, alias_address: str) -> str:
    if state == "registered":
        return f"250 2.0.0 registered {alias_address}"
    return f"250 2.0.0 pending {alias_address} awaits the gateway operator's approval"


def parse_registration_reply(text: str) -> RegistrationReply:
    """Read the text of a ``250`` reply to a registration."""
    words = text.split()
    if words and words[0][:1].isdigit() and "." in words[0]:
        words = words[1:]  # the enhanced status code
    if len(words) < 2 or words[0] not in ("registered", "pending"):
        raise RegistrationError("the gateway's reply to the registration is not understood")
    try:
        alias = str(parse_mail_address(words[1]))
    except AddressError:
        raise RegistrationError("the gateway's reply names no valid alias") from None
    return RegistrationReply(words[0], alias)


# --- the inner envelope ------------------------------------------------------------------


def seal_for_box(
    box_onion: str,
    *,
    mail_from: str,
    recipients: tuple[str, ...],
    message: bytes,
    now: float | None = None,
    mail_key: bytes | None = None,
) -> bytes:
    """Seal a clearnet message for the box at ``box_onion`` (raw bytes, not base64).

    Under a one-time key: once sealed, the gateway's own key does not open
    it, so nothing on the gateway's disk reads the mail it keeps for an
    offline box. The gateway is authenticated by the session-bound envelope
    the inner one travels in. ``mail_key``: the box's certified mail key, as
    the gateway last saw it (:func:`~onionmail.seal.envelope.seal_to_mail_key`);
    without one (a box not seen since it registered with an older gateway)
    the key derived from the onion address
    (:func:`~onionmail.seal.envelope.seal_anonymously`), which the box's tor
    also holds.
    """
    content = SealedContent(
        envelope_id=secrets.token_bytes(16),
        created=int(time.time() if now is None else now),
        session_challenge=INNER_CHALLENGE,
        mail_from=mail_from,
        recipients=recipients,
        message=message,
    )
    if mail_key is not None:
        return seal_to_mail_key(content, mail_key=mail_key)
    return seal_anonymously(content, recipient_onion=box_onion)


def open_from_gateway(
    blob: bytes,
    *,
    box: Identity,
    gateway_onion: str,
    recipients: tuple[str, ...],
    mail_keys: MailKeyring | None = None,
) -> SealedContent:
    """Open an inner envelope a gateway sealed to ``box``.

    The caller has opened the outer envelope, sealed by ``gateway_onion`` and
    bound to the session. ``recipients`` are the session's: the inner ones
    must be the same set. An inner envelope from the gateway's static key
    (gateways before the one-time key) still opens, as long as such mail may
    wait in a gateway's queue. Raises
    :class:`~onionmail.core.errors.EnvelopeError` (or its ``SealError``) when
    it does not open or does not match.
    """
    if blob.startswith(ANONYMOUS_MAGIC + bytes([ANONYMOUS_VERSION_2])):
        if mail_keys is None:
            raise EnvelopeError("an inner envelope to a mail key needs the box's mail keys")
        content = open_sealed_to_mail_key(blob, _key_lookup(mail_keys))
    elif blob.startswith(ANONYMOUS_MAGIC):
        content = open_anonymous(blob, recipient=box)
    elif blob.startswith(MAGIC):
        content = open_envelope(blob, recipient=box, sender_onion=gateway_onion)
    else:
        raise EnvelopeError("mail from a gateway must hold a sealed inner envelope")
    if content.session_challenge != INNER_CHALLENGE or content.cover:
        raise EnvelopeError("the inner envelope is not a gateway's")
    if {r.lower() for r in content.recipients} != {r.lower() for r in recipients}:
        raise EnvelopeMismatchError("the inner envelope's recipients differ from RCPT TO")
    return content


def _key_lookup(mail_keys: MailKeyring) -> Callable[[bytes], tuple[bytes, bytes] | None]:
    def key_for(key_id: bytes) -> tuple[bytes, bytes] | None:
        mail_keys.refresh()
        for public in mail_keys.public_keys():
            if mail_key_id(public) == key_id:
                pair = mail_keys.key_for(public)
                return None if pair is None else (pair.private, pair.public)
        return None

    return key_for


def check_relayed_from(message: Message, gateway_onion: str) -> None:
    """A message relayed by a gateway may not claim an onion sender other than the gateway.

    An onion sender can seal for itself; a gateway forwarding ``From:
    x@<onion>`` would let whoever controls the gateway (or a clearnet forger
    behind it) impersonate a box. An onion anywhere a reader looks (address,
    display name, comment, trailing dot) counts. Raises :class:`MessageFormatError`.
    """
    if claimed_onions(message) - {gateway_onion.lower()}:
        raise MessageFormatError("mail relayed from the clearnet claims a .onion sender; refused")


GATEWAY_TLS_HEADER = "Onionmail-Gateway-TLS"
"""The box's mark, inside the sealed message, on mail the gateway may send without TLS."""
PLAINTEXT_ALLOWED = b"plaintext-allowed"


def mark_gateway_tls(message: bytes, *, plaintext_allowed: bool) -> bytes:
    """``message`` with the box's mark for the gateway set (``plaintext_allowed``) or
    removed: a mark the user wrote in the message never reaches the gateway."""
    parsed = parse_message(message)
    removed = parsed.remove(GATEWAY_TLS_HEADER)
    if not plaintext_allowed and not removed:
        return message
    if plaintext_allowed:
        parsed.fields.append((GATEWAY_TLS_HEADER, b" " + PLAINTEXT_ALLOWED))
    return parsed.to_bytes()


def take_gateway_tls_mark(message: bytes) -> tuple[bytes, bool]:
    """The gateway's side: ``(message without the mark, plaintext allowed?)``.

    The rest of the message is left byte for byte (its DKIM signature stays valid).
    """
    parsed = parse_message(message)
    values = parsed.get_all(GATEWAY_TLS_HEADER)
    if not values:
        return message, False
    parsed.remove(GATEWAY_TLS_HEADER)
    allowed = all(value.strip().lower() == PLAINTEXT_ALLOWED for value in values)
    return parsed.to_bytes(), allowed
