"""The leak ledger: for each sent and received message, its path and who saw what."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Header, Static

from onionmail.store.ledger import LedgerEntry
from tui.screens.base import BoxScreen
from tui.widgets.key_line import KeyLine
from tui.widgets.leak_matrix import LeakMatrixView
from tui.widgets.plain import PlainStatic, PlainTable

SEAL_NOTES = {
    "v2": (
        "seal v2: a handshake with ephemeral keys (forward secrecy); a stolen key of "
        "either box neither opens it later nor could have forged it"
    ),
    "sealed-v1": (
        "sealed-v1: an older box's seal between long-term keys: no forward secrecy, and "
        "whoever holds the recipient's onion key could have forged its sender"
    ),
}


class LedgerScreen(BoxScreen):
    DEFAULT_CSS = """
    LedgerScreen #entries { height: 12; }
    LedgerScreen #detail { height: 1fr; }
    LedgerScreen #ledger-status { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[LedgerEntry] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield PlainStatic("", id="ledger-status")
        yield PlainTable(id="entries", cursor_type="row")
        yield VerticalScroll(id="detail")
        yield KeyLine()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("day", "direction", "path", "seal", "state", "entry")
        table.focus()
        self.load()

    def on_screen_resume(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="ledger")
    def load(self) -> None:
        self.fetch("read the ledger", self.api.ledger_entries, self._show)

    def _show(self, entries: list[LedgerEntry]) -> None:
        self.entries = sorted(entries, key=lambda e: (e.day, e.name), reverse=True)
        table = self.query_one(DataTable)
        table.clear()
        for e in self.entries:
            table.add_row(e.day, e.direction, str(e.path), e.seal or "-", e.state, e.name[:12])
        if not self.api.ledger_available:
            text = "the ledger is locked: restart with --passphrase-file to read it"
        else:
            text = (
                f"{len(entries)} entr(y/ies); no addresses or subjects are kept, "
                "only keyed hashes — open a message for its own entry"
            )
        self.query_one("#ledger-status", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not 0 <= event.cursor_row < len(self.entries):
            return
        entry = self.entries[event.cursor_row]
        detail = self.query_one("#detail", VerticalScroll)
        detail.remove_children()
        detail.mount(
            PlainStatic(f"{entry.direction} on {entry.day}: path {entry.path}, {entry.state}")
        )
        if entry.seal:
            detail.mount(PlainStatic(SEAL_NOTES.get(entry.seal, entry.seal)))
        detail.mount(LeakMatrixView(entry.matrix))
