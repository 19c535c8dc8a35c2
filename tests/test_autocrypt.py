"""Autocrypt Level 1: the header parser (property tests), the key store and its update rule."""

from __future__ import annotations

import base64
import json
from email.utils import formatdate
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import onionmail.openpgp.autocrypt as autocrypt
from onionmail.core.errors import KeyMismatchError, OpenPGPError
from onionmail.message.rfc5322 import unfold
from onionmail.openpgp.autocrypt import (
    AutocryptHeader,
    Outcome,
    PeerKeyStore,
    Source,
    format_autocrypt_header,
    parse_autocrypt_header,
)
from onionmail.openpgp.keys import BoxKey

ALICE = "alice@clear.example"
ALICE_KEY = BoxKey.generate(ALICE)
ALICE_NEW_KEY = BoxKey.generate(ALICE)
EVE_KEY = BoxKey.generate("eve@evil.example")
NOW = 1_780_000_000  # 2026-05-28
DATE = "Thu, 28 May 2026 10:00:00 +0000"  # a little before NOW

# --- the header parser ------------------------------------------------------------------------

local_parts = st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,20}[a-z0-9])?", fullmatch=True).filter(
    lambda s: ".." not in s
)
domains = st.from_regex(r"[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?\.(?:example|org|onion)", fullmatch=True)
addresses = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
blanks = st.sampled_from(["", " ", "  ", "\t", "\r\n "])


@given(addr=addresses, keydata=st.binary(min_size=1, max_size=3000), mutual=st.booleans())
def test_format_then_parse_gives_back_the_header(addr: str, keydata: bytes, mutual: bool) -> None:
    value = format_autocrypt_header(addr, keydata, prefer_encrypt_mutual=mutual)
    first, *rest = value.split(b"\r\n")
    assert all(len(line) <= 78 for line in rest)  # folded keydata
    assert len(b"Autocrypt: " + first) <= 78 or len(addr) > 29  # 49 octets besides addr
    assert parse_autocrypt_header(value) == AutocryptHeader(addr, keydata, mutual)
    assert parse_autocrypt_header(unfold(value)) == AutocryptHeader(addr, keydata, mutual)


@given(
    addr=addresses,
    keydata=st.binary(min_size=1, max_size=600),
    prefer=st.sampled_from([None, "mutual", "nopreference", "something-else"]),
    extras=st.lists(
        st.tuples(
            st.from_regex(r"_[a-z0-9-]{1,8}", fullmatch=True),
            st.from_regex(r"[a-z0-9]*", fullmatch=True),
        ),
        max_size=3,
        unique_by=lambda t: t[0],
    ),
    order=st.randoms(use_true_random=False),
    pad=blanks,
    trailing=st.booleans(),
    upper_addr=st.booleans(),
)
def test_attribute_order_blanks_and_underscore_attributes_do_not_matter(
    addr: str,
    keydata: bytes,
    prefer: str | None,
    extras: list[tuple[str, str]],
    order: object,
    pad: str,
    trailing: bool,
    upper_addr: bool,
) -> None:
    encoded = base64.b64encode(keydata).decode()
    folded = "\r\n ".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
    attributes = [
        ("addr", addr.upper() if upper_addr else addr),
        ("keydata", folded),
        *extras,
    ]
    if prefer is not None:
        attributes.append(("prefer-encrypt", prefer))
    order.shuffle(attributes)  # type: ignore[attr-defined]
    text = ";".join(f"{pad}{name}={pad}{value}{pad}" for name, value in attributes)
    text += ";" if trailing else ""

    header = parse_autocrypt_header(text)

    assert header == AutocryptHeader(addr, keydata, prefer == "mutual")


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_input_parses_or_raises_openpgp_error(value: str | bytes) -> None:
    try:
        header = parse_autocrypt_header(value)
    except OpenPGPError:
        return
    assert header.keydata and "@" in header.addr


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("keydata=AAAA", "lacks addr"),
        (f"addr={ALICE}", "lacks addr= or keydata"),
        (f"addr={ALICE}; keydata=AAAA; keydata=AAAA", "repeats"),
        (f"addr={ALICE}; keydata=AAAA; critical=1", "unknown critical"),
        (f"addr={ALICE}; keydata=!!!!", "not valid base64"),
        (f"addr={ALICE}; keydata=", "empty"),
        (f"addr=Alice <{ALICE}>; keydata=AAAA", "not a usable address"),
        (f"addr={ALICE}; keydata=AAAA; novalue", "without name=value"),
    ],
)
def test_invalid_headers_are_refused_with_a_reason(value: str, why: str) -> None:
    with pytest.raises(OpenPGPError, match=why):
        parse_autocrypt_header(value)


def test_oversized_keydata_is_refused() -> None:
    big = base64.b64encode(b"x" * (autocrypt.MAX_KEYDATA_BYTES + 100)).decode()
    with pytest.raises(OpenPGPError, match="over"):
        parse_autocrypt_header(f"addr={ALICE}; keydata={big}")


# --- processing received mail ---------------------------------------------------------------


def mail(
    key: BoxKey | None = ALICE_KEY,
    *,
    sender: str = ALICE,
    addr: str | None = None,
    date: str = DATE,
    extra: str = "",
    content_type: str = "text/plain",
    from_field: str | None = None,
) -> bytes:
    header = ""
    if key is not None:
        value = format_autocrypt_header(addr or sender, key.public.data, prefer_encrypt_mutual=True)
        header = "Autocrypt: " + value.decode() + "\r\n"
    return (
        f"From: {from_field or f'Someone <{sender}>'}\r\nTo: box@gateway.example\r\n"
        f"Date: {date}\r\n"
        f"Subject: hi\r\nContent-Type: {content_type}\r\n{header}{extra}\r\nhello\r\n"
    ).encode()


@pytest.fixture
def store(tmp_path: Path) -> PeerKeyStore:
    return PeerKeyStore(tmp_path / "keys" / "openpgp-peers.json")


def test_a_key_in_an_autocrypt_header_is_stored(store: PeerKeyStore) -> None:
    result = store.process_incoming(mail(), now=NOW)

    assert result.outcome is Outcome.STORED
    peer = store.get(ALICE)
    assert peer is not None and peer.fingerprint == ALICE_KEY.fingerprint
    assert peer.source is Source.AUTOCRYPT and peer.prefer_encrypt_mutual
    key = store.public_key("ALICE@clear.example")
    assert key is not None and key.fingerprint == ALICE_KEY.fingerprint
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert ALICE not in repr(peer) and ALICE not in result.reason


def test_an_addr_that_is_not_the_from_address_is_refused(store: PeerKeyStore) -> None:
    result = store.process_incoming(mail(EVE_KEY, addr="eve@evil.example"), now=NOW)
    assert result.outcome is Outcome.REFUSED and "not the From address" in result.reason
    assert store.get(ALICE) is None and store.addresses() == []


def test_a_key_whose_user_id_is_not_the_sender_is_refused(store: PeerKeyStore) -> None:
    """The header's addr is Alice's, the key inside is Eve's (user id eve@evil.example)."""
    result = store.process_incoming(mail(EVE_KEY), now=NOW)
    assert result.outcome is Outcome.REFUSED and "user ids do not name" in result.reason
    assert store.get(ALICE) is None


def test_a_newer_message_replaces_the_key_an_older_one_does_not(store: PeerKeyStore) -> None:
    store.process_incoming(mail(), now=NOW)
    older = store.process_incoming(
        mail(ALICE_NEW_KEY, date="Mon, 25 May 2026 10:00:00 +0000"), now=NOW
    )
    assert older.outcome is Outcome.SEEN
    assert store.get(ALICE).fingerprint == ALICE_KEY.fingerprint  # type: ignore[union-attr]

    newer = store.process_incoming(
        mail(ALICE_NEW_KEY, date="Thu, 28 May 2026 11:00:00 +0000"), now=NOW
    )
    assert newer.outcome is Outcome.STORED
    assert store.get(ALICE).fingerprint == ALICE_NEW_KEY.fingerprint  # type: ignore[union-attr]


def test_a_date_in_the_future_counts_as_now(store: PeerKeyStore) -> None:
    store.process_incoming(mail(date="Fri, 01 Jan 2100 00:00:00 +0000"), now=NOW)
    peer = store.get(ALICE)
    assert peer is not None and peer.autocrypt_timestamp == NOW
    # so an ordinary later message can still update the key
    later = store.process_incoming(mail(ALICE_NEW_KEY, date=formatdate(NOW + 60)), now=NOW + 60)
    assert later.outcome is Outcome.STORED


def test_mail_without_header_only_moves_last_seen_of_known_peers(store: PeerKeyStore) -> None:
    assert store.process_incoming(mail(None), now=NOW).outcome is Outcome.IGNORED
    assert store.addresses() == []  # strangers are not recorded
    store.process_incoming(mail(date="Mon, 25 May 2026 10:00:00 +0000"), now=NOW)
    store.process_incoming(mail(None), now=NOW)
    peer = store.get(ALICE)
    assert peer is not None and peer.last_seen > peer.autocrypt_timestamp


@pytest.mark.parametrize(
    "message",
    [
        mail(extra=f"Autocrypt: addr={ALICE}; keydata=AQ==\r\n"),
        mail(content_type="multipart/report; report-type=delivery-status"),
        mail(from_field=f"{ALICE}, b@clear.example"),
    ],
    ids=["two headers", "delivery report", "two senders"],
)  # fmt: skip
def test_ambiguous_mail_changes_nothing(store: PeerKeyStore, message: bytes) -> None:
    assert store.process_incoming(message, now=NOW).outcome is Outcome.IGNORED
    assert store.addresses() == []


def test_an_imported_key_is_pinned_against_autocrypt(store: PeerKeyStore) -> None:
    store.import_key(ALICE_KEY.public.armored(), ALICE, now=NOW - 86_400)
    result = store.process_incoming(mail(ALICE_NEW_KEY), now=NOW)
    assert result.outcome is Outcome.PINNED
    peer = store.get(ALICE)
    assert peer is not None and peer.fingerprint == ALICE_KEY.fingerprint
    assert peer.source is Source.MANUAL and peer.last_seen > NOW - 86_400


def test_import_refuses_a_key_for_another_address(store: PeerKeyStore, tmp_path: Path) -> None:
    key_file = tmp_path / "eve.asc"
    key_file.write_text(EVE_KEY.public.armored())
    with pytest.raises(KeyMismatchError):
        store.import_key_file(key_file, ALICE)
    assert store.addresses() == []
    assert store.import_key_file(key_file, "Eve@Evil.example").source is Source.MANUAL


def test_import_refuses_garbage_and_secret_keys(store: PeerKeyStore) -> None:
    with pytest.raises(OpenPGPError):
        store.import_key("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n", ALICE)
    with pytest.raises(OpenPGPError, match="secret key"):
        store.import_key(ALICE_KEY._secret_armor(), ALICE)
    assert store.addresses() == []


def test_a_damaged_or_open_store_is_an_error(store: PeerKeyStore) -> None:
    store.process_incoming(mail(), now=NOW)
    store.path.chmod(0o644)
    with pytest.raises(OpenPGPError, match="0600"):
        store.get(ALICE)
    store.path.chmod(0o600)
    document = json.loads(store.path.read_text())
    document["format"] = "something-else"
    store.path.write_text(json.dumps(document))
    with pytest.raises(OpenPGPError, match="damaged"):
        store.get(ALICE)


def test_the_store_is_bounded_and_keeps_pinned_keys(
    store: PeerKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autocrypt, "MAX_PEERS", 2)
    store.import_key(EVE_KEY.public.armored(), "eve@evil.example", now=NOW - 10_000)
    keys = [BoxKey.generate(f"p{n}@clear.example") for n in range(3)]
    for n, key in enumerate(keys):
        store.process_incoming(mail(key, sender=f"p{n}@clear.example"), now=NOW + n)
    assert store.addresses() == ["eve@evil.example", "p2@clear.example"]
