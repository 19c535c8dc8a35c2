"""What sealing costs per message: seal, open, pad, SMTP encoding, against raw crypto_box.

Run: ``.venv/bin/python -m bench.crypto [--quick] [--repeats R] [--json FILE]``.

For 5 KB, 100 KB and 10 MB messages, each operation of
:mod:`onionmail.seal.envelope` is timed (operations/s; a run loops until
it has taken ``--budget`` seconds), interleaved run by run with the
reference: pynacl's ``crypto_box`` encrypt/decrypt of the same plaintext
with precomputed keys (``nacl.public.Box``), the cryptography the seal is
built on. The ratio says what the envelope's structure, key derivation from
the onion address and padding add. The byte overhead of padding comes from
:mod:`bench.padding_overhead`. OpenPGP (pgpy against gpg) is measured by
:mod:`bench.openpgp`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import nacl.public
import nacl.utils

from bench.common import print_table, ratio, summary, timed_main
from bench.padding_overhead import measure as padding_measure
from onionmail.seal.envelope import (
    HEADER,
    SealedContent,
    encode_content,
    decode_from_smtp,
    encode_for_smtp,
    open_envelope,
    seal,
)
from onionmail.seal.identity import Identity
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


def operations(size: int, alice: Identity, bob: Identity) -> dict[str, Callable[[], object]]:
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
    return {
        "seal": lambda: seal(content, sender=alice, recipient_onion=bob.onion_address),
        "open": lambda: open_envelope(envelope, recipient=bob, sender_onion=alice.onion_address),
        "pad": lambda: pad(unpadded),
        "encode_for_smtp": lambda: encode_for_smtp(envelope),
        "decode_from_smtp": lambda: decode_from_smtp(wire),
        "ref crypto_box encrypt": lambda: raw_box.encrypt(plain, nonce),
        "ref crypto_box decrypt": lambda: raw_box.decrypt(raw_cipher, nonce),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = args.budget or (0.2 if args.quick else 1.0)
    alice, bob = Identity.generate(), Identity.generate()
    results: dict[str, Any] = {}
    for size in SIZES:
        ops = operations(size, alice, bob)
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
            ref = dec if name in ("open", "ref crypto_box decrypt") else enc
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
