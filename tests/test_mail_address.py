"""The strict mail address parser: what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmail.core.errors import AddressError
from onionmail.core.mail_address import (
    MailAddress,
    is_valid_local_part,
    parse_mail_address,
    parse_onion_mail_address,
)
from onionmail.core.onion_address import encode_onion_address

ONION = encode_onion_address(b"\x42" * 32)
BAD_CHECKSUM_ONION = "l5satjgud6gucryazcyvyvhuxhr74u6ygigiuyixe3a6ysis67ororad.onion"


@pytest.mark.parametrize(
    ("text", "local_part", "domain"),
    [
        ("alice@example.org", "alice", "example.org"),
        ("<alice@example.org>", "alice", "example.org"),
        ("Alice.Smith@Example.ORG", "alice.smith", "example.org"),
        ("a!#$%&'*+/=?^_`{|}~-z@x.y", "a!#$%&'*+/=?^_`{|}~-z", "x.y"),
        ("postmaster@localhost", "postmaster", "localhost"),
        ("x@a-b.c0", "x", "a-b.c0"),
        (f"bob@{ONION.upper()}", "bob", ONION),
        ("l" * 64 + "@example.org", "l" * 64, "example.org"),
    ],
)
def test_accepts(text: str, local_part: str, domain: str) -> None:
    address = parse_mail_address(text)
    assert (address.local_part, address.domain) == (local_part, domain)
    assert str(address) == f"{local_part}@{domain}"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty"),
        ("<>", "empty"),
        ("secretname", "no @"),
        ("secret@name@example.org", "more than one @"),
        ('"secretname"@example.org', "local part"),
        ("secret..name@example.org", "local part"),
        (".secretname@example.org", "local part"),
        ("secretname.@example.org", "local part"),
        ("@example.org", "local part"),
        ("s" * 65 + "@example.org", "local part"),
        ("secretname@", "domain"),
        ("secretname@secret..org", "domain"),
        ("secretname@secret.org.", "domain"),
        ("secretname@-secret.org", "domain"),
        ("secretname@secret-.org", "domain"),
        ("secretname@secret_host.org", "domain"),
        ("secretname@[127.0.0.1]", "domain"),
        ("secretname@" + "s" * 64 + ".org", "label"),
        ("secretname@" + "s." * 130 + "org", "longer than 254"),
        ("secret name@example.org", "space"),
        (" secretname@example.org", "space"),
        ("secretname@example.org\r\n", "control"),
        ("secret\x00name@example.org", "control"),
        ("secrétname@example.org", "non-ASCII"),
        ("secretname@exämple.org", "non-ASCII"),
        ("<secretname@example.org", "angle bracket"),
        ("secretname@example.org>", "angle bracket"),
        ("Secret Name <secretname@example.org>", "space"),
    ],
)
def test_refuses_naming_the_part_without_echoing_it(text: str, error: str) -> None:
    with pytest.raises(AddressError, match=error) as caught:
        parse_mail_address(text)
    message = str(caught.value)
    assert "secret" not in message and "\n" not in message and "\r" not in message


def test_onion_addresses() -> None:
    address = parse_onion_mail_address(f"<bob@{ONION}>")
    assert address.is_onion
    assert address.onion_public_key() == b"\x42" * 32
    with pytest.raises(AddressError, match="checksum"):
        parse_onion_mail_address(f"bob@{BAD_CHECKSUM_ONION}")
    with pytest.raises(AddressError, match="not at a .onion"):
        parse_onion_mail_address("bob@example.org")
    with pytest.raises(AddressError, match="56 characters"):
        parse_onion_mail_address("bob@short.onion")
    assert parse_mail_address(f"bob@{BAD_CHECKSUM_ONION}").is_onion  # shape only
    assert not parse_mail_address("bob@example.org").is_onion


def test_direct_construction_is_validated() -> None:
    assert MailAddress("bob", ONION) == parse_mail_address(f"BOB@{ONION}")
    with pytest.raises(AddressError, match="lowercased"):
        MailAddress("Bob", ONION)
    with pytest.raises(AddressError, match="local part"):
        MailAddress("b b", ONION)
    with pytest.raises(AddressError, match="domain"):
        MailAddress("bob", "")


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("alice", True),
        ("Alice", True),
        ("a.b+tag", True),
        ("", False),
        ("a..b", False),
        ("a@b", False),
        ("a b", False),
        ("ä", False),
        ("\u212a", False),  # KELVIN SIGN lowercases to an ASCII k
        ("x" * 65, False),
    ],
)
def test_is_valid_local_part(text: str, valid: bool) -> None:
    assert is_valid_local_part(text) is valid


@given(st.text())
def test_arbitrary_text_raises_only_address_error(text: str) -> None:
    try:
        address = parse_mail_address(text)
    except AddressError:
        return
    assert parse_mail_address(str(address)) == address
    assert parse_mail_address(f"<{address}>") == address


ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}"
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?"


@given(
    st.from_regex(rf"\A{ATOM}(\.{ATOM}){{0,3}}\Z"),
    st.from_regex(rf"\A{LABEL}(\.{LABEL}){{0,3}}\Z"),
)
def test_well_formed_addresses_are_accepted(local_part: str, domain: str) -> None:
    address = parse_mail_address(f"{local_part}@{domain}")
    assert address == MailAddress(local_part.lower(), domain.lower())
    assert parse_mail_address(str(address)) == address
