"""OpenPGP for clearnet recipients: the one module that touches the OpenPGP library.

Where a clearnet recipient's key is known (Autocrypt, :mod:`onionmail.openpgp.autocrypt`,
or imported by hand), the box encrypts before the gateway sees the message
(docs/design.md, "The gateway sees as little as it can"). Everything
OpenPGP-specific lives here, as small functions over bytes, so the library
(pgpy 0.6.0 today) can be replaced by changing this file alone:
:mod:`onionmail.openpgp.autocrypt` and :mod:`onionmail.openpgp.pgp_mime`
never import it.

Decisions:

* **The box's own key is generated, not derived.** An ed25519 primary key
  (certify + sign) with a cv25519 subkey (encrypt), one user id
  ``<alias@gateway>``, no expiry. Deriving it from the onion seed would buy
  nothing (the clearnet peer cannot check the onion anyway) and would tie the
  two keys forever.
* **At rest it is sealed with a key derived from the identity seed**
  (:func:`onionmail.seal.identity.derive_subkey`, person ``om-openpgp-v1``, then
  a SecretBox). The OpenPGP key is therefore exactly as protected as the
  identity: where the user set a passphrase, opening it needs the
  passphrase, through the identity; without one it is no worse off. This
  is the only use of the seed here and it is domain-separated.
* **Never compress.** The box's preferences list only "uncompressed", so a
  well-behaved sender (gpg honours the preference) does not compress to the
  box, and the box never compresses: compression before encryption leaks
  content through length, and a decompression bomb is a denial of service
  (pgpy inflates in memory; a hostile sender can still compress, see below).
* **Refuse what pgpy would quietly accept:** a message that is not
  encrypted, or encrypted without integrity protection (the EFAIL class of
  attack: only SEIPD with MDC is opened), a nested encryption, a secret key
  offered as a public one, a public key whose self-signatures do not verify
  or whose encryption key has expired.
* **One signer per check.** :meth:`Decrypted.verify` takes the single key the
  caller expects (the one stored for the From address): a valid signature by
  some other key is "unknown signer", never "verified".

pgpy 0.6.0 warns on import (``imghdr``; ciphers and modes that cryptography
moved to ``decrepit``) and on use ("TODO: ... not yet implemented", CFB mode,
preference mismatches). Those warnings are filtered narrowly, by module and
message, around each call (:func:`_pgpy`), under a lock because
:func:`warnings.catch_warnings` changes process-wide state; pgpy holds the GIL
for most of its work anyway, so the lock costs no parallelism. pgpy does not
check revocation signatures beyond their presence, nor key flags such as
"disabled" (what the TODO warnings say); a revoked key (any revocation
signature) and an expired key fail verification.

Known limits: pgpy inflates compressed data in memory, so a hostile sender can
make decryption use much memory (bounded input size only limits the
ciphertext); run decryption in a worker thread, on bounded input (the box
decrypts mail its gateway relayed before storing it, see
:mod:`onionmail.openpgp.clearnet`), and never before a mail client's ``250``.
"""

from __future__ import annotations

import base64
import datetime
import enum
import logging
import os
import re
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret

from onionmail.core.errors import AddressError, DecryptionError, OpenPGPError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.core.mail_address import parse_mail_address
from onionmail.seal.identity import Identity, derive_subkey

log = logging.getLogger(__name__)

#: Upper bound on a public key (binary or armored); Autocrypt keys are a few hundred bytes.
MAX_PUBLIC_KEY_BYTES = 64 * 1024
#: Upper bound on an armored OpenPGP message this module will parse.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
BOX_KEY_FORMAT = b"onionmail-openpgp-key-v1\n"
MAX_BOX_KEY_FILE_SIZE = 64 * 1024
_FILE_KEY_PERSON = b"om-openpgp-v1"

_PGPY_LOCK = threading.Lock()


def _ignore_pgpy_warnings() -> None:
    """Filters for pgpy 0.6.0's known warnings only (see the module docstring)."""
    warnings.filterwarnings(
        "ignore", message=r"'imghdr' is deprecated", category=DeprecationWarning
    )
    # Python 3.13+: imghdr comes from the standard-imghdr backport, which says so on import
    warnings.filterwarnings(
        "ignore", message=r"imghdr was removed in Python 3\.13", category=DeprecationWarning
    )
    # raised inside pgpy (its TODOs; cryptography's CryptographyDeprecationWarning, a
    # UserWarning, for the ciphers and CFB mode pgpy still takes from the old place)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pgpy(\.|$)")
    # raised by pgpy with a stacklevel that points at its caller
    for message in (
        r"Selected (hash|symmetric|compression) algorithm not in key preferences",
        r"Incorrect crc24",
    ):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


with warnings.catch_warnings():
    _ignore_pgpy_warnings()
    import pgpy
    from pgpy.constants import (
        CompressionAlgorithm,
        EllipticCurveOID,
        HashAlgorithm,
        KeyFlags,
        PubKeyAlgorithm,
        SymmetricKeyAlgorithm,
    )
    from pgpy.packet.packets import IntegrityProtectedSKEData


@contextmanager
def _pgpy() -> Iterator[None]:
    """Serialize pgpy calls and silence only its known warnings meanwhile."""
    with _PGPY_LOCK, warnings.catch_warnings():
        _ignore_pgpy_warnings()
        yield


_ENCRYPT_FLAGS = {KeyFlags.EncryptCommunications, KeyFlags.EncryptStorage}
_CIPHER = SymmetricKeyAlgorithm.AES256
_HASH = HashAlgorithm.SHA512


class SignatureStatus(enum.Enum):
    """What a signature check found; only ``VERIFIED`` means "the expected key signed it"."""

    UNSIGNED = "unsigned"
    VERIFIED = "verified"
    UNKNOWN_SIGNER = "unknown-signer"  # signed, but not by the key the caller expected
    BAD = "bad"  # by the expected key, but it does not verify (or the key expired, was revoked)


@dataclass(frozen=True)
class PublicKey:
    """A checked OpenPGP public key: build one with :func:`parse_public_key`."""

    fingerprint: str  # 40 upper-case hex digits
    addresses: tuple[str, ...]  # lowercased mail addresses of its self-signed user ids
    data: bytes = field(repr=False)  # the binary transferable public key
    _key: Any = field(repr=False, compare=False)

    def armored(self) -> str:
        with _pgpy():
            return str(self._key)


def _user_id_addresses(key: Any) -> tuple[str, ...]:
    """Addresses named by the key's user ids (``Name <a@b>``, ``<a@b>`` or ``a@b``)."""
    found: list[str] = []
    for uid in key.userids:
        _, address = parseaddr(str(uid.userid))
        try:
            found.append(str(parse_mail_address(address)))
        except AddressError:
            continue  # a user id that is no address (a name, a comment): not one we match
    return tuple(dict.fromkeys(found))


def _encryption_key(key: Any) -> Any:
    """The (sub)key pgpy will encrypt to: the first one flagged for encryption."""
    for candidate in (key, *key.subkeys.values()):
        if _ENCRYPT_FLAGS & _key_flags(candidate):
            return candidate
    return None


def _key_flags(key: Any) -> set[Any]:
    """A key's usage flags from its self-signature (a primary key's: its first user id's)."""
    if not key.is_primary:
        signature = next(iter(key.self_signatures), None)
        return set(signature.key_flags) if signature is not None else set()
    flags = {KeyFlags.Certify}  # RFC 4880 5.2.3.21: a primary key can always certify
    for uid in key.userids[:1]:
        if uid.selfsig is not None:
            flags |= set(uid.selfsig.key_flags)
    return flags


def _load_key_blob(data: bytes | str) -> Any:
    if len(data) > MAX_PUBLIC_KEY_BYTES:
        raise OpenPGPError(f"the key is larger than {MAX_PUBLIC_KEY_BYTES} bytes; refused")
    blob: bytes | str = data
    if isinstance(data, bytes) and data.lstrip().startswith(b"-----BEGIN PGP"):
        blob = data.decode("ascii", "replace")
    try:
        key, _ = pgpy.PGPKey.from_blob(blob if isinstance(blob, str) else bytearray(blob))
    except Exception as exc:  # pgpy raises many kinds on hostile input; all mean "not a key"
        raise OpenPGPError("this is not a readable OpenPGP key") from exc
    return key


def _check_public_key(key: Any) -> None:
    if not key.is_public:
        raise OpenPGPError(
            "this is a secret key; export and give the public key only (gpg --export --armor)"
        )
    if not key.userids:
        raise OpenPGPError("the key has no user id")
    if key.is_expired:
        raise OpenPGPError("the key has expired")
    try:
        self_signed = bool(key.verify(key))
    except Exception as exc:  # pgpy: "No signatures to verify", unsupported algorithms, ...
        raise OpenPGPError("the key's self-signatures cannot be checked") from exc
    if not self_signed:
        raise OpenPGPError("the key's self-signatures do not verify (revoked or forged)")
    encryption_key = _encryption_key(key)
    if encryption_key is None:
        raise OpenPGPError("the key has no encryption (sub)key")
    if encryption_key.is_expired:
        raise OpenPGPError("the key's encryption subkey has expired")


def parse_public_key(data: bytes | str) -> PublicKey:
    """A checked public key from ASCII armor or binary ``data``; :class:`OpenPGPError` if not."""
    with _pgpy():
        key = _load_key_blob(data)
        _check_public_key(key)
        return PublicKey(
            fingerprint=str(key.fingerprint).replace(" ", ""),
            addresses=_user_id_addresses(key),
            data=bytes(key),
            _key=key,
        )


class BoxKey:
    """The box's own OpenPGP secret key. ``repr`` never shows key material."""

    def __init__(self, key: Any) -> None:
        if key.is_public:
            raise OpenPGPError("the box's OpenPGP key file holds no secret key")
        self._key = key

    def __repr__(self) -> str:
        return f"BoxKey(fingerprint={self.fingerprint})"

    @classmethod
    def generate(cls, address: str, *, created: datetime.datetime | None = None) -> BoxKey:
        """A new ed25519/cv25519 key with the single user id ``<address>``, made at
        ``created`` (None: now)."""
        address = str(parse_mail_address(address))
        with _pgpy():
            primary = pgpy.PGPKey.new(
                PubKeyAlgorithm.EdDSA, EllipticCurveOID.Ed25519, created=created
            )
            primary.add_uid(pgpy.PGPUID.new(f"<{address}>"), **_uid_preferences())
            subkey = pgpy.PGPKey.new(
                PubKeyAlgorithm.ECDH, EllipticCurveOID.Curve25519, created=created
            )
            primary.add_subkey(subkey, usage=_ENCRYPT_FLAGS)
        return cls(primary)

    @property
    def fingerprint(self) -> str:
        return str(self._key.fingerprint).replace(" ", "")

    @property
    def created(self) -> datetime.datetime:
        """When the key was made; no signature of it may be older."""
        created: datetime.datetime = self._key.created
        return created

    @property
    def addresses(self) -> tuple[str, ...]:
        with _pgpy():
            return _user_id_addresses(self._key)

    def add_address(self, address: str) -> None:
        """Add the user id ``<address>`` (a new alias), self-signed; no-op if it is there."""
        address = str(parse_mail_address(address))
        if address in self.addresses:
            return
        with _pgpy():
            self._key.add_uid(pgpy.PGPUID.new(f"<{address}>"), **_uid_preferences())

    @property
    def public(self) -> PublicKey:
        with _pgpy():
            pub = self._key.pubkey
            return PublicKey(
                fingerprint=self.fingerprint,
                addresses=_user_id_addresses(pub),
                data=bytes(pub),
                _key=pub,
            )

    def _secret_armor(self) -> bytes:
        with _pgpy():
            return str(self._key).encode("ascii")


def _uid_preferences() -> dict[str, Any]:
    return {
        "usage": {KeyFlags.Sign, KeyFlags.Certify},
        "hashes": [HashAlgorithm.SHA512, HashAlgorithm.SHA384, HashAlgorithm.SHA256],
        "ciphers": [SymmetricKeyAlgorithm.AES256, SymmetricKeyAlgorithm.AES128],
        "compression": [CompressionAlgorithm.Uncompressed],
    }


# --- the box key file ------------------------------------------------------------------------


def _file_box(identity: Identity) -> nacl.secret.SecretBox:
    return nacl.secret.SecretBox(derive_subkey(identity.seed, _FILE_KEY_PERSON))


def save_box_key(key: BoxKey, path: Path, identity: Identity) -> None:
    """Write ``key`` to ``path`` (0600, directory 0700), sealed with the identity's file key."""
    sealed = bytes(_file_box(identity).encrypt(key._secret_armor()))
    ensure_private_dir(path.parent)
    write_private_file(path, BOX_KEY_FORMAT + base64.b64encode(sealed) + b"\n")


def load_box_key(path: Path, identity: Identity) -> BoxKey:
    """Read the key :func:`save_box_key` wrote; :class:`OpenPGPError` if missing or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise OpenPGPError(f"{path}: cannot open the box's OpenPGP key: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
            raise OpenPGPError(
                f"{path}: the OpenPGP key must be a regular file of mode 0600; "
                f"run `chmod 600 {path}`"
            )
        data = handle.read(MAX_BOX_KEY_FILE_SIZE + 1)
    if len(data) > MAX_BOX_KEY_FILE_SIZE or not data.startswith(BOX_KEY_FORMAT):
        raise OpenPGPError(f"{path}: not an onionmail OpenPGP key file")
    try:
        sealed = base64.b64decode(data[len(BOX_KEY_FORMAT) :].strip(), validate=True)
        armor = _file_box(identity).decrypt(sealed)
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise OpenPGPError(
            f"{path}: the OpenPGP key does not open with this box's identity (damaged, or "
            "from another box)"
        ) from exc
    with _pgpy():
        key, _ = pgpy.PGPKey.from_blob(armor.decode("ascii"))
    return BoxKey(key)


def ensure_box_key(path: Path, identity: Identity, address: str) -> BoxKey:
    """The box's key at ``path``, created for ``address`` if missing; adds ``address`` if new."""
    if not path.exists():
        key = BoxKey.generate(address)
        save_box_key(key, path, identity)
        log.info("created the box's OpenPGP key")
        return key
    key = load_box_key(path, identity)
    if str(parse_mail_address(address)) not in key.addresses:
        key.add_address(address)
        save_box_key(key, path, identity)
        log.info("added a user id to the box's OpenPGP key")
    return key


# --- messages --------------------------------------------------------------------------------


def sign_and_encrypt(
    data: bytes,
    signer: BoxKey,
    recipients: list[PublicKey],
    *,
    signed_at: datetime.datetime | None = None,
) -> str:
    """ASCII-armored OpenPGP message of ``data``: signed by ``signer``, encrypted to each
    recipient and to ``signer`` itself (so the box can read its own sent mail).

    One session key for all recipients; AES-256, SHA-512, binary literal data, no
    compression. ``signed_at`` is the signature's creation time (None: now); the box
    passes the release time rounded as ``Date`` is, never the exact second.
    """
    if not recipients:
        raise OpenPGPError("no recipient key to encrypt to")
    with _pgpy():
        message = pgpy.PGPMessage.new(
            bytes(data), compression=CompressionAlgorithm.Uncompressed, format="b"
        )
        if signed_at is not None:
            signed_at = max(signed_at, signer.created)  # older than its key: no reader trusts it
        message |= signer._key.sign(message, hash=_HASH, created=signed_at)
        session_key = _CIPHER.gen_key()
        encrypted = message
        for key in [*(r._key for r in recipients), signer._key.pubkey]:
            encrypted = key.encrypt(encrypted, cipher=_CIPHER, sessionkey=session_key)
        del session_key
        return str(encrypted)


@dataclass(frozen=True, repr=False)
class Decrypted:
    """The plaintext of a decrypted message, and its signatures (see :meth:`verify`)."""

    data: bytes
    signer_key_ids: tuple[str, ...]  # 16-hex key ids of the signatures inside
    _message: Any = field(compare=False)

    def __repr__(self) -> str:
        return f"Decrypted(<{len(self.data)} bytes>, signatures={len(self.signer_key_ids)})"

    def verify(self, expected: PublicKey | None) -> SignatureStatus:
        """Whether ``expected`` (the key stored for the sender) signed this plaintext."""
        if not self.signer_key_ids:
            return SignatureStatus.UNSIGNED
        if expected is None:
            return SignatureStatus.UNKNOWN_SIGNER
        with _pgpy():
            ids = {expected._key.fingerprint.keyid, *expected._key.subkeys}
            if not ids & set(self.signer_key_ids):
                return SignatureStatus.UNKNOWN_SIGNER
            try:
                good = bool(expected._key.verify(self._message))
            except Exception as exc:  # pgpy: malformed signature packets
                log.debug("signature check failed: %s", type(exc).__name__)
                good = False
        return SignatureStatus.VERIFIED if good else SignatureStatus.BAD


_ARMOR_START = re.compile(rb"-----BEGIN PGP MESSAGE-----")


def decrypt(armored: bytes, key: BoxKey) -> Decrypted:
    """Decrypt an ASCII-armored OpenPGP message to the box's key.

    :class:`DecryptionError` if it is not an integrity-protected message to
    this key; signatures are checked afterwards with :meth:`Decrypted.verify`.
    """
    if len(armored) > MAX_MESSAGE_BYTES:
        raise DecryptionError(f"the OpenPGP message is over {MAX_MESSAGE_BYTES} bytes; refused")
    if not _ARMOR_START.search(armored):
        raise DecryptionError("no ASCII-armored OpenPGP message found")
    with _pgpy():
        try:
            message = pgpy.PGPMessage.from_blob(armored.decode("ascii"))
        except Exception as exc:  # pgpy raises many kinds on hostile input
            raise DecryptionError("the OpenPGP message is malformed") from exc
        if not message.is_encrypted:
            raise DecryptionError("the OpenPGP message is not encrypted")
        if not isinstance(message.message, IntegrityProtectedSKEData):
            raise DecryptionError("the OpenPGP message has no integrity protection; refused")
        try:
            plain = key._key.decrypt(message)
        except Exception as exc:  # PGPError, PGPDecryptionError, malformed packets
            raise DecryptionError(
                "the message was not encrypted to this box's OpenPGP key, or is damaged"
            ) from exc
        if plain.is_encrypted:
            raise DecryptionError("the OpenPGP message is encrypted twice; refused")
        content = plain.message
        signer_ids = tuple(str(sig.signer) for sig in plain.signatures)
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return Decrypted(data=data, signer_key_ids=signer_ids, _message=plain)


def verify_detached(data: bytes, signature: bytes, expected: PublicKey | None) -> SignatureStatus:
    """Check a detached ASCII-armored signature over ``data`` (RFC 3156 multipart/signed)."""
    with _pgpy():
        try:
            sig = pgpy.PGPSignature.from_blob(signature.decode("ascii"))
        except Exception:  # an unreadable signature is a bad one, never a missing one
            return SignatureStatus.BAD
        if expected is None:
            return SignatureStatus.UNKNOWN_SIGNER
        ids = {expected._key.fingerprint.keyid, *expected._key.subkeys}
        if str(sig.signer) not in ids:
            return SignatureStatus.UNKNOWN_SIGNER
        try:
            good = bool(expected._key.verify(data, sig))
        except Exception as exc:  # pgpy: unsupported algorithm, malformed packet
            log.debug("detached signature check failed: %s", type(exc).__name__)
            good = False
    return SignatureStatus.VERIFIED if good else SignatureStatus.BAD
