"""Quitting while compose holds a message: keep it in Drafts, throw it away, or stay."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen

from tui.widgets.plain import PlainStatic


class UnsentPrompt(ModalScreen[str]):
    """Dismissed with ``"save"``, ``"discard"`` or ``"stay"``."""

    BINDINGS = [
        Binding("s", "choose('save')", "Save to Drafts"),
        Binding("d", "choose('discard')", "Discard"),
        Binding("escape", "choose('stay')", "Stay"),
    ]
    DEFAULT_CSS = """
    UnsentPrompt { align: center middle; }
    UnsentPrompt > Vertical {
        width: 64; height: 5; border: round $warning; background: $surface; padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic("compose holds a message that was not sent.")
            yield PlainStatic("s  save it to Drafts · d  discard it · escape  stay")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
