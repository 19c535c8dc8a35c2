"""v3 onion address encoding against Tor's published vectors, stem, and random keys."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stem.descriptor.hidden_service import HiddenServiceDescriptorV3

from onionmail.core.errors import AddressError
from onionmail.core.onion_address import (
    decode_onion_address,
    encode_onion_address,
    is_onion_address,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "onion_vectors.json").read_text()
)
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
keys = st.binary(min_size=32, max_size=32)


@pytest.mark.parametrize(
    "vector", VECTORS["onion_from_public_key"]["vectors"], ids=lambda v: v["source"]
)
def test_public_key_to_address_and_back(vector: dict[str, str]) -> None:
    key = bytes.fromhex(vector["public_key"])
    assert encode_onion_address(key) == vector["address"]
    assert decode_onion_address(vector["address"]) == key


@pytest.mark.parametrize("address", VECTORS["valid_addresses"]["addresses"])
def test_published_addresses_are_valid(address: str) -> None:
    key = decode_onion_address(address)
    assert is_onion_address(address)
    assert encode_onion_address(key) == address.removesuffix(".onion") + ".onion"


@pytest.mark.parametrize("vector", VECTORS["invalid_addresses"]["vectors"], ids=repr)
def test_tor_rejected_addresses_are_rejected(vector: dict[str, str]) -> None:
    with pytest.raises(AddressError, match=vector["error"]):
        decode_onion_address(vector["address"])
    assert not is_onion_address(vector["address"])


def test_accepts_any_case_and_optional_suffix() -> None:
    vector = VECTORS["onion_from_public_key"]["vectors"][0]
    key, address = bytes.fromhex(vector["public_key"]), vector["address"]
    for spelling in (address, address.upper(), address.removesuffix(".onion"), address.title()):
        assert decode_onion_address(spelling) == key


def _address_with_version(key: bytes, version: int) -> str:
    """An address whose checksum is right for ``version`` (built here, by the spec's formula)."""
    checksum = hashlib.sha3_256(b".onion checksum" + key + bytes([version])).digest()[:2]
    return base64.b32encode(key + checksum + bytes([version])).decode().lower() + ".onion"


def test_other_versions_are_refused_by_name() -> None:
    with pytest.raises(AddressError, match="version 4 is not supported"):
        decode_onion_address(_address_with_version(b"\x42" * 32, 4))
    assert decode_onion_address(_address_with_version(b"\x42" * 32, 3)) == b"\x42" * 32


@pytest.mark.parametrize(
    ("host", "error"),
    [
        ("", "has 0"),
        ("ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezhid.onion.", "characters"),
        ("www.ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezhid.onion", "characters"),
        ("ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezhi1.onion", "a-z"),
        ("ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezhïd.onion", "ASCII"),
        ("ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezh d.onion", "a-z"),
    ],
)
def test_malformed_hosts_say_what_is_wrong(host: str, error: str) -> None:
    with pytest.raises(AddressError, match=error) as caught:
        decode_onion_address(host)
    assert "ijbeeqsc" not in str(caught.value)  # never echoes the address


@pytest.mark.parametrize("key", [b"", b"\x00" * 31, b"\x00" * 33, "a" * 32])
def test_encode_needs_a_32_byte_key(key: object) -> None:
    with pytest.raises(AddressError, match="32-byte"):
        encode_onion_address(key)  # type: ignore[arg-type]


@given(keys)
def test_roundtrip_random_keys(key: bytes) -> None:
    address = encode_onion_address(key)
    assert len(address) == 56 + len(".onion")
    assert address == address.lower()
    assert decode_onion_address(address) == key
    assert decode_onion_address(address.upper()) == key


@given(keys)
def test_agrees_with_stem(key: bytes) -> None:
    """stem's implementation (used by tor's controller library) is an independent oracle."""
    assert encode_onion_address(key) == HiddenServiceDescriptorV3.address_from_identity_key(key)
    assert HiddenServiceDescriptorV3.identity_key_from_address(encode_onion_address(key)) == key


@given(keys, st.integers(min_value=0, max_value=55), st.sampled_from(BASE32))
def test_any_single_character_change_is_caught(key: bytes, position: int, char: str) -> None:
    address = encode_onion_address(key)
    if address[position] == char:
        return
    changed = address[:position] + char + address[position + 1 :]
    try:
        other = decode_onion_address(changed)
    except AddressError:
        return
    assert other != key
