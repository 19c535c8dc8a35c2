"""What end-to-end OpenPGP costs per message: the box's sign+encrypt (pgpy) against gpg.

Run: ``.venv/bin/python -m bench.openpgp [--quick] [--repeats R] [--json FILE]``.

For 5 KB and 100 KB messages (and 10 MB without ``--quick``), one run signs
and encrypts the same random plaintext to the same cv25519 recipient (and to
the sender itself, as the box does) with each implementation, alternating
them run by run so both see the same machine state:

* ``pgpy`` — :func:`onionmail.openpgp.keys.sign_and_encrypt`, what the box runs;
* ``gpg`` — the ``gpg`` binary (``--sign --encrypt --armor``, no compression,
  AES-256, SHA-512, the same keys), the reference, measured in the same run.
  Each call starts a gpg process, as a tool shelling out to gpg would; the
  agent holding the secret key stays up for the whole run.

Reported: seconds per message (median, min, max over the runs; a run loops
until it has taken ``--budget`` seconds and at least one message) and the
ratio pgpy/gpg of the medians (above 1: pgpy is slower). The temporary
GNUPGHOME's agent is stopped at the end (``gpgconf --homedir ... --kill all``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import print_table, ratio, summary, timed_main
from bench.crypto import rate
from onionmail.openpgp.keys import BoxKey, parse_public_key, sign_and_encrypt

SIZES = (5 * 1024, 100 * 1024, 10 * 1024 * 1024)
QUICK_SIZES = SIZES[:2]
SENDER = "box@gateway.example"
RECIPIENT = "peer@clear.example"
GPG_TIMEOUT = 600.0


class Gpg:
    """A throwaway GNUPGHOME driven in batch mode with loopback pinentry."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home)}

    def run(self, args: list[str], data: bytes = b"") -> bytes:
        base = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        proc = subprocess.run(
            base + args,
            input=data,
            capture_output=True,
            env=self.env,
            timeout=GPG_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gpg {args[:2]} failed: {proc.stderr.decode()[-500:]}")
        return proc.stdout


@contextmanager
def gpg_home() -> Iterator[Gpg]:
    if shutil.which("gpg") is None:
        raise SystemExit("gpg is not installed (Debian package gnupg; `make deps`)")
    directory = Path(tempfile.mkdtemp(prefix="om-bench-gpg-"))
    os.chmod(directory, 0o700)
    (directory / "gpg.conf").write_text("no-auto-key-retrieve\ntrust-model always\n")
    try:
        yield Gpg(directory)
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(directory), "--kill", "all"],
            capture_output=True,
            timeout=GPG_TIMEOUT,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


def seconds_per_message(operation: Callable[[], object], budget: float) -> float:
    """Mean seconds per call of ``operation``, looping for about ``budget`` seconds."""
    return 1.0 / rate(operation, budget)


def operations(gpg: Gpg, size: int) -> dict[str, Callable[[], object]]:
    box = BoxKey.generate(SENDER)
    gpg.run(["--quick-gen-key", RECIPIENT, "future-default", "default", "never"])
    recipient = parse_public_key(gpg.run(["--armor", "--export", RECIPIENT]))
    # the same keys for gpg: the box's secret key, so gpg signs with it too
    gpg.run(["--import"], box._secret_armor())
    plain = os.urandom(size)
    gpg_args = ["--sign", "--encrypt", "--armor", "--compress-algo", "none"]
    gpg_args += ["--cipher-algo", "AES256", "--digest-algo", "SHA512", "-u", box.fingerprint]
    gpg_args += ["-r", recipient.fingerprint, "-r", box.fingerprint]
    return {
        "pgpy": lambda: sign_and_encrypt(plain, box, [recipient]),
        "gpg": lambda: gpg.run(gpg_args, plain),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = args.budget or (0.2 if args.quick else 1.0)
    sizes = QUICK_SIZES if args.quick else SIZES
    results: dict[str, Any] = {}
    for size in sizes:
        with gpg_home() as gpg:
            ops = operations(gpg, size)
            for op in ops.values():  # warm-up (and the gpg agent starts here)
                op()
            runs: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(args.repeats):
                for name, op in ops.items():
                    runs[name].append(seconds_per_message(op, budget))
        results[str(size)] = {name: summary(values) for name, values in runs.items()}
    return {"budget_s": budget, "repeats": args.repeats, "seconds_per_message": results}


def report(data: dict[str, Any]) -> None:
    rows = []
    for size, impls in data["seconds_per_message"].items():
        reference = impls["gpg"]["median"]
        for name, s in impls.items():
            rows.append(
                [
                    f"{int(size):,}",
                    name,
                    s["median"] * 1000,
                    s["min"] * 1000,
                    s["max"] * 1000,
                    1 / s["median"],
                    ratio(s["median"], reference),
                ]
            )
    print_table(
        f"OpenPGP sign+encrypt per message, cv25519 ({data['repeats']} runs, interleaved)",
        ["message B", "implementation", "median ms", "min ms", "max ms", "msg/s", "/gpg"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    return timed_main(argv, "openpgp", __doc__, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
