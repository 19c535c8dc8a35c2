"""The Noise protocol framework (revision 34), for one cipher suite: 25519, ChaChaPoly, BLAKE2b.

The handshake of the version 2 seal (:mod:`onionmail.seal.handshake`) is the
``KX`` pattern; this module implements the framework's state objects as the
specification names them (``CipherState``, ``SymmetricState``,
``HandshakeState``) for every fundamental pattern, so that it can be checked
against the published test vectors of all of them (``tests/test_noise.py``)
and against an independent implementation. No pre-shared keys, no fallback.

Primitives are libsodium's, through pynacl: X25519 (``crypto_scalarmult``),
ChaCha20-Poly1305 in its IETF form (96-bit nonce: 32 zero bits, then the
64-bit counter little-endian), and BLAKE2b-512 with its HMAC (block 128
bytes) for HKDF.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.utils

from onionmail.core.errors import SealError

DHLEN = 32
HASHLEN = 64
KEYLEN = 32
TAGLEN = 16
MAX_MESSAGE = 65535
"""Largest Noise message, handshake or transport (the specification's limit)."""
SUITE = "25519_ChaChaPoly_BLAKE2b"

PATTERNS: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], ...]]] = {
    # name: ((initiator pre-message, responder pre-message), messages alternating from ->)
    "N": (((), ("s",)), (("e", "es"),)),
    "K": ((("s",), ("s",)), (("e", "es", "ss"),)),
    "X": (((), ("s",)), (("e", "es", "s", "ss"),)),
    "NN": (((), ()), (("e",), ("e", "ee"))),
    "NK": (((), ("s",)), (("e", "es"), ("e", "ee"))),
    "NX": (((), ()), (("e",), ("e", "ee", "s", "es"))),
    "KN": ((("s",), ()), (("e",), ("e", "ee", "se"))),
    "KK": ((("s",), ("s",)), (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": ((("s",), ()), (("e",), ("e", "ee", "se", "s", "es"))),
    "XN": (((), ()), (("e",), ("e", "ee"), ("s", "se"))),
    "XK": (((), ("s",)), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": (((), ()), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IN": (((), ()), (("e", "s"), ("e", "ee", "se"))),
    "IK": (((), ("s",)), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": (((), ()), (("e", "s"), ("e", "ee", "se", "s", "es"))),
}


def protocol_name(pattern: str) -> str:
    return f"Noise_{pattern}_{SUITE}"


@dataclass(frozen=True, repr=False)
class KeyPair:
    """An X25519 key pair; ``repr`` never shows the private half."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(nacl.utils.random(DHLEN))

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DHLEN:
            raise ValueError(f"an X25519 private key is {DHLEN} bytes")
        return cls(private, nacl.bindings.crypto_scalarmult_base(private))

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()})"


def dh(key_pair: KeyPair, public: bytes) -> bytes:
    """X25519; a low-order ``public`` (an all-zero result) is refused, as libsodium does."""
    try:
        return nacl.bindings.crypto_scalarmult(key_pair.private, public)
    except nacl.exceptions.RuntimeError:
        raise SealError("a Noise public key is not a usable curve point") from None


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASHLEN).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def hkdf(chaining_key: bytes, input_key: bytes, outputs: int) -> tuple[bytes, ...]:
    """The specification's HKDF: two or three outputs of ``HASHLEN`` bytes."""
    temp = _hmac(chaining_key, input_key)
    out: list[bytes] = []
    previous = b""
    for i in range(1, outputs + 1):
        previous = _hmac(temp, previous + bytes([i]))
        out.append(previous)
    return tuple(out)


@dataclass
class CipherState:
    """A key (or none yet) and its 64-bit nonce counter."""

    key: bytes | None = None
    nonce: int = 0

    def has_key(self) -> bool:
        return self.key is not None

    def _nonce(self) -> bytes:
        if self.nonce >= 2**64 - 1:
            raise SealError("a Noise cipher state ran out of nonces")
        return bytes(4) + self.nonce.to_bytes(8, "little")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        out: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, self._nonce(), self.key
        )
        self.nonce += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        try:
            out: bytes = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, self._nonce(), self.key
            )
        except nacl.exceptions.CryptoError:
            raise SealError("a Noise message does not authenticate") from None
        self.nonce += 1
        return out


@dataclass
class SymmetricState:
    """The chaining key, the handshake hash and the cipher state between them."""

    chaining_key: bytes
    handshake_hash: bytes
    cipher: CipherState = field(default_factory=CipherState)

    @classmethod
    def initialize(cls, name: str) -> SymmetricState:
        raw = name.encode("ascii")
        h = raw.ljust(HASHLEN, b"\0") if len(raw) <= HASHLEN else _hash(raw)
        return cls(chaining_key=h, handshake_hash=h)

    def mix_key(self, input_key: bytes) -> None:
        self.chaining_key, temp = hkdf(self.chaining_key, input_key, 2)
        self.cipher = CipherState(temp[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.handshake_hash = _hash(self.handshake_hash + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.handshake_hash, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.handshake_hash, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = hkdf(self.chaining_key, b"", 2)
        return CipherState(first[:KEYLEN]), CipherState(second[:KEYLEN])


class HandshakeState:
    """One side of one handshake: write and read its messages in turn.

    ``ephemeral`` may be given (the test vectors fix it); otherwise a fresh
    key pair is made when the pattern calls for one. After the last message
    :attr:`transport` holds the two cipher states (initiator to responder,
    responder to initiator) and :attr:`handshake_hash` the final hash.
    """

    def __init__(
        self,
        pattern: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        static: KeyPair | None = None,
        ephemeral: KeyPair | None = None,
        remote_static: bytes | None = None,
        remote_ephemeral: bytes | None = None,
    ) -> None:
        (pre_initiator, pre_responder), self._messages = PATTERNS[pattern]
        self.initiator = initiator
        self.static = static
        self.ephemeral = ephemeral
        self.remote_static = remote_static
        self.remote_ephemeral = remote_ephemeral
        self._symmetric = SymmetricState.initialize(protocol_name(pattern))
        self._symmetric.mix_hash(prologue)
        for tokens, ours in ((pre_initiator, initiator), (pre_responder, not initiator)):
            for token in tokens:
                self._symmetric.mix_hash(self._pre_message_key(token, ours))
        self._index = 0
        self.transport: tuple[CipherState, CipherState] | None = None
        self.handshake_hash = b""

    def _pre_message_key(self, token: str, ours: bool) -> bytes:
        if token == "s":
            key = self.static.public if ours and self.static else self.remote_static
        else:
            key = self.ephemeral.public if ours and self.ephemeral else self.remote_ephemeral
        if key is None:
            raise ValueError(f"the pattern needs the pre-message key {token!r}")
        return key

    @property
    def finished(self) -> bool:
        return self._index == len(self._messages)

    def _next_tokens(self, writing: bool) -> tuple[str, ...]:
        if self.finished:
            raise SealError("the Noise handshake is already finished")
        ours = (self._index % 2 == 0) == self.initiator
        if ours != writing:
            raise SealError("a Noise handshake message out of turn")
        tokens = self._messages[self._index]
        self._index += 1
        return tokens

    def write_message(self, payload: bytes = b"") -> bytes:
        out = []
        for token in self._next_tokens(writing=True):
            if token == "e":
                if self.ephemeral is None:
                    self.ephemeral = KeyPair.generate()
                out.append(self.ephemeral.public)
                self._symmetric.mix_hash(self.ephemeral.public)
            elif token == "s":
                if self.static is None:
                    raise ValueError("the pattern sends a static key this side does not have")
                out.append(self._symmetric.encrypt_and_hash(self.static.public))
            else:
                self._mix_dh(token)
        out.append(self._symmetric.encrypt_and_hash(payload))
        message = b"".join(out)
        if len(message) > MAX_MESSAGE:
            raise ValueError(f"a Noise message is at most {MAX_MESSAGE} bytes")
        self._finish_if_done()
        return message

    def read_message(self, message: bytes) -> bytes:
        if len(message) > MAX_MESSAGE:
            raise SealError(f"a Noise message is at most {MAX_MESSAGE} bytes")
        view = memoryview(message)
        for token in self._next_tokens(writing=False):
            if token == "e":
                self.remote_ephemeral = _take(view, DHLEN)
                view = view[DHLEN:]
                self._symmetric.mix_hash(self.remote_ephemeral)
            elif token == "s":
                size = DHLEN + (TAGLEN if self._symmetric.cipher.has_key() else 0)
                self.remote_static = self._symmetric.decrypt_and_hash(_take(view, size))
                view = view[size:]
            else:
                self._mix_dh(token)
        payload = self._symmetric.decrypt_and_hash(bytes(view))
        self._finish_if_done()
        return payload

    def _mix_dh(self, token: str) -> None:
        # "es" is the initiator's ephemeral with the responder's static, whoever computes it.
        ordered = token if self.initiator else token[::-1]
        local, remote = ordered[0], ordered[1]
        pair = self.ephemeral if local == "e" else self.static
        public = self.remote_ephemeral if remote == "e" else self.remote_static
        if pair is None or public is None:
            raise ValueError(f"the token {token!r} needs a key this side does not have")
        self._symmetric.mix_key(dh(pair, public))

    def _finish_if_done(self) -> None:
        if self.finished:
            self.transport = self._symmetric.split()
            self.handshake_hash = self._symmetric.handshake_hash


def _take(view: memoryview, size: int) -> bytes:
    if len(view) < size:
        raise SealError("a Noise message is truncated")
    return bytes(view[:size])
