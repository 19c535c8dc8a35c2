"""Who a message says it is from, attacked over a socket against the box's inbound server.

A peer that cannot seal for an onion must not make a reader believe it is
that onion: not through ``From`` on the plain path (only the envelope was
checked), not through a trailing dot or a display name that holds an
address (on the relayed and sealed paths), and not through an
``Authentication-Results`` field of its own claiming the box's authserv-id
(RFC 8601 5: such fields are removed; a comment before the id hid it).
"""

from __future__ import annotations

import base64

import pytest

from onionmail.gateway_link.protocol import check_relayed_from
from onionmail.message.header_claims import authserv_id, remove_results_claiming
from onionmail.message.rfc5322 import MessageFormatError, parse_message
from onionmail.seal.identity import Identity
from tests.loopback_servers import (
    PEER,
    InboundBox,
    assert_still_serving,
    inbound_fixture,  # noqa: F401 (the fixture ``inbound``)
    open_data,
    peer_session,
    sealing_session,
)
from tests.smtp_client import code
from tests.test_hostile_input import ALICE, alice, sealed_message

ONION = ALICE.onion_address


def encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


SPOOFED_FROM = [
    pytest.param(f"Alice <alice@{ONION}>", id="address"),
    pytest.param(f"Alice <alice@{ONION}.>", id="trailing-dot"),
    pytest.param(f"ALICE@{ONION.upper()}", id="upper-case"),
    pytest.param(f'"alice@{ONION}" <mallory@example.org>', id="display-name"),
    pytest.param(f"mallory@example.org (alice@{ONION})", id="comment"),
    pytest.param(f"{encoded('alice@' + ONION)} <mallory@example.org>", id="encoded-word"),
]


@pytest.mark.parametrize("mail_from", ["", PEER], ids=["null-sender", "clearnet-sender"])
@pytest.mark.parametrize("from_field", SPOOFED_FROM)
async def test_plain_mail_naming_an_onion_sender_is_refused(
    inbound: InboundBox, mail_from: str, from_field: str
) -> None:
    client = await peer_session(inbound)
    await open_data(client, mail_from, inbound.rcpt())
    message = f"From: {from_field}\r\nSubject: hi\r\n\r\nIt is me.\r\n.\r\n"
    reply = await client.cmd(message.encode())
    assert reply.startswith("550 5.7.1 An unsealed message may not name a .onion sender"), reply
    assert inbound.stored() == []
    await assert_still_serving(client, inbound.port)


async def test_plain_mail_from_a_clearnet_name_is_still_delivered(inbound: InboundBox) -> None:
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    reply = await client.cmd(f"From: Carol <{PEER}>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n".encode())
    assert code(reply) == 250
    assert len(inbound.stored()) == 1


async def test_a_sealed_message_naming_another_onion_is_refused(inbound: InboundBox) -> None:
    other = Identity.generate().onion_address
    client, challenge = await sealing_session(inbound)
    await open_data(client, alice(), inbound.rcpt())
    message = f'From: "bob@{other}" <{alice()}>\r\nSubject: s\r\n\r\nhi\r\n'.encode()
    reply = await client.cmd(sealed_message(inbound, challenge, message) + b".\r\n")
    assert reply.startswith("554 5.6.0"), reply
    assert "another .onion" in reply
    assert inbound.stored() == []


@pytest.mark.parametrize(
    "forged",
    [
        "{onion}; onionmail=pass (sealed envelope opened with the sender's onion key)",
        "(a comment first) {onion}; onionmail=pass",
        "{upper}.; onionmail=pass",
        "{onion} 1; onionmail=pass",
    ],
    ids=["plain", "comment", "upper-trailing-dot", "version"],
)
async def test_a_peer_cannot_claim_the_box_checked_its_mail(
    inbound: InboundBox, forged: str
) -> None:
    value = forged.format(onion=inbound.onion, upper=inbound.onion.upper())
    client = await peer_session(inbound)
    await open_data(client, PEER, inbound.rcpt())
    message = f"Authentication-Results: {value}\r\nFrom: {PEER}\r\nSubject: s\r\n\r\nhi\r\n"
    assert code(await client.cmd(message.encode() + b".\r\n")) == 250
    (stored,) = inbound.stored()
    results = [line for line in stored.splitlines() if line.startswith(b"Authentication-Results")]
    assert results == [
        f"Authentication-Results: {inbound.onion}; onionmail=none (plain SMTP peer; sender not "
        f"verified) smtp.mailfrom={PEER}".encode()
    ]


GATEWAY_ONION = Identity.generate().onion_address


@pytest.mark.parametrize("from_field", SPOOFED_FROM)
def test_mail_relayed_by_a_gateway_cannot_name_an_onion(from_field: str) -> None:
    message = parse_message(f"From: {from_field}\r\nSubject: s\r\n\r\nhi\r\n".encode())
    with pytest.raises(MessageFormatError, match="claims a .onion sender"):
        check_relayed_from(message, GATEWAY_ONION)
    relayed = parse_message(f"From: Carol <{PEER}>\r\nSubject: s\r\n\r\nhi\r\n".encode())
    check_relayed_from(relayed, GATEWAY_ONION)  # a clearnet sender passes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.org; spf=pass", "example.org"),
        (" (c) Example.ORG. 1 ; spf=pass", "example.org"),
        ("(nested (comment)) x.test;", "x.test"),
        ('"quoted.test"; none', "quoted.test"),
        ("", ""),
    ],
)
def test_authserv_id_is_read_past_comments_case_and_dots(value: str, expected: str) -> None:
    assert authserv_id(value) == expected


def test_the_gateway_removes_results_claiming_its_own_domain() -> None:
    message = parse_message(
        b"Authentication-Results: (forged) GW.example.; dkim=pass\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Subject: s\r\n\r\nhi\r\n"
    )
    assert remove_results_claiming(message, "gw.example") == 1
    assert message.get_all("Authentication-Results") == [b"other.example; spf=fail"]
