"""The Noise framework in onionmail.seal.noise: published vectors and an independent implementation.

``tests/data/noise_vectors.json`` holds the cacophony test vectors of the
fundamental patterns for 25519_ChaChaPoly_BLAKE2b (fixed keys, every
handshake and transport message, the final handshake hash). The
``noiseprotocol`` package is a second, independent implementation
(``cryptography``'s primitives, not libsodium's): both sides of the seal's
``KX`` handshake are run against it in each direction.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from noise.connection import Keypair, NoiseConnection

from onionmail.core.errors import SealError
from onionmail.seal.noise import PATTERNS, HandshakeState, KeyPair, protocol_name

VECTORS = json.loads((Path(__file__).parent / "data" / "noise_vectors.json").read_text())["vectors"]


def _key(vector: dict[str, str], name: str) -> KeyPair | None:
    return KeyPair.from_private(bytes.fromhex(vector[name])) if name in vector else None


def _public(vector: dict[str, str], name: str) -> bytes | None:
    return bytes.fromhex(vector[name]) if name in vector else None


def _side(vector: dict[str, str], pattern: str, prefix: str) -> HandshakeState:
    return HandshakeState(
        pattern,
        initiator=prefix == "init",
        prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
        static=_key(vector, f"{prefix}_static"),
        ephemeral=_key(vector, f"{prefix}_ephemeral"),
        remote_static=_public(vector, f"{prefix}_remote_static"),
    )


def test_the_vectors_cover_every_fundamental_pattern() -> None:
    names = {v["protocol_name"] for v in VECTORS}
    assert names == {protocol_name(p) for p in PATTERNS}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["protocol_name"])
def test_published_vector(vector: dict) -> None:
    pattern = vector["protocol_name"].split("_")[1]
    initiator = _side(vector, pattern, "init")
    responder = _side(vector, pattern, "resp")
    one_way = len(pattern) == 1
    sides = (initiator, responder)
    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        writer_is_initiator = one_way or index % 2 == 0
        writer, reader = sides if writer_is_initiator else sides[::-1]
        if not writer.finished:
            assert writer.write_message(payload) == expected
            assert reader.read_message(expected) == payload
        else:
            assert writer.transport is not None and reader.transport is not None
            lane = 0 if writer_is_initiator else 1
            assert writer.transport[lane].encrypt_with_ad(b"", payload) == expected
            assert reader.transport[lane].decrypt_with_ad(b"", expected) == payload
    assert initiator.handshake_hash == bytes.fromhex(vector["handshake_hash"])
    assert responder.handshake_hash == initiator.handshake_hash


def _reference(*, initiator: bool, static: KeyPair, remote_static: bytes | None) -> NoiseConnection:
    connection = NoiseConnection.from_name(protocol_name("KX").encode())
    if initiator:
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_prologue(b"onionmail test")
    connection.set_keypair_from_private_bytes(Keypair.STATIC, static.private)
    if remote_static is not None:
        connection.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_static)
    connection.start_handshake()
    return connection


def test_kx_against_an_independent_implementation_as_responder() -> None:
    """The reference initiates (the receiving box); ours answers, as a sending box does."""
    receiver, sender = KeyPair.generate(), KeyPair.generate()
    theirs = _reference(initiator=True, static=receiver, remote_static=None)
    ours = HandshakeState(
        "KX",
        initiator=False,
        prologue=b"onionmail test",
        static=sender,
        remote_static=receiver.public,
    )
    ours.read_message(theirs.write_message())
    assert theirs.read_message(ours.write_message(b"a payload")) == b"a payload"
    assert theirs.handshake_finished and ours.transport is not None
    assert theirs.get_handshake_hash() == ours.handshake_hash
    assert theirs.decrypt(ours.transport[1].encrypt_with_ad(b"", b"mail")) == b"mail"


def test_kx_against_an_independent_implementation_as_initiator() -> None:
    receiver, sender = KeyPair.generate(), KeyPair.generate()
    ours = HandshakeState("KX", initiator=True, prologue=b"onionmail test", static=receiver)
    theirs = _reference(initiator=False, static=sender, remote_static=receiver.public)
    theirs.read_message(ours.write_message())
    assert ours.read_message(theirs.write_message(b"a payload")) == b"a payload"
    assert ours.remote_static == sender.public
    assert ours.transport is not None
    assert ours.transport[1].decrypt_with_ad(b"", theirs.encrypt(b"mail")) == b"mail"


def test_a_tampered_message_does_not_authenticate() -> None:
    receiver, sender = KeyPair.generate(), KeyPair.generate()
    ours = HandshakeState("KX", initiator=True, static=receiver)
    peer = HandshakeState("KX", initiator=False, static=sender, remote_static=receiver.public)
    peer.read_message(ours.write_message())
    message = bytearray(peer.write_message(b"payload"))
    message[40] ^= 1
    with pytest.raises(SealError):
        ours.read_message(bytes(message))


def test_a_low_order_point_is_refused() -> None:
    ours = HandshakeState(
        "KX", initiator=False, static=KeyPair.generate(), remote_static=KeyPair.generate().public
    )
    with pytest.raises(SealError):
        ours.read_message(bytes(32))  # the identity point as the peer's ephemeral
        ours.write_message()


def test_messages_out_of_turn_are_refused() -> None:
    ours = HandshakeState("KX", initiator=True, static=KeyPair.generate())
    with pytest.raises(SealError):
        ours.read_message(bytes(32))
