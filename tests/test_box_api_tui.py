"""The parts of the box's library API that the TUI's new views rest on (no UI, no tor).

What the box says about a message's OpenPGP, where it routes a recipient,
its gateway registrations and the keys it knows: each read the way the box
itself writes or decides them, and never trusting what a sender could forge.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import time
from pathlib import Path

import pytest

from onionmail.box.api import ArrivalKind, BoxApi, openpgp_result
from onionmail.box.daemon import Box
from onionmail.config.box import load_config
from onionmail.core.mail_address import parse_mail_address
from tui.sample_box import (
    ALIAS,
    ALICE,
    BOB_ADDRESS,
    CLEARNET_ADDRESS,
    CORP,
    DAVE_FINGERPRINT,
    GATEWAY,
    ONION_MX_ADDRESS,
    OTHER_CLEARNET_ADDRESS,
    create_sample_box,
)


@pytest.fixture
def api(tmp_path: Path) -> BoxApi:
    return BoxApi(create_sample_box(tmp_path / "alice"))


def parsed(text: str) -> email.message.Message:
    return email.parser.Parser(policy=email.policy.default).parsestr(text)


def gateway_message(onion: str, *fields: str) -> email.message.Message:
    head = [
        f"Return-Path: <{CLEARNET_ADDRESS}>",
        f"Authentication-Results: {onion}; onionmail=gateway",
        *fields,
    ]
    return parsed("\n".join(head) + "\nSubject: x\n\nbody\n")


def test_openpgp_verdict_of_the_box_is_read(api: BoxApi) -> None:
    msg = gateway_message(
        api.onion,
        f"Onionmail-OpenPGP: decrypted; signature=verified; signer={DAVE_FINGERPRINT}",
        f"From: {CLEARNET_ADDRESS}",
    )
    arrival = api.arrival(msg)
    assert arrival.kind == ArrivalKind.GATEWAY and arrival.encrypted
    assert arrival.openpgp is not None and arrival.openpgp.signed_by_sender
    assert arrival.openpgp.signer == DAVE_FINGERPRINT
    assert arrival.encryption == "OpenPGP"


@pytest.mark.parametrize(
    ("comment", "shown"),
    [
        ("sealed v2: a handshake with the mail key the sender's onion certifies", "sealed"),
        ("sealed-v1: opened with the sender's onion key; no forward secrecy", "sealed-v1"),
    ],
)
def test_a_version_1_seal_is_shown_as_such(api: BoxApi, comment: str, shown: str) -> None:
    sender = f"bob@{api.onion}"  # any onion: the box's own result field is what counts
    msg = parsed(
        f"Return-Path: <{sender}>\n"
        f"Authentication-Results: {api.onion}; onionmail=pass ({comment}) "
        f"smtp.mailfrom={sender}\nFrom: {sender}\nSubject: x\n\nbody\n"
    )
    arrival = api.arrival(msg)
    assert arrival.kind == ArrivalKind.SEALED and arrival.encryption == shown


def test_a_not_decrypted_verdict_keeps_its_reason(api: BoxApi) -> None:
    msg = gateway_message(
        api.onion,
        'Onionmail-OpenPGP: not-decrypted; reason="no key; or so"',
        "From: x@example.org",
        "Content-Type: multipart/encrypted; boundary=b",
    )
    arrival = api.arrival(msg)
    assert arrival.openpgp is not None and not arrival.openpgp.decrypted
    assert arrival.openpgp.reason == "no key; or so"
    assert arrival.encrypted and arrival.encryption == "OpenPGP?"


@pytest.mark.parametrize(
    "fields",
    [
        # below the sender's own fields: the sender wrote it
        ("From: x@example.org", "Onionmail-OpenPGP: decrypted; signature=verified"),
        # twice: one of them is forged
        (
            "Onionmail-OpenPGP: none (not encrypted)",
            "Onionmail-OpenPGP: decrypted; signature=verified",
        ),
    ],
)
def test_a_forged_openpgp_verdict_is_ignored(api: BoxApi, fields: tuple[str, ...]) -> None:
    arrival = api.arrival(gateway_message(api.onion, *fields))
    assert arrival.openpgp is None
    assert not arrival.encrypted and arrival.encryption == "none"


def test_the_verdict_counts_only_on_mail_the_box_got_from_a_gateway(api: BoxApi) -> None:
    """A plain onion peer's message is not filtered by the box's OpenPGP step: a field
    claiming decryption there is the peer's word."""
    msg = parsed(
        f"Return-Path: <{BOB_ADDRESS}>\n"
        f"Authentication-Results: {api.onion}; onionmail=none\n"
        "Onionmail-OpenPGP: decrypted; signature=verified\n"
        f"From: {BOB_ADDRESS}\n\nbody\n"
    )
    arrival = api.arrival(msg)
    assert arrival.kind == ArrivalKind.PLAIN and arrival.openpgp is None
    assert openpgp_result(msg) is not None  # the field alone would have passed


@pytest.mark.parametrize(
    "recipient",
    [BOB_ADDRESS, ONION_MX_ADDRESS, CLEARNET_ADDRESS, OTHER_CLEARNET_ADDRESS],
)
def test_route_is_the_box_s_own(api: BoxApi, recipient: str) -> None:
    box = Box(load_config(api.box_dir), ALICE)
    address = parse_mail_address(recipient)
    assert api.route(address) == box.route(address)


def test_prediction_follows_the_route(api: BoxApi) -> None:
    corp = api.predict(ONION_MX_ADDRESS)
    assert str(corp.path) == "onion-sealed" and CORP.onion_address in corp.route
    assert "gateway" not in corp.route.replace("no gateway", "")
    dave = api.predict(CLEARNET_ADDRESS)
    assert str(dave.path) == "gateway-clearnet-openpgp" and dave.openpgp_key == DAVE_FINGERPRINT
    erin = api.predict(OTHER_CLEARNET_ADDRESS)
    assert str(erin.path) == "gateway-clearnet" and erin.openpgp_key == ""
    assert GATEWAY.onion_address in erin.route and ALIAS in erin.route


def test_gateway_registrations_and_a_restart_after_a_new_one(api: BoxApi) -> None:
    [reg] = api.gateway_registrations({})
    assert (reg.gateway, reg.alias, reg.sends_clearnet) == (GATEWAY.onion_address, ALIAS, True)
    assert not reg.restart_needed
    config = api.box_dir / "onionmail.toml"
    started = time.time() - 60
    os.utime(config, (started + 30, started + 30))
    [reg] = api.gateway_registrations({"started_at": started})
    assert reg.restart_needed, "onionmail.toml changed after the box started"
    os.utime(config, (started - 30, started - 30))
    [reg] = api.gateway_registrations({"started_at": started})
    assert not reg.restart_needed


def test_known_keys_and_contacts_carry_fingerprints(api: BoxApi) -> None:
    [key] = api.known_keys()
    assert (key.address, key.fingerprint, key.source) == (
        CLEARNET_ADDRESS,
        DAVE_FINGERPRINT,
        "manual",
    )
    keys = {c.petname: c.openpgp_key for c in api.contacts()}
    assert keys == {"bob": "", "dave": DAVE_FINGERPRINT, "frank": ""}


def test_without_a_gateway_there_is_no_route_and_no_registration(tmp_path: Path) -> None:
    api = BoxApi(create_sample_box(tmp_path / "alice", gateway=False))
    assert api.gateway_registrations({}) == []
    assert api.route(CLEARNET_ADDRESS) is None
    assert api.status().gateways == ()
    assert api.known_keys() == []


def sealed_message(onion: str, from_field: str) -> email.message.Message:
    results = (
        f"{onion}; onionmail=pass (sealed envelope opened with the sender's onion key) "
        f"smtp.mailfrom={BOB_ADDRESS}"
    )
    return parsed(f"Authentication-Results: {results}\nFrom: {from_field}\nSubject: x\n\nhi\n")


def test_a_sealed_message_is_verified_when_its_from_names_the_sealer(api: BoxApi) -> None:
    arrival = api.arrival(sealed_message(api.onion, f"Bob <{BOB_ADDRESS}>"))
    assert arrival.kind == ArrivalKind.SEALED and arrival.verified and arrival.encrypted


@pytest.mark.parametrize(
    "from_field",
    [
        f'"alice@{ALICE.onion_address}" <{BOB_ADDRESS}>',
        f"Bob <{BOB_ADDRESS}>, carol@{ALICE.onion_address}",
        f"=?utf-8?q?alice=40{ALICE.onion_address}?= <{BOB_ADDRESS}>",
    ],
    ids=["display-name", "second-address", "encoded-word"],
)
def test_a_sealed_message_naming_another_onion_is_not_shown_as_verified(
    api: BoxApi, from_field: str
) -> None:
    """Mail stored before the box refused these on arrival: the seal proves bob,
    but the reader would be shown alice, so the TUI must not say "verified"."""
    arrival = api.arrival(sealed_message(api.onion, from_field))
    assert arrival.kind == ArrivalKind.SEALED and not arrival.verified


SUMMARY_HEADERS = [
    b"Subject: =?utf-8?q?Caf=C3=A9?= and =?iso-8859-1?q?cr=E8me?=",
    "Subject: Grüße aus Köln".encode(),  # raw UTF-8 (RFC 6532)
    b"Subject: a subject folded\n over two lines",
    b"Subject: =?utf-8?q?broken",
    b'From: "Doe, Jane" <jane@example.org>',
    b"From: =?utf-8?b?SsO2cmc=?= <joerg@example.org>",
    b"References: <a@x>\n <b@x>\nIn-Reply-To: <b@x>",
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=x',
]


@pytest.mark.parametrize("field", SUMMARY_HEADERS)
def test_the_inbox_s_fast_header_reading_says_what_the_full_parse_says(
    api: BoxApi, field: bytes
) -> None:
    """The inbox reads headers as decoded text only (PLAIN_TEXT, ~3x faster on a folder of
    10,000); its summary of a message equals the one from email's full parse."""
    from onionmail.box.stored_mail import PLAIN_TEXT

    onion = ALICE.onion_address
    head = (
        f"Authentication-Results: {onion}; onionmail=none (plain SMTP peer)\n".encode()
        + b"Date: Thu, 01 Jan 2026 10:00:00 +0000\nMessage-ID: <m@x>\n"
        + (b"From: bob@example.org\n" if not field.startswith(b"From") else b"")
        + field
        + b"\n\n"
    )
    summaries = [
        api.summary("alice", "new/x", email.parser.BytesHeaderParser(policy=p).parsebytes(head))
        for p in (email.policy.default, PLAIN_TEXT)
    ]
    assert summaries[0] == summaries[1]
