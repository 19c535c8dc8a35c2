"""Devices without tor: the device list, its secrets, and the real Dovecot over loopback.

The Tor side (client authorization, IMAP and submission through the device
onion) is in tests/test_devices_onion.py; here the private Dovecot runs alone
(:mod:`tests.dovecot_child`, as an ordinary user) and Python's imaplib talks to it
on its local port.
"""

from __future__ import annotations

import base64
import imaplib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.public
import pytest

from onionmail.box.create import create_box
from onionmail.config.box import load_config
from onionmail.config.sections import TorSection
from onionmail.core.errors import ConfigError
from onionmail.devices.access import DeviceAccess
from onionmail.devices.dovecot import (
    DevicesUnavailable,
    Dovecot,
    DovecotPaths,
    dovecot_version,
    find_dovecot,
    render_config,
    write_config,
)
from onionmail.devices.registry import DeviceRegistry, device_onion_identity
from onionmail.store.maildir import Maildir, set_flags
from onionmail.tor.control import BoxTor
from tests.box_process import free_port
from tests.device_clients import AS_USER


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionmail.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_a_device_keeps_only_public_halves(tmp_path: Path) -> None:
    registry = DeviceRegistry(tmp_path)
    new = registry.add("phone", "alice")
    onion = device_onion_identity(b"\1" * 32).onion_address
    host, kind, algorithm, key = new.auth_line(onion).split(":")
    assert (host + ".onion", kind, algorithm) == (onion, "descriptor", "x25519")
    private = nacl.public.PrivateKey(base64.b32decode(key + "===="))
    public = base64.b32encode(bytes(private.public_key)).decode().rstrip("=")
    assert new.device.client_key == public
    stored = registry.path.read_text()
    assert key not in stored and new.password not in stored
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
    assert [d.name for d in registry.devices()] == ["phone"]


def test_the_password_hash_is_one_dovecot_verifies(tmp_path: Path) -> None:
    new = DeviceRegistry(tmp_path).add("phone", "alice")
    scheme = "{ARGON2ID}" + new.device.password_hash
    ok = subprocess.run(["doveadm", "pw", "-t", scheme, "-p", new.password], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(["doveadm", "pw", "-t", scheme, "-p", "guess"], capture_output=True)
    assert bad.returncode != 0


def test_names_are_checked_and_unique(tmp_path: Path) -> None:
    registry = DeviceRegistry(tmp_path)
    registry.add("laptop-2", "alice")
    with pytest.raises(ConfigError, match="exists"):
        registry.add("laptop-2", "alice")
    for bad in ("", "Phone", "-x", "a" * 33, "ph one", "../x"):
        with pytest.raises(ConfigError, match="device name"):
            registry.add(bad, "alice")
    with pytest.raises(ConfigError, match=r"no device named 'tablet' \(devices: laptop-2\)"):
        registry.revoke("tablet")


def test_a_damaged_list_names_the_file(tmp_path: Path) -> None:
    registry = DeviceRegistry(tmp_path)
    registry.directory.mkdir()
    registry.path.write_text('{"devices": [{"name": 1}]}')
    with pytest.raises(ConfigError, match=str(registry.path)):
        registry.devices()


@pytest.mark.parametrize("version", [(2, 3), (2, 4)])
def test_the_config_has_one_passdb_per_device_and_no_tcp_port_by_default(
    tmp_path: Path, version: tuple[int, int]
) -> None:
    registry = DeviceRegistry(tmp_path)
    registry.add("phone", "alice")
    registry.add("laptop", "alice")
    paths = DovecotPaths(tmp_path)
    text = render_config(paths, registry.devices(), 0, version)
    assert text.count("driver = passwd-file") == 2
    assert f"{paths.root}/laptop.passwd" in text and f"{paths.root}/phone.passwd" in text
    assert "    port = 0\n" in text  # no IMAP on TCP unless [devices] local_imap_port
    assert f"unix_listener {paths.onion_socket.name}" in text
    assert "ssl = no" in text and "info_log_path = /dev/null" in text
    # Dovecot 2.4 (Debian 13) renamed the settings; 2.3 (Debian 12) keeps the old ones.
    assert ("dovecot_config_version = 2.4.0" in text) == (version >= (2, 4))
    assert ("mail_location = maildir:" in text) == (version < (2, 4))


def test_the_installed_dovecot_reads_the_config(tmp_path: Path) -> None:
    registry = DeviceRegistry(tmp_path)
    registry.add("phone", "alice")
    binary = find_dovecot()
    paths = DovecotPaths(tmp_path)
    write_config(paths, registry.devices(), 1143, dovecot_version(binary))
    parsed = subprocess.run(
        ["doveconf", "-n", "-c", str(paths.config)], capture_output=True, text=True, timeout=30
    )
    assert parsed.returncode == 0, parsed.stderr
    assert "passwd-file" in parsed.stdout and "1143" in parsed.stdout


def test_as_root_dovecot_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(DevicesUnavailable, match="run it as an ordinary user"):
        Dovecot(tmp_path).check()


async def test_a_box_run_as_root_keeps_running_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    DeviceRegistry(tmp_path).add("phone", "alice")
    config = load_config(create_box(tmp_path / "box", "alice").box_dir)
    tor = BoxTor(TorSection(), tmp_path / "tor", {})
    access = DeviceAccess(tmp_path, b"\2" * 32, config.devices, tor)
    await access.start(1587)  # no exception: onion mail goes on without devices
    status = access.status()
    assert status["devices"] == ["phone"] and not status["imap"]
    assert "ordinary user" in status["problem"]


def test_device_commands(tmp_path: Path) -> None:
    box = create_box(tmp_path / "box", "alice").box_dir
    assert "no devices" in cli("device", "list", "--dir", str(box)).stdout
    wrong = cli("device", "add", "phone", "--user", "bob", "--dir", str(box))
    assert wrong.returncode == 1 and "the box hosts alice" in wrong.stderr
    added = cli("device", "add", "phone", "--dir", str(box))
    assert added.returncode == 0, added.stderr
    assert "\u2580" in added.stdout or "\u2584" in added.stdout  # the QR code
    assert "not running; it applies this when it starts" in added.stderr
    for line in ("Incoming:  IMAP", "port 143", "port 587", "Username:  alice", "Password:  "):
        assert line in added.stdout
    listed = json.loads(cli("device", "list", "--json", "--dir", str(box)).stdout)
    assert [d["name"] for d in listed["devices"]] == ["phone"]
    assert "revoked" in cli("device", "revoke", "phone", "--dir", str(box)).stdout
    assert cli("device", "revoke", "phone", "--dir", str(box)).returncode == 1


def test_a_bad_local_port_names_the_file_and_key(tmp_path: Path) -> None:
    box = create_box(tmp_path / "box", "alice").box_dir
    config = box / "onionmail.toml"
    config.write_text(
        config.read_text().replace("# local_imap_port = 0", "local_imap_port = 70000")
    )
    with pytest.raises(ConfigError, match=r"onionmail.toml: \[devices\] local_imap_port"):
        load_config(box)


class DovecotChild:
    def __init__(self, box_dir: Path, port: int) -> None:
        self.process = subprocess.Popen(
            [*AS_USER, sys.executable, "-m", "tests.dovecot_child", str(box_dir), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("ready "), line
        self.dovecot_pid = int(line.split()[1])

    def reload(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "reloaded\n"

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(20)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[tuple[DovecotChild, Any, int]]:
    box = tmp_path / "box"
    box.mkdir(mode=0o700)
    registry = DeviceRegistry(box)
    Maildir(box / "mail" / "alice").deliver(b"From: a@b.example\r\nSubject: one\r\n\r\nx\r\n")
    port = free_port()
    phone = registry.add("phone", "alice")
    child = DovecotChild(box, port)
    try:
        yield child, (box, registry, phone), port
    finally:
        child.stop()


def test_dovecot_serves_the_maildir_and_keeps_its_files_out_of_it(
    dovecot: tuple[DovecotChild, Any, int],
) -> None:
    child, (box, registry, phone), port = dovecot
    imap = imaplib.IMAP4("127.0.0.1", port)
    assert imap.login("alice", phone.password)[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"1"])
    imap.store("1", "+FLAGS", "\\Flagged")
    imap.logout()
    inbox = box / "mail" / "alice"
    assert sorted(p.name for p in inbox.iterdir()) == ["cur", "new", "tmp"]
    (name,) = [p.name for p in (inbox / "cur").iterdir()]
    assert name.endswith(":2,F")
    # The other way: read in the TUI (BoxApi.set_flags renames the file), seen over IMAP.
    set_flags(inbox, f"cur/{name}", add="S")
    imap = imaplib.IMAP4("127.0.0.1", port)
    imap.login("alice", phone.password)
    imap.select("INBOX")
    _, flags = imap.fetch("1", "(FLAGS)")
    imap.logout()
    assert b"\\Seen" in flags[0] and b"\\Flagged" in flags[0]  # type: ignore[operator]


def test_a_revoked_password_stops_working_after_the_reload(
    dovecot: tuple[DovecotChild, Any, int],
) -> None:
    child, (box, registry, phone), port = dovecot
    laptop = registry.add("laptop", "alice")
    child.reload()
    imap = imaplib.IMAP4("127.0.0.1", port)
    assert imap.login("alice", laptop.password)[0] == "OK"
    imap.logout()
    registry.revoke("laptop")
    child.reload()
    imap = imaplib.IMAP4("127.0.0.1", port)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        imap.login("alice", laptop.password)
    assert imap.login("alice", phone.password)[0] == "OK"
    imap.logout()


def test_dovecot_does_not_outlive_a_killed_box(dovecot: tuple[DovecotChild, Any, int]) -> None:
    child, _, _ = dovecot
    child.process.send_signal(signal.SIGKILL)
    child.process.wait(10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.dovecot_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child.dovecot_pid}").exists()
