"""A folder's messages as a table: threaded or flat, folded threads as one line, and
columns fitted to the terminal's width (the inbox's view, :mod:`tui.screens.inbox`).

Conversations are threads (:mod:`onionmail.message.threads`): a reply under
what it answers, a thread where its newest message would stand. What is shown
is kept as the table's rows, each keyed by its message's name without flags.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable, OptionList

from onionmail.box.api import MessageSummary
from onionmail.message.threads import Line, Threadable, collapse, thread_lines
from tui.screens.request_keys import RequestKeys
from tui.widgets.message_rows import (
    COLUMNS,
    NARROW,
    NARROW_COLUMNS,
    column_widths,
    folder_list_width,
    row_cells,
)


class FolderView(RequestKeys):
    """The table of a folder's messages (``#messages``) and the folder list's width
    (``#folders``); the screen built on it composes both and fills ``summaries``."""

    def __init__(self) -> None:
        super().__init__()
        self.summaries: dict[str, MessageSummary] = {}
        """The folder's messages, by row (the name without flags)."""
        self.petnames: dict[str, str] = {}
        """Address (lower case) -> petname, from the address book, for the from column."""
        self.threaded = True
        self.collapsed: set[str] = set()
        """Folded threads, by their first message's row."""
        self.lines: dict[str, Line] = {}
        """The rows shown, each as its line of the threaded (or flat) folder."""
        self.thread_of: dict[str, str] = {}
        self.thread_size: dict[str, int] = {}
        self._built_for = 0

    def _selected(self) -> str | None:
        table = self.query_one("#messages", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return key if key in self.summaries else None

    def _show_lines(self, keep: str | None, at: int) -> None:
        """The table from the folder's messages, threaded (folded threads as one line) or
        flat; the cursor on ``keep``, or the line of its folded thread, else on row ``at``."""
        table = self.query_one("#messages", DataTable)
        every = thread_lines(
            [Threadable(row, s.message_id, s.references) for row, s in self.summaries.items()],
            threaded=self.threaded,
        )
        self.thread_of = {line.row: line.thread for line in every}
        self.thread_size = {line.thread: line.size for line in every}
        if self.threaded:  # a thread gone (deleted, moved) is forgotten; flat keeps them
            self.collapsed &= {thread for thread, size in self.thread_size.items() if size > 1}
        unread = {line.thread for line in every if self.summaries[line.row].unread}
        shown = collapse(every, self.collapsed)
        self.lines = {line.row: line for line in shown}
        table.clear()
        for line in shown:
            folded = line.thread in unread if line.hidden else None
            table.add_row(*self._cells(self.summaries[line.row], line, folded), key=line.row)
        target = keep if keep in self.lines else self.thread_of.get(keep or "")
        if target is not None and target in self.lines:
            table.move_cursor(row=table.get_row_index(target))
        elif table.row_count:
            table.move_cursor(row=max(0, min(at, table.row_count - 1)))

    def action_fold(self) -> None:
        """``z``: fold the thread under the cursor into one line, or unfold it."""
        row = self._selected()
        if row is None:
            return
        thread = self.thread_of.get(row, row)
        if not self.threaded or self.thread_size.get(thread, 1) < 2:
            self.notify("this message is not part of a thread")
            return
        self.collapsed ^= {thread}
        self._show_lines(row, 0)

    def action_fold_all(self) -> None:
        """``Z``: fold every thread, or unfold them all when some are folded."""
        if not self.threaded:
            return
        row = self._selected()
        if self.collapsed:
            self.collapsed.clear()
        else:
            self.collapsed = {t for t, size in self.thread_size.items() if size > 1}
        self._show_lines(row, 0)

    def action_toggle_threads(self) -> None:
        """``T``: threads, or the folder flat, newest first."""
        self.threaded = not self.threaded
        self._show_lines(self._selected(), 0)
        self.notify("threads" if self.threaded else "flat, newest first")

    # -- the width of the terminal ------------------------------------------------------------

    def _add_columns(self, table: DataTable[Text]) -> None:
        self._built_for = width = self.app.size.width
        for key, cells in column_widths(width).items():
            table.add_column(COLUMNS[key][0], key=key, width=cells)
        self.query_one("#folders", OptionList).styles.width = folder_list_width(width)

    def _cells(
        self, summary: MessageSummary, line: Line | None = None, unread: bool | None = None
    ) -> list[Text]:
        cells = dict(zip(COLUMNS, row_cells(summary, self.petnames, line, unread), strict=True))
        return [cells[key] for key in (NARROW_COLUMNS if self._built_for < NARROW else COLUMNS)]

    def on_resize(self) -> None:
        if self.app.size.width == self._built_for:
            return
        table = self.query_one("#messages", DataTable)
        current = self._selected()
        table.clear(columns=True)
        self._add_columns(table)
        self._show_lines(current, 0)
