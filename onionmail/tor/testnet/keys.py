"""Keys of a private network's tors: ``tor-gencert`` for authorities, relay fingerprints.

:func:`generate_keys` runs every key generation concurrently, bounded by one deadline.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from onionmail.core.errors import TestnetError
from onionmail.core.files import ensure_private_dir
from onionmail.tor.testnet.nodes import EMPTY_FILE, NodePlan

INSTALL_HINT = "install Debian's 'tor' package (apt-get install tor)"


def require_tor_tools(search_path: str | None = None) -> tuple[str, str]:
    """Paths of ``tor`` and ``tor-gencert``; :class:`TestnetError` saying how to install them.

    ``search_path`` defaults to ``$PATH`` plus /usr/sbin and /usr/bin (where Debian puts them).
    """
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    found = []
    for tool in ("tor", "tor-gencert"):
        path = shutil.which(tool, path=search_path)
        if path is None:
            raise TestnetError(f"{tool} not found: {INSTALL_HINT}")
        found.append(path)
    return found[0], found[1]


def identity_digest_b64(fingerprint: str) -> str:
    """A hex relay fingerprint as the base64 digest a consensus ``r`` line carries."""
    return base64.b64encode(bytes.fromhex(fingerprint)).decode("ascii").rstrip("=")


def dir_authority_line(
    name: str, or_port: int, dir_port: int, v3ident: str, fingerprint: str
) -> str:
    """The value of one torrc ``DirAuthority`` option."""
    return f"{name} orport={or_port} no-v2 v3ident={v3ident} 127.0.0.1:{dir_port} {fingerprint}"


def _run_all(commands: list[tuple[list[str], bytes]], deadline: float, what: str) -> None:
    """Run commands concurrently (each with its stdin bytes); all must succeed by ``deadline``."""
    procs = [
        (
            cmd,
            stdin,
            subprocess.Popen(  # fixed argv, no shell
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            ),
        )
        for cmd, stdin in commands
    ]
    try:
        for cmd, stdin, proc in procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                output, _ = proc.communicate(stdin, timeout=remaining)
            except subprocess.TimeoutExpired:
                raise TestnetError(f"{what} timed out ({cmd[0]})") from None
            if proc.returncode != 0:
                text = output.decode(errors="replace").strip().splitlines()[-3:]
                raise TestnetError(f"{what} failed ({cmd[0]}): {' | '.join(text)}")
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def generate_keys(
    plans: Sequence[NodePlan], directory: Path, tools: tuple[str, str], deadline: float
) -> dict[str, tuple[str, str]]:
    """Return ``name -> (relay fingerprint, v3ident or "")`` for every node."""
    tor, gencert = tools
    empty = str(directory / EMPTY_FILE)
    commands: list[tuple[list[str], bytes]] = []
    for plan in plans:
        keys = ensure_private_dir(plan.data_dir / "keys")
        if plan.role == "authority":
            commands.append(
                (
                    [
                        gencert,
                        "--create-identity-key",
                        "--passphrase-fd",
                        "0",
                        "-m",
                        "12",
                        "-i",
                        str(keys / "authority_identity_key"),
                        "-s",
                        str(keys / "authority_signing_key"),
                        "-c",
                        str(keys / "authority_certificate"),
                        "-a",
                        f"127.0.0.1:{plan.dir_port}",
                    ],
                    b"\n",
                )
            )
        commands.append(
            (
                [
                    tor,
                    "--list-fingerprint",
                    "--DataDirectory",
                    str(plan.data_dir),
                    "--ORPort",
                    "1",
                    "-f",
                    empty,
                    "--defaults-torrc",
                    empty,
                    "--quiet",
                ],
                b"",
            )
        )
    _run_all(commands, deadline, "key generation")
    return {plan.name: (read_fingerprint(plan), _read_v3ident(plan)) for plan in plans}


def read_fingerprint(plan: NodePlan) -> str:
    text = (plan.data_dir / "fingerprint").read_text().split()
    if len(text) != 2 or len(text[1]) != 40:
        raise TestnetError(f"unexpected fingerprint file of {plan.name}: {text!r}")
    return text[1].upper()


def _read_v3ident(plan: NodePlan) -> str:
    if plan.role != "authority":
        return ""
    cert = (plan.data_dir / "keys" / "authority_certificate").read_text()
    for line in cert.splitlines():
        if line.startswith("fingerprint "):
            return line.split()[1].upper()
    raise TestnetError(f"no fingerprint line in the authority certificate of {plan.name}")
