"""A new device's sheet: its client-authorization key as a QR code, then the mail settings.

Shown once, right after the device is added from the status screen (``a``):
neither the key's private half nor the password is kept anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.widgets.onion_qr import qr_text
from tui.widgets.plain import PlainStatic

if TYPE_CHECKING:
    from onionmail.devices.manage import DeviceSheet


class DeviceSheetScreen(ModalScreen[None]):
    """The sheet of ``sheet``'s device; Escape closes it for good."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close (not shown again)")]
    DEFAULT_CSS = """
    DeviceSheetScreen { align: center middle; }
    DeviceSheetScreen > VerticalScroll {
        width: auto; max-width: 100%; height: auto; max-height: 100%;
        border: round $warning; background: $surface; padding: 0 1;
    }
    DeviceSheetScreen #device-qr { width: auto; height: auto; }
    DeviceSheetScreen #device-settings { width: auto; }
    """

    def __init__(self, sheet: DeviceSheet) -> None:
        super().__init__()
        self.sheet = sheet

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield PlainStatic("drawing the QR code…", id="device-qr")
            yield PlainStatic(self.sheet.text(qr=False), id="device-settings")

    def on_mount(self) -> None:
        scroll = self.query_one(VerticalScroll)
        scroll.border_title = f"device {self.sheet.new.device.name}: shown once"
        scroll.border_subtitle = "scan the code with Orbot, or copy the line"
        self.draw()

    @work(thread=True, exit_on_error=False)
    def draw(self) -> None:
        self.app.call_from_thread(self._show, qr_text(self.sheet.auth_line))

    def _show(self, qr: Text) -> None:
        self.query_one("#device-qr", Static).update(qr)
