"""The UI's first screen: the inbox's first page (:mod:`tui.first_page`) as text.

Building the inbox itself (its table, folder list and footer, and the
modules behind them) takes longer than drawing text, so ``onionmail-tui``
starts on :class:`FirstLook`: the same rows in the same columns as the
page already on the terminal, which gives way to the inbox as soon as it is
drawn. Keys typed meanwhile are handed to the inbox. The rest of the folder
is read in a worker as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen

from tui.first_page import keys_line, page_text
from tui.widgets.message_rows import folder_list_width, status_line
from tui.widgets.plain import PlainStatic

if TYPE_CHECKING:
    from tui.app import OnionMailApp


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
        yield PlainStatic(keys_line(), id="first-keys")

    def on_mount(self) -> None:
        # in the app's own turn: this screen is removed on the way
        self.call_after_refresh(self.app.call_later, self.box_app.open_inbox)

    def on_key(self, event: events.Key) -> None:
        """Keep what the inbox would have answered; the app's own keys work at once."""
        if event.key not in self.box_app.app_keys:
            self.typed.append(events.Key(event.key, event.character))
            event.stop()
