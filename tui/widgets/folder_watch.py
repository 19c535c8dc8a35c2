"""A Maildir folder watched by the file system: a callback the moment its mail changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path


def watch_maildir(root: Path, done: Callable[[], bool], changed: Callable[[], None]) -> None:
    """Call ``changed`` whenever a file lands in, leaves or is renamed in ``root``'s ``new/``
    or ``cur/`` (inotify, through watchfiles), until ``done()`` (asked twice a second).
    Blocking: run it in a thread."""
    from watchfiles import watch  # here: a screen's first paint does not wait for it

    paths = [path for path in (root / "new", root / "cur") if path.is_dir()]
    if not paths:
        return
    stop = threading.Event()
    for changes in watch(
        *paths,
        stop_event=stop,
        debounce=50,
        step=25,
        rust_timeout=500,
        yield_on_timeout=True,
        raise_interrupt=False,
    ):
        if done():
            stop.set()
            return
        if changes:
            changed()


class FolderWatch:
    """One folder watched at a time, by a thread of its own (not a textual worker, which
    the app would wait for to finish)."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def start(self, root: Path, changed: Callable[[], None]) -> None:
        """Watch ``root`` (the folder watched before is let go)."""
        self.stop()
        stop = self._stop = threading.Event()

        def call() -> None:
            try:
                changed()
            except RuntimeError:  # the app is closing
                stop.set()

        threading.Thread(target=watch_maildir, args=(root, stop.is_set, call), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
