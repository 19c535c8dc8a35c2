"""The version 2 seal (onionmail.seal.handshake) and the mail keyring, as units.

The same properties are shown over the private Tor network in
``tests/test_seal_v2_onion.py``; here each is attacked directly, with every
key an attacker of that kind would hold.
"""

from __future__ import annotations

import copy
import secrets
import time
from dataclasses import replace
from pathlib import Path

import pytest

from onionmail.core.errors import EnvelopeError, IdentityError, SealError
from onionmail.seal.envelope import (
    SealedContent,
    mail_key_id,
    open_sealed_to_mail_key,
    seal_to_mail_key,
)
from onionmail.seal.handshake import (
    HEADER,
    MESSAGE2_SIZE,
    Announcement,
    ReceiverSession,
    open_in_session,
    parse_announcement,
    seal_in_session,
)
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import (
    CERTIFICATE_LIFETIME,
    MailKeyCertificate,
    MailKeyring,
)
from onionmail.seal.noise import HandshakeState, KeyPair

NOW = time.time()


class Box:
    def __init__(self, tmp: Path, name: str) -> None:
        self.identity = Identity.generate()
        self.onion = self.identity.onion_address
        self.keyring = MailKeyring.open(tmp / f"{name}-mail-keys", self.identity, now=NOW)


@pytest.fixture
def alice(tmp_path: Path) -> Box:
    return Box(tmp_path, "alice")


@pytest.fixture
def bob(tmp_path: Path) -> Box:
    return Box(tmp_path, "bob")


def _content(sender: Box, recipient: Box, message: bytes = b"Subject: hi\r\n\r\nbody\r\n"):
    return SealedContent(
        envelope_id=secrets.token_bytes(16),
        created=int(NOW),
        session_challenge=secrets.token_bytes(16),
        mail_from=f"alice@{sender.onion}",
        recipients=(f"bob@{recipient.onion}",),
        message=message,
    )


def _send(sender: Box, recipient: Box, session: ReceiverSession, content: SealedContent) -> bytes:
    announcement = parse_announcement(session.announcement(), recipient.onion, NOW)
    return seal_in_session(
        content,
        keyring=sender.keyring,
        announcement=announcement,
        sender_onion=sender.onion,
        recipient_onion=recipient.onion,
    )


def _open(envelope: bytes, session: ReceiverSession, sender: Box, recipient: Box):
    return open_in_session(
        envelope,
        session=session,
        sender_onion=sender.onion,
        recipient_onion=recipient.onion,
        now=NOW,
    )


def test_round_trip_and_what_the_opener_learns(alice: Box, bob: Box) -> None:
    session = ReceiverSession.start(bob.keyring)
    content = _content(alice, bob, b"x" * 200_000)  # several transport messages
    envelope = _send(alice, bob, session, content)
    assert envelope.startswith(HEADER)
    opened = _open(envelope, session, alice, bob)
    assert opened == content
    assert opened.seal_version == 2
    assert MailKeyCertificate.verify(opened.sender_certificate, alice.onion, NOW).mail_key == (
        alice.keyring.current.public
    )


def test_another_session_cannot_open_it(alice: Box, bob: Box) -> None:
    """A capture replayed in a new session meets a new ephemeral key: it does not open."""
    first, second = ReceiverSession.start(bob.keyring), ReceiverSession.start(bob.keyring)
    envelope = _send(alice, bob, first, _content(alice, bob))
    with pytest.raises(SealError):
        _open(envelope, second, alice, bob)


def test_key_compromise_impersonation_fails(alice: Box, bob: Box, tmp_path: Path) -> None:
    """Holding everything of Bob's (seed, mail keys) and Alice's address, forge "from Alice".

    In version 1 this worked (the shared key of a static-static box is the
    same from both ends). Here the attacker can certify no key for Alice's
    onion, so the best it can do is present its own key under Alice's
    name, and the handshake's ``es`` needs Alice's private key or Bob's
    ephemeral one, which the attacker never sees.
    """
    session = ReceiverSession.start(bob.keyring)
    announcement = parse_announcement(session.announcement(), bob.onion, NOW)
    content = _content(alice, bob)

    def forge_with(keyring: MailKeyring) -> bytes:
        return seal_in_session(
            content,
            keyring=keyring,
            announcement=announcement,
            sender_onion=alice.onion,
            recipient_onion=bob.onion,
        )

    # 1. Bob's own mail key posing as Alice's, with Bob's certificate
    with pytest.raises(SealError, match="not signed by the onion"):
        _open(forge_with(bob.keyring), session, alice, bob)
    # 2. a key the attacker made, with a certificate "signed" by Bob's onion key
    with pytest.raises(SealError, match="not signed by the onion"):
        _open(forge_with(MailKeyring.open(tmp_path / "fake", bob.identity)), session, alice, bob)
    # 3. Alice's real certificate, with a key the attacker holds in the handshake
    impostor = copy.copy(bob.keyring)  # Bob's ring with Alice's certificate spliced in
    impostor.certificate = alice.keyring.certificate
    with pytest.raises(SealError, match="not the key its certificate names"):
        _open(forge_with(impostor), session, alice, bob)


def test_forward_secrecy_static_keys_do_not_open_a_capture(alice: Box, bob: Box) -> None:
    """With both boxes' seeds and mail keys but neither ephemeral key, nothing opens.

    The attacker replays the handshake with every static key and a guessed
    (fresh) ephemeral key for Bob: it fails, because ``ee`` needs one of the
    two ephemeral private keys, which died with the session.
    """
    session = ReceiverSession.start(bob.keyring)
    envelope = _send(alice, bob, session, _content(alice, bob))
    for guess in (KeyPair.generate(), KeyPair.from_private(bob.keyring.current.private)):
        handshake = HandshakeState(
            "KX",
            initiator=True,
            prologue=b"\0".join([b"onionmail seal v2", alice.onion.encode(), bob.onion.encode()]),
            static=bob.keyring.current,
            ephemeral=guess,
        )
        handshake.write_message()
        with pytest.raises(SealError):
            handshake.read_message(envelope[len(HEADER) : len(HEADER) + MESSAGE2_SIZE])


def test_redirected_or_reflected_envelope_fails(alice: Box, bob: Box, tmp_path: Path) -> None:
    carol = Box(tmp_path, "carol")
    session = ReceiverSession.start(bob.keyring)
    envelope = _send(alice, bob, session, _content(alice, bob))
    with pytest.raises(SealError):
        _open(envelope, session, carol, bob)  # claimed from another sender
    with pytest.raises(SealError):
        open_in_session(
            envelope, session=session, sender_onion=bob.onion, recipient_onion=alice.onion, now=NOW
        )


@pytest.mark.parametrize("cut", [1, 200, 65_551])
def test_truncated_or_tampered_envelope_fails(alice: Box, bob: Box, cut: int) -> None:
    session = ReceiverSession.start(bob.keyring)
    envelope = _send(alice, bob, session, _content(alice, bob, b"y" * 100_000))
    with pytest.raises((EnvelopeError, SealError)):
        _open(envelope[:-cut], session, alice, bob)
    tampered = bytearray(envelope)
    tampered[-cut] ^= 0x40
    with pytest.raises((EnvelopeError, SealError)):
        _open(bytes(tampered), session, alice, bob)


def test_announcement_must_be_the_recipients(alice: Box, bob: Box) -> None:
    session = ReceiverSession.start(bob.keyring)
    with pytest.raises(SealError):
        parse_announcement(session.announcement(), alice.onion, NOW)
    with pytest.raises(SealError, match="not valid now"):
        parse_announcement(session.announcement(), bob.onion, NOW + CERTIFICATE_LIFETIME + 86400)
    with pytest.raises(EnvelopeError):
        parse_announcement("not*base64", bob.onion, NOW)
    assert isinstance(parse_announcement(session.announcement(), bob.onion, NOW), Announcement)


def test_keyring_rotation_keeps_then_erases(bob: Box) -> None:
    old = bob.keyring.current
    bob.keyring.rotate(now=NOW, keep_old_for=3600)
    again = MailKeyring.open(bob.keyring.path, bob.identity)
    assert again.current.public != old.public
    assert again.key_for(old.public) is not None
    assert MailKeyCertificate.verify(again.certificate.encode(), bob.onion, NOW).mail_key == (
        again.current.public
    )
    assert again.erase_due(now=NOW + 3601) == 1
    reread = MailKeyring.open(bob.keyring.path, bob.identity)
    assert reread.key_for(old.public) is None
    assert old.private not in bob.keyring.path.read_bytes()
    bob.keyring.rotate(now=NOW, keep_old_for=0)
    assert bob.keyring.retired == []


def test_keyring_refresh_sees_another_process_rotate(bob: Box) -> None:
    other = MailKeyring.open(bob.keyring.path, bob.identity)
    other.rotate(now=NOW, keep_old_for=0)
    assert bob.keyring.refresh()
    assert bob.keyring.current.public == other.current.public
    assert not bob.keyring.refresh()


def test_keyring_renews_its_certificate(bob: Box) -> None:
    assert not bob.keyring.renew_if_due(now=NOW)
    later = NOW + CERTIFICATE_LIFETIME - 86400
    key = bob.keyring.current.public
    assert bob.keyring.renew_if_due(now=later)
    assert bob.keyring.current.public == key
    MailKeyCertificate.verify(bob.keyring.certificate.encode(), bob.onion, later + 20 * 86400)


def test_keyring_file_belongs_to_its_identity(bob: Box) -> None:
    with pytest.raises(IdentityError, match="does not open with this box"):
        MailKeyring.open(bob.keyring.path, Identity.generate())
    bob.keyring.path.write_bytes(b"onionmail-mail-keys-v1\nnot base64\n")
    with pytest.raises(IdentityError, match="damaged"):
        MailKeyring.open(bob.keyring.path, bob.identity)


def test_the_key_tor_holds_opens_nothing_sealed_to_the_mail_key(alice: Box, bob: Box) -> None:
    """The inner envelope to a mail key: the onion-derived key (tor's) does not open it."""
    content = replace(_content(alice, bob), session_challenge=bytes(16))
    inner = seal_to_mail_key(content, mail_key=bob.keyring.current.public)
    ring = {mail_key_id(k): k for k in bob.keyring.public_keys()}

    def key_for(key_id: bytes) -> tuple[bytes, bytes] | None:
        pair = bob.keyring.key_for(ring[key_id]) if key_id in ring else None
        return None if pair is None else (pair.private, pair.public)

    assert open_sealed_to_mail_key(inner, key_for) == content
    onion_key = bob.identity.x25519_private_key()
    with pytest.raises(SealError):
        open_sealed_to_mail_key(inner, lambda _: (bytes(onion_key), bytes(onion_key.public_key)))
    bob.keyring.rotate(now=NOW, keep_old_for=0)
    ring = {mail_key_id(k): k for k in bob.keyring.public_keys()}
    with pytest.raises(SealError, match="does not hold"):
        open_sealed_to_mail_key(inner, key_for)
