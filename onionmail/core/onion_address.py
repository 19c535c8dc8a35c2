"""Version 3 onion addresses: the encoding of an ed25519 public key as a host name.

Tor's rend-spec-v3, section [ONIONADDRESS], defines::

    onion_address = base32(PUBKEY | CHECKSUM | VERSION) + ".onion"
    CHECKSUM      = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2]
    VERSION       = 0x03

35 bytes of base32 are exactly 56 characters, with no padding. The encoding is
a few lines over :mod:`hashlib` and :mod:`base64`, so it is written here rather
than pulled from a library (stem has one, but only as a static method of its
descriptor classes; the tests use it as an independent cross-check).

Decoding checks the encoding only (length, alphabet, version, checksum). It
does not check that the 32 bytes are a valid curve point: code that needs the
key itself (:func:`onionmail.seal.identity.x25519_public_key_for_onion`,
:func:`onionmail.seal.identity.verify_signature`) rejects unusable keys there.

Error messages say what is wrong with an address but never repeat it, since
they may be logged or sent back to an SMTP peer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from onionmail.core.errors import AddressError

ONION_SUFFIX = ".onion"
ONION_VERSION = 3
PUBLIC_KEY_LENGTH = 32
ONION_LABEL_LENGTH = 56  # base32 of 32 + 2 + 1 bytes

_CHECKSUM_PREFIX = b".onion checksum"
_BASE32_LABEL = re.compile(r"[a-z2-7]{56}")


def _checksum(public_key: bytes, version: int) -> bytes:
    """The two checksum bytes over ``public_key`` and ``version``."""
    digest = hashlib.sha3_256(_CHECKSUM_PREFIX + public_key + bytes([version])).digest()
    return digest[:2]


def encode_onion_address(public_key: bytes) -> str:
    """The v3 onion host name (56 lowercase base32 characters + ``.onion``) of a key."""
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != PUBLIC_KEY_LENGTH:
        raise AddressError("an onion address encodes a 32-byte ed25519 public key")
    key = bytes(public_key)
    raw = key + _checksum(key, ONION_VERSION) + bytes([ONION_VERSION])
    return base64.b32encode(raw).decode("ascii").lower() + ONION_SUFFIX


def _onion_label(host: str) -> str:
    """The lowercased base32 label of ``host``, with or without the ``.onion`` suffix."""
    if not isinstance(host, str):
        raise AddressError("an onion address must be text")
    if not host.isascii():
        raise AddressError("an onion address contains only ASCII letters and digits")
    label = host.lower()
    if label.endswith(ONION_SUFFIX):
        label = label[: -len(ONION_SUFFIX)]
    if len(label) != ONION_LABEL_LENGTH:
        raise AddressError(
            f"a v3 onion address has {ONION_LABEL_LENGTH} characters before .onion, "
            f"this one has {len(label)}"
        )
    if not _BASE32_LABEL.fullmatch(label):
        raise AddressError("an onion address contains only the letters a-z and digits 2-7")
    return label


def decode_onion_address(host: str) -> bytes:
    """The ed25519 public key in a v3 onion host name.

    Accepts the name with or without ``.onion`` and in any case. Raises
    :class:`AddressError` naming what is wrong: length, alphabet, version or
    checksum (a checksum mismatch usually means a mistyped address).
    """
    label = _onion_label(host)
    try:
        raw = base64.b32decode(label.upper())
    except (binascii.Error, ValueError) as exc:  # unreachable after the regex; kept for safety
        raise AddressError("an onion address is not valid base32") from exc
    public_key, checksum, version = raw[:32], raw[32:34], raw[34]
    if version != ONION_VERSION:
        raise AddressError(
            f"onion address version {version} is not supported; only v3 onion services are"
        )
    if checksum != _checksum(public_key, version):
        raise AddressError("the onion address checksum does not match; is it mistyped?")
    return public_key


def is_onion_address(host: str) -> bool:
    """Whether ``host`` is a well-formed v3 onion address (checksum included)."""
    try:
        decode_onion_address(host)
    except AddressError:
        return False
    return True
