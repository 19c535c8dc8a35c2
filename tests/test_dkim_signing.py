"""DKIM keys, records and signatures (gateway/outbound/dkim_signing.py), verified by dkimpy itself.

The public key reaches dkimpy's verifier through its ``dnsfunc=`` hook, fed
from :meth:`DkimKey.txt_record`: the record the operator would publish is the
one the verification uses. (The end-to-end check through a real Postfix is in
``test_gateway_outbound.py``.)
"""

from __future__ import annotations

import base64
import stat
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from gateway.errors import DkimError, GatewayConfigError, GatewayError
from gateway.outbound.dkim_signing import (
    DkimAlgorithm,
    DkimKey,
    DkimSigner,
    headers_to_sign,
    key_path,
    load_or_create_key,
)

DOMAIN = "gw.test"

MESSAGE = (
    b"From: Alice <a1@gw.test>\r\n"
    b"To: bob@clear.test\r\n"
    b"Subject: hello\r\n"
    b"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <1234@gw.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"the body\r\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[DkimAlgorithm, DkimKey]:
    directory = tmp_path_factory.mktemp("dkim") / "keys"
    return {
        algorithm: load_or_create_key(
            directory, domain=DOMAIN, selector=f"s-{algorithm.key_type}", algorithm=algorithm
        )
        for algorithm in DkimAlgorithm
    }


def verifies(message: bytes, published: list[DkimKey], index: int = 0) -> bool:
    records = {key.record_name: key.txt_record().encode() for key in published}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dnsfunc))
    except dkim.ValidationError:  # dkimpy raises for a body hash mismatch
        return False


def test_keys_are_written_0600_in_a_0700_directory_and_reloaded(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "keys"
    first = load_or_create_key(
        directory, domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.ED25519
    )
    path = key_path(directory, "s", DkimAlgorithm.ED25519)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    again = load_or_create_key(
        directory, domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.ED25519
    )
    assert again.private_key == first.private_key  # loaded, not replaced
    assert "private_key" not in repr(first) and first.private_key.decode() not in repr(first)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    load_or_create_key(tmp_path, domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.RSA)
    key_path(tmp_path, "s", DkimAlgorithm.RSA).chmod(0o644)
    with pytest.raises(GatewayConfigError, match="chmod 600"):
        load_or_create_key(tmp_path, domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.RSA)


def test_a_damaged_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = key_path(tmp_path, "s", DkimAlgorithm.ED25519)
    path.write_bytes(b"not a key\n")
    path.chmod(0o600)
    with pytest.raises(GatewayConfigError, match="not a usable ed25519"):
        load_or_create_key(tmp_path, domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.ED25519)


def test_txt_records(keys: dict[DkimAlgorithm, DkimKey]) -> None:
    ed = keys[DkimAlgorithm.ED25519]
    assert ed.record_name == f"s-ed25519._domainkey.{DOMAIN}"
    assert ed.txt_record().startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(ed.public_key_base64())) == 32
    assert ed.txt_strings() == [ed.txt_record()]

    rsa_key = keys[DkimAlgorithm.RSA]
    assert rsa_key.txt_record().startswith("v=DKIM1; k=rsa; p=")
    public = load_der_public_key(base64.b64decode(rsa_key.public_key_base64()))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    strings = rsa_key.txt_strings()
    assert len(strings) == 2 and all(len(part) <= 255 for part in strings)
    assert "".join(strings) == rsa_key.txt_record()
    assert rsa_key.zone_line().startswith(f'{rsa_key.record_name}. IN TXT ( "v=DKIM1')


def test_both_signatures_verify_and_cover_the_headers_that_matter(
    keys: dict[DkimAlgorithm, DkimKey],
) -> None:
    signed = DkimSigner(list(keys.values())).sign(MESSAGE)
    assert signed.endswith(MESSAGE) and signed.count(b"DKIM-Signature:") == 2
    published = list(keys.values())
    assert verifies(signed, published, 0) and verifies(signed, published, 1)
    fields = dkim.util.parse_tag_value(signed.split(b"\r\nDKIM-Signature:")[0][16:])
    assert fields[b"c"] == b"relaxed/relaxed" and b"l" not in fields
    signed_names = [name.strip() for name in fields[b"h"].split(b":")]
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version"):
        assert signed_names.count(name) == 2, name  # present once, over-signed once
    assert b"content-type" in signed_names and b"content-transfer-encoding" in signed_names
    assert b"reply-to" in signed_names and b"received" not in signed_names


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"the body", b"the b0dy"), id="body changed"),
        pytest.param(lambda m: m.replace(b"Subject: hello", b"Subject: pay now"), id="subject"),
        pytest.param(
            lambda m: m.replace(b"To: bob", b"From: ceo@bank.test\r\nTo: bob"), id="second From"
        ),
        pytest.param(
            lambda m: m.replace(b"To: bob", b"Reply-To: evil@x.test\r\nTo: bob"),
            id="Reply-To added",
        ),
        pytest.param(lambda m: m + b"appended\r\n", id="body appended"),
    ],
)
def test_tampering_breaks_every_signature(
    keys: dict[DkimAlgorithm, DkimKey], tamper: Callable[[bytes], bytes]
) -> None:
    signed = DkimSigner(list(keys.values())).sign(MESSAGE)
    forged = tamper(signed)
    assert forged != signed
    assert not verifies(forged, list(keys.values()), 0)
    assert not verifies(forged, list(keys.values()), 1)


def test_relaxed_canonicalization_survives_refolding(keys: dict[DkimAlgorithm, DkimKey]) -> None:
    signed = DkimSigner([keys[DkimAlgorithm.ED25519]]).sign(MESSAGE)
    refolded = signed.replace(b"Subject: hello", b"Subject:\r\n   hello  ")
    assert verifies(refolded, [keys[DkimAlgorithm.ED25519]])


def test_a_signature_does_not_verify_against_another_key(tmp_path: Path) -> None:
    real = load_or_create_key(
        tmp_path / "a", domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.ED25519
    )
    other = load_or_create_key(
        tmp_path / "b", domain=DOMAIN, selector="s", algorithm=DkimAlgorithm.ED25519
    )
    signed = DkimSigner([real]).sign(MESSAGE)
    assert verifies(signed, [real]) and not verifies(signed, [other])


def test_headers_to_sign_over_signs_each_present_header() -> None:
    names = headers_to_sign(MESSAGE.replace(b"To: bob", b"To: carol@x.test\r\nTo: bob"))
    assert names.count("to") == 3 and names.count("from") == 2 and names.count("cc") == 1


def test_refusals(keys: dict[DkimAlgorithm, DkimKey]) -> None:
    signer = DkimSigner([keys[DkimAlgorithm.ED25519]])
    with pytest.raises(DkimError, match="no From"):
        signer.sign(MESSAGE.replace(b"From: Alice <a1@gw.test>\r\n", b""))
    with pytest.raises(DkimError, match="separator"):
        signer.sign(b"From: a@gw.test\r\n")
    with pytest.raises(GatewayConfigError):
        DkimSigner([])
    same = DkimKey(DOMAIN, "x", DkimAlgorithm.ED25519, keys[DkimAlgorithm.ED25519].private_key)
    with pytest.raises(GatewayConfigError, match="selector"):
        DkimSigner([same, DkimKey(DOMAIN, "x", DkimAlgorithm.RSA, b"")])
    assert issubclass(DkimError, GatewayError) and issubclass(DkimError, ValueError)
