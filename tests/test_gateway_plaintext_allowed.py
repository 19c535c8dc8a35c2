"""``[policy] plaintext_allowed``: the box's mark for the gateway, and the ledger's word.

TLS is required from the gateway to the recipient's MX by default. A user may
accept delivery without it for some clearnet recipients; the box then marks the
message (``Onionmail-Gateway-TLS: plaintext-allowed``, inside the sealed
envelope), the gateway takes the mark off before the message leaves and relaxes
the default for it (tests/test_gateway_outbound.py, against a real Postfix
behind a STARTTLS-stripping proxy), and the ledger records the path with
STARTTLS not enforced. Without the mark, nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onionmail.box.daemon import Box
from onionmail.config.box import CONFIG_NAME, load_config, parse_config, render_config
from onionmail.core.errors import ConfigError
from onionmail.core.mail_address import parse_mail_address
from onionmail.gateway_link.client import record_registration
from onionmail.gateway_link.protocol import (
    GATEWAY_TLS_HEADER,
    mark_gateway_tls,
    take_gateway_tls_mark,
)
from onionmail.message.rfc5322 import parse_message
from onionmail.seal.identity import Identity
from onionmail.store.queue import QueuedMessage
from tests.box_process import create_test_box
from threat_model import (
    Item,
    LeakMatrix,
    MailPath,
    MessageTraits,
    Observer,
    Visibility,
    leaks,
)

GW_ONION = Identity.generate().onion_address
ALIAS = "alice@gw.test"
BOB = "bob@legacy.example"
CAROL = "carol@other.legacy.example"
ERIN = "erin@clear.test"
MARK = GATEWAY_TLS_HEADER.encode()


# -- config --------------------------------------------------------------------------


def test_parsed_and_matched_by_address_or_domain(tmp_path: Path) -> None:
    table = {"plaintext_allowed": ["bob@Legacy.example", "other.legacy.example"]}
    policy = parse_config({"policy": table}, tmp_path / "onionmail.toml").policy
    assert policy.plaintext_allowed == ("bob@Legacy.example", "other.legacy.example")
    assert policy.allows_plaintext("BOB@legacy.example")
    assert policy.allows_plaintext(CAROL)
    assert not policy.allows_plaintext("dave@legacy.example")  # the address, not its domain
    assert not policy.allows_plaintext("x@sub.other.legacy.example")  # no subdomains
    assert not parse_config({}, tmp_path / "onionmail.toml").policy.allows_plaintext(BOB)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("legacy.example", "expected a list of strings"),
        ([1], "expected a list of strings"),
        (["@legacy.example"], "'@legacy.example': expected a clearnet address or domain"),
        (["bob@"], "'bob@': expected a clearnet address or domain"),
        ([f"bob@{GW_ONION}"], "expected a clearnet address or domain"),
        (["legacy example"], "expected a clearnet address or domain"),
    ],
)
def test_bad_values_name_the_file_and_the_key(tmp_path: Path, value: object, message: str) -> None:
    path = tmp_path / "onionmail.toml"
    with pytest.raises(ConfigError) as raised:
        parse_config({"policy": {"plaintext_allowed": value}}, path)
    text = str(raised.value)
    assert str(path) in text and "[policy] plaintext_allowed" in text and message in text


def test_rendered_config_has_the_commented_default_and_it_parses(tmp_path: Path) -> None:
    rendered = render_config(("alice",), 0, "")
    assert "# plaintext_allowed = []" in rendered
    uncommented = rendered.replace("# plaintext_allowed = []", f'plaintext_allowed = ["{BOB}"]')
    (tmp_path / CONFIG_NAME).write_text(uncommented)
    assert load_config(tmp_path).policy.plaintext_allowed == (BOB,)


# -- the mark ------------------------------------------------------------------------

MESSAGE = b"From: a@b.example\r\nTo: bob@legacy.example\r\nSubject: s\r\n\r\nbody\r\n"


def test_mark_and_take_round_trip_byte_for_byte() -> None:
    marked = mark_gateway_tls(MESSAGE, plaintext_allowed=True)
    assert parse_message(marked).get(GATEWAY_TLS_HEADER) == b"plaintext-allowed"
    assert take_gateway_tls_mark(marked) == (MESSAGE, True)
    assert mark_gateway_tls(MESSAGE, plaintext_allowed=False) == MESSAGE
    assert take_gateway_tls_mark(MESSAGE) == (MESSAGE, False)


def test_a_mark_the_user_wrote_is_removed_and_an_odd_value_allows_nothing() -> None:
    forged = MESSAGE.replace(b"Subject", MARK + b": plaintext-allowed\r\nSubject")
    assert mark_gateway_tls(forged, plaintext_allowed=False) == MESSAGE
    odd = MESSAGE.replace(b"Subject", MARK + b": whatever\r\nSubject")
    assert take_gateway_tls_mark(odd) == (MESSAGE, False)  # stripped all the same
    both = mark_gateway_tls(odd, plaintext_allowed=True)
    assert take_gateway_tls_mark(both) == (MESSAGE, True)  # the box's value replaced it


# -- the box: mark at send time, the ledger and the gate -----------------------------


@dataclass
class World:
    box: Box
    address: str


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    new = create_test_box(tmp_path / "alice", "alice", submission_port=0)
    record_registration(new.box_dir, GW_ONION, ALIAS)
    path = new.box_dir / CONFIG_NAME
    text = path.read_text().replace(
        "[policy]\n", f'[policy]\nplaintext_allowed = ["{BOB}", "other.legacy.example"]\n', 1
    )
    path.write_text(text)
    yield World(Box(load_config(new.box_dir), new.identity), new.address)


async def _queued(world: World, to: list[str], message_id: str) -> list[QueuedMessage]:
    message = (
        f"From: <{world.address}>\r\nTo: {', '.join(to)}\r\nSubject: hi\r\n"
        f"Message-ID: <{message_id}@{world.box.onion}>\r\n"
        f"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()
    ids = await world.box.submit(
        parse_mail_address(world.address), [parse_mail_address(r) for r in to], message
    )
    return [world.box.queue.load(i) for i in ids]


def _mx_network_sees_body(matrix: LeakMatrix) -> bool:
    """Whether the network between the gateway and the MX reads the content."""
    return matrix.cell(Observer.GATEWAY_MX_NETWORK, Item.BODY).visibility is Visibility.VISIBLE


@pytest.mark.parametrize(
    ("to", "allowed"),
    [([BOB], True), ([BOB, CAROL], True), ([BOB, ERIN], False), ([ERIN], False)],
)
async def test_marked_only_when_every_recipient_is_allowed_and_the_ledger_says_so(
    world: World, to: list[str], allowed: bool
) -> None:
    [entry] = await _queued(world, to, "m1")
    assert MARK not in entry.message  # the queue holds the user's message
    sent = await world.box._prepare_outgoing(entry)
    assert take_gateway_tls_mark(sent.message)[1] is allowed
    assert (MARK in sent.message) is allowed
    [queued] = world.box.leaks.find(f"m1@{world.box.onion}")
    assert _mx_network_sees_body(queued.matrix) is allowed
    await world.box._delivered(entry, seal_version=2)
    [delivered] = world.box.leaks.find(f"m1@{world.box.onion}")
    assert delivered.state == "delivered" and delivered.path is MailPath.GATEWAY_CLEARNET
    expected = leaks(
        MailPath.GATEWAY_CLEARNET,
        MessageTraits(direction="sent"),
        world.box.leaks.model_config(starttls_enforced=not allowed),
    )
    assert delivered.matrix == expected


async def test_onion_recipients_are_never_marked(world: World) -> None:
    onion_rcpt = f"bob@{Identity.generate().onion_address}"
    [entry] = await _queued(world, [onion_rcpt], "m2")
    assert await world.box._prepare_outgoing(entry) == entry
    assert not world.box.leaks.plaintext_allowed([onion_rcpt])
    assert not _mx_network_sees_body(world.box.leaks.predicted(onion_rcpt))


def test_the_prediction_and_the_gate_use_the_same_setting(world: World) -> None:
    keeper = world.box.leaks
    assert _mx_network_sees_body(keeper.predicted(BOB))
    assert not _mx_network_sees_body(keeper.predicted(ERIN))
    # the gate judges the same matrix: the default model for others, the relaxed one here
    assert keeper.predicted(ERIN) == leaks(
        MailPath.GATEWAY_CLEARNET, config=keeper.model_config(ERIN)
    )
    relaxed = keeper.model_config(BOB, starttls_enforced=False)
    assert keeper.predicted(BOB) == leaks(MailPath.GATEWAY_CLEARNET, config=relaxed)
    assert not relaxed.starttls_enforced
