"""End-to-end OpenPGP through the clearnet gateway: real tor, Postfix, Knot/Unbound, gpg.

The world of ``tests/test_gateway_flow.py`` (its module fixture, built again
for this module: a private Tor network, the gateway, Postfix as the MX of
``clear.test``, the box ``alice``), plus bob's OpenPGP key made by the real
``gpg`` in a throwaway GNUPGHOME. The tests run in file order and build on
each other:

1. bob writes to alice from the clearnet with an ``Autocrypt:`` header; the
   box learns his key (``onionmail keys list``), and alice's reply leaves the
   box already encrypted: Postfix stores PGP/MIME with the outer Subject
   ``...``, the gateway never held subject or body, and gpg decrypts it and
   verifies the box's signature (the key from ``onionmail keys export``).
2. bob sends alice a PGP/MIME message made by gpg: the box stores it
   decrypted, protected Subject restored, signature verified against the key
   it learned in 1.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate

import dkim
import pytest

from gateway.config import load_gateway_config
from gateway.daemon import dkim_signer
from onionmail.openpgp.autocrypt import format_autocrypt_header
from tests import test_gateway_flow
from tests.box_process import submit
from tests.gnupg_home import GpgHome, gnupg_home
from tests.postfix import Postfix
from tests.test_gateway_flow import (
    CLEAR_DOMAIN,
    GW_DOMAIN,
    World,
    gateway,
    postfix_messages,
    send_through_postfix,
    wait_box_mail,
)

pytestmark = pytest.mark.tor

world = test_gateway_flow.world  # the same module-scoped world, built for this module

BOB = f"bob@{CLEAR_DOMAIN}"
ALIAS = f"alice@{GW_DOMAIN}"


@pytest.fixture(scope="module")
def gpg() -> Iterator[GpgHome]:
    with gnupg_home() as home:
        home.generate_key(BOB)
        yield home


def _onionmail(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "onionmail.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _send_from_bob(world: World, message: bytes) -> None:
    send_through_postfix(world, message, BOB, ALIAS)


def _new_postfix_message(postfix: Postfix, before: int, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = postfix_messages(postfix)
        if len(messages) > before:
            return messages[-1]
        time.sleep(0.2)
    raise AssertionError(f"nothing new reached Postfix:\n{postfix.log.read_text()[-3000:]}")


def _gateway_never_held(world: World, *secrets_: str) -> None:
    for path in world.gw_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets_), path
    log = "".join(world.gw_stderr)
    assert not any(s in log for s in secrets_)


def _dkim_verifies(world: World, stored: bytes) -> None:
    config = load_gateway_config(world.gw_dir)
    keys = {key.record_name: key.txt_record().encode() for key in dkim_signer(config).keys}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.decode().rstrip("."))

    checker = dkim.DKIM(stored)
    assert checker.verify(idx=0, dnsfunc=dnsfunc)


def test_autocrypt_from_the_clearnet_then_the_reply_leaves_the_box_encrypted(
    world: World, gpg: GpgHome
) -> None:
    alice = world.alice
    assert "approved" in gateway(world, "approve", "alice")
    keydata = gpg.run(["--export", BOB]).stdout
    bob_fpr = gpg.run(["--with-colons", "--fingerprint", BOB]).stdout.decode()
    bob_fpr = next(line.split(":")[9] for line in bob_fpr.splitlines() if line.startswith("fpr"))
    header = format_autocrypt_header(BOB, keydata, prefer_encrypt_mutual=True).decode()
    token = f"hello-{secrets.token_hex(4)}"
    _send_from_bob(
        world,
        (
            f"From: Bob <{BOB}>\r\nTo: {ALIAS}\r\nSubject: {token}\r\n"
            f"Date: {formatdate()}\r\nMessage-ID: <{token}@{CLEAR_DOMAIN}>\r\n"
            f"Autocrypt: {header}\r\n\r\nWrite back, encrypted.\r\n"
        ).encode(),
    )
    received = wait_box_mail(alice, token)
    assert b"Onionmail-OpenPGP: none (not encrypted)" in received
    listing = _onionmail("keys", "list", "--dir", str(alice.new.box_dir))
    assert f"{BOB}  {bob_fpr}  autocrypt" in listing

    subject = f"SecretReplySubject{secrets.token_hex(6)}"
    body = f"SecretReplyBody{secrets.token_hex(6)}"
    before = len(postfix_messages(world.postfix))
    asyncio.run(submit(alice, BOB, subject, body))
    stored = _new_postfix_message(world.postfix, before)

    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/encrypted"
    assert parsed.get_param("protocol") == "application/pgp-encrypted"
    assert parsed["Subject"] == "..." and parsed["From"] == ALIAS
    assert subject.encode() not in stored and body.encode() not in stored
    assert b".onion" not in stored
    _dkim_verifies(world, stored)
    _gateway_never_held(world, subject, body)

    box_key = _onionmail("keys", "export", "--dir", str(alice.new.box_dir))
    gpg.import_key(box_key)
    box_fpr = gpg.run(["--with-colons", "--fingerprint", ALIAS]).stdout.decode()
    box_fpr = next(line.split(":")[9] for line in box_fpr.splitlines() if line.startswith("fpr"))
    assert "keydata=" in str(parsed["Autocrypt"]) and ALIAS in str(parsed["Autocrypt"])
    result = gpg.run(["--decrypt"], stored)
    inner = email.message_from_bytes(result.stdout, policy=email.policy.default)
    assert inner["Subject"] == subject and inner["From"] == ALIAS
    assert body in str(inner.get_body())
    assert any(line.startswith("GOODSIG") for line in result.status), result.status
    assert any(line.startswith(f"VALIDSIG {box_fpr}") for line in result.status)


def test_pgp_mime_from_the_clearnet_is_stored_decrypted_and_verified(
    world: World, gpg: GpgHome
) -> None:
    subject = f"SecretInboundSubject{secrets.token_hex(6)}"
    body = f"SecretInboundBody{secrets.token_hex(6)}"
    inner = (
        'Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n'
        f"From: Bob <{BOB}>\r\nTo: {ALIAS}\r\nSubject: {subject}\r\n"
        f"Date: {formatdate()}\r\n\r\n{body}\r\n"
    ).encode()
    armored = gpg.run(
        ["--armor", "--sign", "--encrypt", "--local-user", BOB, "--recipient", ALIAS], inner
    ).stdout
    boundary = secrets.token_hex(8)
    message = (
        (
            f"From: Bob <{BOB}>\r\nTo: {ALIAS}\r\nSubject: ...\r\nDate: {formatdate()}\r\n"
            f"Message-ID: <{boundary}@{CLEAR_DOMAIN}>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
            f'boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        + f"\r\n--{boundary}--\r\n".encode()
    )
    _send_from_bob(world, message)
    stored = wait_box_mail(world.alice, subject)
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    status = str(parsed["Onionmail-OpenPGP"])
    assert status.startswith("decrypted; signature=verified; signer="), status
    assert parsed["Subject"] == subject and body in str(parsed.get_body())
    assert "onionmail=gateway" in str(parsed["Authentication-Results"])
    _gateway_never_held(world, subject, body)
