"""Adding and revoking devices from outside the running box (the CLI and the TUI).

The device list is a file; the running box applies it on SIGHUP and then
bumps ``devices.generation`` in its status file, which is how a caller knows
the change is live (:meth:`DeviceManager.wait_applied`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onionmail.core.errors import ConfigError, IdentityError
from onionmail.devices.registry import Device, DeviceRegistry, NewDevice, device_onion_identity
from onionmail.devices.setup import setup_text
from onionmail.seal.identity import Identity
from onionmail.store.lock import running_pid


@dataclass(frozen=True)
class DeviceSheet:
    """A new device and what its owner types in: shown once."""

    new: NewDevice
    device_onion: str
    box_onion: str

    @property
    def auth_line(self) -> str:
        return self.new.auth_line(self.device_onion)

    def text(self, *, qr: bool = True) -> str:
        return setup_text(self.new, self.device_onion, self.box_onion, qr=qr)


class DeviceManager:
    """The devices of the box in ``box_dir``; ``identity`` (None while locked) is needed
    only to add one (the device onion's address comes from the seed)."""

    def __init__(
        self, box_dir: Path, local_parts: tuple[str, ...], identity: Identity | None
    ) -> None:
        self.box_dir = box_dir
        self.local_parts = local_parts
        self.identity = identity
        self.registry = DeviceRegistry(box_dir)

    def devices(self) -> list[Device]:
        return self.registry.devices()

    def add(self, name: str, user: str | None = None) -> DeviceSheet:
        """Authorize a device reading ``user`` (default: the box's first local part) and
        tell a running box; the sheet to show once."""
        if self.identity is None:
            raise IdentityError("unlock the box's key first: a device's address needs it")
        user = user or self.local_parts[0]
        if user not in self.local_parts:
            raise ConfigError(
                f"--user {user}: the box hosts {', '.join(self.local_parts)} ([box] local_parts)"
            )
        new = self.registry.add(name, user)
        self.tell_running_box()
        device_onion = device_onion_identity(self.identity.seed).onion_address
        return DeviceSheet(new, device_onion, self.identity.onion_address)

    def revoke(self, name: str) -> Device:
        device = self.registry.revoke(name)
        self.tell_running_box()
        return device

    def status(self) -> dict[str, Any]:
        """The running box's ``devices`` status ({} when it is not running)."""
        if running_pid(self.box_dir) is None:
            return {}
        try:
            status = json.loads((self.box_dir / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        devices = status.get("devices")
        return devices if isinstance(devices, dict) else {}

    def tell_running_box(self) -> bool:
        """SIGHUP to the running box (it reapplies the list); False if none runs."""
        self._told = int(self.status().get("generation", 0))
        pid = running_pid(self.box_dir)
        if pid is None:
            return False
        os.kill(pid, signal.SIGHUP)
        return True

    _told = 0

    def wait_applied(self, check: Callable[[list[str]], bool], timeout: float) -> dict[str, Any]:
        """Wait (bounded) until the running box applied the last change (its status has a
        newer generation and ``check(device names)`` holds); its device status, or {}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if int(status.get("generation", 0)) > self._told and check(status.get("devices", [])):
                return status
            time.sleep(0.2)
        return {}
