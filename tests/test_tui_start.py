"""The TUI's start: the inbox's first page read before the UI, drawn in its first frame.

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
from textual.widgets import DataTable

from onionmail.box.api import BoxApi
from tests.test_tui import wait_rows
from tui.app import OnionMailApp
from tui.sample_box import _message, create_sample_box, write_message
from tui.screens.first_page import read_first_page
from tui.screens.inbox import FIRST_CHUNK

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


async def test_the_first_frame_has_the_first_page_and_the_rest_follows(big_box: Path) -> None:
    api = BoxApi(big_box)
    app = OnionMailApp(api, first_page=read_first_page(api, FIRST_CHUNK))
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        # mounted with the page: no worker has read anything yet
        assert table.row_count >= FIRST_CHUNK and app.first_page is None
        assert str(table.get_row_at(0)[5]) == f"Bulk {EXTRA - 1:03d}"
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
