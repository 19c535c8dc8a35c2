"""Proof-of-work stamps: what a stranger's first-contact mail costs its sender.

A stamp is a hashcash-style search over a memory-hard function: the sender
tries nonces until argon2id (libsodium, through pynacl) of the stamp's
input gives an output whose first ``bits`` bits are zero. The input binds
the recipient address, the sender address, the receiving session's
challenge (the one the seal keywords announce) and the time the stamp was
made, so a stamp cannot be spent on another recipient, in another session,
or kept for later.

Why this function: argon2id is maintained, already a dependency (the
identity key's passphrase) and memory-hard, so a GPU or an ASIC gains far
less over the sender's CPU than with a plain hash; the hashcash search keeps
verification at one evaluation, whatever the cost. With the default cost (8
MiB, one pass, 9 bits) a stamp takes about 500 evaluations of a few
milliseconds each, around a second of one core on a laptop, and checking it
one evaluation, well under 1 % of that (``bench/stamps.py`` measures both).
The number of tries is geometric: the median stamp costs about 0.7 times
the mean, the 95th percentile three times.

Wire form: the stamp rides on ``RCPT TO:<rcpt> POW=<stamp>``, ``<stamp>`` being
``<unix time>.<nonce, hex>``. The receiver announces its cost in EHLO and in
its ``450 4.7.0`` refusal: ``X-ONIONMAIL-POW argon2id bits=9 m=8192 t=1``
(memory in KiB).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import secrets
import time
from dataclasses import dataclass

from nacl.pwhash import argon2id

POW_KEYWORD = "X-ONIONMAIL-POW"
RCPT_PARAM = "POW"
PAID = "stamp accepted"
"""In the ``250`` to a RCPT whose stamp paid: a sender not told so is a contact now, and
stops making stamps for that box."""
MAX_AGE = 600.0
"""Seconds a stamp stays valid (both ways: a clock ahead is tolerated as much)."""
_PERSON = b"onionmail-pow-v1"
_ANNOUNCED = re.compile(
    re.escape(POW_KEYWORD) + r" argon2id bits=(\d{1,2}) m=(\d{1,7}) t=(\d{1,2})"
)
_STAMP = re.compile(r"(\d{1,12})\.([0-9a-f]{1,32})")


@dataclass(frozen=True)
class StampCost:
    """What a stamp must show: zero ``bits`` of argon2id(``memory_kib``, ``passes``)."""

    bits: int = 9
    memory_kib: int = 8192
    passes: int = 1

    def announcement(self) -> str:
        """The words of EHLO and of the refusal (``X-ONIONMAIL-POW argon2id ...``)."""
        return f"{POW_KEYWORD} argon2id bits={self.bits} m={self.memory_kib} t={self.passes}"

    @classmethod
    def from_text(cls, text: str) -> StampCost | None:
        """The cost a reply or an EHLO line announces, or None. Bounded: a peer cannot make
        this box spend more than 20 bits of 256 MiB evaluations on one stamp."""
        found = _ANNOUNCED.search(text)
        if found is None:
            return None
        bits, memory, passes = (int(g) for g in found.groups())
        if not (0 <= bits <= 20 and 8 <= memory <= 256 * 1024 and 1 <= passes <= 4):
            return None
        return cls(bits, memory, passes)


def _input(recipient: str, sender: str, challenge: bytes, made: int) -> bytes:
    fields = [recipient.lower(), sender.lower(), challenge.hex(), str(made)]
    return "\n".join(fields).encode()


def _work(cost: StampCost, data: bytes, nonce: bytes) -> bytes:
    salt = hashlib.blake2b(data, digest_size=16, person=_PERSON).digest()
    return bytes(
        argon2id.kdf(
            32,
            data + b"\n" + nonce,
            salt,
            opslimit=cost.passes,
            memlimit=cost.memory_kib * 1024,
        )
    )


def _leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def make_stamp(
    cost: StampCost,
    *,
    recipient: str,
    sender: str,
    challenge: bytes,
    now: float | None = None,
    max_tries: int = 1 << 24,
) -> str:
    """Search a stamp (blocking: run it in a worker thread). About ``2**bits`` tries."""
    made = int(time.time() if now is None else now)
    data = _input(recipient, sender, challenge, made)
    start = secrets.randbits(32)
    for n in itertools.islice(itertools.count(start), max_tries):
        nonce = f"{n:x}".encode()
        if _leading_zero_bits(_work(cost, data, nonce)) >= cost.bits:
            return f"{made}.{nonce.decode()}"
    raise RuntimeError("no stamp found within max_tries")  # pragma: no cover - 2**-2**24


def check_stamp(
    stamp: str,
    cost: StampCost,
    *,
    recipient: str,
    sender: str,
    challenge: bytes,
    now: float | None = None,
) -> str | None:
    """Why ``stamp`` does not pay for this mail, or None when it does (one evaluation).
    Any case: an SMTP server may fold ESMTP parameters to upper case."""
    found = _STAMP.fullmatch(stamp.lower())
    if found is None:
        return "malformed stamp"
    made = int(found.group(1))
    if abs((time.time() if now is None else now) - made) > MAX_AGE:
        return "stamp too old (or made with a wrong clock)"
    data = _input(recipient, sender, challenge, made)
    if _leading_zero_bits(_work(cost, data, found.group(2).encode())) < cost.bits:
        return "stamp does not pay the cost (another recipient, sender or session?)"
    return None
