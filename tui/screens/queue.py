"""The outbound queue: destination (never the subject), attempts, next try, last error."""

from __future__ import annotations

import time

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Header, Static

from onionmail.store.queue import QueueState
from tui.screens.base import BoxScreen
from tui.widgets.key_line import KeyLine
from tui.widgets.plain import PlainStatic, PlainTable

REFRESH = 2.0
"""Seconds between re-reads of the queue while the screen is shown."""


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


class QueueScreen(BoxScreen):
    BINDINGS = [
        Binding("r", "retry", "Retry now"),
        Binding("R", "retry_all", "Retry all"),
        Binding("x", "cancel", "Cancel message"),
        Binding("g", "reload", "Reload"),
    ]
    DEFAULT_CSS = """
    QueueScreen #queue-status { height: 1; padding: 0 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.states: list[QueueState] = []
        self._loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield PlainTable(id="queue", cursor_type="row")
        yield PlainStatic("reading the queue…", id="queue-status")
        yield KeyLine()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("id", width=10)
        table.add_column("destination", width=62)
        table.add_column("tries", width=5)
        table.add_column("next try (UTC)", width=19)
        table.add_column("last error")
        table.focus()
        self.action_reload()
        self.set_interval(REFRESH, self.action_reload)

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue")
    def load(self) -> None:
        self.fetch("read the queue", self.api.queue, self._show)

    def _show(self, states: list[QueueState]) -> None:
        if self._loaded and states == self.states:
            return
        self._loaded = True  # an empty queue read at first is shown as empty, not "reading"
        self.states = states
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for s in states:
            table.add_row(
                s.id[:8], s.destination, str(s.attempts), utc(s.next_try), s.last_error, key=s.id
            )
        if states:
            table.move_cursor(row=min(row, len(states) - 1))
        self.query_one("#queue-status", Static).update(
            f"{len(states)} message(s) waiting" if states else "the queue is empty"
        )

    def _selected(self) -> QueueState | None:
        table = self.query_one(DataTable)
        if not self.states or not 0 <= table.cursor_row < len(self.states):
            self.notify("no message selected", severity="warning")
            return None
        return self.states[table.cursor_row]

    def action_retry(self) -> None:
        state = self._selected()
        if state is not None:
            self.act("retry", state.id)

    def action_retry_all(self) -> None:
        self.act("retry", None)

    def action_cancel(self) -> None:
        state = self._selected()
        if state is not None:
            self.act("cancel", state.id)

    @work(thread=True, exit_on_error=False, group="queue-action")
    def act(self, what: str, queue_id: str | None) -> None:
        try:
            if what == "retry":
                message = self.api.retry_now(queue_id)
            else:
                moved = self.api.cancel(queue_id or "")
                message = f"cancelled; kept in {moved.parent}"
        except Exception as exc:  # shown to the user, not swallowed
            self.fail(exc, f"{what} the message")
            return
        self.app.call_from_thread(self.notify, message)
        self.load()
