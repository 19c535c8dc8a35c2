"""The search prompt of the inbox (``/``): one line, Enter searches, Escape cancels."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input

from tui.widgets.plain import PlainStatic


class SearchPrompt(ModalScreen[str | None]):
    """Asks for the words to find in From, To, Cc, Subject and the text of the folder."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SearchPrompt { align: center bottom; }
    SearchPrompt > Vertical {
        width: 100%; height: 4; border-top: solid $primary; background: $surface;
    }
    """

    def __init__(self, last: str = "") -> None:
        super().__init__()
        self.last = last

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic("search From, To, Cc, Subject and text (Enter; Escape cancels):")
            yield Input(value=self.last, id="query", select_on_focus=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
