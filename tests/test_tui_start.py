"""The TUI's start: the inbox's first page read before the UI, drawn in its first frame
(the first look), then the inbox with the same page.

The program itself is started in a pseudo-terminal, as a user starts it; the
rest drives the app with textual's pilot.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from onionmail.box.api import BoxApi
from tests.test_tui import wait_rows
from tui.app import OnionMailApp, QuickStartApp
from tui.sample_box import _message, add_sample_thread, create_sample_box, write_message
from tui.screens.first_page import FIRST_CHUNK, FirstLook, read_first_page

EXTRA = 150
"""Messages added to the sample box's six: more than one page."""


@pytest.fixture
def big_box(tmp_path: Path) -> Path:
    box = create_sample_box(tmp_path / "alice")
    for n in range(EXTRA):
        data = _message("zed@example.org", f"Bulk {n:03d}", 100 + n, "", "text")
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


class HeldApp(QuickStartApp):
    """Stays on the first look until the test lets it go on to the inbox."""

    async def open_inbox(self) -> None:
        pass

    async def go_on(self) -> None:
        await QuickStartApp.open_inbox(self)


async def test_the_first_look_shows_the_page_and_hands_typed_keys_on(big_box: Path) -> None:
    api = BoxApi(big_box)
    app = HeldApp(api, first_page=read_first_page(api, FIRST_CHUNK))
    async with app.run_test(size=(120, 40)) as pilot:
        look = app.screen
        assert isinstance(look, FirstLook) and app.current_mode == "first look"
        rows = str(look.query_one("#first-rows", Static).render()).splitlines()
        assert rows[0].split() == ["enc", "sender", "date", "from", "subject"]
        assert f"Bulk {EXTRA - 1:03d}" in rows[1] and f"Bulk {EXTRA - 2:03d}" in rows[2]
        status = str(look.query_one("#first-status", Static).render())
        assert f"reading headers {FIRST_CHUNK}/{EXTRA + 6}" in status
        await pilot.press("j", "j")  # before the inbox is there
        assert [key.key for key in look.typed] == ["j", "j"]
        await app.go_on()
        await pilot.pause()
        assert app.current_mode == "inbox" and not look.is_attached  # the first look is gone
        table = app.screen.query_one("#messages", DataTable)
        # mounted with the page: no worker had read anything yet
        assert app.first_page is None and table.row_count >= FIRST_CHUNK
        assert str(table.get_row_at(0)[5]) == f"Bulk {EXTRA - 1:03d}"
        await pilot.pause()
        assert table.cursor_row == 2, "the keys typed on the first look moved the cursor"
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


def test_the_program_draws_the_newest_subject_and_quits_on_ctrl_q(big_box: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the program
        os.environ.update({"TERM": "xterm-256color", "LINES": "40", "COLUMNS": "120"})
        os.execv(sys.executable, [sys.executable, "-m", "tui", "--dir", str(big_box)])
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while f"Bulk {EXTRA - 1:03d}".encode() not in seen:
            assert time.monotonic() < deadline, seen[-2000:]
            if select.select([fd], [], [], 0.1)[0]:
                seen += os.read(fd, 1 << 16)
        os.write(fd, b"\x11")  # ctrl+q: nothing unsent, so it quits
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                pid = 0
                break
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    os.read(fd, 1 << 16)
                except OSError:
                    pass
        assert pid == 0, "still running 30 s after ctrl+q"
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


async def test_the_first_look_at_80_columns_has_the_inbox_s_narrow_columns(big_box: Path) -> None:
    api = BoxApi(big_box)
    app = HeldApp(api, first_page=read_first_page(api, FIRST_CHUNK))
    async with app.run_test(size=(80, 24)):
        rows = str(app.screen.query_one("#first-rows", Static).render()).splitlines()
        assert rows[0].split() == ["from", "subject"]
        assert f"Bulk {EXTRA - 1:03d}" in rows[1] and len(rows) <= 24


async def test_a_whole_folder_s_first_look_is_threaded_as_the_inbox(tmp_path: Path) -> None:
    box = create_sample_box(tmp_path / "alice")
    add_sample_thread(box)
    api = BoxApi(box)
    app = HeldApp(api, first_page=read_first_page(api, FIRST_CHUNK))
    async with app.run_test(size=(160, 45)) as pilot:
        rows = str(app.screen.query_one("#first-rows", Static).render()).splitlines()[1:]
        assert sum("└ Re: Meeting notes" in row for row in rows) == 2
        await app.go_on()
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
    app = QuickStartApp(api, ask_passphrase=True, first_page=first)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            if isinstance(app.screen, UnlockPrompt):
                break
            await pilot.pause(0.05)
        # on the inbox's stack: answered (or dismissed), it leaves the inbox
        assert isinstance(app.screen, UnlockPrompt) and app.current_mode == "inbox"
