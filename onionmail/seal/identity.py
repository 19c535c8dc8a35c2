"""The box's identity: one ed25519 seed, from which its onion address and keys follow.

Everything is derived from the 32-byte seed:

* the ed25519 key pair (RFC 8032); the public key *is* the onion address
  (:mod:`onionmail.core.onion_address`);
* the 64-byte expanded secret key tor takes through ``ADD_ONION ED25519-V3:``
  (SHA-512 of the seed, first half clamped: tor's ``ed25519_secret_key_from_seed``);
* an X25519 key pair, by libsodium's birational map
  (``crypto_sign_ed25519_sk_to_curve25519``), so a peer derives our X25519
  public key from our address alone: the key of the version 1 seal only
  (mail is sealed to the certified mail key now, :mod:`onionmail.seal.mail_key`);
* domain-separated signatures: :meth:`Identity.sign` signs
  ``b"onionmail-v1:" + context + b"\\0" + message``, never the bare message, so
  no signature made here can be replayed as another protocol's, or as ours
  under another context.

The key file (:func:`save_identity`, :func:`load_identity`) is a small
versioned text file, 0600 in a 0700 directory. Plain::

    onionmail-identity-v1 plain
    seed <base64 seed>
    public-key <base64 ed25519 public key, detects a damaged seed>

Encrypted with a passphrase (argon2id, then XSalsa20-Poly1305 ``SecretBox``)::

    onionmail-identity-v1 encrypted
    kdf argon2id opslimit=<n> memlimit=<bytes>
    salt <base64, 16 bytes>
    secretbox <base64 nonce + ciphertext of the seed>

The encrypted form deliberately does not record the public key: a stolen file
should not tell which onion address it unlocks.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.signing
import nacl.utils

from onionmail.core.errors import AddressError, ConfigError, IdentityError, PassphraseError
from onionmail.core.files import ensure_private_dir, fsync_dir
from onionmail.core.onion_address import decode_onion_address, encode_onion_address

log = logging.getLogger(__name__)

SEED_LENGTH = 32
SIGNATURE_PREFIX = b"onionmail-v1:"

FORMAT_TAG = "onionmail-identity-v1"
_PLAIN = "plain"
_ENCRYPTED = "encrypted"
_FIELDS = {
    _PLAIN: ("seed", "public-key"),
    _ENCRYPTED: ("kdf", "salt", "secretbox"),
}
MAX_KEY_FILE_SIZE = 4096
MAX_PASSPHRASE_FILE_SIZE = 64 * 1024

#: argon2id cost of a new encrypted key file: libsodium's MODERATE (3 passes, 256 MiB,
#: about a second on a laptop). Loading accepts what the file records, within the bounds below.
DEFAULT_KDF_LIMITS = (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
#: Upper bounds on a file's recorded cost, so a crafted file cannot exhaust memory or time.
MAX_KDF_OPSLIMIT = 64
MAX_KDF_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE  # 1 GiB


@dataclass(frozen=True, repr=False)
class Identity:
    """A box identity: the ed25519 seed. ``repr`` never shows the seed."""

    seed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_LENGTH:
            raise IdentityError(f"an identity seed is {SEED_LENGTH} bytes")

    def __repr__(self) -> str:
        return "Identity(seed=<redacted>)"

    @classmethod
    def generate(cls) -> Identity:
        """A new identity from the operating system's CSPRNG."""
        return cls(nacl.utils.random(SEED_LENGTH))

    def _signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @functools.cached_property
    def public_key(self) -> bytes:
        """The ed25519 public key (32 bytes); derived once (each message asks for it)."""
        return bytes(self._signing_key().verify_key)

    @functools.cached_property
    def onion_address(self) -> str:
        """The v3 onion host name of this identity, ``<56 chars>.onion``."""
        return encode_onion_address(self.public_key)

    def tor_expanded_key(self) -> bytes:
        """The 64-byte expanded secret key in tor's format (clamped scalar | nonce prefix)."""
        digest = bytearray(hashlib.sha512(self.seed).digest())
        digest[0] &= 248
        digest[31] &= 127
        digest[31] |= 64
        return bytes(digest)

    def tor_key_blob(self) -> str:
        """The key for ``ADD_ONION ED25519-V3:<blob>``: base64 of :meth:`tor_expanded_key`."""
        return base64.b64encode(self.tor_expanded_key()).decode("ascii")

    def x25519_private_key(self) -> nacl.public.PrivateKey:
        """The X25519 private key converted from the ed25519 key."""
        return self._signing_key().to_curve25519_private_key()

    def x25519_public_key(self) -> nacl.public.PublicKey:
        """The X25519 public key; equal to :func:`x25519_public_key_for_onion` of our address."""
        return self._signing_key().verify_key.to_curve25519_public_key()

    def sign(self, context: bytes, message: bytes) -> bytes:
        """A 64-byte ed25519 signature of ``message`` bound to ``context``."""
        return self._signing_key().sign(_signed_bytes(context, message)).signature


def derive_subkey(seed: bytes, person: bytes) -> bytes:
    """A 32-byte key for one use of the identity seed, domain-separated by ``person``.

    Every key the box derives from its seed (queue at rest, ledger hashes,
    Message-ID rewriting) comes from here, each with its own ``person``; so
    do keys derived from those in turn (the queue's AES key from the queue
    key), with the parent key as ``seed``.
    """
    return nacl.hash.blake2b(
        b"", key=seed, person=person, digest_size=32, encoder=nacl.encoding.RawEncoder
    )


def _signed_bytes(context: bytes, message: bytes) -> bytes:
    """What is really signed: prefix, context, NUL, message (NUL-free context keeps it unique)."""
    if not context or b"\0" in context:
        raise ValueError("a signature context must be non-empty and free of NUL bytes")
    return SIGNATURE_PREFIX + context + b"\0" + message


def _onion_verify_key(onion_host: str) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(decode_onion_address(onion_host))


def x25519_public_key_for_onion(onion_host: str) -> nacl.public.PublicKey:
    """The X25519 public key of the box at ``onion_host``, derived from its address.

    :class:`AddressError` if the address is malformed or its key is not a
    usable curve point (no real onion service can have such an address).
    """
    try:
        return _onion_verify_key(onion_host).to_curve25519_public_key()
    except nacl.exceptions.CryptoError as exc:
        raise AddressError("the onion address does not hold a usable ed25519 key") from exc


def verify_signature(onion_host: str, context: bytes, message: bytes, signature: bytes) -> None:
    """Check a :meth:`Identity.sign` signature by the box at ``onion_host``.

    Raises :class:`IdentityError` if it does not verify (wrong signer, context,
    message, or a damaged signature), :class:`AddressError` if the host is malformed.
    """
    verify_key = _onion_verify_key(onion_host)
    if not isinstance(signature, bytes) or len(signature) != nacl.bindings.crypto_sign_BYTES:
        raise IdentityError("the signature is not 64 bytes long")
    try:
        verify_key.verify(_signed_bytes(context, message), signature)
    except nacl.exceptions.CryptoError as exc:
        raise IdentityError("the signature does not verify for this onion address") from exc


# --- key file: writing ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_kdf_limits(opslimit: int, memlimit: int) -> None:
    if not argon2id.OPSLIMIT_MIN <= opslimit <= MAX_KDF_OPSLIMIT:
        raise IdentityError(f"argon2id opslimit must be {argon2id.OPSLIMIT_MIN}-{MAX_KDF_OPSLIMIT}")
    if not argon2id.MEMLIMIT_MIN <= memlimit <= MAX_KDF_MEMLIMIT:
        raise IdentityError(
            f"argon2id memlimit must be {argon2id.MEMLIMIT_MIN}-{MAX_KDF_MEMLIMIT} bytes"
        )


def _derive_file_key(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def _plain_text(identity: Identity) -> str:
    return (
        f"{FORMAT_TAG} {_PLAIN}\n"
        f"seed {_b64(identity.seed)}\n"
        f"public-key {_b64(identity.public_key)}\n"
    )


def _encrypted_text(identity: Identity, passphrase: bytes, limits: tuple[int, int]) -> str:
    if not isinstance(passphrase, bytes) or not passphrase:
        raise PassphraseError("an empty passphrase protects nothing; give a real one or none")
    opslimit, memlimit = limits
    _check_kdf_limits(opslimit, memlimit)
    salt = nacl.utils.random(argon2id.SALTBYTES)
    key = _derive_file_key(passphrase, salt, opslimit, memlimit)
    sealed = nacl.secret.SecretBox(key).encrypt(identity.seed)
    return (
        f"{FORMAT_TAG} {_ENCRYPTED}\n"
        f"kdf argon2id opslimit={opslimit} memlimit={memlimit}\n"
        f"salt {_b64(salt)}\n"
        f"secretbox {_b64(bytes(sealed))}\n"
    )


def _write_new_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) holding ``data`` durably; never replaces an existing file.

    Written under a temporary name, fsynced, then hard-linked into place:
    ``link`` fails if ``path`` exists, which ``rename`` would silently replace.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # exact mode whatever the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise IdentityError(f"{path}: a key file already exists; not overwritten") from exc
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def save_identity(
    identity: Identity,
    path: Path,
    passphrase: bytes | None = None,
    *,
    _kdf_limits: tuple[int, int] = DEFAULT_KDF_LIMITS,
) -> None:
    """Write ``identity`` to a new key file ``path`` (0600; its directory made 0700).

    With a ``passphrase`` the seed is encrypted (argon2id + SecretBox). Refuses
    to overwrite an existing file. ``_kdf_limits`` (opslimit, memlimit) exists
    for tests; keep the default, which is libsodium's MODERATE.
    """
    if passphrase is None:
        text = _plain_text(identity)
    else:
        text = _encrypted_text(identity, passphrase, _kdf_limits)
    ensure_private_dir(path.parent)
    if os.path.lexists(path):
        raise IdentityError(f"{path}: a key file already exists; not overwritten")
    _write_new_private_file(path, text.encode("ascii"))


# --- key file: reading ------------------------------------------------------------------------


def _check_private_regular_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"{path}: the identity key is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"{path}: the identity key is open to group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}`, and consider the key exposed if others could read it"
        )


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_key_file(path: Path) -> str:
    """The key file's text, after checking it is a private regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise IdentityError(
            f"{path}: no identity key here; check the box directory, or create a box "
            "with `onionmail init`"
        ) from exc
    except OSError as exc:
        raise IdentityError(f"{path}: cannot open the identity key: {exc.strerror}") from exc
    try:
        _check_private_regular_file(path, os.fstat(fd))
        data = _read_at_most(fd, MAX_KEY_FILE_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise IdentityError(f"{path}: too large for an identity key file; is it the right file?")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise IdentityError(f"{path}: not an onionmail identity key file") from exc


def _parse_key_file(text: str, path: Path) -> tuple[str, dict[str, str]]:
    """The kind (plain/encrypted) and the fields of a key file, strictly in order."""
    lines = text.split("\n")
    tag, _, kind = lines[0].partition(" ")
    if tag != FORMAT_TAG:
        if tag.startswith("onionmail-identity-"):
            raise IdentityError(f"{path}: written by a newer onionmail ({tag}); upgrade to read it")
        raise IdentityError(f"{path}: not an onionmail identity key file")
    expected = _FIELDS.get(kind)
    if expected is None:
        raise IdentityError(f"{path}: unknown identity key kind; the file is damaged")
    body = lines[1:]
    if not body or body[-1] != "":
        raise IdentityError(f"{path}: the identity key file is truncated")
    fields = [line.split(" ", 1) for line in body[:-1]]
    if [field[0] for field in fields] != list(expected) or any(len(f) != 2 for f in fields):
        raise IdentityError(f"{path}: the identity key file is damaged (unexpected lines)")
    return kind, {name: value for name, value in fields}


def _unb64(value: str, length: int, path: Path, what: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IdentityError(f"{path}: the identity key file is damaged ({what})") from exc
    if len(data) != length:
        raise IdentityError(f"{path}: the identity key file is damaged ({what} length)")
    return data


def _parse_kdf(value: str, path: Path) -> tuple[int, int]:
    parts = value.split(" ")
    if len(parts) != 3 or parts[0] != "argon2id":
        raise IdentityError(f"{path}: unknown key derivation; the file is damaged or newer")
    try:
        params = dict(part.split("=", 1) for part in parts[1:])
        opslimit, memlimit = int(params["opslimit"]), int(params["memlimit"])
    except (KeyError, ValueError) as exc:
        raise IdentityError(f"{path}: the identity key file is damaged (kdf)") from exc
    try:
        _check_kdf_limits(opslimit, memlimit)
    except IdentityError as exc:
        raise IdentityError(f"{path}: refused: {exc}") from exc
    return opslimit, memlimit


def _plain_seed(fields: dict[str, str], path: Path) -> bytes:
    seed = _unb64(fields["seed"], SEED_LENGTH, path, "seed")
    public_key = _unb64(fields["public-key"], 32, path, "public key")
    if Identity(seed).public_key != public_key:
        raise IdentityError(f"{path}: the identity key file is damaged (seed and key disagree)")
    return seed


def _decrypted_seed(fields: dict[str, str], passphrase: bytes, path: Path) -> bytes:
    opslimit, memlimit = _parse_kdf(fields["kdf"], path)
    salt = _unb64(fields["salt"], argon2id.SALTBYTES, path, "salt")
    box = nacl.secret.SecretBox
    sealed = _unb64(
        fields["secretbox"], box.NONCE_SIZE + box.MACBYTES + SEED_LENGTH, path, "secretbox"
    )
    key = _derive_file_key(passphrase, salt, opslimit, memlimit)
    try:
        return box(key).decrypt(sealed)
    except nacl.exceptions.CryptoError as exc:
        raise PassphraseError(
            f"{path}: the passphrase does not open this key (wrong passphrase, or the file "
            "is damaged); check the file given with --passphrase-file"
        ) from exc


def load_identity(path: Path, passphrase: bytes | None = None) -> Identity:
    """Read the identity in key file ``path``; ``passphrase`` if it is encrypted.

    :class:`IdentityError` if the file is missing, damaged, or open to group or
    others; :class:`PassphraseError` if it is encrypted and the passphrase is
    missing or wrong. A passphrase given for a plain file is ignored.
    """
    kind, fields = _parse_key_file(_read_key_file(path), path)
    if kind == _PLAIN:
        if passphrase is not None:
            log.warning("the identity key is not encrypted; the passphrase was not needed")
        return Identity(_plain_seed(fields, path))
    if passphrase is None:
        raise PassphraseError(
            f"{path}: the identity key is encrypted; pass --passphrase-file FILE "
            "(a file holding its passphrase)"
        )
    return Identity(_decrypted_seed(fields, passphrase, path))


def is_encrypted_identity(path: Path) -> bool:
    """Whether the key file at ``path`` is passphrase-protected (checks it like a load)."""
    kind, _ = _parse_key_file(_read_key_file(path), path)
    return kind == _ENCRYPTED


def read_passphrase_file(path: Path) -> bytes:
    """The passphrase in ``path``: its bytes minus one trailing newline.

    :class:`ConfigError` if the file cannot be read, is empty, or is too large.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PASSPHRASE_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the passphrase file: {exc.strerror}") from exc
    if len(data) > MAX_PASSPHRASE_FILE_SIZE:
        raise ConfigError(f"{path}: too large for a passphrase file")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ConfigError(f"{path}: the passphrase file is empty")
    return data
