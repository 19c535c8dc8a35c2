"""The inbox's first screenful: read before the UI starts, shown before the inbox is built.

Read in a worker, the listing and the first headers compete for the
interpreter with the UI thread building its first frame and take several
times as long; read before ``App.run`` they cost what the disk costs.

Loading the UI (textual and the inbox's modules) takes longer than reading
the page, so ``onionmail-tui`` shows the page at once, before it loads
any of it: :func:`screen_lines` lays it out in the inbox's columns, as
text, and :mod:`tui.start` writes it to the terminal; the inbox is built
with the same page in its first frame. This module imports no part of
textual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.color import ColorSystem
from rich.style import Style
from rich.text import Text

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

if TYPE_CHECKING:
    from onionmail.box.api import BoxApi, MessageSummary

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


APP_KEYS = (
    ("i", "Inbox"),
    ("c", "Compose"),
    ("u", "Queue"),
    ("s", "Status"),
    ("l", "Ledger"),
    ("?", "Help"),
    ("^q", "Quit"),
)
"""The app's keys as its key line shows them (:class:`tui.app.OnionMailApp`'s bindings,
known here without loading textual; a test keeps the two alike)."""


def keys_line() -> str:
    return " " + "  ".join(f"{key} {what}" for key, what in APP_KEYS)


PANEL = "on grey15"
"""The title's and the key line's background (textual's panel, near enough)."""

CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters: a header's escape sequence must not reach the terminal."""


def screen_lines(first: FirstPage, title: str, width: int, height: int) -> list[Text]:
    """The screen :mod:`tui.start` draws at ``width`` x ``height``, line by line: the
    title, the folder list beside the page's rows, the status line and the app's keys,
    where the inbox will have them. Every line fits ``width`` cells and holds no control
    character."""
    folder_width = folder_list_width(width)
    inner = folder_width - 4  # the round border and one cell of padding each side
    box = [Text("╭" + "─" * (folder_width - 2) + "╮")]
    for name in first.folders:
        cell = Text(name)
        cell.truncate(inner, overflow="crop", pad=True)
        box.append(Text.assemble("│ ", cell, " │"))
    box.append(Text("╰" + "─" * (folder_width - 2) + "╯"))
    rows = page_text(first, width, height - 5).split("\n")
    middle = max(0, height - 3)
    lines = [Text(title.center(width), PANEL)]
    for n in range(middle):
        left = box[n] if n < len(box) else Text(" " * folder_width)
        right = rows[n] if n < len(rows) else Text("")
        lines.append(Text.assemble(left, right))
    done = len(first.summaries)
    lines.append(Text(" " + status_line(first.folder, done, len(first.keys)), "grey50"))
    lines.append(Text(keys_line().ljust(width), PANEL))
    for line in lines:
        line.plain = CONTROLS.sub(" ", line.plain)
        line.truncate(width, overflow="crop")
    return lines[:height]


def ansi(line: Text) -> str:
    """``line`` as the terminal draws it: its text with its styles' escape sequences (256
    colours), and nothing else."""
    out = []
    base = as_style(line.style)
    ends = {end for span in line.spans for end in (span.start, span.end)}
    cuts = sorted({0, len(line.plain), *ends})
    for start, end in zip(cuts, cuts[1:], strict=False):
        style = base
        for span in line.spans:
            if span.start <= start and end <= span.end:
                style += as_style(span.style)
        out.append(style.render(line.plain[start:end], color_system=ColorSystem.EIGHT_BIT))
    return "".join(out)


def as_style(style: str | Style) -> Style:
    return Style.parse(style) if isinstance(style, str) else style
