"""The passphrase dialog: an encrypted identity key opened inside the TUI.

Shown at start when the key is encrypted and no ``--passphrase-file`` or
systemd credential gave the passphrase. The key is opened in a worker
(argon2id takes a second or so); a wrong passphrase is said and asked again;
escape goes on without it (mail can be read and sent; the ledger stays
locked).
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input

from onionmail.box.api import BoxApi
from onionmail.core.errors import OnionMailError
from tui.widgets.plain import PlainStatic


class UnlockPrompt(ModalScreen[BoxApi | None]):
    """Dismissed with the box's API opened with the passphrase, or None (escape)."""

    BINDINGS = [Binding("escape", "skip", "Go on without it")]
    DEFAULT_CSS = """
    UnlockPrompt { align: center middle; }
    UnlockPrompt > Vertical {
        width: 70; height: 7; border: round $primary; background: $surface; padding: 0 1;
    }
    UnlockPrompt #unlock-status { color: $warning; }
    """

    def __init__(self, api: BoxApi) -> None:
        super().__init__()
        self.api = api

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic("the box's identity key is encrypted: its passphrase, please")
            yield Input(password=True, id="passphrase")
            yield PlainStatic(
                "escape: go on without it (the ledger stays locked)", id="unlock-status"
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#unlock-status", PlainStatic).update("opening the key…")
        self.unlock(event.value.encode())

    @work(thread=True, exclusive=True, exit_on_error=False)
    def unlock(self, passphrase: bytes) -> None:
        try:
            opened = BoxApi(self.api.box_dir, passphrase=passphrase)
        except OnionMailError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self.dismiss, opened)

    def _failed(self, reason: str) -> None:
        self.query_one(Input).value = ""
        self.query_one("#unlock-status", PlainStatic).update(f"{reason}; try again")

    def action_skip(self) -> None:
        self.dismiss(None)
