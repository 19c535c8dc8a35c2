"""The TUI driven through textual's pilot against a sample box directory (no tor needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Markdown, Static

from onionmail.box_api import BoxApi
from tui.app import OnionMailApp
from tui.sample_box import BOB_ADDRESS, CLEARNET_ADDRESS, QUEUE_ID, create_sample_box
from tui.screens.compose import ComposeScreen
from tui.screens.inbox import InboxScreen
from tui.screens.message import MessageScreen
from tui.screens.status import StatusScreen
from tui.screens.what_if import WhatIfScreen
from tui.widgets.leak_card import LeakCard
from tui.widgets.leak_matrix import LeakTable

SIZE = (120, 40)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    return create_sample_box(tmp_path / "alice")


def app_for(box_dir: Path) -> OnionMailApp:
    return OnionMailApp(BoxApi(box_dir))


def static_text(widget: Static) -> str:
    return str(widget.render())


async def wait_rows(pilot: Pilot[Any], table: DataTable[object], count: int) -> None:
    for _ in range(100):
        if table.row_count >= count:
            return
        await pilot.pause(0.02)
    raise AssertionError(f"only {table.row_count} row(s), wanted {count}")


async def test_inbox_lists_newest_first_with_arrival_marks(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 4)
        rows = [table.get_row_at(i) for i in range(4)]
        assert [str(r[5]) for r in rows] == [
            "Hello Alice",
            "Forged result",
            "The report",
            "Meeting notes",
        ]
        assert [str(r[0]) for r in rows] == ["S", "?", "S", "P"]
        assert [str(r[2]) for r in rows] == ["verified", "unverified", "verified", "unverified"]


async def test_open_a_message_lists_its_attachment_and_ledger(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 4)
        await pilot.press("down", "down", "enter")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, MessageScreen)
        assert screen.summary.subject == "The report"
        await pilot.pause(0.2)
        assert "report.pdf" in static_text(screen.query_one("#attachments", Static))
        assert "sealed onion" in static_text(screen.query_one("#headers", Static))
        assert screen.query(LeakTable), "the received message's ledger entry is shown"
        await pilot.press("escape")
        assert isinstance(app.screen, InboxScreen)


async def compose_to(pilot: Pilot[Any], app: OnionMailApp, recipient: str) -> ComposeScreen:
    await pilot.press("c")
    screen = app.screen
    assert isinstance(screen, ComposeScreen)
    compose: ComposeScreen = screen
    await pilot.press(*recipient)  # typed, key by key
    await pilot.pause(0.1)
    assert app.screen is screen, "letters typed into To must not switch screens"
    assert compose.query_one("#to", Input).value == recipient
    return compose


async def test_onion_and_clearnet_recipients_get_different_leak_cards(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, f"bob, {CLEARNET_ADDRESS}")
        cards = list(screen.query(LeakCard))
        assert [str(c.prediction.path) for c in cards] == ["onion-sealed", "gateway-clearnet"]
        assert cards[0].prediction.recipient == BOB_ADDRESS  # the petname resolved
        assert cards[0].prediction.refusal is None
        assert cards[1].prediction.refusal is not None
        observers = [set(c.query_one(LeakTable).observers) for c in cards]
        assert observers[0] != observers[1]
        # the reason of the focused cell shows under the table
        table = cards[0].query_one(LeakTable)
        table.focus()
        await pilot.press("right", "right")
        reason = static_text(cards[0].query_one(".reason", Static))
        assert reason.startswith("sender-network / the recipient's mail address: encrypted")


async def test_policy_refusal_is_shown_before_anything_leaves(tmp_path: Path) -> None:
    box_dir = create_sample_box(tmp_path / "alice", policy_rules=("never-clearnet",))
    app = app_for(box_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, CLEARNET_ADDRESS)
        card = screen.query_one(LeakCard)
        assert card.has_class("refused")
        assert "never-clearnet" in static_text(card.query_one(".refusal", Static))
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        texts = [n.message for n in app._notifications]
        assert any("policy rule never-clearnet" in t for t in texts), texts
    assert len(BoxApi(box_dir).queue()) == 1  # only the sample entry: nothing was queued


async def test_send_to_a_box_that_is_not_running_says_what_to_do(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await compose_to(pilot, app, "bob")
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        texts = [n.message for n in app._notifications]
        assert any("onionmail run --dir" in t for t in texts), texts


async def test_what_if_compares_the_paths(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await compose_to(pilot, app, "bob")
        await pilot.press("ctrl+w")
        screen = app.screen
        assert isinstance(screen, WhatIfScreen)
        labels = [o.label for o in screen.options]
        assert labels[:4] == [
            "onion sealed",
            "onion plain peer",
            "gateway",
            "gateway+OpenPGP",
        ]
        table = screen.query_one(DataTable)
        await pilot.press("down", "down", "right")
        assert table.cursor_coordinate.column == 1
        assert "tor-guard" in static_text(screen.query_one("#reason", Static))


async def test_queue_shows_destination_not_subject_and_cancels(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")
        table = app.screen.query_one("#queue", DataTable)
        await wait_rows(pilot, table, 1)
        row = table.get_row_at(0)
        assert row[0] == QUEUE_ID[:8] and row[1] == BOB_ADDRESS.split("@")[1]
        assert row[2] == "3" and "0xF2" in row[4]
        await pilot.press("x")
        for _ in range(50):
            if table.row_count == 0:
                break
            await pilot.pause(0.05)
        assert table.row_count == 0
    assert (box / "queue" / "cancelled" / f"{QUEUE_ID}.msg").exists()


async def test_ledger_and_status_screens(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        table = app.screen.query_one("#entries", DataTable)
        await wait_rows(pilot, table, 3)
        assert {str(table.get_row_at(i)[2]) for i in range(3)} == {"onion-sealed", "onion-plain"}
        await pilot.pause(0.1)
        assert app.screen.query(LeakTable)
        await pilot.press("s")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, StatusScreen) and screen.current is not None
        assert screen.current.state == "not running"
        assert screen.current.onion == BoxApi(box).onion
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert "keys" in app.screen.query_one(Markdown).source


async def test_nothing_reaches_stdout_or_stderr_even_on_errors(
    box: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Errors go to the UI (a notification that says what to do), never to the terminal."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await compose_to(pilot, app, "bob")
        await pilot.press("ctrl+s")  # the box is not running: an error, shown in the UI
        await pilot.pause(0.3)
        for key in ("escape", "i", "u", "s", "l", "?"):
            await pilot.press(key)
            await pilot.pause(0.1)
        assert app._notifications
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
