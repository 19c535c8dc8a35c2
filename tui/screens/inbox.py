"""The inbox: folders, and each folder's messages newest first, loaded in a worker.

At start the newest screenful is read before the UI (:mod:`tui.first_page`);
the rest of a folder is parsed in chunks in a thread while the inbox is shown.

What a mail client does to stored mail is Maildir's own: flags in the file
name (``S`` seen, ``F`` flagged), folders as Maildir++ subfolders
(``.Trash``, ``.Archive``), so neomutt and Dovecot see the same state. Unread
messages are bold and counted per folder; ``ctrl+z`` undoes the last delete,
archive or flag change.

The table of a folder's messages, threaded or flat and fitted to the
terminal's width, is :class:`~tui.screens.folder_view.FolderView`, which the
inbox is built on; ``z`` folds the thread under the cursor into one line,
``Z`` every thread, ``T`` shows the folder flat.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from functools import partial

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Header, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from onionmail.box.api import MessageSummary
from onionmail.core.errors import OnionMailError
from onionmail.message.search import matching
from onionmail.message.threads import Line
from onionmail.store.maildir import folder_stamp
from tui.first_page import FIRST_CHUNK, FirstPage
from tui.screens.folder_view import FolderView
from tui.screens.prompt import LinePrompt
from tui.widgets.folder_watch import FolderWatch
from tui.widgets.key_line import KeyLine
from tui.widgets.message_rows import (
    COLUMNS,
    row_cells,
    row_key,
    status_line,
)
from tui.widgets.plain import PlainStatic, PlainTable

CHUNK = 200
"""Headers parsed per batch before the rows are handed to the UI."""
PAINT_WAIT = 0.5
"""Seconds the header reader waits at most for the first rows to be painted."""
READ_ON_AFTER, YIELD = 0.3, 0.05
"""Seconds before the header reader starts after the first page (keys typed at first sight go
first), and between its looks while another screen is shown (it waits, not to compete)."""
WATCH = 5.0
"""Seconds between two looks at the folder (two ``stat`` calls) for new mail or changed
flags, besides inotify (:meth:`watch_folder`): the fallback on a network file system."""
TRASH, ARCHIVE = ".Trash", ".Archive"


@dataclass(frozen=True)
class Undo:
    """How to take the last change back: where the message is now, its folder or flags before."""

    folder: str
    key: str
    back_to: str = ""
    flags_added: str = ""
    flags_removed: str = ""


class InboxScreen(FolderView):
    BINDINGS = [
        Binding("ctrl+r", "reload", "Reload", show=False),
        Binding("enter", "open", "Open", show=False),
        Binding("d", "trash", "Delete"),
        Binding("a", "archive", "Archive"),
        Binding("m", "toggle_read", "Read/unread"),
        Binding("F", "toggle_flag", "Flag"),
        Binding("ctrl+z", "undo", "Undo"),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match(1)", "Next", show=False),
        Binding("N", "next_match(-1)", "Previous", show=False),
        Binding("j", "move(1)", "Down", show=False),
        Binding("k", "move(-1)", "Up", show=False),
        Binding("g", "top", "Top", show=False),
        Binding("G,end", "bottom", "Bottom", show=False),
        Binding("home", "top_now", "Top", show=False),
        Binding("z", "fold", "Fold thread", show=False),
        Binding("Z", "fold_all", "Fold all", show=False),
        Binding("T", "toggle_threads", "Threads", show=False),
    ]
    DEFAULT_CSS = """
    InboxScreen #folders { width: 22; border: round $panel; }
    InboxScreen #messages { width: 1fr; }
    InboxScreen #inbox-status { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder = ""
        self.undo: Undo | None = None
        self.matches: list[str] = []
        """Rows the last search found, in folder order (``n``/``N`` move through them)."""
        self.query_text = ""
        self._stamp: tuple[int, int] | None = None
        self._watch = FolderWatch()
        self._g_at = 0.0
        self._counted = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield OptionList(id="folders")
            yield PlainTable(id="messages", cursor_type="row")
        yield PlainStatic("", id="inbox-status")
        yield KeyLine()

    def on_mount(self) -> None:
        table = self.query_one("#messages", DataTable)
        self._add_columns(table)
        table.focus()
        first, self.box_app.first_page = self.box_app.first_page, None
        if first is None:
            self.load_folders()
        else:  # read before the UI started: the first frame has the newest messages
            self.petnames = first.petnames
            self._show_folders([(folder, 0) for folder in first.folders], first=first)
        self.set_interval(WATCH, self.look_for_changes)

    @work(thread=True, exit_on_error=False, group="folders")
    def load_folders(self, keep: bool = False) -> None:
        """The folders at once; their unread counts after (each is a listing of the folder:
        at start the first folder's messages come first)."""

        def names() -> list[tuple[str, int]]:
            if not keep:
                self.petnames = {c.address.lower(): c.petname for c in self.api.contacts()}
            return [(folder, 0) for folder in self.api.folders()]

        if not keep:  # the counts follow once the first folder is read (_add_rows)
            self.fetch("list the folders", names, self._show_folders)
            return
        self.fetch(
            "count the unread messages",
            lambda: [(folder, self.api.unread(folder)) for folder in self.api.folders()],
            lambda found: self._show_folders(found, keep=True),
        )

    def _show_folders(
        self, folders: list[tuple[str, int]], keep: bool = False, first: FirstPage | None = None
    ) -> None:
        options = self.query_one("#folders", OptionList)
        highlighted = options.highlighted
        options.clear_options()
        options.add_options(
            Option(Text.assemble(name, (f"  {n}", "bold") if n else ""), id=name)
            for name, n in folders
        )
        if keep and highlighted is not None and highlighted < len(folders):
            options.highlighted = highlighted
        elif folders:
            options.highlighted = 0
            self.open_folder(folders[0][0], first)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.open_folder(str(event.option.id))
        self.query_one("#messages", DataTable).focus()

    def open_folder(self, folder: str, first: FirstPage | None = None) -> None:
        self.folder = folder
        self._stamp = None
        self.matches = []
        self.summaries.clear()
        self.lines.clear()
        self.collapsed.clear()
        self.query_one("#messages", DataTable).clear()
        self.query_one("#inbox-status", Static).update(f"{folder}: loading…")
        if first is not None and first.folder == folder:
            done = len(first.summaries)
            self._add_rows(folder, first.summaries, done, len(first.keys), first.stamp)
            self.set_timer(READ_ON_AFTER, partial(self._read_on, folder, first))
        else:
            self.load_messages(folder)
            self.watch_folder(folder)

    def _read_on(self, folder: str, first: FirstPage) -> None:
        """After the first page is painted and answered (not to compete): the rest, the watch."""
        if folder == self.folder:
            if len(first.summaries) < len(first.keys):
                self.load_messages(folder, first)
            self.watch_folder(folder)

    @work(thread=True, exclusive=True, exit_on_error=False, group="inbox")
    def load_messages(self, folder: str, first: FirstPage | None = None) -> None:
        """The folder's rows, a batch at a time (after ``first``'s, already shown)."""
        worker = get_current_worker()
        try:
            if first is None:  # the stamp before the listing, handed over with the rows
                stamp = folder_stamp(self.api.folder_path(folder))
                keys = self.api.message_keys(folder)
                starts = [0, *range(FIRST_CHUNK, len(keys), CHUNK)]
            else:
                stamp, keys = first.stamp, first.keys
                starts = list(range(len(first.summaries), len(keys), CHUNK))
            for start, end in zip(starts, [*starts[1:], len(keys)], strict=True):
                while start and not self.shown and not worker.is_cancelled:
                    time.sleep(YIELD)  # a message or another screen is in front: it goes first
                if worker.is_cancelled or start >= len(keys):
                    return
                batch = list(self.api.summaries(folder, keys[start:end]))
                self.app.call_from_thread(self._add_rows, folder, batch, end, len(keys), stamp)
                if start == 0:  # the first rows are painted before parsing more competes
                    painted = threading.Event()  # with the UI thread for the interpreter
                    self.app.call_from_thread(self.call_after_refresh, painted.set)
                    painted.wait(PAINT_WAIT)
            if not keys:
                self.app.call_from_thread(self._add_rows, folder, [], 0, 0, stamp)
        except Exception as exc:  # shown to the user, not swallowed
            self.fail(exc, f"read {folder}")

    # -- new mail appears by itself --------------------------------------------------------

    def look_for_changes(self) -> None:
        if self.folder and self._stamp is not None:
            self.check_folder(self.folder, self._stamp)

    def watch_folder(self, folder: str) -> None:
        """Look at the folder the moment a file lands in, leaves or is renamed in its
        ``new/`` or ``cur/`` (inotify, through watchfiles), not only every :data:`WATCH`
        seconds, until another folder is opened or the screen goes."""
        self._watch.start(
            self.api.folder_path(folder), lambda: self.app.call_from_thread(self.look_for_changes)
        )

    def on_unmount(self) -> None:
        self._watch.stop()

    @work(thread=True, exclusive=True, exit_on_error=False, group="watch")
    def check_folder(self, folder: str, seen: tuple[int, int]) -> None:
        """Whether another client (or the box) changed the folder since it was read: two
        ``stat`` calls every :data:`WATCH` seconds; only then the listing is read again."""
        root = self.api.folder_path(folder)
        stamp = folder_stamp(root)
        if stamp == seen:
            return
        keys = self.api.message_keys(folder)
        known = set(self.summaries)
        fresh = list(self.api.summaries(folder, [k for k in keys if row_key(k) not in known]))
        self.app.call_from_thread(self._merge, folder, stamp, keys, fresh)

    def _merge(
        self, folder: str, stamp: tuple[int, int], keys: list[str], fresh: list[MessageSummary]
    ) -> None:
        """Rows as the folder is now, newest first, the cursor kept on its message."""
        if folder != self.folder:
            return
        self._stamp = stamp
        table = self.query_one("#messages", DataTable)
        current = self._selected()
        by_row = {**self.summaries, **{row_key(s.key): s for s in fresh}}
        rows: dict[str, MessageSummary] = {}
        for key in keys:
            found = by_row.get(row_key(key))
            if found is not None:
                rows[row_key(key)] = found if found.key == key else replace(found, key=key)
        if rows == self.summaries:
            return
        self.summaries = rows
        self._show_lines(current, table.cursor_row)
        if fresh:
            self.notify(f"{len(fresh)} new message(s) in {folder}")
        self._status(folder, len(rows), len(rows))
        self.load_folders(keep=True)

    def _status(self, folder: str, done: int, total: int) -> None:
        line = status_line(folder, done, total, self.threaded)
        self.query_one("#inbox-status", Static).update(line)

    # -- moving around and searching -------------------------------------------------------

    def action_move(self, step: int) -> None:
        table = self.query_one("#messages", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + step)))

    def action_top(self) -> None:
        """``gg``: the first message (one ``g`` waits for the second)."""
        now = time.monotonic()
        if now - self._g_at < 1.0:
            self.action_top_now()
            self._g_at = 0.0
        else:
            self._g_at = now

    def action_top_now(self) -> None:
        self.query_one("#messages", DataTable).move_cursor(row=0)

    def action_bottom(self) -> None:
        table = self.query_one("#messages", DataTable)
        table.move_cursor(row=max(0, table.row_count - 1))

    def action_search(self) -> None:
        self.app.push_screen(
            LinePrompt("search From, To, Cc, Subject and text", self.query_text), self._search_for
        )

    def _search_for(self, text: str | None) -> None:
        if not text:
            return
        self.query_text = text
        self.query_one("#inbox-status", Static).update(f"searching {self.folder} for {text!r}…")
        self.search(self.folder, text, [s.key for s in self.summaries.values()])

    @work(thread=True, exclusive=True, exit_on_error=False, group="search")
    def search(self, folder: str, text: str, keys: list[str]) -> None:
        found = [row_key(key) for key in matching(self.api.folder_path(folder), keys, text)]
        self.app.call_from_thread(self._found, folder, text, found)

    def _found(self, folder: str, text: str, rows: list[str]) -> None:
        if folder != self.folder:
            return
        self.matches = [row for row in rows if row in self.summaries]
        folded = {self.thread_of.get(row, row) for row in self.matches} & self.collapsed
        if folded:  # a match inside a folded thread unfolds it
            self.collapsed -= folded
            self._show_lines(self._selected(), 0)
        status = self.query_one("#inbox-status", Static)
        if not self.matches:
            status.update(f"{text!r}: not found in {folder}")
            return
        status.update(f"{text!r}: {len(self.matches)} message(s); n next, N previous")
        self.action_next_match(0)

    def action_next_match(self, step: int) -> None:
        if not self.matches:
            self.notify("no search yet (/)", severity="warning")
            return
        table = self.query_one("#messages", DataTable)
        rows = sorted(table.get_row_index(row) for row in self.matches if row in self.lines)
        if not rows:
            return
        here = table.cursor_row
        if step > 0:
            target = next((r for r in rows if r > here), rows[0])
        elif step < 0:
            target = next((r for r in reversed(rows) if r < here), rows[-1])
        else:
            target = rows[0]
        table.move_cursor(row=target)

    def _add_rows(
        self,
        folder: str,
        batch: list[MessageSummary],
        done: int,
        total: int,
        stamp: tuple[int, int] | None = None,
    ) -> None:
        if folder != self.folder:
            return
        if stamp is not None and self._stamp is None:
            self._stamp = stamp
        table = self.query_one("#messages", DataTable)
        fresh = [s for s in batch if row_key(s.key) not in self.summaries]
        self.summaries.update((row_key(s.key), s) for s in fresh)
        if done >= total and self.threaded:  # threads once every header is known
            self._show_lines(self._selected(), 0)
        else:  # a long folder shows its first rows at once, flat until it is read
            for s in fresh:
                row = row_key(s.key)
                self.lines[row] = Line(row, row, 0)
                table.add_row(*self._cells(s), key=row)
        self._status(folder, done, total)
        if done >= total and not self._counted:
            self._counted = True
            self.load_folders(keep=True)  # the unread counts, once the folder is read

    def action_reload(self) -> None:
        if self.folder:
            self.open_folder(self.folder)

    def action_open(self) -> None:
        key = self._selected()
        if key is not None:
            self._open(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key is not None and key in self.summaries:
            self._open(key)

    def _open(self, key: str) -> None:
        summary = self.summaries[key]
        if summary.unread:  # read now, as every mail client marks it
            summary = self._change(key, add="S", undoable=False) or summary
        from tui.screens.message import MessageScreen  # imported on first use (start-up)

        self.app.push_screen(MessageScreen(summary))

    # -- what a mail client does to a message ----------------------------------------------

    def action_toggle_read(self) -> None:
        key = self._selected()
        if key is not None:
            unread = self.summaries[key].unread
            self._change(key, add="S" if unread else "", remove="" if unread else "S")

    def action_toggle_flag(self) -> None:
        key = self._selected()
        if key is not None:
            flagged = "F" in self.summaries[key].flags
            self._change(key, add="" if flagged else "F", remove="F" if flagged else "")

    def _change(
        self, key: str, *, add: str = "", remove: str = "", undoable: bool = True
    ) -> MessageSummary | None:
        """Set flags on the message (a rename in its folder) and redraw its row."""
        try:
            new_key = self.api.set_flags(
                self.folder, self.summaries[key].key, add=add, remove=remove
            )
        except (OSError, OnionMailError) as exc:
            self.notify(f"could not change the message: {exc}", severity="error")
            return None
        old = self.summaries[key]
        added = "".join(f for f in add if f not in old.flags)
        removed = "".join(f for f in remove if f in old.flags)
        summary = replace(old, key=new_key)
        self.summaries[key] = summary  # rows are keyed by the name without flags
        self._redraw(key, summary)
        if undoable:
            self.undo = Undo(self.folder, new_key, flags_added=added, flags_removed=removed)
        self.load_folders(keep=True)
        return summary

    def _redraw(self, row: str, summary: MessageSummary) -> None:
        table = self.query_one("#messages", DataTable)
        line = self.lines.get(row)
        if line is not None and line.hidden:  # a folded thread: its boldness is the thread's
            self._show_lines(row, table.cursor_row)
            return
        cells = dict(zip(COLUMNS, row_cells(summary, self.petnames, line), strict=True))
        for column in ("date", "from", "subject"):
            if column in table.columns:
                table.update_cell(row, column, cells[column])

    def action_trash(self) -> None:
        if self.folder.endswith("/" + TRASH):
            self.notify("already in the trash (neomutt or another client can empty it)")
            return
        self._move(self._folder_named(TRASH), "moved to the trash")

    def action_archive(self) -> None:
        self._move(self._folder_named(ARCHIVE), "archived")

    def _folder_named(self, sub: str) -> str:
        return f"{self.folder.partition('/')[0]}/{sub}"

    def _move(self, to: str, said: str) -> None:
        key = self._selected()
        if key is None or to == self.folder:
            return
        try:
            moved = self.api.move(self.folder, self.summaries[key].key, to)
        except (OSError, OnionMailError) as exc:
            self.notify(f"could not move the message: {exc}", severity="error")
            return
        table = self.query_one("#messages", DataTable)
        index = table.get_row_index(key)
        del self.summaries[key]
        self._show_lines(None, index)
        self.undo = Undo(to, moved, back_to=self.folder)
        self.notify(f"{said} ({to}); ctrl+z undoes it")
        self.load_folders(keep=True)

    def action_undo(self) -> None:
        undo, self.undo = self.undo, None
        if undo is None:
            self.notify("nothing to undo")
            return
        try:
            if undo.back_to:
                self.api.move(undo.folder, undo.key, undo.back_to)
            else:
                self.api.set_flags(
                    undo.folder, undo.key, add=undo.flags_removed, remove=undo.flags_added
                )
        except (OSError, OnionMailError) as exc:
            self.notify(f"could not undo: {exc}", severity="error")
            return
        self.notify("undone")
        self.load_folders(keep=True)
        if undo.back_to == self.folder or undo.folder == self.folder:
            self.open_folder(self.folder)
