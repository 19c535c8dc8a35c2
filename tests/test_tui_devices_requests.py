"""The TUI: the status screen's devices (one added, its QR code shown once), and the
Requests folder's keys (accept, block, ignore a stranger's mail)."""

from __future__ import annotations

import re
from pathlib import Path

from textual.widgets import DataTable, Input, Static

from onionmail.box.api import BoxApi
from onionmail.box.create import create_box
from onionmail.devices.registry import DeviceRegistry, check_password
from onionmail.store.contacts import AddressBook
from onionmail.store.maildir import Maildir
from tests.test_tui import drawn_text, settled, static_text, wait_rows
from tui.app import OnionMailApp
from tui.screens.device_sheet import DeviceSheetScreen
from tui.screens.inbox import InboxScreen
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


async def test_accept_block_and_ignore_in_the_requests_folder(tmp_path: Path) -> None:
    box = create_box(tmp_path / "box", "alice").box_dir
    requests = Maildir(box / "mail" / "alice" / ".Requests")
    for n, sender in enumerate(("dave@d.example", "eve@e.example", "dave@d.example", "x@y.z")):
        head = f"Return-Path: <{sender}>\r\nFrom: {sender}\r\nSubject: hello {n}\r\n"
        requests.deliver(head.encode() + b"\r\nhi\r\n")
    app = OnionMailApp(BoxApi(box))
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot)
        inbox = app.screen
        assert isinstance(inbox, InboxScreen)
        assert not inbox.check_action("accept_sender", ())  # hidden outside Requests
        inbox.open_folder("alice/.Requests")
        await settled(pilot)
        table = inbox.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 4)

        def row_of(subject: str) -> int:
            for index in range(table.row_count):
                if any(subject in str(cell) for cell in table.get_row_at(index)):
                    return index
            raise AssertionError(subject)

        table.move_cursor(row=row_of("hello 0"))
        await pilot.press("A")
        await settled(pilot)
        assert "dave@d.example" in AddressBook(box).entries().values()
        assert len(list((box / "mail" / "alice" / "new").iterdir())) == 2  # both of dave's
        await wait_rows(pilot, table, 2)
        table.move_cursor(row=row_of("hello 1"))
        await pilot.press("B")
        await settled(pilot)
        await wait_rows(pilot, table, 1)
        assert BoxApi(box).requests.blocked_count() == 1
        await pilot.press("I")
        await settled(pilot)
        await wait_rows(pilot, table, 0)
        assert BoxApi(box).requests.pending("alice") == []
