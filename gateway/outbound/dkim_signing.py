"""DKIM signatures for mail the gateway sends from its own domain (dkimpy).

Decisions:

- **Two signatures, ed25519-sha256 and rsa-sha256** (RFC 8463). Ed25519 is
  small and fast, but many receivers still only verify RSA; a receiver uses
  whichever it understands, so signing with both costs a header and loses no
  one. Each key has its own selector (a selector names one DNS record),
  e.g. ``2026a-ed25519`` and ``2026a-rsa``. RSA keys are 2048 bits: the
  size receivers accept everywhere whose public key still fits a DNS TXT
  record (split into 255-byte strings).
- **Keys are files the gateway generates**, written 0600 inside a 0700
  directory with ``O_EXCL`` (never under the default umask, never over an
  existing key); loading refuses a key file others can read, like ssh does.
  Ed25519 keys are stored as dkimpy takes them (base64 of the 32-byte seed),
  RSA keys as PKCS#1 PEM. A key's ``repr`` never shows the secret.
- **What is signed**: the headers a reader trusts or a client renders
  (From, To, Cc, Reply-To, Sender, Subject, Date, Message-ID, In-Reply-To,
  References, the MIME headers, Autocrypt). Each is *over-signed*: named
  once more than it occurs, so adding another instance later (a second
  From or Subject, which some clients display instead of the first) breaks
  the signature, and a header that is absent cannot be added unseen.
  Trace and transport headers (Received, Return-Path) are not signed.
- **Canonicalization relaxed/relaxed** survives the re-folding and trailing
  whitespace changes relays make; no ``l=`` body length, which would let
  anyone append content under the signature.
- The public key record text is computed from the private key, so what is
  published cannot drift from what signs.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.errors import DkimError, GatewayConfigError

log = logging.getLogger(__name__)

RSA_BITS = 2048

SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "content-description",
    "autocrypt",
)
"""Header names signed (and over-signed) when present; see the module docstring."""


class DkimAlgorithm(StrEnum):
    """The signature algorithms the gateway signs with (the ``a=`` tag)."""

    ED25519 = "ed25519-sha256"
    RSA = "rsa-sha256"

    @property
    def key_type(self) -> str:
        """The ``k=`` tag of the DNS record."""
        return "ed25519" if self is DkimAlgorithm.ED25519 else "rsa"


@dataclass(frozen=True)
class DkimKey:
    """One signing key: the domain and selector it publishes under, and its secret."""

    domain: str
    selector: str
    algorithm: DkimAlgorithm
    private_key: bytes = field(repr=False)
    """In dkimpy's form: base64 seed (ed25519) or PKCS#1 PEM (RSA)."""

    @property
    def record_name(self) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"

    def public_key_base64(self) -> str:
        """The ``p=`` value: raw ed25519 public key, or RSA SubjectPublicKeyInfo (DER)."""
        if self.algorithm is DkimAlgorithm.ED25519:
            seed = nacl.signing.SigningKey(self.private_key, encoder=nacl.encoding.Base64Encoder)
            return base64.b64encode(bytes(seed.verify_key)).decode("ascii")
        private = serialization.load_pem_private_key(self.private_key, password=None)
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    def txt_record(self) -> str:
        """The TXT record's text, e.g. ``v=DKIM1; k=ed25519; p=...``."""
        return f"v=DKIM1; k={self.algorithm.key_type}; p={self.public_key_base64()}"

    def txt_strings(self) -> list[str]:
        """The record split into the <=255-byte strings one TXT record holds."""
        text = self.txt_record()
        return [text[i : i + 255] for i in range(0, len(text), 255)]

    def zone_line(self) -> str:
        """A zone-file line to publish, e.g. for Knot or BIND."""
        strings = " ".join(f'"{part}"' for part in self.txt_strings())
        return f"{self.record_name}. IN TXT ( {strings} )"


def _new_private_key(algorithm: DkimAlgorithm) -> bytes:
    if algorithm is DkimAlgorithm.ED25519:
        seed = nacl.signing.SigningKey.generate()
        return seed.encode(encoder=nacl.encoding.Base64Encoder) + b"\n"
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def key_path(directory: Path, selector: str, algorithm: DkimAlgorithm) -> Path:
    """Where :func:`load_or_create_key` keeps a key."""
    return directory / f"{selector}.{algorithm.key_type}.key"


def _check_private_file(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise GatewayConfigError(
            f"{path}: DKIM key is accessible by other users (mode {stat.filemode(mode)}); "
            "chmod 600 it, or replace the key if others may have read it"
        )


def load_or_create_key(
    directory: Path, *, domain: str, selector: str, algorithm: DkimAlgorithm
) -> DkimKey:
    """The key for ``selector`` in ``directory``, generated on first use.

    The directory is created 0700 and the key written 0600 with ``O_EXCL``.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = key_path(directory, selector, algorithm)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _check_private_file(path)
        secret = path.read_bytes()
    else:
        secret = _new_private_key(algorithm)
        with os.fdopen(fd, "wb") as out:
            out.write(secret)
            out.flush()
            os.fsync(out.fileno())
        log.info("generated a new %s DKIM key (selector %s)", algorithm.key_type, selector)
    key = DkimKey(domain, selector, algorithm, secret)
    try:
        key.public_key_base64()
    except (ValueError, TypeError) as exc:
        raise GatewayConfigError(f"{path}: not a usable {algorithm.key_type} DKIM key") from exc
    return key


def _header_names(message: bytes) -> list[str]:
    """The lower-cased names of the message's header fields, in order."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    names = []
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.append(line.split(b":", 1)[0].strip().decode("ascii", "replace").lower())
    return names


def headers_to_sign(message: bytes) -> list[str]:
    """Each header of :data:`SIGNED_HEADERS` once per occurrence plus once more."""
    present = _header_names(message)
    return [name for name in SIGNED_HEADERS for _ in range(present.count(name) + 1)]


class DkimSigner:
    """Signs outgoing messages with every key given (one signature each)."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        if not keys:
            raise GatewayConfigError("DKIM signing needs at least one key")
        records = [key.record_name for key in keys]
        if len(set(records)) != len(records):
            raise GatewayConfigError(
                "two DKIM keys share a selector; each key (one per algorithm) needs its own, "
                "since a selector names exactly one DNS record"
            )
        self._keys = tuple(keys)

    @property
    def keys(self) -> tuple[DkimKey, ...]:
        return self._keys

    def signature_headers(self, message: bytes) -> bytes:
        """The ``DKIM-Signature`` header fields for ``message`` (CRLF-terminated)."""
        if b"\r\n\r\n" not in message:
            raise DkimError("the message has no header/body separator (CRLF CRLF)")
        include = [name.encode("ascii") for name in headers_to_sign(message)]
        if "from" not in _header_names(message):
            raise DkimError("the message has no From header; DKIM signs From")
        signatures = []
        for key in self._keys:
            try:
                signature = dkim.sign(
                    message,
                    key.selector.encode("ascii"),
                    key.domain.encode("ascii"),
                    key.private_key,
                    canonicalize=(b"relaxed", b"relaxed"),
                    signature_algorithm=key.algorithm.value.encode("ascii"),
                    include_headers=include,
                    linesep=b"\r\n",
                )
            except dkim.DKIMException as exc:
                raise DkimError(f"DKIM signing with {key.algorithm} failed: {exc}") from exc
            signatures.append(bytes(signature))
        return b"".join(signatures)

    def sign(self, message: bytes) -> bytes:
        """``message`` (CRLF line ends) with the signatures prepended."""
        return self.signature_headers(message) + message
