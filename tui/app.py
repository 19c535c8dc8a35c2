"""``onionmail-tui --dir BOXDIR``: the textual application and its entry point.

The app reads and changes the box only through :class:`onionmail.box.api.BoxApi`;
once it runs, every call that touches the disk or the network runs in a
worker thread, so the UI never blocks on I/O or tor (the inbox's first
screenful is read before it starts, and shown as text until the inbox is
built: :mod:`tui.screens.first_page`). Errors
reach the user here, as notifications that say what to do; nothing is
written to stdout or stderr while the app runs (logging goes to textual's
own log).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.logging import TextualHandler
from textual.notifications import SeverityLevel
from textual.screen import Screen

from onionmail.box.api import BoxApi
from onionmail.cli.passphrase import CREDENTIAL, passphrase_for
from onionmail.core.errors import OnionMailError
from onionmail.seal.identity import is_encrypted_identity
from tui.screens.first_page import FIRST_CHUNK, FirstLook, FirstPage, read_first_page

if TYPE_CHECKING:
    from tui.screens.compose import ComposeScreen

# The screens are imported when first opened: the first paint waits for none of them
# (:class:`FirstLook` shows the inbox's first page until the inbox is built).


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
        "first look": FirstLook,
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
    ) -> None:
        super().__init__()
        self.api = api
        self.first_page = first_page
        """The inbox's first screenful if it was read before the UI started (the inbox
        takes it, once)."""
        self.ask_passphrase = ask_passphrase
        """Open the passphrase dialog at start (an encrypted key, no passphrase given)."""
        self.password_file = password_file
        self.compose_screen: ComposeScreen | None = None
        self.sub_title = api.address

    @property
    def app_keys(self) -> set[str]:
        """The keys the app answers on every screen."""
        return {key for b in self.BINDINGS if isinstance(b, Binding) for key in b.key.split(",")}

    def on_mount(self) -> None:
        if self.current_mode == "inbox":
            self._unlock_if_asked()

    async def open_inbox(self) -> None:
        """From the first look to the inbox, once the first look is on the terminal; the keys
        typed meanwhile follow, as typed."""
        if self.current_mode != "first look":  # gone elsewhere already (c, u, s, l)
            return
        typed = self.screen.typed if isinstance(self.screen, FirstLook) else []
        await self.switch_mode("inbox")
        await self.remove_mode("first look")
        for key in typed:
            self.post_message(events.Key(key.key, key.character))
        self._unlock_if_asked()

    def _unlock_if_asked(self) -> None:
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


class QuickStartApp(OnionMailApp):
    """The app as ``onionmail-tui`` starts it when the first page could be read: on
    :class:`FirstLook`, which gives way to the inbox once it is painted."""

    DEFAULT_MODE = "first look"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onionmail-tui",
        description="The terminal UI of an onionmail box (inbox, compose with leak cards, "
        "queue, status, ledger). It works on BOXDIR through the box's library API; sending "
        "needs 'onionmail run --dir BOXDIR'.",
    )
    parser.add_argument("--dir", required=True, type=Path, metavar="BOXDIR")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="passphrase of an encrypted identity key (needed for the ledger)",
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="submission password (default BOXDIR/submission-password.<name>)",
    )
    return parser


def _ask_in_the_ui(key: Path) -> bool:
    """An encrypted key that no systemd credential opens: the passphrase dialog asks."""
    if not is_encrypted_identity(key):
        return False
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    return not (credentials and (Path(credentials) / CREDENTIAL).is_file())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        key = Path(args.dir) / "keys" / "identity.key"
        found = args.passphrase_file is not None or key.exists()
        ask = found and args.passphrase_file is None and _ask_in_the_ui(key)
        passphrase = passphrase_for(key, args.passphrase_file) if found and not ask else None
        api = BoxApi(args.dir, passphrase=passphrase)
    except OnionMailError as exc:  # before the UI starts: the terminal is still ours
        print(f"onionmail-tui: error: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING, handlers=[TextualHandler()], force=True)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    first = read_first_page(api, FIRST_CHUNK)
    kind = OnionMailApp if first is None else QuickStartApp
    kind(api, password_file=args.password_file, ask_passphrase=ask, first_page=first).run()
    return 0
