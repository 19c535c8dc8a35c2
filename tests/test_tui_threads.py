"""Threads in the TUI's inbox, driven through textual's pilot on the sample box with a
three-message conversation (Carol's "Meeting notes", Bob's reply, Carol's answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from tests.test_tui import SIZE, app_for, settled, wait_rows
from tui.sample_box import BOB_ADDRESS, CAROL, _message, add_sample_thread, create_sample_box
from tui.sample_box import write_message as write_sample

SUBJECT = 5
"""The subject column of the wide inbox."""
THREADED = [
    "Meeting notes",
    "└ Re: Meeting notes",
    "  └ Re: Meeting notes",
    "Keys",
    "Newsletter",
    "Hello Alice",
    "Forged result",
    "The report",
]


@pytest.fixture
def box(tmp_path: Path) -> Path:
    box_dir = create_sample_box(tmp_path / "alice")
    add_sample_thread(box_dir)
    return box_dir


def subjects(table: DataTable[Any]) -> list[str]:
    return [str(table.get_row_at(i)[SUBJECT]) for i in range(table.row_count)]


async def until(pilot: Pilot[Any], table: DataTable[Any], wanted: list[str]) -> None:
    for _ in range(200):
        if subjects(table) == wanted:
            return
        await pilot.pause(0.05)
    assert subjects(table) == wanted


async def test_a_conversation_reads_as_a_thread_and_folds(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 8)
        await until(pilot, table, THREADED)
        await pilot.press("z")  # fold the thread under the cursor
        await settled(pilot)
        assert subjects(table)[:2] == ["Meeting notes  (+2)", "Keys"]
        assert table.get_row_at(0)[4].style == "bold"  # a message in it is unread
        assert table.cursor_row == 0
        await pilot.press("z")
        await settled(pilot)
        assert subjects(table) == THREADED
        await pilot.press("Z")  # fold every thread (there is one)
        await settled(pilot)
        assert table.row_count == 6
        await pilot.press("T")  # flat: the folder newest first
        await settled(pilot)
        assert subjects(table)[:3] == ["Re: Meeting notes", "Re: Meeting notes", "Keys"]
        assert subjects(table)[-1] == "Meeting notes"
        await pilot.press("T")
        await settled(pilot)
        assert subjects(table)[:2] == ["Meeting notes  (+2)", "Keys"]  # still folded


async def test_search_unfolds_the_thread_that_holds_a_match(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await until(pilot, table, THREADED)
        await pilot.press("Z")
        await settled(pilot)
        await pilot.press("slash", *"Second reply", "enter")
        await settled(pilot)
        assert subjects(table) == THREADED
        assert table.cursor_row == 2  # Carol's answer, the only message with the words


async def test_reading_a_folded_thread_and_deleting_in_it(box: Path) -> None:
    """Opening the folded line reads its first message; the line stays bold while an
    answer is unread. Deleting the first message leaves the answers as a thread."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await until(pilot, table, THREADED)
        await pilot.press("z", "enter")
        await settled(pilot)
        await pilot.press("escape")
        await settled(pilot)
        assert subjects(table)[0] == "Meeting notes  (+2)"
        assert table.get_row_at(0)[4].style == "bold"
        await pilot.press("z", "d")  # unfold, delete "Meeting notes"
        await settled(pilot)
        assert subjects(table)[:3] == ["Re: Meeting notes", "└ Re: Meeting notes", "Keys"]


async def test_new_mail_in_a_thread_lands_under_it_and_keeps_the_cursor(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await until(pilot, table, THREADED)
        await pilot.press("j", "j", "j")  # on "Keys"
        await settled(pilot)
        first = f"<sample-1@{CAROL.onion_address}>"
        import email
        import email.policy

        msg = email.message_from_bytes(
            _message(BOB_ADDRESS, "Re: Meeting notes", 9, "", "And the room?\n"),
            policy=email.policy.default,
        )
        msg["In-Reply-To"] = first
        msg["References"] = first
        write_sample(box / "mail" / "alice", 9, bytes(msg))
        wanted = THREADED[:3] + ["└ Re: Meeting notes"] + THREADED[3:]
        await until(pilot, table, wanted)  # found by the folder watch, not a reload
        assert subjects(table)[table.cursor_row] == "Keys"
