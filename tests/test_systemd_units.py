"""The systemd units ``onionmail systemd-unit`` and ``onionmail-gateway systemd-unit`` print,
checked by systemd's own ``systemd-analyze``, and the readiness notification."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from onionmail.box.create import create_box
from onionmail.core.systemd import notify
from tests.gateway_process import gateway_init

EXPOSURE_AT_MOST = 2.0
"""systemd-analyze security's "exposure" (0 best, 10 worst); measured 1.3 (box) and 1.7
(gateway, which binds port 25) with systemd 252."""


def unit_text(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def systemd_analyze(unit: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """systemd's own ``systemd-analyze`` on the unit file (a missing tool fails the test)."""
    return subprocess.run(
        ["systemd-analyze", *args, unit.name],
        cwd=unit.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("units")
    box = create_box(root / "box", "alice").box_dir
    gw = root / "gw"
    gateway_init(gw, "gw.test")
    written = {}
    for name, command in (
        ("onionmail.service", ("onionmail.cli", "systemd-unit", "--dir", str(box))),
        ("onionmail-gateway.service", ("gateway.cli", "systemd-unit", "--dir", str(gw))),
    ):
        path = root / name
        path.write_text(unit_text(*command))
        written[name] = path
    return written


@pytest.mark.parametrize("name", ["onionmail.service", "onionmail-gateway.service"])
def test_systemd_verifies_the_unit(units: dict[str, Path], name: str) -> None:
    result = systemd_analyze(units[name], "verify", "--man=no")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("name", ["onionmail.service", "onionmail-gateway.service"])
def test_systemd_rates_the_unit_s_exposure_low(units: dict[str, Path], name: str) -> None:
    result = systemd_analyze(units[name], "security", "--offline=true")
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE_AT_MOST, result.stdout


def test_the_units_confine_each_service_to_its_directory(units: dict[str, Path]) -> None:
    box = units["onionmail.service"].read_text()
    gateway = units["onionmail-gateway.service"].read_text()
    for text, directory in ((box, "box"), (gateway, "gw")):
        assert "Type=notify" in text and "ProtectSystem=strict" in text
        assert "NoNewPrivileges=yes" in text
        assert re.search(rf"^ReadWritePaths=\S+/{directory}$", text, re.M), text
    assert "\nCapabilityBoundingSet=\n" in box  # the box needs none
    assert "\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in gateway  # port 25 only
    assert re.search(r"^ExecStart=\S+ run --dir \S+/box$", box, re.M)


def test_notify_sends_one_datagram_to_the_socket_systemd_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False  # not started by systemd: nothing to tell
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert notify("READY=1") is True
        assert listener.recv(100) == b"READY=1"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0onionmail-test-" + tmp_path.name)  # the abstract namespace
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@onionmail-test-" + tmp_path.name)
        assert notify("STOPPING=1") is True
        assert listener.recv(100) == b"STOPPING=1"


def test_the_notify_socket_is_claimed_so_children_such_as_tor_never_see_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tor, launched by a box or gateway, would otherwise inherit $NOTIFY_SOCKET and send
    systemd its own MAINPID and READY (the real gateway's test caught it doing so)."""
    from onionmail.core import systemd

    monkeypatch.setattr(systemd, "_claimed", None)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        systemd.claim_notify_socket()
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET', ''))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == ""
        assert notify("READY=1") is True
        assert listener.recv(100) == b"READY=1"
