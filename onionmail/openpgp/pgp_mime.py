"""PGP/MIME (RFC 3156) with protected headers (RFC 9788), both ways.

:func:`encrypt_message` turns the box's outgoing RFC 5322 message into::

    From, To, Cc, Reply-To, Date, Message-ID, In-Reply-To, References  (as they were)
    Subject: ...
    Autocrypt: addr=<alias>; prefer-encrypt=mutual; keydata=...
    MIME-Version: 1.0
    Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=...

      part 1  application/pgp-encrypted   "Version: 1"
      part 2  application/octet-stream    ASCII-armored OpenPGP message, signed by the
                                          box's key, encrypted to the recipient and the box

The encrypted payload is a MIME part carrying the original body and *all* of
the original header fields (Subject, From, To, Date, Message-ID, and the
rest), its Content-Type marked ``hp="cipher"``, plus one ``HP-Outer`` field
per non-structural outer field, so the reader can tell what the outer header
showed. Only the fields needed to deliver and thread the message stay
outside (the list above); everything else, such as Keywords, is only inside.
The outer Subject reads ``...`` (:data:`OBSCURED_SUBJECT`). ``Bcc`` is
dropped inside and out. Never PGP/inline: it leaves subject, attachments
and structure in clear.

Decisions:

* **From must be a user id of the box's key** (:class:`KeyMismatchError`
  otherwise): the message is signed, and a signature whose key does not
  name the sender would be a warning at the recipient. It also catches the
  mistake of encrypting a message still sent from the onion address, which
  the gateway could no longer rewrite to the alias once encrypted.
* **No legacy display part** (RFC 9788's optional text/plain element that
  repeats the Subject for old clients): clients that understand the
  ``hp`` parameter or the older ``protected-headers="v1"`` show the real
  Subject; the others show ``...``, which is the point.
* On decryption the restored message takes every header field from the
  protected part (when it is marked ``hp=`` or ``protected-headers=``) and,
  from outside, only trace fields (Received, Return-Path, Delivered-To,
  Authentication-Results): an unprotected outer field that a relay added,
  say Reply-To, does not reach the reader of a protected message. A message
  without protected headers keeps its outer fields and takes the MIME
  fields of the decrypted part.
* The restored message starts with ``Onionmail-OpenPGP:`` saying it was
  decrypted and what the signature check found; any such field arriving from
  outside or inside is removed first, so a sender cannot forge it.
* The signature is checked against the key stored for the From address
  (the protected one where present), both for a combined signed+encrypted
  message (RFC 3156 6.2) and for multipart/signed inside the encryption (6.1).
"""

from __future__ import annotations

import datetime
import email.message
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from onionmail.core.errors import DecryptionError, KeyMismatchError, OpenPGPError
from onionmail.message.rfc5322 import Message, MessageFormatError, parse_message, unfold
from onionmail.openpgp import STATUS_FIELD
from onionmail.openpgp.autocrypt import format_autocrypt_header, single_address
from onionmail.openpgp.keys import (
    BoxKey,
    PublicKey,
    SignatureStatus,
    decrypt,
    sign_and_encrypt,
    verify_detached,
)

OBSCURED_SUBJECT = b"..."
#: Outer fields kept as they are: what delivery and threading need.
OUTER_FIELDS = frozenset(
    ("from", "to", "cc", "reply-to", "date", "message-id", "in-reply-to", "references")
)
#: Outer fields a decrypted message keeps: the relays' trace, never content.
TRACE_FIELDS = frozenset(("return-path", "received", "delivered-to", "authentication-results"))
#: Never copied into the protected part.
_NOT_INSIDE = frozenset(
    ("bcc", "mime-version", "received", "return-path", "hp-outer", STATUS_FIELD.lower())
)
PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"

_HP_PARAMETER = re.compile(rb';\s*(hp|protected-headers)\s*=\s*("[^"]*"|[^;\s]*)', re.IGNORECASE)
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _is_mime_field(name: str) -> bool:
    return name.lower().startswith("content-")


def _with_hp_cipher(content_type: bytes | None) -> bytes:
    value = content_type if content_type is not None else b'text/plain; charset="us-ascii"'
    return _HP_PARAMETER.sub(b"", unfold(value)).rstrip(b"; \t") + b'; hp="cipher"'


def _outer_fields(original: Message) -> list[tuple[str, bytes]]:
    kept: list[tuple[str, bytes]] = []
    for name, value in original.fields:
        if name.lower() == "subject":
            kept.append((name, b" " + OBSCURED_SUBJECT))
        elif name.lower() in OUTER_FIELDS:
            kept.append((name, value))
    return kept


def _inner_part(original: Message, outer: list[tuple[str, bytes]]) -> bytes:
    fields: list[tuple[str, bytes]] = [
        ("Content-Type", b" " + _with_hp_cipher(original.get("Content-Type")))
    ]
    for name, value in original.fields:
        if name.lower() not in _NOT_INSIDE and name.lower() != "content-type":
            fields.append((name, value))
    for name, value in outer:
        fields.append(("HP-Outer", b" " + name.encode("ascii") + b": " + unfold(value)))
    return Message(fields=fields, body=original.body).to_bytes()


def encrypt_message(
    message: bytes,
    box_key: BoxKey,
    recipients: list[PublicKey],
    *,
    autocrypt: bool = True,
    signed_at: datetime.datetime | None = None,
) -> bytes:
    """The PGP/MIME form of ``message`` (CRLF line ends), signed and encrypted.

    Encrypted to every key in ``recipients`` and to the box's own key. With
    ``autocrypt`` the outer header carries the box's ``Autocrypt:`` field;
    ``signed_at`` is the signature's time (:func:`~onionmail.openpgp.keys.sign_and_encrypt`).
    """
    try:
        original = parse_message(message)
    except MessageFormatError as exc:
        raise OpenPGPError(f"cannot encrypt a malformed message: {exc}") from exc
    sender = single_address(original.get("From"))
    if sender is None or sender not in box_key.addresses:
        raise KeyMismatchError(
            "the message's From is not an address of the box's OpenPGP key; send it from the "
            "gateway alias the key was made for"
        )
    outer_fields = _outer_fields(original)
    inner = _inner_part(original, outer_fields)
    armored = sign_and_encrypt(inner, box_key, recipients, signed_at=signed_at)
    boundary = b"om-" + secrets.token_hex(12).encode("ascii")
    fields = list(outer_fields)
    if autocrypt:
        value = format_autocrypt_header(sender, box_key.public.data, prefer_encrypt_mutual=True)
        fields.append(("Autocrypt", b" " + value))
    fields += [
        ("MIME-Version", b" 1.0"),
        (
            "Content-Type",
            b' multipart/encrypted; protocol="application/pgp-encrypted";\r\n boundary="'
            + boundary
            + b'"',
        ),
    ]
    body = b"".join(
        [
            PREAMBLE,
            b"\r\n--" + boundary + b"\r\n",
            b"Content-Type: application/pgp-encrypted\r\n",
            b"Content-Description: PGP/MIME version identification\r\n\r\n",
            b"Version: 1\r\n",
            b"\r\n--" + boundary + b"\r\n",
            b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n',
            b"Content-Description: OpenPGP encrypted message\r\n",
            b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n',
            armored.encode("ascii").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(),
            b"\r\n\r\n--" + boundary + b"--\r\n",
        ]
    )
    return Message(fields=fields, body=body).to_bytes()


# --- decryption ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DecryptedMessage:
    """A decrypted PGP/MIME message and what its signature check found."""

    message: bytes  # RFC 5322, CRLF, the protected header fields restored
    signature: SignatureStatus
    protected_headers: bool  # the decrypted part carried the real header (RFC 9788)

    def __repr__(self) -> str:
        return f"DecryptedMessage(<{len(self.message)} bytes>, {self.signature.value})"


def _content_type(value: bytes | None) -> email.message.Message:
    """Content-Type parameters, parsed by the standard library (quoting, folding)."""
    holder = email.message.Message()
    holder["Content-Type"] = unfold(value or b"text/plain").decode("ascii", "replace")
    return holder


def _param(holder: email.message.Message, name: str) -> str | None:
    value = holder.get_param(name)
    return value if isinstance(value, str) else None


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The parts of a multipart body, byte-exact (RFC 2046: the CRLF before a delimiter
    belongs to the delimiter), as needed to check a detached signature."""
    pattern = re.compile(rb"\r\n--" + re.escape(boundary.encode("ascii")) + rb"(--)?[ \t]*(\r\n|$)")
    parts: list[bytes] = []
    start: int | None = None
    text = b"\r\n" + body
    for match in pattern.finditer(text):
        if start is not None:
            parts.append(text[start : match.start()])
        if match.group(1):
            return parts
        start = match.end()
    raise DecryptionError("the multipart body has no closing boundary")


def is_pgp_mime(message: bytes) -> bool:
    """Whether ``message`` is PGP/MIME encrypted (RFC 3156 multipart/encrypted)."""
    try:
        ctype = _content_type(parse_message(message).get("Content-Type"))
    except MessageFormatError:
        return False
    return ctype.get_content_type() == "multipart/encrypted" and (
        (_param(ctype, "protocol") or "").lower() == "application/pgp-encrypted"
    )


def _ciphertext(outer: Message) -> bytes:
    ctype = _content_type(outer.get("Content-Type"))
    boundary = _param(ctype, "boundary")
    protocol = (_param(ctype, "protocol") or "").lower()
    if ctype.get_content_type() != "multipart/encrypted" or not boundary:
        raise DecryptionError("not a PGP/MIME encrypted message (RFC 3156)")
    if protocol != "application/pgp-encrypted":
        raise DecryptionError("not a PGP/MIME encrypted message (RFC 3156)")
    parts = _split_multipart(outer.body, boundary)
    if len(parts) != 2:
        raise DecryptionError("a PGP/MIME message has exactly two parts")
    try:
        version, payload = parse_message(parts[0]), parse_message(parts[1])
    except MessageFormatError as exc:
        raise DecryptionError("a PGP/MIME part is malformed") from exc
    if _content_type(version.get("Content-Type")).get_content_type() != "application/pgp-encrypted":
        raise DecryptionError("the first PGP/MIME part is not application/pgp-encrypted")
    if not re.search(rb"^Version:[ \t]*1[ \t]*\r?$", version.body, re.MULTILINE):
        raise DecryptionError("the PGP/MIME version part does not say Version: 1")
    if _content_type(payload.get("Content-Type")).get_content_type() != "application/octet-stream":
        raise DecryptionError("the second PGP/MIME part is not application/octet-stream")
    return payload.body


def _unwrap_signed(inner: Message) -> tuple[Message, bytes, bytes] | None:
    """(signed part, its exact bytes, armored signature) of a multipart/signed, or None."""
    ctype = _content_type(inner.get("Content-Type"))
    if ctype.get_content_type() != "multipart/signed":
        return None
    boundary = _param(ctype, "boundary")
    if (_param(ctype, "protocol") or "").lower() != "application/pgp-signature" or not boundary:
        return None
    parts = _split_multipart(inner.body, boundary)
    if len(parts) != 2:
        raise DecryptionError("a multipart/signed part has exactly two parts")
    try:
        return parse_message(parts[0]), parts[0], parse_message(parts[1]).body
    except MessageFormatError as exc:
        raise DecryptionError("a multipart/signed part is malformed") from exc


def _restored(outer: Message, inner: Message, protected: bool, status: bytes) -> bytes:
    if protected:
        fields = [(n, v) for n, v in outer.fields if n.lower() in TRACE_FIELDS]
        fields += [(n, v) for n, v in inner.fields if n.lower() not in ("hp-outer",)]
    else:
        fields = [
            (n, v) for n, v in outer.fields if not _is_mime_field(n) and n.lower() != "mime-version"
        ]
        fields += [(n, v) for n, v in inner.fields if _is_mime_field(n)]
    fields = [(n, v) for n, v in fields if n.lower() != STATUS_FIELD.lower()]
    if not any(n.lower() == "mime-version" for n, _ in fields):
        fields.append(("MIME-Version", b" 1.0"))
    fields.insert(0, (STATUS_FIELD, b" " + status))
    return Message(fields=fields, body=inner.body).to_bytes()


def decrypt_message(
    message: bytes, box_key: BoxKey, sender_key: Callable[[str], PublicKey | None]
) -> DecryptedMessage:
    """Decrypt a PGP/MIME ``message`` to the box and restore its protected header.

    ``sender_key(address)`` returns the stored key for an address (or None);
    it is asked for the From address to check the signature with.
    :class:`DecryptionError` if the message is not PGP/MIME to this box's key.
    """
    try:
        outer = parse_message(message)
    except MessageFormatError as exc:
        raise DecryptionError(f"the message is malformed: {exc}") from exc
    decrypted = decrypt(_ciphertext(outer), box_key)
    try:
        inner = parse_message(_BARE_LF.sub(b"\r\n", decrypted.data))
    except MessageFormatError as exc:
        raise DecryptionError("the decrypted part is not a MIME entity") from exc
    signed = _unwrap_signed(inner)
    if signed is not None:
        inner = signed[0]
    ctype = _content_type(inner.get("Content-Type"))
    protected = _param(ctype, "hp") is not None or _param(ctype, "protected-headers") is not None
    sender = single_address(inner.get("From") if protected else outer.get("From"))
    key = sender_key(sender) if sender else None
    status = decrypted.verify(key)
    if signed is not None and status is SignatureStatus.UNSIGNED:
        status = verify_detached(signed[1], signed[2], key)
    summary = b"decrypted; signature=" + status.value.encode("ascii")
    if status is SignatureStatus.VERIFIED and key is not None:
        summary += b"; signer=" + key.fingerprint.encode("ascii")
    return DecryptedMessage(
        message=_restored(outer, inner, protected, summary),
        signature=status,
        protected_headers=protected,
    )
