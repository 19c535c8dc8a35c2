"""Device access while the box runs: its Dovecot and its device onion, kept in step.

The running box owns one :class:`DeviceAccess`. At start, and again on
SIGHUP (which ``onionmail device add`` and ``device revoke`` send to a
running box), it reads the device list, writes Dovecot's passdbs and
republishes the device onion with exactly the listed client keys:

- onion port 143 -> Dovecot's unix socket (IMAP, plain inside the onion);
- onion port 587 -> the box's submission server on loopback (AUTH with the
  device's password, as the local part the device reads).

With no device (and no local IMAP port) neither Dovecot nor the device onion
runs. Device access failing (Dovecot missing, the box run as root) never
stops the box: onion mail goes on, and the status says why devices cannot
connect.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onionmail.config.box import DevicesSection
from onionmail.core.errors import OnionMailError
from onionmail.devices.dovecot import Dovecot
from onionmail.devices.registry import (
    Device,
    DeviceRegistry,
    check_password,
    device_onion_identity,
)
from onionmail.devices.setup import IMAP_PORT, SUBMISSION_PORT

if TYPE_CHECKING:  # the box passes its own; importing stem here would slow the TUI's start
    from onionmail.tor.control import BoxTor

log = logging.getLogger(__name__)


class DeviceAccess:
    """Dovecot and the device onion of one running box."""

    def __init__(self, box_dir: Path, seed: bytes, settings: DevicesSection, tor: BoxTor) -> None:
        self.registry = DeviceRegistry(box_dir)
        self.onion_identity = device_onion_identity(seed)
        self.settings = settings
        self.tor = tor
        self.dovecot = Dovecot(
            box_dir, binary=settings.dovecot, local_imap_port=settings.local_imap_port
        )
        self.submission_port = 0
        self.devices: list[Device] = []
        self.problem: str | None = None
        """Why devices cannot connect (shown by ``status``), or None."""
        self.generation = 0
        """Refreshes done; ``onionmail device`` waits for it to grow in the status."""
        self._lock = asyncio.Lock()

    @property
    def onion(self) -> str:
        return self.onion_identity.onion_address

    async def start(self, submission_port: int) -> None:
        self.submission_port = submission_port
        await self.refresh()

    async def refresh(self) -> None:
        """Bring Dovecot and the onion in line with the device list (start, SIGHUP, tor back)."""
        async with self._lock:
            try:
                await self._refresh()
                self.problem = None
            except OnionMailError as exc:
                self.problem = str(exc)
                log.error("devices cannot connect: %s", exc)
            self.generation += 1

    async def _refresh(self) -> None:
        self.devices = await asyncio.to_thread(self.registry.devices)
        wanted = bool(self.devices) or self.settings.local_imap_port != 0
        if not wanted:
            await self.dovecot.stop()
        elif self.dovecot.running:
            await self.dovecot.reload(self.devices)
        else:
            await self.dovecot.start(self.devices)
        if self.tor.controller is None:
            return
        await self.tor.publish_devices(
            self.onion_identity,
            {
                IMAP_PORT: f"unix:{self.dovecot.paths.onion_socket}",
                SUBMISSION_PORT: f"127.0.0.1:{self.submission_port}",
            },
            [d.client_key for d in self.devices],
        )
        if self.devices:
            log.info("device onion published for %d device(s)", len(self.devices))

    def check_password(self, local_part: str, password: bytes) -> bool:
        """Whether ``password`` is a device's password for ``local_part`` (submission AUTH)."""
        return any(
            d.local_part == local_part and check_password(d.password_hash, password)
            for d in self.devices
        )

    async def stop(self) -> None:
        await self.dovecot.stop()

    def status(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "device_onion": self.onion if self.devices else "",
            "devices": [d.name for d in self.devices],
            "device_onion_published": self.tor.device_service_id is not None,
            "imap": self.dovecot.running,
            "problem": self.problem,
        }
