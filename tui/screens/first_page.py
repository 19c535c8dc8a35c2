"""The inbox's first screenful, read before the UI starts and shown before the inbox is built.

Read in a worker, the listing and the first headers compete for the
interpreter with the UI thread building its first frame and take several
times as long; read before ``App.run`` they cost what the disk costs.

Building the inbox itself (its table, folder list and footer, and the
modules behind them) takes longer than reading the page, so ``onionmail-tui``
starts on :class:`FirstLook`: the same rows in the same columns as plain
text, painted at once, which gives way to the inbox as soon as it is on the
terminal. Keys typed meanwhile are handed to the inbox. The rest of the
folder is read in a worker as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen

from onionmail.core.errors import OnionMailError
from onionmail.message.threads import Line, Threadable, thread_lines
from onionmail.store.contacts import AddressBook
from onionmail.store.maildir import folder_stamp
from tui.widgets.message_rows import (
    COLUMNS,
    NARROW,
    NARROW_COLUMNS,
    column_widths,
    folder_list_width,
    row_cells,
    row_key,
    status_line,
)
from tui.widgets.plain import PlainStatic

if TYPE_CHECKING:
    from onionmail.box.api import BoxApi, MessageSummary
    from tui.app import OnionMailApp

FIRST_CHUNK = 60
"""The first batch: a screenful (the first paint does not wait for rows nobody sees)."""


@dataclass(frozen=True)
class FirstPage:
    """The folder list, the address book's petnames and the first folder's newest rows."""

    folders: list[str]
    petnames: dict[str, str]
    """Address (lower case) -> petname."""
    stamp: tuple[int, int]
    """The first folder's stamp, taken before it was listed."""
    keys: list[str]
    """Every message of the first folder, newest first."""
    summaries: list[MessageSummary]
    """The newest of them, parsed."""

    @property
    def folder(self) -> str:
        return self.folders[0]


def read_first_page(api: BoxApi, rows: int) -> FirstPage | None:
    """The first page, or None when it cannot be read: the inbox then reads the folder in a
    worker, which shows the error to the user."""
    try:
        folders = api.folders()
        if not folders:
            return None
        book = AddressBook(api.box_dir).entries()  # petname -> address
        petnames = {address.lower(): petname for petname, address in book.items()}
        stamp = folder_stamp(api.folder_path(folders[0]))
        keys = api.message_keys(folders[0])
        summaries = list(api.summaries(folders[0], keys[:rows]))
    except (OSError, OnionMailError):
        return None
    return FirstPage(folders, petnames, stamp, keys, summaries)


def page_text(first: FirstPage, width: int, height: int) -> Text:
    """The inbox's table as text: the column titles, then the rows that fit ``height``."""
    widths = column_widths(width)
    shown = NARROW_COLUMNS if width < NARROW else tuple(COLUMNS)
    titles = (f" {COLUMNS[key][0]:<{widths[key]}} " for key in shown)
    lines = [Text.assemble(*titles, style="bold")]
    rows: list[tuple[MessageSummary, Line | None]] = [(s, None) for s in first.summaries]
    if len(first.summaries) >= len(first.keys):  # the whole folder: threaded, as the inbox
        by_row = {row_key(s.key): s for s in first.summaries}
        every = [Threadable(row, s.message_id, s.references) for row, s in by_row.items()]
        rows = [(by_row[line.row], line) for line in thread_lines(every)]
    for summary, thread in rows[: max(0, height - 1)]:
        cells = dict(zip(COLUMNS, row_cells(summary, first.petnames, thread), strict=True))
        line = Text()
        for key in shown:
            cell = cells[key].copy()
            cell.truncate(widths[key], overflow="crop", pad=True)  # as the table cuts
            line.append_text(Text.assemble(" ", cell, " "))
        lines.append(line)
    return Text("\n").join(lines)


class FirstLook(Screen[None]):
    """The first page as text, until the inbox is built (the app's first screen)."""

    DEFAULT_CSS = """
    FirstLook #first-title { height: 1; background: $panel; text-align: center; }
    FirstLook #first-folders { border: round $panel; padding: 0 1; }
    FirstLook #first-rows { width: 1fr; text-wrap: nowrap; text-overflow: clip; }
    FirstLook #first-status { height: 1; color: $text-muted; padding: 0 1; }
    FirstLook #first-keys { dock: bottom; height: 1; background: $panel; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.typed: list[events.Key] = []
        """Keys typed before the inbox was there, for the inbox."""

    @property
    def box_app(self) -> OnionMailApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        app = self.box_app
        first = app.first_page
        width, height = app.size
        yield PlainStatic(f"{app.title} — {app.sub_title}", id="first-title")
        with Horizontal():
            folders = PlainStatic("\n".join(first.folders) if first else "", id="first-folders")
            folders.styles.width = folder_list_width(width)
            yield folders
            yield PlainStatic(page_text(first, width, height - 5) if first else "", id="first-rows")
        if first is not None:
            done = len(first.summaries)
            yield PlainStatic(status_line(first.folder, done, len(first.keys)), id="first-status")
        shown = (b for b in app.BINDINGS if isinstance(b, Binding) and b.show)
        keys = "  ".join(
            f"{b.key_display or b.key.replace('ctrl+', '^')} {b.description}" for b in shown
        )
        yield PlainStatic(" " + keys, id="first-keys")

    def on_mount(self) -> None:
        # in the app's own turn: this screen is removed on the way
        self.call_after_refresh(self.app.call_later, self.box_app.open_inbox)

    def on_key(self, event: events.Key) -> None:
        """Keep what the inbox would have answered; the app's own keys work at once."""
        if event.key not in self.box_app.app_keys:
            self.typed.append(events.Key(event.key, event.character))
            event.stop()
