"""What sealing costs in bytes: plaintext message size -> sealed envelope -> DATA on the wire.

Run: ``.venv/bin/python -m bench.padding_overhead [--json FILE]``. Deterministic
(sizes only), so one run is enough; the README quotes its table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from onionmail.seal.envelope import SealedContent, encode_for_smtp, seal
from onionmail.seal.identity import Identity

SIZES = (300, 2_000, 5_000, 20_000, 100_000, 1_000_000, 10_000_000)


def measure(size: int, alice: Identity, bob: Identity) -> dict[str, float]:
    content = SealedContent(
        envelope_id=os.urandom(16),
        created=1_800_000_000,
        session_challenge=os.urandom(16),
        mail_from=f"alice@{alice.onion_address}",
        recipients=(f"bob@{bob.onion_address}",),
        message=b"x" * size,
    )
    envelope = seal(content, sender=alice, recipient_onion=bob.onion_address)
    wire = encode_for_smtp(envelope)
    return {
        "message_bytes": size,
        "envelope_bytes": len(envelope),
        "wire_bytes": len(wire),
        "padding_overhead": len(envelope) / size - 1,
        "wire_overhead": len(wire) / size - 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    alice, bob = Identity.generate(), Identity.generate()
    rows = [measure(size, alice, bob) for size in SIZES]
    header = ("message", "envelope", "on the wire", "padding+seal", "+base64")
    print("{:>10} {:>10} {:>12} {:>13} {:>9}".format(*header))
    for r in rows:
        print(
            f"{r['message_bytes']:>10,} {r['envelope_bytes']:>10,} {r['wire_bytes']:>12,} "
            f"{r['padding_overhead']:>12.1%} {r['wire_overhead']:>9.1%}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
