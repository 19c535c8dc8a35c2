"""The command-line steps the gateway tests share: ``gateway init`` and a box's registration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def cli(*args: str) -> list[str]:
    """``python -m ARGS`` with this interpreter (the package's own CLIs)."""
    return [sys.executable, "-m", *args]


def gateway_init(gw_dir: Path, domain: str) -> str:
    """``gateway init`` in ``gw_dir`` for ``domain``; the gateway's onion address."""
    init = subprocess.run(
        cli("gateway.cli", "init", "--dir", str(gw_dir), "--domain", domain),
        capture_output=True,
        text=True,
        check=True,
    )
    return next(line.split()[1] for line in init.stdout.splitlines() if line.startswith("onion:"))


def start_registration(box_dir: Path, gw_onion: str, alias: str = "alice") -> subprocess.Popen[str]:
    """``onionmail gateway register``, started: it waits (up to 120 s) for the gateway's onion,
    so it may start while the gateway does. Read its outcome with ``communicate``."""
    return subprocess.Popen(
        cli("onionmail.cli", "gateway", "register", "--dir", str(box_dir))
        + ["--gateway", gw_onion, "--alias", alias, "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
