"""The TUI's status screen lists the devices and adds one, showing its QR code once."""

from __future__ import annotations

import re
from pathlib import Path

from textual.widgets import Input, Static

from onionmail.box.api import BoxApi
from onionmail.box.create import create_box
from onionmail.devices.registry import DeviceRegistry, check_password
from tests.test_tui import drawn_text, settled, static_text
from tui.app import OnionMailApp
from tui.screens.device_sheet import DeviceSheetScreen
from tui.screens.status import StatusScreen
from tui.widgets.onion_qr import qr_modules

SIZE = (120, 60)


async def test_add_a_device_from_the_status_screen(tmp_path: Path) -> None:
    box = create_box(tmp_path / "box", "alice").box_dir
    app = OnionMailApp(BoxApi(box))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await settled(pilot)
        assert "none: a adds a phone or laptop" in drawn_text(app.screen.query_one("#status"))
        await pilot.press("a")
        await settled(pilot)
        app.screen.query_one(Input).value = "phone"
        await pilot.press("enter")
        await settled(pilot)
        sheet = app.screen
        assert isinstance(sheet, DeviceSheetScreen)
        settings = static_text(sheet.query_one("#device-settings", Static))
        (auth,) = re.findall(r"\S+:descriptor:x25519:\S+", settings)
        assert auth == sheet.sheet.auth_line
        qr = drawn_text(sheet.query_one("#device-qr", Static)).splitlines()
        modules = qr_modules(auth)
        assert qr[0].strip() == "\u2580" * len(modules[0])
        assert len(qr) == (len(modules) + 1) // 2
        (password,) = re.findall(r"Password:\s+(\S+)", settings)
        (device,) = DeviceRegistry(box).devices()
        assert device.name == "phone" and check_password(device.password_hash, password.encode())
        await pilot.press("escape")
        await settled(pilot)
        assert isinstance(app.screen, StatusScreen)
        app.screen.load()
        await settled(pilot)
        assert "phone" in drawn_text(app.screen.query_one("#status"))
