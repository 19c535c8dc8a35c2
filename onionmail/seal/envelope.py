"""The sealed envelope: the DATA payload between two onionmail boxes.

When a peer's EHLO reply carries :data:`SEAL_KEYWORD`, the sending box sends
this envelope instead of the message, base64-encoded
(:func:`encode_for_smtp`): ``b"OMSE" | version | nonce | crypto_box
ciphertext`` of the padded content, bound to the receiver's session
challenge. :func:`seal_anonymously` is the gateway's inner variant under a
one-time key. The layout, what each part proves and what version 1 does not
give (forward secrecy, resistance to key-compromise impersonation):
docs/sealed-envelope.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.utils

from onionmail.core.errors import EnvelopeError, EnvelopeMismatchError, ReplayError, SealError
from onionmail.seal.identity import Identity, x25519_public_key_for_onion
from onionmail.seal.padding import pad

ENVELOPE_VERSION = 1
MAX_ENVELOPE_AGE = 7 * 24 * 3600
"""Seconds after ``created`` an envelope is refused as stale."""
MAX_CLOCK_SKEW = 10 * 60
"""Seconds an envelope's ``created`` may lie in the receiver's future."""
MAGIC = b"OMSE"
ENVELOPE_ID_SIZE = 16
CHALLENGE_SIZE = 16
NONCE_SIZE = nacl.public.Box.NONCE_SIZE
MAC_SIZE = 16
HEADER = MAGIC + bytes([ENVELOPE_VERSION])
ENVELOPE_OVERHEAD = len(HEADER) + NONCE_SIZE + MAC_SIZE
"""Bytes an envelope adds to its padded plaintext (clear header, nonce, MAC)."""
MAX_ENVELOPE_SIZE = 128 * 1024 * 1024
"""Largest envelope sealed or opened (bounds memory whatever the peer sends)."""
MAX_MESSAGE_SIZE = 100 * 1024 * 1024
"""Largest RFC 5322 message that fits (its Padmé bucket stays under the envelope limit)."""

SEAL_KEYWORD = "X-ONIONMAIL-SEAL"
EXPRESS = "EXPRESS"
"""Last word of an onionmail box's greeting, after the seal keyword and challenge: the
server takes EHLO pipelined with the first transaction, and BDAT (one round trip)."""
SEAL_KEYWORD_VERSION = "v1"

_KEY_SIZE = 32
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_SMTP_LINE = 76
_FLAG_COVER = 0x01


@dataclass(frozen=True)
class SealedContent:
    """What the sender seals: the message and the SMTP data it is bound to.

    Construction validates sizes and raises :class:`EnvelopeError`.
    """

    envelope_id: bytes
    """16 random bytes chosen once per queued message, stable across retries."""
    created: int
    """Unix seconds when the message was queued."""
    session_challenge: bytes
    """The 16 bytes the receiver announced in this SMTP session's EHLO reply."""
    mail_from: str
    """The SMTP reverse path (``MAIL FROM``), without angle brackets."""
    recipients: tuple[str, ...]
    """The SMTP forward paths (``RCPT TO``) the receiver accepted."""
    message: bytes
    """The RFC 5322 message (empty in a dummy)."""
    cover: bool = False
    """Cover traffic: a dummy the receiving box drops once it has opened the seal."""
    seal_version: int = field(default=ENVELOPE_VERSION, compare=False)
    """Set by the opener, never sealed: 1, or 2 for the handshake seal (forward secret)."""
    sender_certificate: bytes = field(default=b"", compare=False, repr=False)
    """Set by the opener of a version 2 seal: the sender's mail key certificate."""

    def __post_init__(self) -> None:
        _check_size("envelope id", self.envelope_id, ENVELOPE_ID_SIZE)
        _check_size("session challenge", self.session_challenge, CHALLENGE_SIZE)
        if type(self.created) is not int or not 0 <= self.created < 2**64:
            raise EnvelopeError("the envelope's creation time is out of range")
        if not isinstance(self.recipients, tuple):
            raise EnvelopeError("the envelope's recipients must be a tuple")
        if len(self.recipients) > 0xFFFF:
            raise EnvelopeError("too many recipients for one envelope")
        if not isinstance(self.message, bytes) or len(self.message) > MAX_MESSAGE_SIZE:
            raise EnvelopeError(f"the message is larger than {MAX_MESSAGE_SIZE} bytes")
        if type(self.cover) is not bool:
            raise EnvelopeError("the envelope's cover flag must be true or false")

    def __repr__(self) -> str:
        """Addresses, challenge and message stay out of logs and tracebacks."""
        return (
            f"SealedContent(envelope_id={self.envelope_id.hex()}, created={self.created}, "
            f"recipients=<{len(self.recipients)}>, message=<{len(self.message)} bytes>)"
        )


def _check_size(what: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise EnvelopeError(f"the {what} must be {size} bytes")


# --- sealing -----------------------------------------------------------------


def seal(content: SealedContent, *, sender: Identity, recipient_onion: str) -> bytes:
    """Seal ``content`` from ``sender`` to the box at ``recipient_onion``.

    Raises :class:`~onionmail.core.errors.AddressError` if ``recipient_onion`` is
    not a v3 onion host, :class:`EnvelopeError` if an address does not fit.
    """
    recipient_key = x25519_public_key_for_onion(recipient_onion)
    plaintext = pad(HEADER + bytes(recipient_key) + encode_content(content))
    if len(plaintext) + ENVELOPE_OVERHEAD > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope would exceed {MAX_ENVELOPE_SIZE} bytes")
    nonce = nacl.utils.random(NONCE_SIZE)
    box = nacl.public.Box(sender.x25519_private_key(), recipient_key)
    return HEADER + nonce + box.encrypt(plaintext, nonce).ciphertext


ANONYMOUS_MAGIC = b"OMSA"
ANONYMOUS_HEADER = ANONYMOUS_MAGIC + bytes([ENVELOPE_VERSION])


def seal_anonymously(content: SealedContent, *, recipient_onion: str) -> bytes:
    """Seal ``content`` to the box at ``recipient_onion`` under a one-time sender key.

    libsodium's sealed box: once sealed, nothing but the recipient's key opens
    it, not even the sealer's own. It proves nothing about who sealed it; the
    layer around it must (a gateway's inner envelope travels inside the
    gateway's session-bound envelope).
    """
    recipient_key = x25519_public_key_for_onion(recipient_onion)
    plaintext = pad(ANONYMOUS_HEADER + bytes(recipient_key) + encode_content(content))
    if len(plaintext) + ENVELOPE_OVERHEAD > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope would exceed {MAX_ENVELOPE_SIZE} bytes")
    return ANONYMOUS_HEADER + nacl.public.SealedBox(recipient_key).encrypt(plaintext)


def open_anonymous(envelope: bytes, *, recipient: Identity) -> SealedContent:
    """Open an envelope :func:`seal_anonymously` sealed to ``recipient``.

    :class:`EnvelopeError` if it is malformed, :class:`SealError` if it was not
    sealed to this box; no other exception escapes.
    """
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope exceeds {MAX_ENVELOPE_SIZE} bytes")
    if not envelope.startswith(ANONYMOUS_HEADER):
        raise EnvelopeError("not an anonymously sealed onionmail envelope")
    if len(envelope) < len(ANONYMOUS_HEADER) + nacl.bindings.crypto_box_SEALBYTES:
        raise EnvelopeError("the sealed envelope is truncated")
    unseal = nacl.public.SealedBox(recipient.x25519_private_key())
    try:
        plaintext = unseal.decrypt(envelope[len(ANONYMOUS_HEADER) :])
    except nacl.exceptions.CryptoError:
        raise SealError("the sealed envelope does not open with this box's key") from None
    return parse_content(plaintext, bytes(recipient.x25519_public_key()), ANONYMOUS_HEADER)


ANONYMOUS_VERSION_2 = 2
KEY_ID_SIZE = 8


def mail_key_id(mail_key: bytes) -> bytes:
    """The 8 bytes naming a mail key in an anonymous envelope's clear header."""
    return hashlib.blake2b(mail_key, digest_size=KEY_ID_SIZE, person=b"om-mail-key-id").digest()


def seal_to_mail_key(content: SealedContent, *, mail_key: bytes) -> bytes:
    """Seal ``content`` under a one-time sender key to a box's certified mail key.

    The gateway's inner envelope, version 2: ``b"OMSA" | 2 | key id (8)``,
    then libsodium's sealed box of the padded header and content. The key id
    tells the box which of its mail keys (current or retired) opens it.
    """
    header = ANONYMOUS_MAGIC + bytes([ANONYMOUS_VERSION_2]) + mail_key_id(mail_key)
    plaintext = pad(header + encode_content(content))
    if len(plaintext) + len(header) + nacl.bindings.crypto_box_SEALBYTES > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope would exceed {MAX_ENVELOPE_SIZE} bytes")
    return header + nacl.public.SealedBox(nacl.public.PublicKey(mail_key)).encrypt(plaintext)


def open_sealed_to_mail_key(
    envelope: bytes, key_for: Callable[[bytes], tuple[bytes, bytes] | None]
) -> SealedContent:
    """Open a :func:`seal_to_mail_key` envelope; ``key_for(key id)`` gives (private, public).

    :class:`EnvelopeError` if malformed, :class:`SealError` if no key of this
    box opens it (sealed to another box, or to a key already erased).
    """
    size = len(ANONYMOUS_HEADER) + KEY_ID_SIZE
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope exceeds {MAX_ENVELOPE_SIZE} bytes")
    if envelope[: len(ANONYMOUS_MAGIC) + 1] != ANONYMOUS_MAGIC + bytes([ANONYMOUS_VERSION_2]):
        raise EnvelopeError("not a version 2 anonymously sealed envelope")
    if len(envelope) < size + nacl.bindings.crypto_box_SEALBYTES:
        raise EnvelopeError("the sealed envelope is truncated")
    header = envelope[:size]
    pair = key_for(header[-KEY_ID_SIZE:])
    if pair is None:
        raise SealError("the envelope is sealed to a mail key this box does not hold")
    private, public = pair
    unseal = nacl.public.SealedBox(nacl.public.PrivateKey(private))
    try:
        plaintext = unseal.decrypt(envelope[size:])
    except nacl.exceptions.CryptoError:
        raise SealError("the sealed envelope does not open with this box's mail key") from None
    return parse_content(plaintext, None, header)


def encode_content(content: SealedContent) -> bytes:
    """The sealed fields of ``content``, length-prefixed (the layout: docs/sealed-envelope.md)."""
    parts = [
        content.envelope_id,
        _U64.pack(content.created),
        content.session_challenge,
        _encode_text("sender address", content.mail_from),
        _U16.pack(len(content.recipients)),
    ]
    parts.extend(_encode_text("recipient address", rcpt) for rcpt in content.recipients)
    parts.append(_U32.pack(len(content.message)))
    parts.append(content.message)
    parts.append(bytes([_FLAG_COVER if content.cover else 0]))
    return b"".join(parts)


def _encode_text(what: str, text: str) -> bytes:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvelopeError(f"the {what} is not valid Unicode") from None
    if len(raw) > 0xFFFF:
        raise EnvelopeError(f"the {what} is too long to seal")
    return _U16.pack(len(raw)) + raw


# --- opening -----------------------------------------------------------------


def open_envelope(envelope: bytes, *, recipient: Identity, sender_onion: str) -> SealedContent:
    """Open an envelope sealed to ``recipient`` by the box at ``sender_onion``.

    Raises :class:`EnvelopeError` if the envelope is malformed (magic,
    version, length, inner structure) and :class:`SealError` if it does not
    open with the key derived from ``sender_onion`` or was sealed for another
    box. No other exception escapes for any ``envelope``; a malformed
    ``sender_onion`` raises :class:`~onionmail.core.errors.AddressError`.
    """
    sender_key = x25519_public_key_for_onion(sender_onion)
    nonce, ciphertext = _split_envelope(envelope)
    box = nacl.public.Box(recipient.x25519_private_key(), sender_key)
    try:
        plaintext = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise SealError("the sealed envelope does not open with the sender's onion key") from None
    return parse_content(plaintext, bytes(recipient.x25519_public_key()))


def _split_envelope(envelope: bytes) -> tuple[bytes, bytes]:
    """Check the clear header and lengths; return (nonce, ciphertext)."""
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope exceeds {MAX_ENVELOPE_SIZE} bytes")
    if envelope[: len(MAGIC)] != MAGIC:
        raise EnvelopeError("not an onionmail sealed envelope (wrong magic)")
    if len(envelope) <= len(MAGIC):
        raise EnvelopeError("the sealed envelope is truncated")
    if envelope[len(MAGIC)] != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported sealed envelope version {envelope[len(MAGIC)]}")
    if len(envelope) < ENVELOPE_OVERHEAD:
        raise EnvelopeError("the sealed envelope is truncated")
    body = envelope[len(HEADER) :]
    return body[:NONCE_SIZE], body[NONCE_SIZE:]


class _Reader:
    """Reads length-prefixed fields; any shortfall is an :class:`EnvelopeError`."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise EnvelopeError("the sealed content is truncated (a length runs past its end)")
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk

    def uint(self, fmt: struct.Struct) -> int:
        value: int = fmt.unpack(self.take(fmt.size))[0]
        return value

    def text(self) -> str:
        raw = self.take(self.uint(_U16))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("an address in the sealed content is not UTF-8") from None

    def rest(self) -> bytes:
        return bytes(self._data[self._pos :])


def parse_content(plaintext: bytes, own_key: bytes | None, header: bytes = HEADER) -> SealedContent:
    """The parsing boundary: only :class:`EnvelopeError` leaves it.

    ``own_key``: the recipient key a version 1 plaintext names after its header
    (None for version 2, whose handshake binds both parties instead).
    """
    try:
        return _parse_fields(_Reader(plaintext), own_key, header)
    except EnvelopeError:
        raise
    except (ValueError, struct.error, OverflowError) as exc:
        raise EnvelopeError(f"the sealed content is malformed ({type(exc).__name__})") from None


def _parse_fields(reader: _Reader, own_key: bytes | None, header: bytes) -> SealedContent:
    if reader.take(len(header)) != header:
        raise EnvelopeError("the sealed content's header disagrees with the envelope's")
    if own_key is not None and not hmac.compare_digest(reader.take(_KEY_SIZE), own_key):
        raise SealError("the sealed envelope was sealed for another box")
    envelope_id = reader.take(ENVELOPE_ID_SIZE)
    created = reader.uint(_U64)
    challenge = reader.take(CHALLENGE_SIZE)
    mail_from = reader.text()
    recipients = tuple(reader.text() for _ in range(reader.uint(_U16)))
    message = reader.take(reader.uint(_U32))
    # The flags byte, or (sealed before it existed) the first byte of padding.
    rest = reader.rest()
    flags = rest[0] if rest else 0
    if flags not in (0, _FLAG_COVER) or any(rest[1:]):
        raise EnvelopeError("the sealed content's padding is not zero")
    cover = flags == _FLAG_COVER
    return SealedContent(envelope_id, created, challenge, mail_from, recipients, message, cover)


# --- binding to the SMTP session ----------------------------------------------


def verify_binding(
    content: SealedContent,
    *,
    mail_from: str,
    recipients: Sequence[str],
    session_challenge: bytes,
    now: float,
    max_age: int = MAX_ENVELOPE_AGE,
) -> None:
    """Check that opened ``content`` belongs to this SMTP transaction and is fresh.

    Raises :class:`EnvelopeMismatchError` if the sealed sender, recipient set
    or session challenge differ from the session's, and :class:`ReplayError`
    if ``created`` is older than ``max_age`` or over 10 minutes in the future.
    Addresses compare case-insensitively; recipients as a set.
    """
    if content.mail_from.lower() != mail_from.lower():
        raise EnvelopeMismatchError("the sealed sender differs from MAIL FROM")
    sealed = {rcpt.lower() for rcpt in content.recipients}
    if sealed != {rcpt.lower() for rcpt in recipients}:
        raise EnvelopeMismatchError("the sealed recipients differ from RCPT TO")
    if not hmac.compare_digest(content.session_challenge, session_challenge):
        raise EnvelopeMismatchError(
            "the sealed session challenge is not this session's (a replayed capture?)"
        )
    if content.created < now - max_age:
        raise ReplayError("the envelope is stale (older than the accepted window)")
    if content.created > now + MAX_CLOCK_SKEW:
        raise ReplayError("the envelope is dated in the future (check the sender's clock)")


# --- SMTP transfer encoding ---------------------------------------------------


def encode_for_smtp(envelope: bytes) -> bytes:
    """Base64 ``envelope`` in CRLF-terminated lines of 76 characters, for DATA.

    No line can start with ``.`` (not in the base64 alphabet), so SMTP dot
    stuffing never changes it.
    """
    text = base64.b64encode(envelope)
    lines = [text[i : i + _SMTP_LINE] for i in range(0, len(text), _SMTP_LINE)]
    return b"".join(line + b"\r\n" for line in lines)


def decode_from_smtp(data: bytes) -> bytes:
    """Inverse of :func:`encode_for_smtp`; :class:`EnvelopeError` if not base64.

    Lines may end in CRLF or LF and the last line break is optional; anything
    else (blank lines, spaces, characters outside base64, bad padding) is
    refused.
    """
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if not lines or not all(lines):
        raise EnvelopeError("the DATA is not a base64 sealed envelope (empty line)")
    try:
        return binascii.a2b_base64(b"".join(lines), strict_mode=True)
    except binascii.Error:
        raise EnvelopeError("the DATA is not a base64 sealed envelope") from None


# --- ESMTP keyword ------------------------------------------------------------


def format_seal_keyword(challenge: bytes) -> str:
    """The EHLO reply line announcing sealing, with this session's challenge."""
    _check_size("session challenge", challenge, CHALLENGE_SIZE)
    token = base64.urlsafe_b64encode(challenge).rstrip(b"=").decode("ascii")
    return f"{SEAL_KEYWORD} {SEAL_KEYWORD_VERSION} {token}"


def parse_seal_keyword_params(params: str) -> bytes:
    """The challenge from the keyword's parameters (``"v1 <base64url>"``).

    Raises :class:`EnvelopeError` if they are malformed or name another version.
    """
    fields = params.split()
    if len(fields) != 2:
        raise EnvelopeError("the seal announcement needs a version and a challenge")
    version, token = fields
    if version != SEAL_KEYWORD_VERSION:
        raise EnvelopeError("the peer announces an unsupported seal version")
    challenge = _decode_challenge(token)
    if format_seal_keyword(challenge).rsplit(" ", 1)[1] != token:
        raise EnvelopeError("the seal challenge is not canonical base64url")
    return challenge


def _decode_challenge(token: str) -> bytes:
    try:
        raw = token.encode("ascii")
        challenge = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise EnvelopeError("the seal challenge is not base64url") from None
    if len(challenge) != CHALLENGE_SIZE:
        raise EnvelopeError(f"the seal challenge must be {CHALLENGE_SIZE} bytes")
    return challenge
