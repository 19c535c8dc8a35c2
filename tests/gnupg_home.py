"""A throwaway GnuPG home for interoperability tests: the real ``gpg`` binary, isolated.

Batch mode, loopback pinentry with empty passphrases, no keyserver or key
lookups (``no-auto-key-retrieve``, ``no-auto-key-locate``... and the
sandbox has no network anyway), ``trust-model always`` so that gpg's
verdicts depend only on the signatures. The gpg-agent that gpg starts is
stopped with ``gpgconf --homedir HOME --kill all`` when the home closes:
only that agent, never others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GPG_TIMEOUT = 60.0

_CONF = """\
no-auto-key-retrieve
auto-key-locate local
trust-model always
no-greeting
"""


@dataclass(frozen=True)
class GpgResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    status: list[str]  # the [GNUPG:] status lines, without the prefix


class GpgHome:
    """One GNUPGHOME; call :meth:`run` with gpg arguments."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home)}

    def run(self, args: Sequence[str], data: bytes = b"", *, check: bool = True) -> GpgResult:
        status_r, status_w = os.pipe()
        command = [
            "gpg",
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--status-fd",
            str(status_w),
            *args,
        ]
        try:
            proc = subprocess.run(
                command,
                input=data,
                capture_output=True,
                env=self.env,
                timeout=GPG_TIMEOUT,
                pass_fds=(status_w,),
            )
        finally:
            os.close(status_w)
        with os.fdopen(status_r, "rb") as handle:
            status = [
                line.removeprefix("[GNUPG:] ")
                for line in handle.read().decode("utf-8", "replace").splitlines()
            ]
        result = GpgResult(proc.returncode, proc.stdout, proc.stderr, status)
        if check and proc.returncode != 0:
            raise AssertionError(f"gpg {args} failed ({proc.returncode}): {proc.stderr.decode()}")
        return result

    def generate_key(self, address: str, algo: str = "future-default") -> str:
        """A new key without passphrase for ``address``; returns its fingerprint.

        ``future-default`` is ed25519 with a cv25519 subkey; any other ``algo``
        (``rsa3072``) makes a signing primary key and an encryption subkey of it.
        """
        usage = "default" if algo == "future-default" else "sign,cert"
        result = self.run(["--quick-gen-key", address, algo, usage, "never"])
        created = [line.split()[2] for line in result.status if line.startswith("KEY_CREATED")]
        if not created:
            raise AssertionError("gpg created no key")
        if algo != "future-default":
            self.run(["--quick-add-key", created[0], algo, "encr", "never"])
        return created[0]

    def export(self, who: str) -> bytes:
        return self.run(["--armor", "--export", who]).stdout

    def import_key(self, armored: bytes | str) -> None:
        data = armored.encode("ascii") if isinstance(armored, str) else armored
        self.run(["--import"], data)

    def stop_agent(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            env=self.env,
            capture_output=True,
            timeout=GPG_TIMEOUT,
            check=False,
        )


def require_gpg() -> None:
    """Fail (never skip) when gpg is missing: ``make deps`` installs Debian's gnupg."""
    if shutil.which("gpg") is None or shutil.which("gpgconf") is None:
        raise AssertionError("gpg is not installed; run `make deps` (Debian package gnupg)")


@contextmanager
def gnupg_home() -> Iterator[GpgHome]:
    """A fresh GNUPGHOME (0700) under a short temporary path; its agent killed on exit."""
    require_gpg()
    directory = Path(tempfile.mkdtemp(prefix="om-gpg-"))
    os.chmod(directory, 0o700)
    (directory / "gpg.conf").write_text(_CONF)
    home = GpgHome(directory)
    try:
        yield home
    finally:
        home.stop_agent()
        shutil.rmtree(directory, ignore_errors=True)
