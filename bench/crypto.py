"""What sealing costs per message: seal, open, pad, SMTP encoding, against raw crypto_box.

Run: ``.venv/bin/python -m bench.crypto [--quick] [--repeats R] [--json FILE]``.

For 5 KB, 100 KB and 10 MB messages, each operation of
:mod:`onionmail.seal.envelope` and of the handshake seal
(:mod:`onionmail.seal.handshake`: the receiver's per-session greeting, the
sender's certificate check and seal, the receiver's open) is timed (operations/s; a run loops until
it has taken ``--budget`` seconds), interleaved run by run with the
reference: pynacl's ``crypto_box`` encrypt/decrypt of the same plaintext
with precomputed keys (``nacl.public.Box``), the cryptography the seal is
built on; the handshake seal is also compared with version 1 (microseconds
added per message). The ratio says what the envelope's structure, key derivation from
the onion address and padding add. The byte overhead of padding comes from
:mod:`bench.padding_overhead`. OpenPGP (pgpy against gpg) is measured by
:mod:`bench.openpgp`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.public
import nacl.utils

from bench.common import print_table, ratio, summary, timed_main
from bench.padding_overhead import measure as padding_measure
from onionmail.seal.envelope import (
    HEADER,
    SealedContent,
    decode_from_smtp,
    encode_content,
    encode_for_smtp,
    open_envelope,
    seal,
)
from onionmail.seal.handshake import (
    ReceiverSession,
    open_in_session,
    parse_announcement,
    seal_in_session,
)
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.seal.padding import pad

SIZES = (5 * 1024, 100 * 1024, 10 * 1024 * 1024)


def rate(operation: Callable[[], object], budget: float) -> float:
    """Operations per second of ``operation``, looping for about ``budget`` seconds."""
    done = 0
    start = time.perf_counter()
    while True:
        operation()
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return done / elapsed


def operations(
    size: int, alice: Identity, bob: Identity, keys: tuple[MailKeyring, MailKeyring]
) -> dict[str, Callable[[], object]]:
    content = SealedContent(
        envelope_id=os.urandom(16),
        created=int(time.time()),
        session_challenge=os.urandom(16),
        mail_from=f"alice@{alice.onion_address}",
        recipients=(f"bob@{bob.onion_address}",),
        message=os.urandom(size),
    )
    envelope = seal(content, sender=alice, recipient_onion=bob.onion_address)
    wire = encode_for_smtp(envelope)
    raw_box = nacl.public.Box(alice.x25519_private_key(), bob.x25519_public_key())
    nonce = nacl.utils.random(nacl.public.Box.NONCE_SIZE)
    plain = content.message
    # what seal() pads: header, recipient key and the encoded content
    unpadded = HEADER + bytes(bob.x25519_public_key()) + encode_content(content)
    raw_cipher = raw_box.encrypt(plain, nonce).ciphertext
    alice_keys, bob_keys = keys
    session = ReceiverSession.start(bob_keys)
    token = session.announcement()

    def seal_v2() -> bytes:
        # what the sender does per message: check the greeting's certificate, then seal
        announcement = parse_announcement(token, bob.onion_address, time.time())
        return seal_in_session(
            content,
            keyring=alice_keys,
            announcement=announcement,
            sender_onion=alice.onion_address,
            recipient_onion=bob.onion_address,
        )

    envelope_v2 = seal_v2()
    return {
        "seal": lambda: seal(content, sender=alice, recipient_onion=bob.onion_address),
        "open": lambda: open_envelope(envelope, recipient=bob, sender_onion=alice.onion_address),
        "greeting v2": lambda: ReceiverSession.start(bob_keys).announcement(),
        "seal v2": seal_v2,
        "open v2": lambda: open_in_session(
            envelope_v2,
            session=session,
            sender_onion=alice.onion_address,
            recipient_onion=bob.onion_address,
            now=time.time(),
        ),
        "pad": lambda: pad(unpadded),
        "encode_for_smtp": lambda: encode_for_smtp(envelope),
        "decode_from_smtp": lambda: decode_from_smtp(wire),
        "ref crypto_box encrypt": lambda: raw_box.encrypt(plain, nonce),
        "ref crypto_box decrypt": lambda: raw_box.decrypt(raw_cipher, nonce),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = args.budget or (0.2 if args.quick else 1.0)
    alice, bob = Identity.generate(), Identity.generate()
    with tempfile.TemporaryDirectory() as tmp:
        keys = (
            MailKeyring.open(Path(tmp) / "alice", alice),
            MailKeyring.open(Path(tmp) / "bob", bob),
        )
    results: dict[str, Any] = {}
    for size in SIZES:
        ops = operations(size, alice, bob, keys)
        rates: dict[str, list[float]] = {name: [] for name in ops}
        for op in ops.values():  # warm-up
            op()
        for _ in range(args.repeats):
            for name, op in ops.items():
                rates[name].append(rate(op, budget))
        results[str(size)] = {name: summary(r) for name, r in rates.items()}
    padding = [padding_measure(size, alice, bob) for size in SIZES]
    return {
        "budget_s": budget,
        "repeats": args.repeats,
        "ops_per_s": results,
        "padding": padding,
    }


def report(data: dict[str, Any]) -> None:
    rows = []
    for size, ops in data["ops_per_s"].items():
        enc = ops["ref crypto_box encrypt"]["median"]
        dec = ops["ref crypto_box decrypt"]["median"]
        for name, s in ops.items():
            ref = dec if name in ("open", "open v2", "ref crypto_box decrypt") else enc
            per_msg_us = 1e6 / s["median"]
            rows.append(
                [
                    f"{int(size):,}",
                    name,
                    s["median"],
                    s["min"],
                    s["max"],
                    per_msg_us,
                    ratio(s["median"], ref),
                ]
            )
    print_table(
        f"sealed-envelope cost, operations/s ({data['repeats']} runs, interleaved)",
        ["message B", "operation", "median/s", "min/s", "max/s", "µs/msg", "/crypto_box"],
        rows,
    )
    handshake = []
    for size, ops in data["ops_per_s"].items():
        if "seal v2" not in ops:
            continue  # a result file from before the handshake seal
        for v2, v1 in (("seal v2", "seal"), ("open v2", "open")):
            extra = 1e6 / ops[v2]["median"] - 1e6 / ops[v1]["median"]
            handshake.append(
                [f"{int(size):,}", v2, extra, ratio(ops[v2]["median"], ops[v1]["median"])]
            )
    print_table(
        "the handshake seal against version 1 (same run; greeting v2 is once per session)",
        ["message B", "operation", "µs/msg added", "v2/v1 rate"],
        handshake,
    )
    print_table(
        "padding overhead (bytes)",
        ["message B", "envelope B", "wire B", "padding+seal", "+base64"],
        [
            [
                r["message_bytes"],
                r["envelope_bytes"],
                r["wire_bytes"],
                f"{r['padding_overhead']:.1%}",
                f"{r['wire_overhead']:.1%}",
            ]
            for r in data["padding"]
        ],
    )


def main(argv: list[str] | None = None) -> int:
    return timed_main(argv, "crypto", __doc__, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
