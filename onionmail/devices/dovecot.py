"""The box's private Dovecot: IMAP over the box's own Maildirs, for the owner's devices.

The box does not speak IMAP itself; it runs Debian's Dovecot as a private
instance, the way it runs its own tor: a configuration written under
``BOXDIR/devices/dovecot`` at every start (edits there are lost), ``dovecot
-F`` as a child of the box, stopped with it. No system service is touched
and nothing under ``/etc`` is read.

Dovecot runs *rootless*: every one of its processes runs as the box's own
user, which owns the Maildirs. Dovecot refuses to read mail as root, so a
box run as root has no device access (:class:`DevicesUnavailable` says so);
the box's systemd unit runs it as an ordinary user.

Where it listens:

- a unix socket, ``BOXDIR/devices/run/imap-onion``, 0600: the device onion's
  IMAP port points there, so the onion's IMAP has no TCP port on the machine
  at all;
- ``127.0.0.1:[devices] local_imap_port`` for a mail client on the box's own
  machine, only when that is set (off by default).

IMAP is plain inside the onion: the onion connection is already encrypted
end to end and authenticated by the address itself, and a TLS certificate
for an onion would be self-signed, which clients can only warn about.

What Dovecot keeps of its own (indexes, the UID list, keywords) goes under
``BOXDIR/devices/dovecot``, never into the Maildirs, which stay the store the
TUI, neomutt and the box share; flags are Maildir flags in file names, so
``\\Seen`` set over IMAP is what the TUI shows as read. Dovecot's log
(``BOXDIR/devices/dovecot/dovecot.log``) holds warnings and errors without
user names or addresses.
"""

from __future__ import annotations

import asyncio
import ctypes
import grp
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from onionmail.core.errors import OnionMailError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.devices.registry import Device

log = logging.getLogger(__name__)

ONION_SOCKET = "imap-onion"
"""The unix listener the device onion's IMAP port points at (in the run directory)."""
PR_SET_PDEATHSIG = 1
START_TIMEOUT = 20.0


class DevicesUnavailable(OnionMailError, RuntimeError):
    """The box cannot serve its devices (run as root, no Dovecot, a path tor cannot use)."""


def find_dovecot(configured: str = "") -> str:
    """The dovecot binary: ``configured``, else on PATH, else Debian's /usr/sbin/dovecot."""
    for candidate in (configured, shutil.which("dovecot") or "", "/usr/sbin/dovecot"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    where = f"{configured!r} is not executable" if configured else "dovecot is not installed"
    raise DevicesUnavailable(
        f"device access needs Dovecot: {where} (Debian: apt install dovecot-imapd; the "
        "system service is not used and may stay disabled)"
    )


class DovecotPaths:
    """Where the private instance keeps what, under ``BOXDIR/devices``."""

    def __init__(self, box_dir: Path) -> None:
        self.mail = box_dir / "mail"
        self.root = box_dir / "devices" / "dovecot"
        self.config = self.root / "dovecot.conf"
        self.run = box_dir / "devices" / "run"
        self.log = self.root / "dovecot.log"
        self.onion_socket = self.run / ONION_SOCKET

    def passwd_file(self, device: Device) -> Path:
        return self.root / f"{device.name}.passwd"


def dovecot_version(binary: str) -> tuple[int, int]:
    """``(major, minor)`` of the dovecot ``binary`` (Debian 12 has 2.3, Debian 13 2.4)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        major, minor = out.split(".")[:2]
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise DevicesUnavailable(f"cannot tell the version of {binary}: {exc}") from None


def render_config(
    paths: DovecotPaths, devices: list[Device], local_imap_port: int, version: tuple[int, int]
) -> str:
    """dovecot.conf for this box: one passdb per device, rootless, no user name in the log.

    Dovecot 2.4 renamed much of the configuration (``mail_location`` became
    ``mail_driver`` and ``mail_path``, ``%n`` became ``%{user | username}``, named
    passdbs...): both forms are written here, by ``version``.
    """
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    uid, gid = os.getuid(), os.getgid()
    new = version >= (2, 4)
    name = "%{user | username}" if new else "%n"
    lines = ["dovecot_config_version = 2.4.0", "dovecot_storage_version = 2.4.0"] if new else []
    lines += [
        "# Written by onionmail at each start of the box; changes here are lost.",
        f"base_dir = {paths.run}",
        f"state_dir = {paths.root / 'state'}",
        f"log_path = {paths.log}",
        "info_log_path = /dev/null",
        "protocols = imap",
        "listen = 127.0.0.1",
        "ssl = no",
        "auth_mechanisms = plain login",
        "auth_allow_cleartext = yes" if new else "disable_plaintext_auth = no",
        f"default_login_user = {user}",
        f"default_internal_user = {user}",
        f"default_internal_group = {group}",
        f"first_valid_uid = {uid}",
        f"last_valid_uid = {uid}",
        f"first_valid_gid = {gid}",
        f"last_valid_gid = {gid}",
    ]
    if new:
        lines += [
            "mail_driver = maildir",
            f"mail_path = {paths.mail}/{name}",
            f"mail_index_path = {paths.root}/index/{name}",
            f"mail_control_path = {paths.root}/control/{name}",
            "namespace inbox {",
            "  inbox = yes",
            "}",
            "login_log_format_elements = method=%{mechanism} %{secured}",
            'mail_log_prefix = "%{service}(%{process:pid}): "',
            "mailbox_idle_check_interval = 1s",
        ]
    else:
        lines += [
            f"mail_location = maildir:{paths.mail}/%n"
            f":INDEX={paths.root}/index/%n:CONTROL={paths.root}/control/%n",
            "login_log_format_elements = method=%m %c",
            'mail_log_prefix = "%s(%p): "',
            "mailbox_idle_check_interval = 1 secs",
        ]
    lines.append("auth_cache_size = 0")
    for n, device in enumerate(devices):
        if new:
            lines += [
                f"passdb device{n} {{",
                "  driver = passwd-file",
                f"  passwd_file_path = {paths.passwd_file(device)}",
                "  default_password_scheme = ARGON2ID",
                f"  auth_username_format = {name}",
                "}",
            ]
        else:
            lines += [
                "passdb {",
                "  driver = passwd-file",
                f"  args = scheme=ARGON2ID username_format=%n {paths.passwd_file(device)}",
                "}",
            ]
    home = f"{paths.root}/home/{name}"
    if new:
        lines += ["userdb static {", "  fields {", f"    home = {home}", "  }", "}"]
    else:
        lines += ["userdb {", "  driver = static", f"  args = home={home}", "}"]
    lines += [
        "service anvil {",
        "  chroot =",
        "}",
        "service imap-login {",
        "  chroot =",
        f"  unix_listener {ONION_SOCKET} {{",
        "    mode = 0600",
        "  }",
        "  inet_listener imap {",
        f"    {'listen' if new else 'address'} = 127.0.0.1",
        f"    port = {local_imap_port}",
        "  }",
        "  inet_listener imaps {",
        "    port = 0",
        "  }",
        "}",
        "",
    ]
    return "\n".join(lines)


def write_config(
    paths: DovecotPaths, devices: list[Device], local_imap_port: int, version: tuple[int, int]
) -> None:
    """The configuration and one passwd file per device (the argon2id hashes), 0600."""
    ensure_private_dir(paths.root)
    # Dovecot wants its base_dir world-readable (its parent, BOXDIR/devices, is 0700).
    paths.run.mkdir(mode=0o755, exist_ok=True)
    paths.run.chmod(0o755)
    for stale in paths.root.glob("*.passwd"):
        if stale.stem not in {d.name for d in devices}:
            stale.unlink()
    for device in devices:
        line = f"{device.local_part}:{{ARGON2ID}}{device.password_hash}\n"
        write_private_file(paths.passwd_file(device), line.encode(), durable=False)
    write_private_file(
        paths.config,
        render_config(paths, devices, local_imap_port, version).encode(),
        durable=False,
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Dovecot:
    """The private Dovecot of one box: ``await start()``, ``await reload()``, ``await stop()``."""

    def __init__(self, box_dir: Path, *, binary: str = "", local_imap_port: int = 0) -> None:
        self.paths = DovecotPaths(box_dir)
        self.binary = binary
        self.local_imap_port = local_imap_port
        self.process: asyncio.subprocess.Process | None = None
        self.version: tuple[int, int] = (2, 3)

    def check(self) -> str:
        """The binary to run, or :class:`DevicesUnavailable` saying why there is none."""
        if os.geteuid() == 0:
            raise DevicesUnavailable(
                "Dovecot does not read mail as root, so the box serves no devices while it "
                "runs as root: run it as an ordinary user (the systemd unit does)"
            )
        if " " in str(self.paths.onion_socket) or len(str(self.paths.onion_socket)) > 100:
            raise DevicesUnavailable(
                f"{self.paths.onion_socket}: tor needs a socket path without spaces and "
                "shorter than 100 characters; move the box directory"
            )
        return find_dovecot(self.binary)

    async def start(self, devices: list[Device]) -> None:
        """Write the configuration, start ``dovecot -F``, wait until IMAP answers."""
        binary = self.check()
        self.version = await asyncio.to_thread(dovecot_version, binary)
        write_config(self.paths, devices, self.local_imap_port, self.version)
        self._stop_stale()
        self.paths.onion_socket.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "-F",
            "-c",
            str(self.paths.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        await self._wait_ready()
        log.info("Dovecot started for %d device(s)", len(devices))

    async def reload(self, devices: list[Device]) -> None:
        """New passwd files and passdbs, then SIGHUP: Dovecot rereads them, sessions stay."""
        write_config(self.paths, devices, self.local_imap_port, self.version)
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGHUP)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise DevicesUnavailable(
                    f"Dovecot exited at start (status {self.process.returncode}); "
                    f"its log: {self.paths.log}"
                )
            if await asyncio.to_thread(_greets, self.paths.onion_socket):
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise DevicesUnavailable(
            f"Dovecot did not answer within {START_TIMEOUT:g} s; its log: {self.paths.log}"
        )

    def _stop_stale(self) -> None:
        """A Dovecot a killed earlier run of this box left behind (it refuses a second one)."""
        try:
            pid = int((self.paths.run / "master.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.paths.config).encode() not in cmdline:
            return
        log.warning("stopping the Dovecot (pid %d) left running by an earlier run of this box", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _greets(path: Path) -> bool:
    """Whether an IMAP server answers ``* OK`` on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False
