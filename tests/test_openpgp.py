"""End-to-end OpenPGP for clearnet recipients, checked against the real ``gpg`` binary.

Each direction is proved by the other implementation: gpg decrypts and
verifies what the box wrote (and the protected Subject is inside, the outer
one is ``...``); the box decrypts and verifies what gpg wrote to it. Keys
are real (gpg's ed25519/cv25519 and RSA-3072, the box's pgpy key).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from onionmail.core.errors import DecryptionError, KeyMismatchError, OpenPGPError
from onionmail.message.rfc5322 import Message, parse_message
from onionmail.openpgp.autocrypt import parse_autocrypt_header
from onionmail.openpgp.keys import (
    BoxKey,
    PublicKey,
    SignatureStatus,
    decrypt,
    ensure_box_key,
    load_box_key,
    parse_public_key,
    sign_and_encrypt,
)
from onionmail.openpgp.pgp_mime import (
    OBSCURED_SUBJECT,
    STATUS_FIELD,
    decrypt_message,
    encrypt_message,
    is_pgp_mime,
)
from onionmail.seal.identity import Identity
from tests.gnupg_home import GpgHome, gnupg_home

ALIAS = "nina@gateway.example"
PEER = "bob@clear.example"
SUBJECT = "Plans for the 14th: the real subject"

ORIGINAL = (
    f"From: Nina <{ALIAS}>\r\n"
    f"To: Bob <{PEER}>\r\n"
    f"Subject: {SUBJECT}\r\n"
    "Date: Sun, 01 Mar 2026 10:00:00 +0000\r\n"
    "Message-ID: <c0ffee@gateway.example>\r\n"
    "Keywords: secret-keyword\r\n"
    "Bcc: hidden@elsewhere.example\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Meet at the usual place.\r\n"
    "Gr\u00fc\u00dfe\r\n"
).encode()

BOX_KEY = BoxKey.generate(ALIAS)


@pytest.fixture(scope="module")
def gpg() -> Iterator[GpgHome]:
    """Bob's gpg with his ed25519/cv25519 key, knowing the box's public key."""
    with gnupg_home() as home:
        home.generate_key(PEER)
        home.import_key(BOX_KEY.public.armored())
        yield home


@pytest.fixture(scope="module")
def bob_key(gpg: GpgHome) -> PublicKey:
    return parse_public_key(gpg.export(PEER))


def lookup(*keys: PublicKey) -> dict[str, PublicKey]:
    return {address: key for key in keys for address in key.addresses}


def field(message: Message, name: str) -> str:
    value = message.get(name)
    assert value is not None, f"no {name} field"
    return value.decode()


# --- the box writes, gpg reads ----------------------------------------------------------------


def test_gpg_decrypts_the_box_message_and_finds_the_protected_header(
    gpg: GpgHome, bob_key: PublicKey
) -> None:
    wire = encrypt_message(ORIGINAL, BOX_KEY, [bob_key])
    outer = parse_message(wire)

    assert field(outer, "Subject") == OBSCURED_SUBJECT.decode() == "..."
    assert SUBJECT.encode() not in wire and b"Meet at the usual place" not in wire
    assert b"secret-keyword" not in wire and b"hidden@elsewhere" not in wire
    assert b"BEGIN PGP MESSAGE" in wire and b"BEGIN PGP SIGNED" not in wire  # not PGP/inline
    assert re.match(
        r'multipart/encrypted; protocol="application/pgp-encrypted";\s*boundary=',
        field(outer, "Content-Type"),
    )

    result = gpg.run(["--decrypt"], wire, check=False)

    assert result.returncode == 0, result.stderr.decode()
    assert "DECRYPTION_OKAY" in result.status and "GOODMDC" in result.status
    validsig = [s for s in result.status if s.startswith("VALIDSIG ")]
    assert validsig and validsig[0].split()[1] == BOX_KEY.fingerprint
    assert any(s.startswith("GOODSIG ") for s in result.status)
    inner = parse_message(result.stdout)
    assert field(inner, "Subject") == SUBJECT
    for name in ("From", "To", "Date", "Message-ID", "Keywords"):
        assert inner.get(name) == parse_message(ORIGINAL).get(name)
    assert inner.get("Bcc") is None
    assert 'hp="cipher"' in field(inner, "Content-Type")
    assert "Subject: ..." in [v.decode() for v in inner.get_all("HP-Outer")]
    assert inner.body == parse_message(ORIGINAL).body


@pytest.mark.parametrize("hours_after_the_key", [2, -2], ids=["release", "before-the-key"])
def test_the_signature_shows_the_time_the_box_chose_not_the_second_it_signed(
    gpg: GpgHome, bob_key: PublicKey, hours_after_the_key: int
) -> None:
    """The box passes the release time rounded as Date is, and gpg reads that time back;
    a time before the key was made becomes the key's own time (gpg refuses older)."""
    key_made = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    box_key = BoxKey.generate(ALIAS, created=key_made)
    gpg.import_key(box_key.public.armored())
    release = key_made + timedelta(hours=hours_after_the_key)
    wire = encrypt_message(ORIGINAL, box_key, [bob_key], signed_at=release)
    result = gpg.run(["--decrypt"], wire, check=False)
    assert result.returncode == 0, result.stderr.decode()
    (validsig,) = [s for s in result.status if s.startswith("VALIDSIG ")]
    assert int(validsig.split()[3]) == int(max(release, key_made).timestamp())


def test_gpg_decrypts_for_an_rsa_recipient(tmp_path: Path) -> None:
    with gnupg_home() as home:
        home.generate_key("carol@clear.example", "rsa3072")
        home.import_key(BOX_KEY.public.armored())
        carol = parse_public_key(home.export("carol@clear.example"))
        wire = encrypt_message(ORIGINAL, BOX_KEY, [carol])
        result = home.run(["--decrypt"], wire)
        assert field(parse_message(result.stdout), "Subject") == SUBJECT
        assert any(s.startswith(f"VALIDSIG {BOX_KEY.fingerprint}") for s in result.status)


def test_the_outgoing_autocrypt_header_gives_gpg_the_box_key(bob_key: PublicKey) -> None:
    wire = encrypt_message(ORIGINAL, BOX_KEY, [bob_key])
    header = parse_autocrypt_header(parse_message(wire).get("Autocrypt") or b"")
    assert header.addr == ALIAS and header.prefer_encrypt_mutual
    with gnupg_home() as fresh:
        fresh.run(["--import"], header.keydata)
        listed = fresh.run(["--with-colons", "--list-keys"]).stdout.decode()
        assert f"fpr:::::::::{BOX_KEY.fingerprint}:" in listed
        assert f"<{ALIAS}>" in listed


def test_the_box_reads_its_own_sent_copy(bob_key: PublicKey) -> None:
    wire = encrypt_message(ORIGINAL, BOX_KEY, [bob_key])
    opened = decrypt_message(wire, BOX_KEY, lookup(BOX_KEY.public).get)
    restored = parse_message(opened.message)
    assert opened.signature is SignatureStatus.VERIFIED and opened.protected_headers
    assert field(restored, "Subject") == SUBJECT


def test_a_from_that_is_not_the_key_user_id_is_refused(bob_key: PublicKey) -> None:
    onion_from = ORIGINAL.replace(ALIAS.encode(), b"nina@" + b"a" * 56 + b".onion", 1)
    with pytest.raises(KeyMismatchError):
        encrypt_message(onion_from, BOX_KEY, [bob_key])


# --- gpg writes, the box reads ----------------------------------------------------------------

INNER_FROM_BOB = (
    'Content-Type: text/plain; charset="us-ascii"; hp="cipher"\r\n'
    f"From: {PEER}\r\n"
    f"To: {ALIAS}\r\n"
    "Subject: Re: the real reply subject\r\n"
    "Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n"
    "Message-ID: <reply1@clear.example>\r\n"
    "HP-Outer: Subject: ...\r\n"
    "\r\n"
    "See you there.\r\n"
).encode()


def pgp_mime_from_gpg(armored: bytes, extra_outer: str = "") -> bytes:
    """What a PGP/MIME mail client sends around gpg's ciphertext."""
    boundary = "bob-boundary-1"
    return (
        (
            f"Received: from mx.clear.example by gateway.example\r\n"
            f"From: {PEER}\r\n"
            f"To: {ALIAS}\r\n"
            "Subject: ...\r\n"
            f"{extra_outer}"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
            f' boundary="{boundary}"\r\n'
            "\r\n"
            f"--{boundary}\r\n"
            "Content-Type: application/pgp-encrypted\r\n\r\n"
            "Version: 1\r\n\r\n"
            f"--{boundary}\r\n"
            'Content-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        ).encode()
        + armored.replace(b"\n", b"\r\n")
        + f"\r\n--{boundary}--\r\n".encode()
    )


def gpg_sign_encrypt(gpg: GpgHome, data: bytes, *, sign: bool = True) -> bytes:
    args = ["--armor", "--encrypt", "-r", BOX_KEY.fingerprint]
    if sign:
        args += ["--sign", "-u", PEER]
    return gpg.run(args, data).stdout


def test_the_box_decrypts_and_verifies_what_gpg_signed_and_encrypted(
    gpg: GpgHome, bob_key: PublicKey
) -> None:
    wire = pgp_mime_from_gpg(
        gpg_sign_encrypt(gpg, INNER_FROM_BOB), extra_outer="Reply-To: mallory@evil.example\r\n"
    )
    assert is_pgp_mime(wire)

    opened = decrypt_message(wire, BOX_KEY, lookup(bob_key).get)

    assert opened.signature is SignatureStatus.VERIFIED
    assert opened.protected_headers
    restored = parse_message(opened.message)
    assert field(restored, "Subject") == "Re: the real reply subject"
    assert field(restored, "Message-ID") == "<reply1@clear.example>"
    assert restored.body == b"See you there.\r\n"
    assert restored.get("Reply-To") is None  # unprotected outer field dropped
    assert restored.get("HP-Outer") is None
    assert field(restored, "Received").startswith("from mx.clear.example")
    assert field(restored, STATUS_FIELD) == (
        f"decrypted; signature=verified; signer={bob_key.fingerprint}"
    )


def test_a_signature_by_an_unknown_or_other_key_is_not_verified(
    gpg: GpgHome, bob_key: PublicKey
) -> None:
    wire = pgp_mime_from_gpg(gpg_sign_encrypt(gpg, INNER_FROM_BOB))
    unknown = decrypt_message(wire, BOX_KEY, lambda address: None)
    assert unknown.signature is SignatureStatus.UNKNOWN_SIGNER
    wrong = decrypt_message(wire, BOX_KEY, lambda address: BOX_KEY.public)
    assert wrong.signature is SignatureStatus.UNKNOWN_SIGNER
    unsigned = pgp_mime_from_gpg(gpg_sign_encrypt(gpg, INNER_FROM_BOB, sign=False))
    assert decrypt_message(unsigned, BOX_KEY, lookup(bob_key).get).signature is (
        SignatureStatus.UNSIGNED
    )


def test_a_forged_status_field_is_removed(gpg: GpgHome, bob_key: PublicKey) -> None:
    forged = INNER_FROM_BOB.replace(
        b"From:", f"{STATUS_FIELD}: decrypted; signature=verified\r\nFrom:".encode(), 1
    )
    wire = pgp_mime_from_gpg(gpg_sign_encrypt(gpg, forged, sign=False))
    restored = parse_message(decrypt_message(wire, BOX_KEY, lookup(bob_key).get).message)
    assert restored.get_all(STATUS_FIELD) == [b"decrypted; signature=unsigned"]


def test_multipart_signed_inside_the_encryption_is_verified(
    gpg: GpgHome, bob_key: PublicKey
) -> None:
    signed_part = INNER_FROM_BOB
    signature = gpg.run(["--armor", "--detach-sign", "-u", PEER], signed_part).stdout
    body = (
        b'Content-Type: multipart/signed; micalg=pgp-sha512;\r\n protocol="application/pgp-'
        b'signature"; boundary="sig1"\r\n\r\n--sig1\r\n'
        + signed_part
        + b"\r\n--sig1\r\nContent-Type: application/pgp-signature\r\n\r\n"
        + signature.replace(b"\n", b"\r\n")
        + b"\r\n--sig1--\r\n"
    )
    wire = pgp_mime_from_gpg(gpg_sign_encrypt(gpg, body, sign=False))
    opened = decrypt_message(wire, BOX_KEY, lookup(bob_key).get)
    assert opened.signature is SignatureStatus.VERIFIED
    assert field(parse_message(opened.message), "Subject") == "Re: the real reply subject"

    tampered_body = body.replace(b"See you there.", b"See you elsewhere.")
    wire = pgp_mime_from_gpg(gpg_sign_encrypt(gpg, tampered_body, sign=False))
    assert decrypt_message(wire, BOX_KEY, lookup(bob_key).get).signature is SignatureStatus.BAD


def test_a_message_without_protected_headers_keeps_its_outer_header(
    gpg: GpgHome, bob_key: PublicKey
) -> None:
    legacy_inner = b"Content-Type: text/plain\r\nSubject: inner, unprotected\r\n\r\nhi\r\n"
    wire = pgp_mime_from_gpg(gpg_sign_encrypt(gpg, legacy_inner))
    opened = decrypt_message(wire, BOX_KEY, lookup(bob_key).get)
    restored = parse_message(opened.message)
    assert not opened.protected_headers
    assert opened.signature is SignatureStatus.VERIFIED  # outer From names Bob
    assert field(restored, "Subject") == "..."
    assert field(restored, "Content-Type") == "text/plain"
    assert restored.body == b"hi\r\n"


def test_tampered_ciphertext_is_refused(gpg: GpgHome) -> None:
    armored = gpg_sign_encrypt(gpg, INNER_FROM_BOB)
    lines = armored.split(b"\n")
    middle = len(lines) // 2
    lines[middle] = bytes(reversed(lines[middle]))
    with pytest.raises(DecryptionError):
        decrypt_message(pgp_mime_from_gpg(b"\n".join(lines)), BOX_KEY, lambda a: None)


def test_a_message_without_integrity_protection_is_refused(gpg: GpgHome) -> None:
    """EFAIL: gpg --rfc2440 writes a symmetrically encrypted packet without MDC."""
    armored = gpg.run(
        ["--armor", "--rfc2440", "--encrypt", "-r", BOX_KEY.fingerprint], INNER_FROM_BOB
    ).stdout
    with pytest.raises(DecryptionError, match="integrity"):
        decrypt(armored, BOX_KEY)


def test_a_message_to_another_key_is_refused(bob_key: PublicKey) -> None:
    other = BoxKey.generate("other@gateway.example")
    armored = sign_and_encrypt(b"hello\r\n", other, [bob_key])
    with pytest.raises(DecryptionError, match="not encrypted to this box"):
        decrypt(armored.encode(), BOX_KEY)


def test_not_pgp_mime_is_refused() -> None:
    plain = b"From: a@b.example\r\nSubject: x\r\n\r\nhello\r\n"
    assert not is_pgp_mime(plain)
    with pytest.raises(DecryptionError):
        decrypt_message(plain, BOX_KEY, lambda a: None)


# --- keys -------------------------------------------------------------------------------------


def test_a_gpg_exported_key_parses_with_its_address(gpg: GpgHome, bob_key: PublicKey) -> None:
    assert bob_key.addresses == (PEER,)
    listed = gpg.run(["--with-colons", "--list-keys", PEER]).stdout.decode()
    assert f"fpr:::::::::{bob_key.fingerprint}:" in listed


def test_a_secret_key_is_not_accepted_as_a_public_one(gpg: GpgHome) -> None:
    secret = gpg.run(["--armor", "--export-secret-keys", PEER]).stdout
    with pytest.raises(OpenPGPError, match="secret key"):
        parse_public_key(secret)


def test_garbage_is_not_a_key() -> None:
    with pytest.raises(OpenPGPError):
        parse_public_key(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n")
    with pytest.raises(OpenPGPError):
        parse_public_key(b"\x99\x00\x01")


def test_an_expired_key_is_refused() -> None:
    with gnupg_home() as home:
        # made in 2020 with a one-year expiry, so expired now: no waiting on the clock
        home.run(
            ["--faked-system-time", "20200101T000000", "--quick-gen-key", "old@clear.example"]
            + ["future-default", "default", "1y"]
        )
        with pytest.raises(OpenPGPError, match="has expired"):
            parse_public_key(home.export("old@clear.example"))


def test_the_box_key_file_is_private_sealed_and_bound_to_the_identity(tmp_path: Path) -> None:
    identity = Identity.generate()
    path = tmp_path / "keys" / "openpgp.key"
    key = ensure_box_key(path, identity, ALIAS)

    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    content = path.read_bytes()
    assert b"PRIVATE KEY" not in content and ALIAS.encode() not in content
    assert load_box_key(path, identity).fingerprint == key.fingerprint
    with pytest.raises(OpenPGPError, match="another box"):
        load_box_key(path, Identity.generate())
    path.chmod(0o644)
    with pytest.raises(OpenPGPError, match="0600"):
        load_box_key(path, identity)
    path.chmod(0o600)

    again = ensure_box_key(path, identity, "second@gateway.example")
    assert again.fingerprint == key.fingerprint
    assert set(again.addresses) == {ALIAS, "second@gateway.example"}
    assert set(load_box_key(path, identity).addresses) == set(again.addresses)
    assert repr(key) == f"BoxKey(fingerprint={key.fingerprint})"
