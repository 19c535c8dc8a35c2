"""What every screen shares: the header, the footer, and access to the box API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from textual.app import ScreenStackError
from textual.screen import Screen

from onionmail.box.api import BoxApi

if TYPE_CHECKING:
    from tui.app import OnionMailApp

T = TypeVar("T")


def typed_dir(path: Path) -> str:
    """``path`` as the user would type it in a hint: relative to the working directory
    when it is below it, else from ``~`` when below the home directory, else absolute."""
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


class BoxScreen(Screen[None]):
    @property
    def box_app(self) -> OnionMailApp:
        return cast("OnionMailApp", self.app)

    @property
    def api(self) -> BoxApi:
        return self.box_app.api

    @property
    def shown(self) -> bool:
        """On the terminal: the screen in front, or the one under a dialog (textual's
        ``is_current`` also holds for a screen under an opaque one)."""
        try:
            top = self.app.screen
        except ScreenStackError:  # starting or quitting
            return False
        return top is self or (top.is_modal and self.is_current)

    def fail(self, exc: BaseException, doing: str) -> None:
        """From a worker thread: show ``exc`` in the UI."""
        self.app.call_from_thread(self.box_app.show_error, exc, doing)

    def fetch(self, doing: str, read: Callable[[], T], show: Callable[[T], object]) -> None:
        """From a worker thread: ``show(read())`` on the UI thread, or the error shown
        (``doing`` says what failed: "read the queue")."""
        try:
            result = read()
        except Exception as exc:  # any failure is shown to the user, never swallowed
            self.fail(exc, doing)
            return
        self.app.call_from_thread(show, result)
