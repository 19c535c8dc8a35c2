"""What every screen shares: the header, the footer, and access to the box API."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.screen import Screen

from onionmail.box.api import BoxApi

if TYPE_CHECKING:
    from tui.app import OnionMailApp


class BoxScreen(Screen[None]):
    @property
    def box_app(self) -> OnionMailApp:
        return cast("OnionMailApp", self.app)

    @property
    def api(self) -> BoxApi:
        return self.box_app.api

    def fail(self, exc: BaseException, doing: str) -> None:
        """From a worker thread: show ``exc`` in the UI."""
        self.app.call_from_thread(self.box_app.show_error, exc, doing)
