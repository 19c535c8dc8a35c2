"""The box identity: derived keys against RFC 8032 and Tor's vectors, real tor, the key file."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.pwhash.argon2id as argon2id
import nacl.signing
import pytest
from stem.control import Controller

from onionmail.core.errors import AddressError, ConfigError, IdentityError, PassphraseError
from onionmail.core.onion_address import encode_onion_address
from onionmail.seal.identity import (
    DEFAULT_KDF_LIMITS,
    Identity,
    is_encrypted_identity,
    load_identity,
    read_passphrase_file,
    save_identity,
    verify_signature,
    x25519_public_key_for_onion,
)
from tests.box_process import offline_tor

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "onion_vectors.json").read_text()
)
FAST_KDF = (argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)  # tests only
PASSPHRASE = b"correct horse battery staple"
RFC8032_TEST1_SEED = bytes.fromhex(VECTORS["rfc8032_ed25519"]["vectors"][0]["seed"])


# --- derived keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["rfc8032_ed25519"]["vectors"])
def test_rfc8032_seed_to_public_key(vector: dict[str, str]) -> None:
    identity = Identity(bytes.fromhex(vector["seed"]))
    assert identity.public_key.hex() == vector["public_key"]
    assert identity.onion_address == encode_onion_address(identity.public_key)
    if "signature" in vector:  # the transcription is right: plain ed25519 reproduces it
        raw = nacl.signing.SigningKey(identity.seed).sign(bytes.fromhex(vector["message"]))
        assert raw.signature.hex() == vector["signature"]


@pytest.mark.parametrize("vector", VECTORS["tor_ed25519"]["vectors"])
def test_tor_vectors(vector: dict[str, str]) -> None:
    identity = Identity(bytes.fromhex(vector["seed"]))
    assert identity.tor_expanded_key().hex() == vector["expanded_key"]
    assert base64.b64decode(identity.tor_key_blob()).hex() == vector["expanded_key"]
    assert identity.public_key.hex() == vector["public_key"]
    assert bytes(identity.x25519_public_key()).hex() == vector["x25519_public_key"]
    raw = nacl.signing.SigningKey(identity.seed).sign(identity.public_key)
    assert raw.signature.hex() == vector["self_signature"]


def test_x25519_keys_agree_with_the_address() -> None:
    identity = Identity.generate()
    public = identity.x25519_public_key()
    assert bytes(identity.x25519_private_key().public_key) == bytes(public)
    assert bytes(x25519_public_key_for_onion(identity.onion_address)) == bytes(public)


def test_crypto_box_between_two_identities() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    to_bob = nacl.public.Box(
        alice.x25519_private_key(), x25519_public_key_for_onion(bob.onion_address)
    )
    from_alice = nacl.public.Box(
        bob.x25519_private_key(), x25519_public_key_for_onion(alice.onion_address.upper())
    )
    assert from_alice.decrypt(to_bob.encrypt(b"hello bob")) == b"hello bob"


def test_x25519_for_unusable_onion_key() -> None:
    identity_point = b"\x01" + bytes(31)  # small order: no onion service has this key
    with pytest.raises(AddressError, match="usable"):
        x25519_public_key_for_onion(encode_onion_address(identity_point))
    with pytest.raises(AddressError, match="checksum"):
        x25519_public_key_for_onion("l5satjgud6gucryazcyvyvhuxhr74u6ygigiuyixe3a6ysis67ororad")


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(IdentityError):
        Identity(b"\x00" * 31)
    assert Identity.generate() != Identity.generate()


def test_repr_hides_the_seed() -> None:
    identity = Identity.generate()
    for shown in (repr(identity), str(identity), f"{identity!r}", repr([identity])):
        assert identity.seed.hex() not in shown
        assert base64.b64encode(identity.seed).decode() not in shown
        assert repr(identity.seed) not in shown
        assert "redacted" in shown


# --- signatures ----------------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"envelope", b"message")
    assert len(signature) == 64
    verify_signature(identity.onion_address, b"envelope", b"message", signature)


@pytest.mark.parametrize(
    ("context", "message"),
    [(b"receipt", b"message"), (b"envelope", b"messagf"), (b"envelope\0mess", b"age")],
)
def test_signature_is_bound_to_context_and_message(context: bytes, message: bytes) -> None:
    identity = Identity.generate()
    signature = identity.sign(b"envelope", b"message")
    with pytest.raises((IdentityError, ValueError)):
        verify_signature(identity.onion_address, context, message, signature)


def test_signature_is_domain_separated_from_plain_ed25519() -> None:
    identity = Identity.generate()
    signature = identity.sign(b"envelope", b"message")
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(identity.public_key).verify(b"message", signature)
    plain = nacl.signing.SigningKey(identity.seed).sign(b"message").signature
    with pytest.raises(IdentityError):
        verify_signature(identity.onion_address, b"envelope", b"message", plain)


def test_wrong_signer_or_damaged_signature_fails() -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    signature = mallory.sign(b"envelope", b"message")
    with pytest.raises(IdentityError, match="does not verify"):
        verify_signature(alice.onion_address, b"envelope", b"message", signature)
    good = alice.sign(b"envelope", b"message")
    damaged = bytes([good[0] ^ 1]) + good[1:]
    with pytest.raises(IdentityError, match="does not verify"):
        verify_signature(alice.onion_address, b"envelope", b"message", damaged)
    with pytest.raises(IdentityError, match="64 bytes"):
        verify_signature(alice.onion_address, b"envelope", b"message", good[:63])
    with pytest.raises(AddressError):
        verify_signature("nothing.onion", b"envelope", b"message", good)


@pytest.mark.parametrize("context", [b"", b"a\0b"])
def test_ambiguous_contexts_are_refused(context: bytes) -> None:
    with pytest.raises(ValueError, match="context"):
        Identity.generate().sign(context, b"message")


# --- real tor --------------------------------------------------------------------------------


def _tor_command() -> str:
    found = shutil.which("tor") or shutil.which("tor", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("tor is not installed: install Debian's tor package", pytrace=False)
    return found


def test_missing_tor_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(pytest.fail.Exception, match="install Debian's tor"):
        _tor_command()


@pytest.fixture
def tor_controller(tmp_path: Path) -> Iterator[Controller]:
    """A private tor with networking disabled, and an authenticated controller to it."""
    with offline_tor(tmp_path / "tor", tor_cmd=_tor_command()) as controller:
        yield controller


@pytest.mark.tor
def test_tor_derives_the_same_onion_address(tor_controller: Controller) -> None:
    identities = [Identity(RFC8032_TEST1_SEED)] + [Identity.generate() for _ in range(3)]
    for identity in identities:
        response = tor_controller.create_ephemeral_hidden_service(
            {25: 1},
            key_type="ED25519-V3",
            key_content=identity.tor_key_blob(),
            await_publication=False,
        )
        assert response.service_id + ".onion" == identity.onion_address
        tor_controller.remove_ephemeral_hidden_service(response.service_id)


# --- key file --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_plain_file_roundtrip_and_permissions(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "box" / "keys" / "identity.key"
    save_identity(identity, path)
    assert load_identity(path) == identity
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert not is_encrypted_identity(path)
    assert os.listdir(path.parent) == ["identity.key"]  # no temporary file left
    assert path.read_text().startswith("onionmail-identity-v1 plain\n")


def test_existing_directory_is_made_private(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o755)
    os.chmod(keys, 0o755)
    save_identity(Identity.generate(), keys / "identity.key")
    assert _mode(keys) == 0o700


def test_file_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_identity(Identity.generate(), tmp_path / "identity.key")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "identity.key") == 0o600


def test_encrypted_roundtrip(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "identity.key"
    save_identity(identity, path, PASSPHRASE, _kdf_limits=FAST_KDF)
    assert is_encrypted_identity(path)
    assert load_identity(path, PASSPHRASE) == identity
    text = path.read_text()
    assert base64.b64encode(identity.seed).decode() not in text
    assert identity.onion_address.removesuffix(".onion") not in text
    assert base64.b64encode(identity.public_key).decode() not in text
    assert f"opslimit={FAST_KDF[0]} memlimit={FAST_KDF[1]}" in text


def test_default_kdf_is_moderate(tmp_path: Path) -> None:
    assert DEFAULT_KDF_LIMITS == (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
    identity = Identity.generate()
    path = tmp_path / "identity.key"
    save_identity(identity, path, PASSPHRASE)
    assert f"opslimit=3 memlimit={256 * 1024 * 1024}\n" in path.read_text()
    assert load_identity(path, PASSPHRASE) == identity


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    save_identity(Identity.generate(), path, PASSPHRASE, _kdf_limits=FAST_KDF)
    with pytest.raises(PassphraseError, match="does not open"):
        load_identity(path, b"wrong")


def test_missing_passphrase_tells_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    save_identity(Identity.generate(), path, PASSPHRASE, _kdf_limits=FAST_KDF)
    with pytest.raises(PassphraseError, match="--passphrase-file"):
        load_identity(path)


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PassphraseError, match="empty"):
        save_identity(Identity.generate(), tmp_path / "identity.key", b"", _kdf_limits=FAST_KDF)
    assert not (tmp_path / "identity.key").exists()


def test_passphrase_for_a_plain_file_is_not_needed(tmp_path: Path) -> None:
    identity = Identity.generate()
    save_identity(identity, tmp_path / "identity.key")
    assert load_identity(tmp_path / "identity.key", PASSPHRASE) == identity


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    save_identity(Identity.generate(), path)
    before = path.read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        save_identity(Identity.generate(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["identity.key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_refuses_a_file_open_to_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    save_identity(Identity.generate(), path)
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="onionmail init"):
        load_identity(tmp_path / "identity.key")
    with pytest.raises(IdentityError, match="regular file"):
        load_identity(tmp_path)


def _corrupt(path: Path, change: Any) -> None:
    os.chmod(path, 0o600)
    path.write_bytes(change(path.read_bytes()))


def _flip_seed_char(data: bytes) -> bytes:
    lines = data.split(b"\n")
    seed = bytearray(lines[1])
    seed[6] = ord("A") if seed[6] != ord("A") else ord("B")
    lines[1] = bytes(seed)
    return b"\n".join(lines)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda d: b"", "not an onionmail"),
        (lambda d: d[:40], "truncated|damaged"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: b"garbage\n" + d, "not an onionmail"),
        (lambda d: d.replace(b"-v1", b"-v9"), "newer onionmail"),
        (lambda d: d.replace(b"plain", b"clear"), "unknown"),
        (lambda d: d.replace(b"seed ", b"seeds "), "unexpected lines"),
        (lambda d: d + b"extra line\n", "unexpected lines"),
        (lambda d: d.replace(b"public-key ", b"public-key !"), "public key"),
        (_flip_seed_char, "disagree"),
        (lambda d: b"\xff" * 10, "not an onionmail"),
        (lambda d: d * 100, "too large"),
    ],
)
def test_damaged_plain_file(tmp_path: Path, change: Any, error: str) -> None:
    path = tmp_path / "identity.key"
    save_identity(Identity.generate(), path)
    _corrupt(path, change)
    with pytest.raises(IdentityError, match=error):
        load_identity(path)


def _flip_ciphertext(data: bytes) -> bytes:
    head, _, sealed = data.rstrip(b"\n").rpartition(b"secretbox ")
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 1
    return head + b"secretbox " + base64.b64encode(bytes(raw)) + b"\n"


@pytest.mark.parametrize(
    ("change", "error", "kind"),
    [
        (_flip_ciphertext, "does not open", PassphraseError),
        (lambda d: d.replace(b"argon2id ", b"scrypt "), "key derivation", IdentityError),
        (lambda d: d.replace(b"memlimit=8192", b"memlimit=8192000000"), "refused", IdentityError),
        (lambda d: d.replace(b"opslimit=", b"opslimit=x"), "kdf", IdentityError),
        (lambda d: d.replace(b"salt ", b"salt AAAA"), "salt", IdentityError),
        (lambda d: d.replace(b"secretbox ", b"secretbox AAAA"), "secretbox", IdentityError),
    ],
)
def test_damaged_encrypted_file(
    tmp_path: Path, change: Any, error: str, kind: type[IdentityError]
) -> None:
    path = tmp_path / "identity.key"
    save_identity(Identity.generate(), path, PASSPHRASE, _kdf_limits=FAST_KDF)
    _corrupt(path, change)
    with pytest.raises(kind, match=error):
        load_identity(path, PASSPHRASE)


def test_kdf_limits_are_bounded_on_save(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="memlimit"):
        save_identity(Identity.generate(), tmp_path / "k", PASSPHRASE, _kdf_limits=(1, 2 * 1024**4))


# --- passphrase file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "passphrase"),
    [
        (b"secret", b"secret"),
        (b"secret\n", b"secret"),
        (b"secret\r\n", b"secret"),
        (b"secret\n\n", b"secret\n"),
        (b" spaced secret \n", b" spaced secret "),
    ],
)
def test_read_passphrase_file(tmp_path: Path, content: bytes, passphrase: bytes) -> None:
    path = tmp_path / "passphrase"
    path.write_bytes(content)
    assert read_passphrase_file(path) == passphrase


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_empty_passphrase_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "passphrase"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="empty"):
        read_passphrase_file(path)


def test_unreadable_passphrase_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        read_passphrase_file(tmp_path / "missing")
