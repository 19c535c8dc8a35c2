"""The version 2 seal: a Noise ``KX`` handshake carried by the SMTP session.

The receiving box speaks first in SMTP, so it is the Noise *initiator*: its
greeting (and EHLO reply) carries :data:`SEAL2_KEYWORD` with a fresh
ephemeral key — the handshake's first message, ``-> e`` — and its mail key
certificate (:mod:`onionmail.seal.mail_key`), whose key is the pattern's
pre-message ``-> s``. The sending box answers in its DATA with the second
message, ``<- e, ee, se, s, es``, whose payload is its own certificate and
the length of what follows; the sealed content follows as Noise transport
messages of the responder's cipher state. So the handshake costs no round
trip the session did not already have::

    envelope = b"OMSE" | 2 | message 2 (221 bytes) | transport messages
    message 2 = e (32) | s encrypted (48) | payload encrypted (certificate 117 + u64 length + 16)

The prologue names both onions (sender, then recipient), so an envelope
cannot be redirected or reflected. What each part proves, and what it does
not: docs/sealed-envelope.md. :func:`seal_in_session` and
:func:`open_in_session` are the two sides; :class:`ReceiverSession` is the
receiver's state for one SMTP session (its ephemeral key, dropped with it).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass, field, replace

from onionmail.core.errors import EnvelopeError, SealError
from onionmail.seal.envelope import (
    MAGIC,
    MAX_ENVELOPE_SIZE,
    SealedContent,
    encode_content,
    parse_content,
)
from onionmail.seal.mail_key import CERTIFICATE_SIZE, MailKeyCertificate, MailKeyring
from onionmail.seal.noise import DHLEN, MAX_MESSAGE, TAGLEN, HandshakeState, KeyPair
from onionmail.seal.padding import pad

SEAL2_KEYWORD = "X-ONIONMAIL-SEAL2"
VERSION = 2
HEADER = MAGIC + bytes([VERSION])
PATTERN = "KX"
_LENGTH = struct.Struct(">Q")
MESSAGE2_SIZE = DHLEN + (DHLEN + TAGLEN) + (CERTIFICATE_SIZE + _LENGTH.size + TAGLEN)
CHUNK = MAX_MESSAGE - TAGLEN
"""Plaintext bytes per transport message (each is at most the Noise limit)."""


def prologue(sender_onion: str, recipient_onion: str) -> bytes:
    """Both onions, sender first: an envelope opens only between these two, this way round."""
    return b"\0".join(
        [b"onionmail seal v2", sender_onion.lower().encode(), recipient_onion.lower().encode()]
    )


@dataclass(frozen=True, repr=False)
class ReceiverSession:
    """The receiving side of one SMTP session: a fresh ephemeral key, the current mail key."""

    mail_key: KeyPair
    certificate: bytes
    ephemeral: KeyPair = field(default_factory=KeyPair.generate)

    @classmethod
    def start(cls, keyring: MailKeyring) -> ReceiverSession:
        return cls(keyring.current, keyring.certificate.encode())

    def announcement(self) -> str:
        """The keyword's parameter: the first handshake message and the certificate."""
        raw = self.ephemeral.public + self.certificate
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Announcement:
    """What a sending box learned from the receiver's greeting, checked."""

    ephemeral: bytes
    certificate: MailKeyCertificate


def parse_announcement(token: str, recipient_onion: str, now: float) -> Announcement:
    """The receiver's ephemeral key and its certificate, signed by ``recipient_onion``.

    :class:`EnvelopeError` if malformed, :class:`SealError` if the certificate
    is not the onion's or not valid now.
    """
    try:
        raw = token.encode("ascii")
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise EnvelopeError("the seal v2 announcement is not base64url") from None
    if len(data) != DHLEN + CERTIFICATE_SIZE:
        raise EnvelopeError("the seal v2 announcement has the wrong length")
    certificate = MailKeyCertificate.verify(data[DHLEN:], recipient_onion, now)
    return Announcement(data[:DHLEN], certificate)


def seal_in_session(
    content: SealedContent,
    *,
    keyring: MailKeyring,
    announcement: Announcement,
    sender_onion: str,
    recipient_onion: str,
) -> bytes:
    """Seal ``content`` as the handshake's second message and transport messages.

    The sender's ephemeral key lives only inside this call.
    """
    handshake = HandshakeState(
        PATTERN,
        initiator=False,
        prologue=prologue(sender_onion, recipient_onion),
        static=keyring.current,
        remote_static=announcement.certificate.mail_key,
    )
    handshake.read_message(announcement.ephemeral)
    plaintext = pad(HEADER + encode_content(content))
    overhead = len(HEADER) + MESSAGE2_SIZE + (len(plaintext) // CHUNK + 1) * TAGLEN
    if len(plaintext) + overhead > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope would exceed {MAX_ENVELOPE_SIZE} bytes")
    message2 = handshake.write_message(keyring.certificate.encode() + _LENGTH.pack(len(plaintext)))
    assert handshake.transport is not None
    lane = handshake.transport[1]
    view = memoryview(plaintext)
    parts = [HEADER, message2]
    parts.extend(
        lane.encrypt_with_ad(b"", bytes(view[i : i + CHUNK])) for i in range(0, len(view), CHUNK)
    )
    return b"".join(parts)


def open_in_session(
    envelope: bytes,
    *,
    session: ReceiverSession,
    sender_onion: str,
    recipient_onion: str,
    now: float,
) -> SealedContent:
    """Open a version 2 envelope sent in ``session`` by the box at ``sender_onion``.

    :class:`EnvelopeError` if it is malformed, :class:`SealError` if the
    handshake fails (another session's, another sender's, tampered) or the
    sender's mail key is not certified by ``sender_onion``. The opened
    content carries ``seal_version`` 2 and the sender's certificate.
    """
    if len(envelope) > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"the sealed envelope exceeds {MAX_ENVELOPE_SIZE} bytes")
    if envelope[: len(HEADER)] != HEADER:
        raise EnvelopeError("not a version 2 sealed envelope")
    start = len(HEADER) + MESSAGE2_SIZE
    if len(envelope) < start:
        raise EnvelopeError("the sealed envelope is truncated")
    handshake = HandshakeState(
        PATTERN,
        initiator=True,
        prologue=prologue(sender_onion, recipient_onion),
        static=session.mail_key,
        ephemeral=session.ephemeral,
    )
    handshake.write_message()
    payload = handshake.read_message(envelope[len(HEADER) : start])
    certificate = MailKeyCertificate.verify(payload[:CERTIFICATE_SIZE], sender_onion, now)
    if certificate.mail_key != handshake.remote_static:
        raise SealError("the sender's handshake key is not the key its certificate names")
    (length,) = _LENGTH.unpack(payload[CERTIFICATE_SIZE:])
    chunks = -(-length // CHUNK)
    if length == 0 or len(envelope) - start != length + chunks * TAGLEN:
        raise EnvelopeError("the sealed envelope's length disagrees with its handshake")
    assert handshake.transport is not None
    lane = handshake.transport[1]
    body = memoryview(envelope)[start:]
    step = CHUNK + TAGLEN
    plaintext = b"".join(
        lane.decrypt_with_ad(b"", bytes(body[i : i + step])) for i in range(0, len(body), step)
    )
    content = parse_content(plaintext, None, HEADER)
    return replace(content, seal_version=VERSION, sender_certificate=certificate.encode())
