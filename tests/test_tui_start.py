"""The TUI's start: the inbox's first page read and drawn on the terminal before the UI is
loaded, then the inbox with the same page in its first frame.

The program itself is started in a pseudo-terminal, as a user starts it; the
rest drives the app with textual's pilot.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from textual.widgets import DataTable, Static

from onionmail.box.api import BoxApi
from tests.test_tui import wait_rows
from tui.app import OnionMailApp
from tui.first_page import APP_KEYS, FIRST_CHUNK, page_text, read_first_page, screen_lines
from tui.sample_box import _message, add_sample_thread, create_sample_box, write_message
from tui.start import page_on_terminal
from tui.widgets.key_line import KeyLine

EXTRA = 150
"""Messages added to the sample box's six: more than one page."""


@pytest.fixture
def big_box(tmp_path: Path) -> Path:
    box = create_sample_box(tmp_path / "alice")
    for n in range(EXTRA):
        data = _message("zed@example.org", f"Bulk {n:03d}", 100 + n, "", f"body {n:03d}")
        write_message(box / "mail" / "alice", 100 + n, data)
    return box


def test_the_first_page_is_the_folder_s_newest_screenful(big_box: Path) -> None:
    first = read_first_page(BoxApi(big_box), FIRST_CHUNK)
    assert first is not None
    assert first.folder == "alice" and "alice/.Sent" not in first.folders[:1]
    assert len(first.keys) == EXTRA + 6
    assert [s.subject for s in first.summaries[:2]] == [f"Bulk {EXTRA - 1:03d}", "Bulk 148"]
    assert [s.key for s in first.summaries] == first.keys[:FIRST_CHUNK]


def test_a_first_page_that_cannot_be_read_is_left_to_the_inbox(big_box: Path) -> None:
    inbox = big_box / "mail" / "alice"
    (inbox / "new").rename(big_box / "elsewhere")
    (inbox / "new").write_text("not a directory")
    assert read_first_page(BoxApi(big_box), FIRST_CHUNK) is None


async def test_the_inbox_s_first_frame_has_the_page(big_box: Path) -> None:
    api = BoxApi(big_box)
    app = OnionMailApp(api, first_page=read_first_page(api, FIRST_CHUNK))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        # mounted with the page: no worker had read anything yet
        assert app.first_page is None and table.row_count >= FIRST_CHUNK
        assert str(table.get_row_at(0)[5]) == f"Bulk {EXTRA - 1:03d}"
        status = str(app.screen.query_one("#inbox-status", Static).render())
        assert f"reading headers {FIRST_CHUNK}/{EXTRA + 6}" in status
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await wait_rows(pilot, table, EXTRA + 6)
        # the folder is watched once the page is drawn: new mail shows up by itself
        data = _message("zed@example.org", "Arrived just now", 900, "", "hi")
        write_message(big_box / "mail" / "alice", 900, data)
        await wait_rows(pilot, table, EXTRA + 7)
        assert str(table.get_row_at(0)[5]) == "Arrived just now"


async def test_at_120_columns_the_sender_gives_way_to_the_subject(big_box: Path) -> None:
    for width, sender, subject in ((120, 16, 28), (160, 30, 54)):
        app = OnionMailApp(BoxApi(big_box))
        async with app.run_test(size=(width, 40)) as pilot:
            table = app.screen.query_one("#messages", DataTable)
            await wait_rows(pilot, table, 1)
            widths = {str(key.value): column.width for key, column in table.columns.items()}
            assert widths["from"] == sender and widths["subject"] >= subject
            # the table fits: no subject is cut by the screen's edge
            assert table.region.right <= width


def run_in_a_terminal(
    box: Path, marker: bytes, key: bytes, until: bytes = b"", env: dict[str, str] | None = None
) -> tuple[bytes, bytes, list[Any]]:
    """``python -m tui`` in a pseudo-terminal of 120x40: ``key`` typed as soon as ``marker``
    is on the terminal. What it wrote until then, what it wrote in all, and the terminal's
    modes once it exited (status 0, within 30 s), or once ``until`` was on the terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        os.environ.update({"TERM": "xterm-256color", "LINES": "40", "COLUMNS": "120"})
        os.environ.update(env or {})
        os.execv(sys.executable, [sys.executable, "-m", "tui", "--dir", str(box)])
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while marker not in seen:
            assert time.monotonic() < deadline, seen[-2000:]
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 1 << 16)
        at_marker = seen
        os.write(fd, key)
        while time.monotonic() < deadline and not (until and until in seen):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                pid = 0
                break
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(fd, 1 << 16)
                except OSError:
                    pass
        assert (until in seen) if until else pid == 0, seen[-2000:]
        return at_marker, seen, termios.tcgetattr(fd)
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


MOUSE_ON = b"\x1b[?1000h"
"""The UI's first words to the terminal (textual's driver turns mouse reports on)."""


def test_the_page_is_drawn_before_the_ui_loads_and_a_key_typed_then_counts(
    big_box: Path,
) -> None:
    newest = f"Bulk {EXTRA - 1:03d}".encode()
    before, seen, modes = run_in_a_terminal(big_box, newest, b"\x11")  # ctrl+q at once
    # the newest subject came before anything of the UI: drawn by tui.start
    assert MOUSE_ON not in before and before.startswith(b"\x1b[?1049h")
    # the ctrl+q typed on that page, before the UI was loaded, quit the UI
    assert MOUSE_ON in seen and seen.count(b"\x1b[?1049h") == 1, "one alternate screen"
    after = seen.rsplit(b"\x1b[?1049l", 1)[1]  # back on the shell's screen: no error printed
    assert re.sub(rb"\x1b\[[?<0-9;]*[a-zA-Z]", b"", after).strip() == b"", after
    # and the terminal has its modes back: echo and line editing
    assert modes[3] & termios.ECHO and modes[3] & termios.ICANON


def test_keys_typed_on_the_drawn_page_are_answered_by_the_inbox(big_box: Path) -> None:
    """Down twice and Enter, typed before the UI is loaded: the third newest message opens
    (its body, which no row of the inbox holds, is on the terminal)."""
    newest = f"Bulk {EXTRA - 1:03d}".encode()
    before, _, _ = run_in_a_terminal(big_box, newest, b"jj\r", until=b"body 147")
    assert MOUSE_ON not in before  # typed before the UI was there


def test_a_subject_s_escape_sequences_never_reach_the_terminal(big_box: Path) -> None:
    hostile = (
        b"From: mallory@example.org\nTo: alice@example.org\nDate: Mon, 1 Jan 2035 00:00:00"
        b" +0000\nSubject: Hi \x1b]0;owned\x07\x1b[2J\xc2\x9b31m end\nMessage-ID: <h@x>"
        b"\n\nbody\n"
    )
    write_message(big_box / "mail" / "alice", 10_000, hostile)
    before, _, _ = run_in_a_terminal(big_box, b"Hi ", b"\x11")
    page = before.split(b"\x1b[2J", 1)[1]  # after the page's own clear
    assert b"end" in page and page.count(b"\x1b") == len(re.findall(rb"\x1b\[[0-9;]*[mH]", page))
    assert b"\x07" not in page and "\x9b".encode() not in page


def test_with_no_color_the_page_is_drawn_without_colours(big_box: Path) -> None:
    newest = f"Bulk {EXTRA - 1:03d}".encode()
    before, _, _ = run_in_a_terminal(big_box, newest, b"\x11", env={"NO_COLOR": "1"})
    page = before.split(b"\x1b[2J", 1)[1]
    assert newest in page and re.findall(rb"\x1b\[[0-9;]*m", page) == []


def test_without_a_terminal_nothing_is_drawn_before_the_ui(
    big_box: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    first = read_first_page(BoxApi(big_box), FIRST_CHUNK)
    with page_on_terminal(first, "onionmail") as handover:
        assert not handover.painted
    assert capfd.readouterr().out == ""


def test_the_drawn_page_is_the_first_look_s(big_box: Path) -> None:
    api = BoxApi(big_box)
    first = read_first_page(api, FIRST_CHUNK)
    assert first is not None
    lines = [line.plain for line in screen_lines(first, "onionmail — x", 120, 40)]
    assert len(lines) == 40 and all(len(line) <= 120 for line in lines)
    assert lines[0].strip() == "onionmail — x" and lines[2].startswith("│ alice ")
    rows = page_text(first, 120, 35).plain.splitlines()
    assert [line[22:].rstrip() for line in lines[1:36]] == [row.rstrip() for row in rows]
    assert "reading headers 60/156" in lines[-2] and lines[-1].startswith(" i Inbox  c Compose")


def test_the_drawn_key_line_is_the_app_s() -> None:
    shown = [b for b in OnionMailApp.BINDINGS if isinstance(b, Binding) and b.show]
    keys = [(b.key_display or b.key.replace("ctrl+", "^"), b.description) for b in shown]
    assert keys == list(APP_KEYS)


def test_the_drawn_page_at_80_columns_has_the_inbox_s_narrow_columns(big_box: Path) -> None:
    first = read_first_page(BoxApi(big_box), FIRST_CHUNK)
    assert first is not None
    lines = [line.plain for line in screen_lines(first, "onionmail", 80, 24)]
    assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
    assert lines[1][16:].split() == ["from", "subject"]
    assert f"Bulk {EXTRA - 1:03d}" in lines[2]


async def test_a_whole_folder_s_page_is_threaded_as_the_inbox(tmp_path: Path) -> None:
    box = create_sample_box(tmp_path / "alice")
    add_sample_thread(box)
    api = BoxApi(box)
    first = read_first_page(api, FIRST_CHUNK)
    assert first is not None
    rows = [line for line in page_text(first, 160, 40).plain.splitlines()[1:] if line.strip()]
    assert sum("└ Re: Meeting notes" in row for row in rows) == 2
    app = OnionMailApp(api, first_page=first)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, len(rows))
        subjects = [str(table.get_row_at(n)[5]) for n in range(table.row_count)]
        # the same rows in the same order, replies under what they answer
        assert len(subjects) == len(rows)
        assert all(subject in row for subject, row in zip(subjects, rows, strict=True))


async def test_an_encrypted_key_is_asked_for_once_the_inbox_is_there(tmp_path: Path) -> None:
    from onionmail.box.create import create_box
    from tui.screens.unlock import UnlockPrompt

    new = create_box(tmp_path / "alice", "alice", passphrase=b"correct horse battery")
    api = BoxApi(new.box_dir)
    first = read_first_page(api, FIRST_CHUNK)
    assert first is not None  # a new box's empty inbox is a page too
    app = OnionMailApp(api, ask_passphrase=True, first_page=first)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            if isinstance(app.screen, UnlockPrompt):
                break
            await pilot.pause(0.05)
        # on the inbox's stack: answered (or dismissed), it leaves the inbox
        assert isinstance(app.screen, UnlockPrompt) and app.current_mode == "inbox"


async def test_the_key_line_shows_the_screen_s_keys_and_a_click_presses_one(
    big_box: Path,
) -> None:
    app = OnionMailApp(BoxApi(big_box))
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 1)
        line = app.screen.query_one(KeyLine)
        text = line.render().plain
        assert text.startswith(" d Delete  a Archive ") and text.rstrip().endswith("^p palette")
        assert len(text) == 160 and " j " not in text  # the hidden ones are not shown
        await pilot.click(KeyLine, offset=(text.index(" c Compose") + 2, 0))
        await pilot.pause()
        assert app.current_mode == "compose"
        # the compose screen's own keys, on its own line
        keys = app.screen.query_one(KeyLine).render().plain
        assert " ^s Send " in keys and " ^w What-if " in keys and " d Delete " not in keys


def test_the_page_is_drawn_without_loading_textual() -> None:
    """What runs before the page is on the terminal imports no part of textual (the import
    is most of the UI's start)."""
    code = "import sys, tui.start; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'tui'" in loaded and "'textual'" not in loaded


async def test_the_header_reader_waits_while_a_message_is_open(
    big_box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest message opened at once does not compete with the rest of the folder's
    headers for the interpreter: they are read once the inbox is shown again."""
    from tui.screens import inbox as inbox_module
    from tui.screens.message import MessageScreen

    monkeypatch.setattr(inbox_module, "READ_ON_AFTER", 1.0)  # enter lands first, even slowly
    for n in range(EXTRA, EXTRA + 450):  # batches enough that one is left when it waits
        data = _message("zed@example.org", f"Bulk {n:03d}", 100 + n, "", f"body {n:03d}")
        write_message(big_box / "mail" / "alice", 100 + n, data)
    total = EXTRA + 450 + 6
    api = BoxApi(big_box)
    app = OnionMailApp(api, first_page=read_first_page(api, FIRST_CHUNK))
    async with app.run_test(size=(120, 40)) as pilot:
        inbox = app.screen
        table = inbox.query_one("#messages", DataTable)
        await pilot.press("enter")
        for _ in range(200):
            if isinstance(app.screen, MessageScreen):
                break
            await pilot.pause(0.05)
        assert isinstance(app.screen, MessageScreen)
        await pilot.pause(0.3)  # a batch read before the message was in front lands
        held = table.row_count
        await pilot.pause(1.5)  # the reader's wait has begun, and lasts
        assert table.row_count == held < total
        await pilot.press("escape")
        assert app.screen is inbox
        await wait_rows(pilot, table, total)
