"""Two real boxes exchange mail over onion services on the private Tor network.

Everything here is real: the private Tor network (session fixture), one
``onionmail run`` process per box with its own tor, and a separate client
tor that plays the attacker and the plain (non-onionmail) peer.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onionmail.box.policy_gate import LeakKeeper
from onionmail.config.box import load_config
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.identity import Identity, load_identity
from onionmail.smtp.server import server_port, start_smtp_server
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import (
    ClientTor,
    RunningBox,
    onion_smtp,
    start_box,
    start_client_tor,
    submit,
    submit_raw,
    wait_for_mail,
)
from tests.leaks import host_identity_in
from tests.smtp_client import RawSMTP, code
from threat_model import Item, Observer

pytestmark = pytest.mark.tor


@pytest.fixture(scope="module")
def boxes(
    testnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, RunningBox]]:
    root = tmp_path_factory.mktemp("boxes")
    started: dict[str, RunningBox] = {}
    try:
        for name in ("alice", "bob"):
            started[name] = start_box(root, name, testnet.directory)
        yield started
    finally:
        for box in started.values():
            box.stop()


@pytest.fixture(scope="module")
def client_tor(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientTor]:
    tor = start_client_tor(tmp_path_factory.mktemp("client-tor"), client_tor_options(testnet))
    try:
        yield tor
    finally:
        tor.stop()


def body_of(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return str(parsed.get_payload())


BODY_A = "Hi Bob,\r\n\r\n.a line with a leading dot\r\nunicode-free but exact: ~!@#$%^&*()\r\n"
BODY_B = "Hi Alice,\r\n\r\ngot it; replying over the same path.\r\n"


def test_alice_to_bob_and_back_over_onion_services(boxes: dict[str, RunningBox]) -> None:
    alice, bob = boxes["alice"], boxes["bob"]
    assert alice.onion == alice.new.identity.onion_address
    asyncio.run(submit(alice, bob.address, "hello", BODY_A, **{"User-Agent": "Test/1"}))
    (received,) = wait_for_mail(bob.maildir, 1)
    assert body_of(received) == BODY_A.replace("\r\n", "\n")
    parsed = email.message_from_bytes(received, policy=email.policy.default)
    assert parsed["From"] == alice.address and parsed["Subject"] == "hello"
    assert parsed["User-Agent"] is None
    assert f"{bob.onion}; onionmail=pass" in parsed["Authentication-Results"]
    assert parsed["Return-Path"] == f"<{alice.address}>"

    asyncio.run(
        submit(
            bob, alice.address, "Re: hello", BODY_B, **{"In-Reply-To": str(parsed["Message-ID"])}
        )
    )
    (reply,) = wait_for_mail(alice.maildir, 1)
    assert body_of(reply) == BODY_B.replace("\r\n", "\n")
    reply_parsed = email.message_from_bytes(reply, policy=email.policy.default)
    assert reply_parsed["In-Reply-To"] == parsed["Message-ID"]
    assert "onionmail=pass" in reply_parsed["Authentication-Results"]


def test_what_alice_sent_is_filed_in_her_sent_folder_read(
    boxes: dict[str, RunningBox],
) -> None:
    """[submission] keep_sent (the default): the copy is the message as it left (scrubbed,
    the same Message-ID bob received), in .Sent/cur with the seen flag, for every client."""
    alice, bob = boxes["alice"], boxes["bob"]
    (received,) = [m for m in wait_for_mail(bob.maildir, 1) if b"Subject: hello" in m]
    message_id = email.message_from_bytes(received)["Message-ID"]
    sent = alice.maildir / ".Sent"
    copies = [p for p in (sent / "cur").iterdir() if b"Subject: hello\n" in p.read_bytes()]
    assert len(copies) == 1 and copies[0].name.endswith(":2,S")
    copy = email.message_from_bytes(copies[0].read_bytes())
    assert copy["Message-ID"] == message_id and copy["User-Agent"] is None
    assert not list((sent / "new").iterdir())


def test_status_command_reports_the_running_box(boxes: dict[str, RunningBox]) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "onionmail.cli",
            "status",
            "--dir",
            str(boxes["bob"].new.box_dir),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    status = json.loads(out.stdout)
    assert status["onion"] == boxes["bob"].onion
    assert status["tor"]["bootstrap_percent"] == 100 and status["tor"]["published"]
    assert status["queue_length"] == 0 and status["running"]


async def onion_session(tor: ClientTor, onion: str) -> tuple[RawSMTP, str, str]:
    """Connect through the client tor to ``onion``:25; return client, banner, EHLO reply."""
    client, banner = await onion_smtp(tor, onion)
    ehlo = await client.cmd("EHLO localhost")
    return client, banner, ehlo


def challenge_of(ehlo: str) -> bytes:
    for line in ehlo.splitlines():
        keyword, _, params = line[4:].partition(" ")
        if keyword == SEAL_KEYWORD:
            return parse_seal_keyword_params(params)
    raise AssertionError("no seal keyword")


def sealed(sender: Identity, mail_from: str, rcpt: str, bob_onion: str, challenge: bytes) -> bytes:
    message = f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: forged?\r\n\r\nbody\r\n".encode()
    content = SealedContent(
        envelope_id=Identity.generate().seed[:16],
        created=int(time.time()),
        session_challenge=challenge,
        mail_from=mail_from,
        recipients=(rcpt,),
        message=message,
    )
    return encode_for_smtp(seal(content, sender=sender, recipient_onion=bob_onion))


async def send_sealed_over_onion(
    tor: ClientTor, bob: RunningBox, mail_from: str, build: Any
) -> tuple[str, bytes]:
    client, _, ehlo = await onion_session(tor, bob.onion)
    assert code(await client.cmd(f"MAIL FROM:<{mail_from}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{bob.address}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    data = build(challenge_of(ehlo))
    reply = await client.cmd(data + b".\r\n")
    await client.close()
    return reply, data


def test_forged_sender_over_onion_is_refused(
    boxes: dict[str, RunningBox], client_tor: ClientTor
) -> None:
    alice, bob = boxes["alice"], boxes["bob"]
    before = len(wait_for_mail(bob.maildir, 0))
    mallory = Identity.generate()
    reply, _ = asyncio.run(
        send_sealed_over_onion(
            client_tor,
            bob,
            alice.address,
            lambda ch: sealed(mallory, alice.address, bob.address, bob.onion, ch),
        )
    )
    assert code(reply) == 550 and "forged sender" in reply
    assert len(wait_for_mail(bob.maildir, 0)) == before


def test_replayed_envelope_over_onion_is_refused(
    boxes: dict[str, RunningBox], client_tor: ClientTor
) -> None:
    alice, bob = boxes["alice"], boxes["bob"]
    alice_key = load_identity(alice.new.box_dir / "keys" / "identity.key")
    before = len(wait_for_mail(bob.maildir, 0))
    reply, captured = asyncio.run(
        send_sealed_over_onion(
            client_tor,
            bob,
            alice.address,
            lambda ch: sealed(alice_key, alice.address, bob.address, bob.onion, ch),
        )
    )
    assert code(reply) == 250
    assert len(wait_for_mail(bob.maildir, before + 1)) == before + 1
    replay, _ = asyncio.run(
        send_sealed_over_onion(client_tor, bob, alice.address, lambda _ch: captured)
    )
    assert code(replay) == 550
    assert len(wait_for_mail(bob.maildir, 0)) == before + 1


def test_relay_attempt_and_unknown_mailbox_over_onion(
    boxes: dict[str, RunningBox], client_tor: ClientTor
) -> None:
    async def probe() -> list[str]:
        client, banner, ehlo = await onion_session(client_tor, boxes["bob"].onion)
        assert host_identity_in(banner + "\n" + ehlo) == []
        await client.cmd("MAIL FROM:<carol@example.org>")
        replies = [
            await client.cmd(f"RCPT TO:<{boxes['alice'].address}>"),
            await client.cmd("RCPT TO:<dave@example.org>"),
            await client.cmd(f"RCPT TO:<nobody@{boxes['bob'].onion}>"),
            await client.cmd("RCPT TO:<bob@notanonion.onion>"),
        ]
        await client.close()
        return replies

    relay, clearnet, unknown, malformed = asyncio.run(probe())
    assert code(relay) == code(clearnet) == code(unknown) == 550
    assert "Relaying denied" in relay and "No such mailbox" in unknown
    assert 500 <= code(malformed) < 600


def test_plain_onion_peer_gets_scrubbed_unsealed_mail(
    boxes: dict[str, RunningBox], client_tor: ClientTor
) -> None:
    """A non-onionmail SMTP server behind an onion (OnionMX style) receives plain mail."""
    seen: dict[str, Any] = {}

    class PlainPeer:
        async def handle_EHLO(
            self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
        ) -> list[str]:
            session.host_name = hostname
            seen["ehlo"] = hostname
            return responses

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            seen["mail_from"] = envelope.mail_from
            seen["mail_options"] = envelope.mail_options
            seen["data"] = envelope.original_content
            return "250 OK"

        async def handle_exception(self, error: Exception) -> str:
            seen["error"] = repr(error)
            return "451 error"

    async def scenario() -> None:
        server = await start_smtp_server(PlainPeer(), "127.0.0.1", 0, hostname="peer")  # type: ignore[arg-type]
        service = client_tor.controller.create_ephemeral_hidden_service(
            {25: f"127.0.0.1:{server_port(server)}"},
            key_type="NEW",
            key_content="ED25519-V3",
            await_publication=True,
            timeout=60,
        )
        onion = f"{service.service_id}.onion"
        await submit(boxes["alice"], f"postmaster@{onion}", "plain", "to a plain peer, café\r\n")
        deadline = time.monotonic() + 120
        while "data" not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(scenario())
    assert "error" not in seen, seen["error"]
    assert seen["ehlo"] == "localhost"
    assert seen["mail_from"] == boxes["alice"].address
    assert "to a plain peer, café".encode() in seen["data"]
    assert "BODY=8BITMIME" in seen["mail_options"]  # 8-bit data declared (RFC 6152)
    assert host_identity_in(seen["data"]) == []


def test_plain_peer_can_send_to_a_box_marked_unverified(
    boxes: dict[str, RunningBox], client_tor: ClientTor
) -> None:
    bob = boxes["bob"]
    before = len(wait_for_mail(bob.maildir, 0))

    async def send() -> str:
        client, _, _ = await onion_session(client_tor, bob.onion)
        await client.cmd("MAIL FROM:<carol@example.org>")
        await client.cmd(f"RCPT TO:<{bob.address}>")
        await client.cmd("DATA")
        reply = await client.cmd(b"From: carol@example.org\r\nSubject: plain\r\n\r\nhi\r\n.\r\n")
        await client.close()
        return reply

    assert code(asyncio.run(send())) == 250
    messages = wait_for_mail(bob.maildir, before + 1)
    (plain,) = [m for m in messages if b"Subject: plain" in m]
    assert b"onionmail=none (plain SMTP peer" in plain


def test_submission_requires_auth(boxes: dict[str, RunningBox]) -> None:
    async def probe() -> str:
        client, banner = await RawSMTP.connect(boxes["alice"].submission_port)
        assert banner == "220 localhost ESMTP"
        await client.cmd("EHLO localhost")
        reply = await client.cmd(f"MAIL FROM:<{boxes['alice'].address}>")
        await client.close()
        return reply

    assert code(asyncio.run(probe())) == 530


def test_offline_peer_is_queued_and_retried(boxes: dict[str, RunningBox]) -> None:
    alice = boxes["alice"]
    offline = f"nobody@{Identity.generate().onion_address}"
    asyncio.run(submit(alice, offline, "to an offline box", "queued\r\n"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-m", "onionmail.cli", "queue", "--dir", str(alice.new.box_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        if "descriptor not found" in out or "timed out" in out:
            break
        time.sleep(0.5)
    assert offline.split("@")[1] in out
    assert "to an offline box" not in out
    lines = out.splitlines()[1:]
    assert any(int(line.split()[2]) >= 1 for line in lines)


def test_neomutt_reads_the_maildir(boxes: dict[str, RunningBox], tmp_path: Path) -> None:
    from tests.neomutt import neomutt_subjects

    bob = boxes["bob"]
    wait_for_mail(bob.maildir, 1)
    stored = wait_for_mail(bob.maildir, 1)
    subjects = neomutt_subjects(bob.maildir, tmp_path)
    assert "hello" in subjects
    assert len(subjects) == len(stored)


def test_box_attached_to_a_running_tor(
    boxes: dict[str, RunningBox], testnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """[tor] mode = "attach": the box uses a tor it did not start, and leaves it running."""
    root = tmp_path_factory.mktemp("attach")
    tor = start_client_tor(root / "tor", client_tor_options(testnet))
    try:
        carol = start_box(
            root, "carol", testnet.directory, attach_control_socket=tor.control_socket
        )
        try:
            assert carol.onion == carol.new.identity.onion_address
            bob = boxes["bob"]
            before = len(wait_for_mail(bob.maildir, 0))
            asyncio.run(submit(carol, bob.address, "from an attached tor", "hi\r\n"))
            messages = wait_for_mail(bob.maildir, before + 1)
            (got,) = [m for m in messages if b"Subject: from an attached tor" in m]
            assert b"onionmail=pass" in got
            # and carol's onion, published through the attached tor, receives
            asyncio.run(submit(bob, carol.address, "to an attached tor", "hi\r\n"))
            (back,) = wait_for_mail(carol.maildir, 1)
            assert b"Subject: to an attached tor" in back and b"onionmail=pass" in back
        finally:
            carol.stop()
        assert tor.process.poll() is None, "the box stopped a tor it did not launch"
    finally:
        tor.stop()


def test_box_output_names_no_peer_and_no_address(boxes: dict[str, RunningBox]) -> None:
    """After all of the above (forgeries, replays, bounces), stderr holds no address at all.

    Each box prints its own onion once as start-up progress; it never names a
    peer's onion or any mail address.
    """
    for name, box in boxes.items():
        text = "".join(box.stderr_lines)
        assert text, f"{name} printed nothing"
        assert "@" not in text, text
        for other_name, other in boxes.items():
            if other_name != name:
                assert other.onion not in text


def test_attachments_are_counted_in_both_ledgers_as_predicted(
    boxes: dict[str, RunningBox],
) -> None:
    """A mail with two attachments, alice to bob over Tor: both ledgers count them, and
    alice's record is the matrix ``leaks --to`` predicted for a message with attachments."""
    alice, bob = boxes["alice"], boxes["bob"]
    msg = email.message.EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"], msg["Subject"] = alice.address, bob.address, "two files"
    msg.set_content("see attached\n")
    for name in ("report.pdf", "notes.txt"):
        msg.add_attachment(
            b"x" * 300, maintype="application", subtype="octet-stream", filename=name
        )
    count = len(wait_for_mail(bob.maildir, 0))
    asyncio.run(submit_raw(alice, bob.address, msg.as_bytes()))
    (stored,) = [m for m in wait_for_mail(bob.maildir, count + 1) if b"two files" in m]
    message_id = str(email.message_from_bytes(stored)["Message-ID"]).strip("<>")  # as scrubbed
    cells = {}
    for box, direction in ((alice, "sent"), (bob, "received")):
        identity = load_identity(box.new.box_dir / "keys" / "identity.key")
        keeper = LeakKeeper(load_config(box.new.box_dir), identity.seed)
        deadline = time.monotonic() + 30  # alice writes "delivered" right after the 250
        while time.monotonic() < deadline:
            entries = [e for e in keeper.find(message_id) if e.state != "queued"]
            if entries:
                break
            time.sleep(0.2)
        (entry,) = entries
        assert entry.direction == direction and entry.seal == "v2"
        cell = entry.matrix.cell(Observer.RECIPIENT_BOX, Item.ATTACHMENT_NAMES)
        cells[direction] = str(cell.visibility)
        if direction == "sent":
            assert entry.matrix == keeper.predicted(bob.address, has_attachments=True)
    assert cells == {"sent": "visible", "received": "visible"}


def test_leak_ledger_records_the_path_of_every_message(boxes: dict[str, RunningBox]) -> None:
    """After the exchanges above: each box's ledger, and `leaks` per message and per recipient."""
    alice, bob = boxes["alice"], boxes["bob"]

    def leaks_cli(box: RunningBox, *args: str) -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable,
            "-m",
            "onionmail.cli",
            "leaks",
            "--dir",
            str(box.new.box_dir),
        ]
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)

    listing = leaks_cli(alice).stdout
    assert re.search(r"sent\s+onion-sealed\s+v2\s+delivered", listing), listing
    assert re.search(r"sent\s+onion-plain\s+-\s+delivered", listing), listing  # the plain peer
    assert "@" not in listing and bob.onion not in listing
    assert re.search(r"received\s+onion-sealed\s+v2\s+stored", leaks_cli(bob).stdout)

    (hello,) = [m for m in wait_for_mail(bob.maildir, 1) if b"Subject: hello" in m]
    message_id = email.message_from_bytes(hello)["Message-ID"]
    for box, direction in ((alice, "sent"), (bob, "received")):
        shown = leaks_cli(box, message_id, "--reasons")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"{direction} ") and "onion-sealed" in shown.stdout

    before = leaks_cli(alice, "--to", bob.address)
    assert before.returncode == 0 and "allows" in before.stdout
    clearnet = leaks_cli(alice, "--to", "dave@example.org")
    assert clearnet.returncode == 1 and "gateway" in clearnet.stdout
