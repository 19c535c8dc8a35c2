"""The inbox: folders, and each folder's messages newest first, loaded in a worker.

The folder listing is one directory scan; headers are then parsed in chunks
in a thread and added as they come, so the first rows paint at once even in
a Maildir of tens of thousands of messages.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual.worker import get_current_worker

from onionmail.box.api import Arrival, ArrivalKind, MessageSummary
from tui.screens.base import BoxScreen
from tui.screens.message import MessageScreen
from tui.widgets.plain import PlainStatic, PlainTable

CHUNK = 200
"""Headers parsed per batch before the rows are handed to the UI."""

MARKS = {
    ArrivalKind.SEALED: ("S", "bold green"),
    ArrivalKind.PLAIN: ("P", "bold yellow"),
    ArrivalKind.GATEWAY: ("G", "bold magenta"),
    ArrivalKind.UNKNOWN: ("?", "grey50"),
}


ENCRYPTION = {
    "sealed": ("sealed", "green"),
    "sealed-v1": ("sealed-v1", "yellow"),
    "OpenPGP": ("OpenPGP", "green"),
    "OpenPGP?": ("OpenPGP?", "yellow"),
    "none": ("clear", "yellow"),
}
"""The enc column: a sealed envelope (an older box's, without forward secrecy: sealed-v1),
OpenPGP the box decrypted (or could not), or none."""


def sender_cell(arrival: Arrival) -> Text:
    if arrival.verified:
        return Text("verified", "green")
    pgp = arrival.openpgp
    if pgp is not None and pgp.signed_by_sender:
        return Text("signed", "green")
    if pgp is not None and pgp.signature == "bad":
        return Text("bad sig", "bold red")
    return Text("unverified", "grey50")


def arrival_cells(arrival: Arrival) -> tuple[Text, Text, Text]:
    mark, style = MARKS[arrival.kind]
    label, enc_style = ENCRYPTION[arrival.encryption]
    return Text(mark, style), Text(label, enc_style), sender_cell(arrival)


class InboxScreen(BoxScreen):
    BINDINGS = [
        Binding("g", "reload", "Reload"),
        Binding("enter", "open", "Open", show=False),
    ]
    DEFAULT_CSS = """
    InboxScreen #folders { width: 22; border: round $panel; }
    InboxScreen #messages { width: 1fr; }
    InboxScreen #inbox-status { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder = ""
        self.summaries: dict[str, MessageSummary] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield OptionList(id="folders")
            yield PlainTable(id="messages", cursor_type="row")
        yield PlainStatic("", id="inbox-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#messages", DataTable)
        table.add_column("", key="mark", width=1)
        table.add_column("enc", key="enc", width=9)
        table.add_column("sender", key="verified", width=10)
        table.add_column("date", key="date", width=16)
        table.add_column("from", key="from", width=30)
        table.add_column("subject", key="subject")
        table.focus()
        self.load_folders()

    @work(thread=True, exit_on_error=False)
    def load_folders(self) -> None:
        self.fetch("list the folders", self.api.folders, self._show_folders)

    def _show_folders(self, folders: list[str]) -> None:
        options = self.query_one("#folders", OptionList)
        options.clear_options()
        options.add_options(folders)
        if folders:
            options.highlighted = 0
            self.open_folder(folders[0])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.open_folder(str(event.option.prompt))
        self.query_one("#messages", DataTable).focus()

    def open_folder(self, folder: str) -> None:
        self.folder = folder
        self.summaries.clear()
        self.query_one("#messages", DataTable).clear()
        self.query_one("#inbox-status", Static).update(f"{folder}: loading…")
        self.load_messages(folder)

    @work(thread=True, exclusive=True, exit_on_error=False, group="inbox")
    def load_messages(self, folder: str) -> None:
        worker = get_current_worker()
        try:
            keys = self.api.message_keys(folder)
            for start in range(0, len(keys), CHUNK):
                if worker.is_cancelled:
                    return
                batch = list(self.api.summaries(folder, keys[start : start + CHUNK]))
                done = min(start + CHUNK, len(keys))
                self.app.call_from_thread(self._add_rows, folder, batch, done, len(keys))
            if not keys:
                self.app.call_from_thread(self._add_rows, folder, [], 0, 0)
        except Exception as exc:  # shown to the user, not swallowed
            self.fail(exc, f"read {folder}")

    def _add_rows(self, folder: str, batch: list[MessageSummary], done: int, total: int) -> None:
        if folder != self.folder:
            return
        table = self.query_one("#messages", DataTable)
        for s in batch:
            if s.key in self.summaries:
                continue
            self.summaries[s.key] = s
            table.add_row(*arrival_cells(s.arrival), s.date, s.sender, s.subject, key=s.key)
        more = "" if done >= total else f" (reading headers {done}/{total})"
        self.query_one("#inbox-status", Static).update(
            f"{folder}: {total} message(s), newest first{more}  ·  "
            "S sealed onion · P plain onion peer · G via gateway · ? unknown"
        )

    def action_reload(self) -> None:
        if self.folder:
            self.open_folder(self.folder)

    def action_open(self) -> None:
        table = self.query_one("#messages", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            if key is not None:
                self.app.push_screen(MessageScreen(self.summaries[key]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key is not None and key in self.summaries:
            self.app.push_screen(MessageScreen(self.summaries[key]))
