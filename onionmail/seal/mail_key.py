"""The mail key: an X25519 key that opens mail, certified by the onion key, rotatable.

The onion identity key (:mod:`onionmail.seal.identity`) only authenticates:
it signs a short certificate for the current mail key, and tor (a system tor
in ``attach`` mode too) holds nothing that opens mail. A certificate is::

    b"OMMK" | version 1 | mail key (32) | not_before (u64) | not_after (u64) | signature (64)

the signature being :meth:`~onionmail.seal.identity.Identity.sign` over the
first 53 bytes, context :data:`CERTIFICATE_CONTEXT`. It travels in each SMTP
session (the receiver's greeting, the sender's first handshake message), so a
peer needs nothing but the onion address to check it. Validity starts at the
day it was signed (rounded down: the exact time of a rotation is nobody's
business) and lasts :data:`CERTIFICATE_LIFETIME`; the box renews it when a
third is left.

The keyring (:class:`MailKeyring`, ``BOXDIR/keys/mail-keys``) holds the
current key, its certificate and retired keys with the time each is to be
erased: a retired key is kept only while mail sealed to it may still arrive
(a gateway's queue holds mail sealed to the key it last saw), then removed
from the file. The file is JSON under XSalsa20-Poly1305 with a key derived
from the identity seed, so a passphrase on the identity protects it too, and
the key tor holds cannot open it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.secret
import nacl.utils

from onionmail.core.errors import AddressError, IdentityError, SealError
from onionmail.core.files import write_private_file
from onionmail.seal.identity import Identity, derive_subkey, verify_signature
from onionmail.seal.noise import KeyPair

CERTIFICATE_MAGIC = b"OMMK"
CERTIFICATE_VERSION = 1
CERTIFICATE_CONTEXT = b"onionmail mail key v1"
CERTIFICATE_LIFETIME = 30 * 24 * 3600
"""Short, because a certificate cannot be revoked: a mail key stolen and then rotated away
stays usable to impersonate the box until its certificate expires."""
RENEW_WHEN_LEFT = 10 * 24 * 3600
CERTIFICATE_SKEW = 10 * 60
"""Seconds a certificate's validity may be off the checker's clock."""
_SIGNED = struct.Struct(">4sB32sQQ")
CERTIFICATE_SIZE = _SIGNED.size + 64
FILE_TAG = b"onionmail-mail-keys-v1\n"
_DAY = 24 * 3600
_PERSON = b"om-mail-keys"


@dataclass(frozen=True)
class MailKeyCertificate:
    """A mail key and its validity, as certified by an onion's identity key."""

    mail_key: bytes
    not_before: int
    not_after: int
    signature: bytes

    def signed_bytes(self) -> bytes:
        return _SIGNED.pack(
            CERTIFICATE_MAGIC, CERTIFICATE_VERSION, self.mail_key, self.not_before, self.not_after
        )

    def encode(self) -> bytes:
        return self.signed_bytes() + self.signature

    @classmethod
    def issue(cls, identity: Identity, mail_key: bytes, now: float) -> MailKeyCertificate:
        not_before = int(now) // _DAY * _DAY
        unsigned = cls(mail_key, not_before, not_before + CERTIFICATE_LIFETIME, b"")
        return cls(
            mail_key,
            unsigned.not_before,
            unsigned.not_after,
            identity.sign(CERTIFICATE_CONTEXT, unsigned.signed_bytes()),
        )

    @classmethod
    def verify(cls, data: bytes, onion: str, now: float) -> MailKeyCertificate:
        """The certificate in ``data`` if ``onion`` signed it and it is valid at ``now``."""
        if len(data) != CERTIFICATE_SIZE:
            raise SealError("the mail key certificate has the wrong length")
        magic, version, mail_key, not_before, not_after = _SIGNED.unpack(data[: _SIGNED.size])
        if magic != CERTIFICATE_MAGIC or version != CERTIFICATE_VERSION:
            raise SealError("not a version 1 mail key certificate")
        try:
            verify_signature(onion, CERTIFICATE_CONTEXT, data[: _SIGNED.size], data[_SIGNED.size :])
        except (IdentityError, AddressError):
            raise SealError("the mail key certificate is not signed by the onion's key") from None
        if not not_before - CERTIFICATE_SKEW <= now <= not_after + CERTIFICATE_SKEW:
            raise SealError("the mail key certificate is not valid now (expired, or not yet)")
        return cls(mail_key, not_before, not_after, data[_SIGNED.size :])


@dataclass(frozen=True, repr=False)
class RetiredKey:
    pair: KeyPair
    erase_after: int


class MailKeyring:
    """The box's current mail key with its certificate, and retired keys until erased.

    Every change starts from the file as it is now and is written at once
    (:meth:`rotate`, :meth:`renew_if_due`, :meth:`erase_due`), so two
    processes (the box, ``onionmail keys rotate``) never undo each other's
    change; :meth:`refresh` picks up the other's.
    """

    def __init__(self, path: Path, identity: Identity) -> None:
        self.path = path
        self._identity = identity
        self._box = nacl.secret.SecretBox(derive_subkey(identity.seed, _PERSON))
        self.current: KeyPair
        self.certificate: MailKeyCertificate
        self.retired: list[RetiredKey] = []
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def open(cls, path: Path, identity: Identity, *, now: float | None = None) -> MailKeyring:
        """The keyring at ``path``; made with a fresh key if there is none yet.

        :class:`IdentityError` naming the file if it is damaged or belongs to
        another identity.
        """
        ring = cls(path, identity)
        if path.exists():
            ring._load()
        else:
            moment = time.time() if now is None else now
            ring._set_current(KeyPair.generate(), moment)
            ring.save()
        return ring

    # -- queries --------------------------------------------------------------------------

    def key_for(self, public: bytes) -> KeyPair | None:
        """The key pair (current or retired) whose public half is ``public``."""
        for pair in (self.current, *(r.pair for r in self.retired)):
            if pair.public == public:
                return pair
        return None

    def public_keys(self) -> list[bytes]:
        return [self.current.public, *(r.pair.public for r in self.retired)]

    # -- changes --------------------------------------------------------------------------

    def rotate(self, *, now: float, keep_old_for: int) -> None:
        """A new current key; the old one is kept ``keep_old_for`` seconds (0: erased now)."""
        self.refresh()
        if keep_old_for > 0:
            self.retired.append(RetiredKey(self.current, int(now) + keep_old_for))
        self._set_current(KeyPair.generate(), now)
        self.erase_due(now=now, save=False)
        self.save()

    def renew_if_due(self, *, now: float) -> bool:
        """Re-sign the current key when a third of its certificate's life is left."""
        self.refresh()
        if self.certificate.not_after - now > RENEW_WHEN_LEFT:
            return False
        self._set_current(self.current, now)
        self.save()
        return True

    def erase_due(self, *, now: float, save: bool = True) -> int:
        """Remove retired keys whose time is up; how many were removed."""
        if save:
            self.refresh()
        kept = [r for r in self.retired if r.erase_after > now]
        erased = len(self.retired) - len(kept)
        self.retired = kept
        if erased and save:
            self.save()
        return erased

    def refresh(self) -> bool:
        """Reload if the file changed since this process read or wrote it."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        if (info.st_ino, info.st_mtime_ns) == self._stamp:
            return False
        self._load()
        return True

    def _set_current(self, pair: KeyPair, now: float) -> None:
        self.current = pair
        self.certificate = MailKeyCertificate.issue(self._identity, pair.public, now)

    # -- the file -------------------------------------------------------------------------

    def save(self) -> None:
        document = {
            "current": _b64(self.current.private),
            "not_before": self.certificate.not_before,
            "not_after": self.certificate.not_after,
            "signature": _b64(self.certificate.signature),
            "retired": [
                {"key": _b64(r.pair.private), "erase_after": r.erase_after} for r in self.retired
            ],
        }
        sealed = self._box.encrypt(json.dumps(document).encode())
        write_private_file(self.path, FILE_TAG + base64.b64encode(bytes(sealed)) + b"\n")
        info = os.stat(self.path)
        self._stamp = (info.st_ino, info.st_mtime_ns)

    def _load(self) -> None:
        info = os.stat(self.path)
        raw = self.path.read_bytes()
        if not raw.startswith(FILE_TAG):
            raise IdentityError(f"{self.path}: not an onionmail mail key file")
        try:
            clear = self._box.decrypt(base64.b64decode(raw[len(FILE_TAG) :].strip(), validate=True))
            document = json.loads(clear)
            current = KeyPair.from_private(_unb64(document["current"]))
            certificate = MailKeyCertificate(
                current.public,
                int(document["not_before"]),
                int(document["not_after"]),
                _unb64(document["signature"]),
            )
            retired = [
                RetiredKey(KeyPair.from_private(_unb64(r["key"])), int(r["erase_after"]))
                for r in document["retired"]
            ]
        except nacl.exceptions.CryptoError:
            raise IdentityError(
                f"{self.path}: does not open with this box's identity (another box's file?)"
            ) from None
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise IdentityError(f"{self.path}: the mail key file is damaged") from None
        self.current, self.certificate, self.retired = current, certificate, retired
        self._stamp = (info.st_ino, info.st_mtime_ns)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
