"""``onionmail-tui --dir BOXDIR``: the entry point, which shows the inbox before loading the UI.

Loading the UI (textual, the app and the inbox's screen) takes longer than
reading the inbox's newest screenful, so the program opens the box, reads
that page (:mod:`tui.first_page`), writes it to the terminal's alternate
screen, and only then loads the UI (:mod:`tui.app`), whose first screen is
the inbox built with the same page. Keys typed meanwhile wait in the
terminal, not echoed, and reach the inbox as typed.

Without a terminal on both stdin and stdout, or with ``TERM=dumb``,
nothing is written before the UI starts; with ``NO_COLOR`` set, the page
is drawn without colours or styles.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from onionmail.box.api import BoxApi
from onionmail.cli.passphrase import CREDENTIAL, passphrase_for
from onionmail.core.errors import OnionMailError
from onionmail.core.files import write_all
from onionmail.seal.identity import is_encrypted_identity
from tui.first_page import FIRST_CHUNK, FirstPage, ansi, read_first_page, screen_lines

ENTER = "\x1b[?1049h\x1b[?25l\x1b[?7l\x1b[H\x1b[2J"
"""The alternate screen, the cursor hidden, no line wrap, cleared: as the UI will have it."""
LEAVE = "\x1b[?7h\x1b[?25h\x1b[?1049l"
"""Back to the shell's screen, when the UI never took the terminal over."""


class Handover:
    """The first page on the terminal, and whether the UI has taken the terminal over (it
    then leaves the alternate screen itself)."""

    def __init__(self, painted: bool) -> None:
        self.painted = painted
        self.taken = False


@contextmanager
def page_on_terminal(first: FirstPage | None, title: str) -> Iterator[Handover]:
    """Draw ``first`` on the terminal and keep typed keys for the UI, until the block ends;
    then give the terminal back its modes (and its screen if the UI never started)."""
    if first is None or os.environ.get("TERM", "dumb") == "dumb":
        yield Handover(False)
        return
    if not (os.isatty(0) and os.isatty(1)):  # stdin and stdout, whatever sys holds
        yield Handover(False)
        return
    import shutil
    import termios

    fd = 0
    try:
        saved = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
    except termios.error:  # a terminal without modes: the UI alone deals with it
        yield Handover(False)
        return
    # as the UI will read them: no echo, no line editing, ^Q and ^S and Enter as typed
    quiet[0] &= ~(termios.IXON | termios.IXOFF | termios.ICRNL | termios.INLCR | termios.IGNCR)
    quiet[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    handover = Handover(True)
    try:
        width, height = shutil.get_terminal_size()  # as textual measures it
        lines = screen_lines(first, title, width, height)
        plain = bool(os.environ.get("NO_COLOR"))  # as textual honours it
        drawn = "".join(
            f"\x1b[{n};1H{line.plain if plain else ansi(line)}" for n, line in enumerate(lines, 1)
        )
        sys.stdout.flush()
        write_all(1, (ENTER + drawn).encode())
        yield handover
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)  # the UI restores ours on its way out
        if not handover.taken:
            write_all(1, LEAVE.encode())


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
    first = read_first_page(api, FIRST_CHUNK)
    with page_on_terminal(first, f"onionmail — {api.address}") as handover:
        from tui.app import run_app  # the UI, loaded while the page is on the terminal

        run_app(
            api,
            password_file=args.password_file,
            ask_passphrase=ask,
            first_page=first,
            handover=handover,
        )
    return 0
