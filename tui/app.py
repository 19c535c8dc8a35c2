"""The textual application of ``onionmail-tui`` (started by :mod:`tui.start`).

The app reads and changes the box only through :class:`onionmail.box.api.BoxApi`;
once it runs, every call that touches the disk or the network runs in a
worker thread, so the UI never blocks on I/O or tor (the inbox's first
screenful is read before it starts, drawn on the terminal while it loads,
and is in the inbox's first frame: :mod:`tui.first_page`). Errors
reach the user here, as notifications that say what to do; nothing is
written to stdout or stderr while the app runs (logging goes to textual's
own log).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding
from textual.logging import TextualHandler
from textual.notifications import SeverityLevel
from textual.screen import Screen

from onionmail.box.api import BoxApi
from onionmail.core.errors import OnionMailError
from tui.first_page import FirstPage

if TYPE_CHECKING:
    from textual.driver import Driver

    from tui.screens.compose import ComposeScreen
    from tui.start import Handover

ALTERNATE_SCREEN = "\x1b[?1049h"

# The screens are imported when first opened: the UI's start waits for none but the inbox.


def _inbox() -> Screen[None]:
    from tui.screens.inbox import InboxScreen

    return InboxScreen()


def _compose() -> Screen[None]:
    from tui.screens.compose import ComposeScreen

    return ComposeScreen()


def _queue() -> Screen[None]:
    from tui.screens.queue import QueueScreen

    return QueueScreen()


def _status() -> Screen[None]:
    from tui.screens.status import StatusScreen

    return StatusScreen()


def _ledger() -> Screen[None]:
    from tui.screens.ledger import LedgerScreen

    return LedgerScreen()


class OnionMailApp(App[None]):
    """The TUI of one box."""

    TITLE = "onionmail"
    MODES = {
        "inbox": _inbox,
        "compose": _compose,
        "queue": _queue,
        "status": _status,
        "ledger": _ledger,
    }
    DEFAULT_MODE = "inbox"
    BINDINGS = [
        Binding("i", "switch_mode('inbox')", "Inbox"),
        Binding("c", "switch_mode('compose')", "Compose"),
        Binding("u", "switch_mode('queue')", "Queue"),
        Binding("s", "switch_mode('status')", "Status"),
        Binding("l", "switch_mode('ledger')", "Ledger"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        api: BoxApi,
        *,
        password_file: Path | None = None,
        ask_passphrase: bool = False,
        first_page: FirstPage | None = None,
        driver_class: type[Driver] | None = None,
    ) -> None:
        super().__init__(driver_class=driver_class)
        self.api = api
        self.first_page = first_page
        """The inbox's first screenful if it was read before the UI started (the inbox
        takes it, once)."""
        self.ask_passphrase = ask_passphrase
        """Open the passphrase dialog at start (an encrypted key, no passphrase given)."""
        self.password_file = password_file
        self.compose_screen: ComposeScreen | None = None
        self.sub_title = api.address

    def on_mount(self) -> None:
        if self.ask_passphrase:
            from tui.screens.unlock import UnlockPrompt

            self.push_screen(UnlockPrompt(self.api), self._unlocked)

    def _unlocked(self, opened: BoxApi | None) -> None:
        if opened is not None:
            self.api = opened  # every screen reads the API from the app
            self.notify("the identity key is open: the ledger can be read")

    async def action_quit(self) -> None:
        """Quit; if compose holds an unsent message, ask first (Drafts, discard, stay)."""
        compose = self.compose_screen  # registered when its mode was first opened
        if compose is None or not compose.has_content():
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "save":
                compose.action_save_draft()
                if not compose.has_content():
                    self.exit()
            elif choice == "discard":
                self.exit()

        from tui.screens.unsent import UnsentPrompt

        self.push_screen(UnsentPrompt(), chosen)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification, from every screen, as plain text (never markup: it may quote
        an address, a file name or a server's words)."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def show_error(self, exc: BaseException, doing: str) -> None:
        """The one place errors meet the user: a notification that says what to do."""
        if isinstance(exc, OnionMailError):
            text = str(exc)
        elif isinstance(exc, OSError):
            text = f"{exc.strerror or exc} ({exc.filename or 'file'}); check the box directory"
        else:
            text = f"unexpected {type(exc).__name__}: {exc}; please report it"
        self.notify(text, title=f"could not {doing}", severity="error", timeout=12)


def run_app(
    api: BoxApi,
    *,
    password_file: Path | None,
    ask_passphrase: bool,
    first_page: FirstPage | None,
    handover: Handover,
) -> None:
    """Run the UI (:func:`tui.start.main` has opened the box and maybe drawn its first page)."""
    logging.basicConfig(level=logging.WARNING, handlers=[TextualHandler()], force=True)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    app = OnionMailApp(
        api,
        password_file=password_file,
        ask_passphrase=ask_passphrase,
        first_page=first_page,
        driver_class=_keeping_the_page(handover) if handover.painted else None,
    )
    app.run()


def _keeping_the_page(handover: Handover) -> type[Driver]:
    """The terminal driver, entering the alternate screen the first page is already on
    without a second DECSET 1049 (some terminals clear the screen on it, a blank flash
    before the first frame); it tells ``handover`` once the UI has the terminal."""
    from textual.drivers.linux_driver import LinuxDriver

    class KeepingThePage(LinuxDriver):
        def write(self, data: str) -> None:
            if not handover.taken and ALTERNATE_SCREEN in data:
                handover.taken = True
                data = data.replace(ALTERNATE_SCREEN, "", 1)
            super().write(data)

    return KeepingThePage
