"""The ledger tells the truth: every trait the model knows comes from the message, and
what the box predicts before sending is what it records after, on every path.

Regression for a mail with two attachments recorded as "this message has no
attachments" on both sides: :class:`threat_model.MessageTraits` was built
with its defaults. Here each of its fields must have a case, so a trait added
to the model without a derivation fails this module.
"""

from __future__ import annotations

import dataclasses
import email.message
import email.policy
from pathlib import Path

import pytest

from onionmail.box.api import BoxApi
from onionmail.box.daemon import Box
from onionmail.box.policy_gate import message_traits
from onionmail.config.box import load_config
from onionmail.seal.identity import Identity, load_identity
from onionmail.store.queue import QueuedMessage
from tests.box_process import create_test_box
from threat_model import Item, MailPath, MessageTraits, Observer, Visibility

GATEWAY = Identity.generate().onion_address
BOB = f"bob@{Identity.generate().onion_address}"
DAVE = "dave@example.org"


def mime(*attachments: tuple[str, str, str], html: bool = False) -> bytes:
    """A message as a mail client writes it, with the given (type, subtype, file name)."""
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "alice@example.onion"
    msg["To"] = BOB
    msg["Subject"] = "the report"
    msg["Message-ID"] = f"<{len(attachments)}-{int(html)}@test>"
    msg.set_content("see attached\n")
    if html:
        msg.add_alternative("<p>see attached</p>", subtype="html")
    for maintype, subtype, name in attachments:
        msg.add_attachment(b"%PDF-1.4 x" * 20, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


TWO_ATTACHMENTS = mime(("application", "pdf", "report.pdf"), ("text", "plain", "notes.txt"))

ALONE = (
    b"From: a@b.onion\r\nContent-Type: application/pdf; name=report.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
)
"""A message that is nothing but a file (no multipart around it)."""

CASES: dict[str, list[tuple[bytes, str, object]]] = {
    "has_attachments": [
        (b"From: a@b.onion\r\nSubject: s\r\n\r\nplain text\r\n", "sent", False),
        (mime(html=True), "sent", False),  # text and HTML alternatives: no attachment
        (TWO_ATTACHMENTS, "sent", True),
        (mime(("image", "png", "photo.png"), html=True), "received", True),
        (ALONE, "received", True),
        (b"not a message at all", "sent", False),
    ],
    "direction": [
        (TWO_ATTACHMENTS, "sent", "sent"),
        (TWO_ATTACHMENTS, "received", "received"),
    ],
}


def test_every_trait_the_model_knows_has_a_case_here() -> None:
    assert {f.name for f in dataclasses.fields(MessageTraits)} == set(CASES)


@pytest.mark.parametrize(
    ("trait", "message", "direction", "expected"),
    [(trait, *case) for trait, cases in CASES.items() for case in cases],
)
def test_each_trait_is_derived_from_the_message(
    trait: str, message: bytes, direction: str, expected: object
) -> None:
    assert getattr(message_traits(message, direction), trait) == expected


@pytest.fixture
def box(tmp_path: Path) -> Box:
    """A real box directory with a gateway registered, as ``onionmail run`` opens it."""
    new = create_test_box(tmp_path / "alice", "alice", submission_port=0)
    config = new.box_dir / "onionmail.toml"
    config.write_text(
        config.read_text().replace("[gateway]\n", f'[gateway]\n"{GATEWAY}" = "alice@gw.test"\n', 1)
    )
    identity = load_identity(new.box_dir / "keys" / "identity.key")
    return Box(load_config(new.box_dir), identity)


SENT_PATHS = [
    # path, recipient, destination, seal version, OpenPGP key known?
    (MailPath.ONION_SEALED, BOB, BOB.split("@")[1], 2, False),
    (MailPath.ONION_PLAIN, BOB, BOB.split("@")[1], 0, False),
    (MailPath.GATEWAY_CLEARNET, DAVE, GATEWAY, 2, False),
    (MailPath.GATEWAY_CLEARNET_OPENPGP, DAVE, GATEWAY, 2, True),
]


@pytest.mark.parametrize("attached", [True, False])
@pytest.mark.parametrize(("path", "rcpt", "destination", "seal", "key"), SENT_PATHS)
async def test_what_the_box_shows_before_is_what_it_records_after(
    box: Box, path: MailPath, rcpt: str, destination: str, seal: int, key: bool, attached: bool
) -> None:
    """For each path a sent message can take: the what-if matrix of that path (and, on the
    expected path, the forecast) for a message with or without attachments equals the
    ledger's record of delivering that very message."""
    box.leaks.has_openpgp_key = lambda _address: key
    api = BoxApi(box.config.box_dir)
    api.leak_keeper.has_openpgp_key = box.leaks.has_openpgp_key
    message = TWO_ATTACHMENTS if attached else mime()
    (option,) = [
        o
        for o in api.what_if(rcpt, has_attachments=attached)
        if o.matrix.path == path
        and o.label in ("onion sealed", "onion plain peer", "gateway", "gateway+OpenPGP")
    ]
    entry = QueuedMessage("q1", destination, box.address("alice"), (rcpt,), message, bytes(16), 0)
    await box.leaks.delivered(entry, seal, openpgp=path is MailPath.GATEWAY_CLEARNET_OPENPGP)
    (recorded,) = box.leaks.find(message_traits_id(message))
    assert recorded.path == path
    assert recorded.matrix == option.matrix
    forecast = api.predict(rcpt, has_attachments=attached)
    if forecast.path == path:
        assert recorded.matrix == forecast.matrix
    cell = recorded.matrix.cell(Observer.RECIPIENT_BOX, Item.ATTACHMENT_NAMES)
    assert (cell.visibility is Visibility.HIDDEN) is not attached


def message_traits_id(message: bytes) -> str:
    parsed = email.message_from_bytes(message)
    return str(parsed["Message-ID"]).strip("<>")


@pytest.mark.parametrize("attached", [True, False])
async def test_received_mail_counts_its_attachments(box: Box, attached: bool) -> None:
    """The receiving side: the inbound server's store step derives the traits."""
    from onionmail.box.inbound import _store_in
    from onionmail.message.rfc5322 import parse_message

    message = TWO_ATTACHMENTS if attached else mime()
    traits = _store_in([box.maildir("alice")], parse_message(message))
    message_id = message_traits_id(message)
    for path in (MailPath.ONION_SEALED, MailPath.ONION_PLAIN, MailPath.CLEARNET_INBOUND):
        if path is MailPath.CLEARNET_INBOUND:
            await box.leaks.received_via_gateway(message_id, traits)
        else:
            await box.leaks.received(message_id, 2 if path is MailPath.ONION_SEALED else 0, traits)
        (entry,) = box.leaks.find(message_id)  # one entry per message and destination
        assert entry.path == path and entry.direction == "received"
        cell = entry.matrix.cell(Observer.RECIPIENT_BOX, Item.ATTACHMENT_NAMES)
        assert (cell.visibility is Visibility.HIDDEN) is not attached, path
