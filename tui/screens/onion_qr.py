"""The onion address as a QR code, full size, for a phone to scan off the terminal."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.widgets.onion_qr import qr_text
from tui.widgets.plain import PlainStatic


class OnionQrScreen(ModalScreen[None]):
    """``onion`` as a QR code (made in a worker), with the address under it."""

    BINDINGS = [Binding("escape,o,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    OnionQrScreen { align: center middle; }
    OnionQrScreen > Vertical {
        width: auto; height: auto; border: round $primary; background: $surface; padding: 0 1;
        align-horizontal: center;
    }
    OnionQrScreen #qr { width: auto; height: auto; }
    OnionQrScreen #qr-caption { width: auto; color: $text-muted; }
    """

    def __init__(self, onion: str) -> None:
        super().__init__()
        self.onion = onion

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic("drawing the QR code…", id="qr")
            yield PlainStatic(self.onion, id="qr-caption")

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "onion address"
        self.draw()

    @work(thread=True, exit_on_error=False)
    def draw(self) -> None:
        self.app.call_from_thread(self._show, qr_text(self.onion))

    def _show(self, qr: Text) -> None:
        self.query_one("#qr", Static).update(qr)
