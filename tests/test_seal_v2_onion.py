"""The handshake seal over the private Tor network: KCI, forward secrecy, rotation, v1.

Two ``onionmail run`` boxes with their own tors; alice accepts version 1
seals (the default during the deprecation), bob does not
(``[inbound] accept_seal_v1 = false``). A separate client tor plays the
attacker, who holds a box's whole directory (its seed and mail keys), as
whoever stole or backed up that box would. A loopback capture records what
bob's tor hands his inbound socket: the wire as the recipient sees it, the
SMTP session in full.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.utils
import pytest

from onionmail.core.errors import EnvelopeError, SealError
from onionmail.seal.envelope import HEADER as V1_HEADER
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    decode_from_smtp,
    encode_content,
    encode_for_smtp,
    open_envelope,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.handshake import (
    HEADER,
    MESSAGE2_SIZE,
    SEAL2_KEYWORD,
    Announcement,
    parse_announcement,
    prologue,
    seal_in_session,
)
from onionmail.seal.identity import Identity, load_identity, x25519_public_key_for_onion
from onionmail.seal.mail_key import MailKeyring
from onionmail.seal.noise import HandshakeState, KeyPair
from onionmail.seal.padding import pad
from onionmail.store.ledger import Ledger, ledger_key
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import (
    ClientTor,
    RunningBox,
    onion_smtp,
    start_box,
    start_client_tor,
    submit,
    wait_for_mail,
)
from tests.smtp_client import code
from tests.wire_capture import LoopbackCapture, listening_ports

pytestmark = pytest.mark.tor


class Stolen:
    """Everything on a box's disk that holds a key: its seed and its mail keyring."""

    def __init__(self, box: RunningBox) -> None:
        keys = box.new.box_dir / "keys"
        self.identity = load_identity(keys / "identity.key")
        self.keyring = MailKeyring.open(keys / "mail-keys", self.identity)


@pytest.fixture(scope="module")
def world(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("seal2")
    capture = LoopbackCapture().start()
    started: list[Any] = []
    try:
        alice = start_box(root, "alice", testnet.directory)
        started.append(alice)
        bob = start_box(root, "bob", testnet.directory, settings={"inbound.accept_seal_v1": False})
        started.append(bob)
        tor = start_client_tor(root / "client-tor", client_tor_options(testnet))
        started.append(tor)
        (bob_inbound,) = listening_ports(bob.process.pid) - {bob.submission_port}
        yield {"alice": alice, "bob": bob, "tor": tor, "capture": capture, "inbound": bob_inbound}
    finally:
        capture.stop()
        for thing in reversed(started):
            thing.stop()


def _announced(greeting: str, onion: str) -> tuple[Announcement, bytes]:
    words = greeting.split()
    assert words[-6] == SEAL2_KEYWORD and words[-4] == SEAL_KEYWORD, greeting
    return (
        parse_announcement(words[-5], onion, time.time()),
        parse_seal_keyword_params(f"{words[-3]} {words[-2]}"),
    )


def _content(mail_from: str, rcpt: str, challenge: bytes, subject: str) -> SealedContent:
    message = f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody\r\n"
    return SealedContent(
        envelope_id=Identity.generate().seed[:16],
        created=int(time.time()),
        session_challenge=challenge,
        mail_from=mail_from,
        recipients=(rcpt,),
        message=message.encode(),
    )


async def _attack(tor: ClientTor, target: RunningBox, mail_from: str, build: Any) -> str:
    """Send one envelope ``build(announcement, challenge)`` makes; the final reply."""
    client, greeting = await onion_smtp(tor, target.onion)
    announcement, challenge = _announced(greeting, target.onion)
    assert code(await client.cmd("EHLO localhost")) == 250
    assert code(await client.cmd(f"MAIL FROM:<{mail_from}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{target.address}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    reply = await client.cmd(build(announcement, challenge) + b".\r\n")
    await client.close()
    return reply


def _results(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return " ".join(str(parsed["Authentication-Results"]).split())


def _find(folder: Path, subject: str) -> bytes:
    for raw in wait_for_mail(folder, 0, timeout=1):
        if subject.encode() in raw:
            return raw
    raise AssertionError(f"no message {subject!r} in {folder}")


def test_boxes_seal_with_the_handshake_and_a_capture_does_not_open_with_static_keys(
    world: dict[str, Any],
) -> None:
    """(b) Forward secrecy, on the wire: bob's inbound socket recorded, then every static
    key of both boxes (seeds, onion-derived X25519 keys, mail keys) tried on the capture."""
    alice, bob = world["alice"], world["bob"]
    before = len(wait_for_mail(bob.maildir, 0))
    started = time.time()
    asyncio.run(submit(alice, bob.address, "FsSubject", "forward secret body"))
    wait_for_mail(bob.maildir, before + 1)
    raw = _find(bob.maildir, "FsSubject")
    assert "onionmail=pass (sealed v2:" in _results(raw)
    bob_keys = Stolen(bob)
    ledger = Ledger(bob.new.box_dir / "ledger", ledger_key(bob_keys.identity.seed))
    deadline = time.monotonic() + 10  # written once the message is durable, right after it
    while not (received := [e for e in ledger.entries() if e.direction == "received"]):
        assert time.monotonic() < deadline, "bob's ledger never recorded the message"
        time.sleep(0.05)
    (entry,) = received
    assert entry.seal == "v2"
    time.sleep(1)  # the last segments reach the capture
    streams = [s for s in world["capture"].to_port(world["inbound"], started) if b"BDAT" in s]
    assert len(streams) == 1
    envelope = decode_from_smtp(_bdat_payload(streams[0]))
    assert envelope.startswith(HEADER)
    alice_keys = Stolen(alice)
    statics = [
        alice_keys.keyring.current,
        bob_keys.keyring.current,
        KeyPair.from_private(bytes(alice_keys.identity.x25519_private_key())),
        KeyPair.from_private(bytes(bob_keys.identity.x25519_private_key())),
    ]
    tried = 0
    for ours in statics:
        for guess in statics:  # bob's ephemeral key died with the session: guess a static one
            handshake = HandshakeState(
                "KX",
                initiator=True,
                prologue=prologue(alice.onion, bob.onion),
                static=ours,
                ephemeral=guess,
            )
            handshake.write_message()
            with pytest.raises(SealError):
                handshake.read_message(envelope[len(HEADER) : len(HEADER) + MESSAGE2_SIZE])
            tried += 1
        for peer in statics:  # and as version 1 would: a static-static box
            box = nacl.public.Box(
                nacl.public.PrivateKey(ours.private), nacl.public.PublicKey(peer.public)
            )
            with pytest.raises(nacl.exceptions.CryptoError):
                box.decrypt(envelope[len(HEADER) + 24 :], envelope[len(HEADER) : len(HEADER) + 24])
    assert tried == 16
    with pytest.raises(EnvelopeError):
        open_envelope(envelope, recipient=bob_keys.identity, sender_onion=alice.onion)


def test_a_version_1_capture_opens_with_the_static_keys_the_control(
    world: dict[str, Any],
) -> None:
    """The same capture and key trial on a version 1 envelope (which bob refuses, but it
    went over the wire): it opens, so the test above would have caught a static seal."""
    alice, bob, tor = world["alice"], world["bob"], world["tor"]
    alice_keys = Stolen(alice)
    started = time.time()

    def build(_announcement: Announcement, challenge: bytes) -> bytes:
        content = _content(alice.address, bob.address, challenge, "V1Subject")
        return encode_for_smtp(seal(content, sender=alice_keys.identity, recipient_onion=bob.onion))

    reply = asyncio.run(_attack(tor, bob, alice.address, build))
    assert code(reply) == 550 and "version 1" in reply, reply
    time.sleep(1)
    (stream,) = [s for s in world["capture"].to_port(world["inbound"], started) if b"DATA" in s]
    data = stream.split(b"DATA\r\n", 1)[1].rsplit(b".\r\n", 1)[0]
    opened = open_envelope(
        decode_from_smtp(data), recipient=Stolen(bob).identity, sender_onion=alice.onion
    )
    assert b"V1Subject" in opened.message


def test_key_compromise_impersonation_is_refused(world: dict[str, Any]) -> None:
    """(a) With all of bob's keys and alice's address, forge mail "from alice" to bob."""
    alice, bob, tor = world["alice"], world["bob"], world["tor"]
    bob_keys = Stolen(bob)
    before = len(wait_for_mail(bob.maildir, 0))

    def with_bobs_mail_key(announcement: Announcement, challenge: bytes) -> bytes:
        content = _content(alice.address, bob.address, challenge, "KciSubject")
        envelope = seal_in_session(
            content,
            keyring=bob_keys.keyring,
            announcement=announcement,
            sender_onion=alice.onion,
            recipient_onion=bob.onion,
        )
        return encode_for_smtp(envelope)

    def as_version_1(_announcement: Announcement, challenge: bytes) -> bytes:
        content = _content(alice.address, bob.address, challenge, "KciSubject")
        return _v1_forgery(content, victim=bob_keys.identity, claimed=alice.onion)

    reply = asyncio.run(_attack(tor, bob, alice.address, with_bobs_mail_key))
    assert code(reply) == 550 and "forged sender" in reply, reply
    reply = asyncio.run(_attack(tor, bob, alice.address, as_version_1))
    assert code(reply) == 550 and "version 1" in reply, reply
    assert len(wait_for_mail(bob.maildir, 0)) == before


def test_version_1_is_still_accepted_by_default_and_marked(world: dict[str, Any]) -> None:
    """alice keeps the default: a version 1 seal (here the KCI forgery it allows) is
    delivered, and its Authentication-Results and ledger entry say sealed-v1."""
    alice, bob, tor = world["alice"], world["bob"], world["tor"]
    alice_keys = Stolen(alice)
    before = len(wait_for_mail(alice.maildir, 0))

    def forged(_announcement: Announcement, challenge: bytes) -> bytes:
        content = _content(bob.address, alice.address, challenge, "V1Marked")
        return _v1_forgery(content, victim=alice_keys.identity, claimed=bob.onion)

    reply = asyncio.run(_attack(tor, alice, bob.address, forged))
    assert code(reply) == 250, reply
    wait_for_mail(alice.maildir, before + 1)
    assert "onionmail=pass (sealed-v1:" in _results(_find(alice.maildir, "V1Marked"))
    ledger = Ledger(alice.new.box_dir / "ledger", ledger_key(alice_keys.identity.seed))
    assert [e.seal for e in ledger.entries() if e.direction == "received"] == ["sealed-v1"]


def test_a_rotated_mail_key_takes_effect_and_the_old_one_is_erased(
    world: dict[str, Any],
) -> None:
    """(c) ``onionmail keys rotate`` while bob runs: his next greeting certifies the new
    key, mail from alice still arrives (sealed to it), the old key is gone from his disk."""
    alice, bob, tor = world["alice"], world["bob"], world["tor"]
    old = Stolen(bob).keyring.current
    done = subprocess.run(
        [sys.executable, "-m", "onionmail.cli", "keys", "rotate", "--dir", str(bob.new.box_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"the old key [0-9a-f]{16} is erased", done.stdout), done.stdout
    new = Stolen(bob).keyring
    assert new.current.public != old.public and new.key_for(old.public) is None
    file = (bob.new.box_dir / "keys" / "mail-keys").read_bytes()
    assert old.private not in file and base64.b64encode(old.private) not in file

    async def greeting() -> str:
        client, text = await onion_smtp(tor, bob.onion)
        await client.close()
        return text

    announcement, _ = _announced(asyncio.run(greeting()), bob.onion)
    assert announcement.certificate.mail_key == new.current.public
    before = len(wait_for_mail(bob.maildir, 0))
    asyncio.run(submit(alice, bob.address, "AfterRotation", "still arrives"))
    wait_for_mail(bob.maildir, before + 1)
    assert "sealed v2" in _results(_find(bob.maildir, "AfterRotation"))


def _v1_forgery(content: SealedContent, *, victim: Identity, claimed: str) -> bytes:
    """The version 1 key-compromise impersonation: crypto_box(victim, claimed sender) is
    crypto_box(claimed sender, victim), so the victim's key alone seals "from" anyone."""
    own = bytes(victim.x25519_public_key())
    plaintext = pad(V1_HEADER + own + encode_content(content))
    box = nacl.public.Box(victim.x25519_private_key(), x25519_public_key_for_onion(claimed))
    nonce = nacl.utils.random(24)
    return encode_for_smtp(V1_HEADER + nonce + box.encrypt(plaintext, nonce).ciphertext)


def _bdat_payload(stream: bytes) -> bytes:
    """The data of a recorded session's ``BDAT`` chunks, up to the ``LAST`` one."""
    data, pos = b"", stream.index(b"BDAT ")
    while True:
        match = re.compile(rb"BDAT (\d+)( LAST)?\r\n").match(stream, pos)
        assert match is not None, stream[pos : pos + 40]
        end = match.end() + int(match.group(1))
        data += stream[match.end() : end]
        if match.group(2):
            return data
        pos = end
