"""The box's OpenPGP step for clearnet mail (no tor): the send-path decision, both ways.

A real box object (not started) queues submitted mail; its delivery step
(:meth:`Box._prepare_outgoing`) produces what the gateway would receive. The
correspondents' keys are pgpy keys here (``BoxKey`` stands in for their
software); interoperability with gpg is proved by ``tests/test_openpgp.py``
and end to end by ``tests/test_gateway_openpgp.py``.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from onionmail.box.daemon import Box
from onionmail.box.delivery import DeliveryAgent
from onionmail.cli.main import main
from onionmail.config.box import DeliverySection, load_config
from onionmail.core.errors import PermanentDeliveryError
from onionmail.core.mail_address import parse_mail_address
from onionmail.gateway_link.client import record_registration
from onionmail.message.rfc5322 import parse_message
from onionmail.openpgp.autocrypt import Source, format_autocrypt_header
from onionmail.openpgp.clearnet import split_for_gateway
from onionmail.openpgp.keys import BoxKey, SignatureStatus, parse_public_key
from onionmail.openpgp.pgp_mime import STATUS_FIELD, decrypt_message, encrypt_message, is_pgp_mime
from onionmail.seal.identity import Identity
from onionmail.store.maildir import Maildir
from onionmail.store.queue import OutboundQueue, QueuedMessage, queue_key
from tests.box_process import create_test_box
from threat_model import MailPath

GW_ONION = Identity.generate().onion_address
ALIAS = "alice@gw.test"
BOB, CAROL, DAVE = "bob@clear.test", "carol@clear.test", "dave@clear.test"
BOB_KEY = BoxKey.generate(BOB)  # stands in for bob's own OpenPGP software
DAVE_KEY = BoxKey.generate(DAVE)
SUBJECT = "Quarterly numbers, do not forward"
BODY = "The numbers are in the usual place."


@dataclass
class World:
    box: Box
    address: str


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    new = create_test_box(tmp_path / "alice", "alice", submission_port=0)
    record_registration(new.box_dir, GW_ONION, ALIAS)
    with open(new.box_dir / "onionmail.toml", "a") as config:
        config.write(
            f'\n[policy.contacts]\n"{BOB}" = ["never-plaintext-subject"]\n'
            f'"{CAROL}" = ["never-plaintext-subject"]\n'
        )
    box = Box(load_config(new.box_dir), new.identity)
    box.openpgp.peers.import_key(BOB_KEY.public.armored(), BOB)
    box.openpgp.peers.import_key(DAVE_KEY.public.armored(), DAVE)
    yield World(box, new.address)


def _message(world: World, to: list[str], message_id: str = "m1") -> bytes:
    onion = world.box.onion
    return (
        f'From: "Alice A." <{world.address}>\r\nTo: {", ".join(to)}\r\n'
        f"Subject: {SUBJECT}\r\nReply-To: {world.address}\r\n"
        f"Message-ID: <{message_id}@{onion}>\r\nDate: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
        f"\r\n{BODY}\r\n"
    ).encode()


async def _queued(world: World, to: list[str]) -> list[QueuedMessage]:
    box = world.box
    ids = await box.submit(
        parse_mail_address(world.address),
        [parse_mail_address(r) for r in to],
        _message(world, to),
    )
    return [box.queue.load(i) for i in ids]


def test_split_each_keyed_recipient_alone_the_rest_together() -> None:
    def has_key(address: str) -> bool:
        return address in (BOB, DAVE)

    assert split_for_gateway([BOB], has_key) == [((BOB,), True)]
    assert split_for_gateway([CAROL, "eve@x.test"], has_key) == [((CAROL, "eve@x.test"), False)]
    assert split_for_gateway([CAROL, BOB, "eve@x.test", DAVE], has_key) == [
        ((BOB,), True),
        ((DAVE,), True),
        ((CAROL, "eve@x.test"), False),
    ]
    assert split_for_gateway([], has_key) == []


async def test_with_a_key_the_gateway_gets_pgp_mime_signed_by_the_box(world: World) -> None:
    [entry] = await _queued(world, [BOB])
    assert entry.recipients == (BOB,) and entry.destination == GW_ONION
    assert b"BEGIN PGP" not in entry.message  # the queue holds what it held before
    sent = await world.box._prepare_outgoing(entry)
    assert is_pgp_mime(sent.message)
    outer = parse_message(sent.message)
    assert outer.get("Subject") == b"..."
    assert outer.get("From") == b'"Alice A." <alice@gw.test>'
    assert outer.get("Message-ID") == b"<m1@gw.test>"
    for secret in (SUBJECT, BODY, ".onion", world.box.onion):
        assert secret.encode() not in sent.message
    autocrypt = outer.get("Autocrypt") or b""
    assert autocrypt.startswith(b"addr=alice@gw.test; prefer-encrypt=mutual; keydata=")

    box_key = world.box.openpgp.box_key()
    opened = decrypt_message(sent.message, BOB_KEY, lambda a: box_key.public)
    assert opened.signature is SignatureStatus.VERIFIED and opened.protected_headers
    inner = parse_message(opened.message)
    assert inner.get("Subject") == SUBJECT.encode()
    assert inner.get("From") == b'"Alice A." <alice@gw.test>'
    assert inner.get("Reply-To") == b"<alice@gw.test>"
    assert BODY.encode() in inner.body and b".onion" not in opened.message
    # the box can read what it sent (encrypted to itself too)
    assert decrypt_message(sent.message, box_key, lambda a: box_key.public).message


async def test_without_a_key_plain_from_the_alias_with_the_autocrypt_header(
    world: World,
) -> None:
    [entry] = await _queued(world, ["erin@clear.test"])
    sent = await world.box._prepare_outgoing(entry)
    assert not is_pgp_mime(sent.message)
    parsed = email.message_from_bytes(sent.message, policy=email.policy.default)
    assert parsed["Subject"] == SUBJECT and parsed["From"] == f'"Alice A." <{ALIAS}>'
    assert parsed["Message-ID"] == "<m1@gw.test>" and b".onion" not in sent.message
    keydata = "".join(str(parsed["Autocrypt"]).split("keydata=")[1].split())
    key = parse_public_key(base64.b64decode(keydata))
    assert key.fingerprint == world.box.openpgp.box_key().fingerprint
    assert key.addresses == (ALIAS,)


async def test_mixed_recipients_are_split_and_the_ledger_has_both_paths(world: World) -> None:
    entries = await _queued(world, [CAROL, BOB, "erin@clear.test", DAVE])
    assert [e.recipients for e in entries] == [(BOB,), (DAVE,), (CAROL, "erin@clear.test")]
    forms = [await world.box._prepare_outgoing(e) for e in entries[:2]]
    assert all(is_pgp_mime(f.message) for f in forms)
    # each copy is encrypted to its recipient alone: dave cannot open bob's
    with pytest.raises(Exception, match="not encrypted to this box"):
        decrypt_message(forms[0].message, DAVE_KEY, lambda a: None)
    message_id = f"m1@{world.box.onion}"
    paths = sorted(e.path for e in world.box.leaks.find(message_id))
    assert paths == [MailPath.GATEWAY_CLEARNET, MailPath.GATEWAY_CLEARNET_OPENPGP]
    # the agent reports the entry as queued; the box knows which form it sent
    for entry in entries[:2]:
        await world.box._delivered(entry, seal_version=2)
        assert entry.id not in world.box._encrypted
    states = sorted((e.path, e.state) for e in world.box.leaks.find(message_id))
    assert states == [
        (MailPath.GATEWAY_CLEARNET, "queued"),
        (MailPath.GATEWAY_CLEARNET_OPENPGP, "delivered"),
    ]


def test_policy_gate_predicts_the_encrypted_path_from_the_key_store(world: World) -> None:
    leaks = world.box.leaks
    assert leaks.predicted_path(BOB) is MailPath.GATEWAY_CLEARNET_OPENPGP
    assert leaks.predicted_path(CAROL) is MailPath.GATEWAY_CLEARNET
    # never-plaintext-subject: bob's subject stays inside the encryption, carol's not
    assert leaks.check_recipient(parse_mail_address(BOB)) is None
    refusal = leaks.check_recipient(parse_mail_address(CAROL))
    assert refusal is not None and "never-plaintext-subject" in refusal
    # a key learned later changes the prediction at once (the store file changed)
    world.box.openpgp.peers.import_key(BoxKey.generate(CAROL).public.armored(), CAROL)
    assert leaks.check_recipient(parse_mail_address(CAROL)) is None


async def test_a_key_gone_before_delivery_bounces_instead_of_leaking(world: World) -> None:
    [entry] = await _queued(world, [BOB])
    assert world.box.openpgp.peers.remove(BOB)
    with pytest.raises(PermanentDeliveryError, match="never-plaintext-subject"):
        await world.box._prepare_outgoing(entry)


def _incoming(sender: str, extra: str = "", body: str = "hi\r\n") -> bytes:
    return (
        f"From: {sender}\r\nTo: {ALIAS}\r\nSubject: hello\r\n"
        f"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n{extra}\r\n{body}"
    ).encode()


def test_incoming_autocrypt_teaches_the_key_and_forged_status_is_removed(world: World) -> None:
    carol_key = BoxKey.generate(CAROL)
    header = format_autocrypt_header(CAROL, carol_key.public.data, prefer_encrypt_mutual=True)
    forged = f"{STATUS_FIELD}: decrypted; signature=verified\r\n"
    message = _incoming(CAROL, f"Autocrypt: {header.decode()}\r\n{forged}")
    stored = world.box.openpgp.incoming(message)
    peer = world.box.openpgp.peers.get(CAROL)
    assert peer is not None and peer.source is Source.AUTOCRYPT
    assert peer.fingerprint == carol_key.fingerprint
    assert parse_message(stored).get_all(STATUS_FIELD) == [b"none (not encrypted)"]
    assert world.box.leaks.predicted_path(CAROL) is MailPath.GATEWAY_CLEARNET_OPENPGP


def test_incoming_pgp_mime_is_stored_decrypted_with_the_verdict(world: World) -> None:
    box_public = world.box.openpgp.box_key().public
    original = _incoming(BOB, "Message-ID: <r1@clear.test>\r\n", "The secret reply.\r\n")
    encrypted = encrypt_message(original, BOB_KEY, [box_public])
    assert b"The secret reply" not in encrypted
    stored = parse_message(world.box.openpgp.incoming(encrypted))
    assert stored.get_all(STATUS_FIELD)[0].startswith(b"decrypted; signature=verified; signer=")
    assert stored.get("Subject") == b"hello" and b"The secret reply." in stored.body


def test_incoming_pgp_mime_that_does_not_decrypt_is_stored_as_is_with_a_reason(
    world: World,
) -> None:
    other = BoxKey.generate(BOB)  # encrypted to someone else's key, not the box's
    encrypted = encrypt_message(_incoming(BOB), BOB_KEY, [other.public])
    stored = world.box.openpgp.incoming(encrypted)
    status = parse_message(stored).get(STATUS_FIELD) or b""
    assert status.startswith(b'not-decrypted; reason="') and is_pgp_mime(stored)
    broken = encrypted.replace(b"Version: 1", b"Version: 9")
    status = parse_message(world.box.openpgp.incoming(broken)).get(STATUS_FIELD) or b""
    assert status.startswith(b"not-decrypted")


def test_keys_cli_import_list_export_remove(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box_dir = str(world.box.config.box_dir)
    key_file = tmp_path / "frank.asc"
    frank = BoxKey.generate("frank@clear.test")
    key_file.write_text(frank.public.armored())
    assert main(["keys", "import", "--dir", box_dir, str(key_file)]) == 0
    assert f"imported {frank.fingerprint} for frank@clear.test" in capsys.readouterr().out
    assert main(["keys", "list", "--dir", box_dir]) == 0
    listing = capsys.readouterr().out
    assert f"frank@clear.test  {frank.fingerprint}  manual" in listing
    assert BOB in listing and "BEGIN PGP" not in listing and "keydata" not in listing
    assert main(["keys", "export", "--dir", box_dir]) == 0
    exported = parse_public_key(capsys.readouterr().out)
    assert exported.addresses == (ALIAS,)
    assert exported.fingerprint == world.box.openpgp.box_key().fingerprint
    assert main(["keys", "remove", "--dir", box_dir, "frank@clear.test"]) == 0
    assert main(["keys", "remove", "--dir", box_dir, "frank@clear.test"]) == 1
    assert "no key is stored" in capsys.readouterr().err
    key_file.write_text("not a key")
    assert main(["keys", "import", "--dir", box_dir, str(key_file)]) == 1


async def test_agent_prepares_each_attempt_and_a_refusal_bounces_the_queued_form(
    tmp_path: Path,
) -> None:
    alice = Identity.generate()
    queue = OutboundQueue(tmp_path / "queue", queue_key(alice.seed))
    with socket.socket() as closed:  # every attempt fails as an unreachable tor does
        closed.bind(("127.0.0.1", 0))
        port = int(closed.getsockname()[1])
    agent = DeliveryAgent(
        queue=queue,
        identity=alice,
        settings=DeliverySection(retry_initial=30.0),
        socks_address=lambda: ("127.0.0.1", port),
        socks_timeout=5,
        sender_maildir=lambda part: Maildir(tmp_path / "mail" / part),
    )

    async def run_until(condition: Callable[[], bool]) -> None:
        task = asyncio.create_task(agent.run())
        try:
            async with asyncio.timeout(10):
                while not condition():
                    await asyncio.sleep(0.02)
        finally:
            await agent.stop()
            await asyncio.gather(task, return_exceptions=True)

    sender = f"alice@{alice.onion_address}"
    message = f"From: {sender}\r\nSubject: {SUBJECT}\r\n\r\n{BODY}\r\n".encode()
    seen: list[bytes] = []

    async def prepare_then_fail_on_the_network(entry: QueuedMessage) -> QueuedMessage:
        seen.append(entry.message)
        return entry

    agent.prepare = prepare_then_fail_on_the_network
    kept = queue.enqueue(GW_ONION, sender, (BOB,), message)
    await run_until(lambda: queue.states()[0].attempts == 1)
    assert seen == [message] and queue.load(kept.id).message == message  # queue unchanged

    async def refuse(entry: QueuedMessage) -> QueuedMessage:
        raise PermanentDeliveryError("no usable OpenPGP key for a recipient; refused by rule")

    agent.prepare = refuse
    queue.reschedule_all(0)
    await run_until(lambda: not queue.states())
    [dsn] = list((tmp_path / "mail" / "alice" / "new").iterdir())
    text = dsn.read_bytes()
    assert b"no usable OpenPGP key" in text and SUBJECT.encode() in text
