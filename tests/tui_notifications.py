"""What a TUI app told its user, recorded through textual's public ``App.notify``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.app import App


@dataclass(frozen=True)
class Shown:
    title: str
    message: str


def record_notifications(app: App[Any]) -> list[Shown]:
    """Every notification ``app`` shows from now on, in order (a live list).

    The app and its widgets all notify through ``app.notify``; the recorder
    wraps it on the instance and passes each call on unchanged.
    """
    shown: list[Shown] = []
    original = app.notify

    def notify(message: str, *, title: str = "", **options: Any) -> None:
        shown.append(Shown(title, message))
        original(message, title=title, **options)

    setattr(app, "notify", notify)  # noqa: B010 (an instance attribute over the method)
    return shown
