"""A one-line question at the bottom of the screen: Enter answers, Escape cancels.

The inbox's search (``/``) and the message screen's "save attachments to" use it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input

from tui.widgets.plain import PlainStatic


class LinePrompt(ModalScreen[str | None]):
    """Asks ``question``; dismissed with the answer (stripped), or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    LinePrompt { align: center bottom; }
    LinePrompt > Vertical {
        width: 100%; height: 4; border-top: solid $primary; background: $surface;
    }
    """

    def __init__(self, question: str, last: str = "") -> None:
        super().__init__()
        self.question = question
        self.last = last

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic(f"{self.question} (Enter; Escape cancels):")
            yield Input(value=self.last, id="query", select_on_focus=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
