"""Snapshot tests of the TUI's main screens at 160x45 and 80x24 (pytest-textual-snapshot).

The sample box is deterministic (fixed identities, mail, queue and ledger),
so the screens are too. After an intended change of a screen, review the
new rendering and update the baselines with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from onionmail.box.api import BoxApi
from tui.app import OnionMailApp
from tui.sample_box import add_sample_thread, create_sample_box

SIZE = (160, 45)
MESSAGES = 6
"""The sample box's inbox (four onion messages, two relayed by the gateway)."""
Snap = Callable[..., bool]


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OnionMailApp:
    monkeypatch.chdir(tmp_path)  # hints name the box directory as typed: "alice"
    return OnionMailApp(BoxApi(create_sample_box(tmp_path / "alice")))


async def settle(pilot: Pilot[Any], table_id: str = "", rows: int = 0) -> None:
    for _ in range(200):
        if not table_id or pilot.app.screen.query_one(table_id, DataTable).row_count >= rows:
            break
        await pilot.pause(0.02)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.1)


def keys(*pressed: str, table: str = "", rows: int = 0) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot, "#messages", MESSAGES)
        await pilot.press(*pressed)
        await settle(pilot, table, rows)

    return run


def compose_to(recipients: str, *then: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot, "#messages", MESSAGES)
        await pilot.press("c")
        pilot.app.screen.query_one("#to", Input).value = recipients
        pilot.app.screen.query_one("#subject", Input).value = "Lunch on Friday?"
        await pilot.pause(0.1)
        await pilot.press(*then)
        await settle(pilot)

    return run


def test_inbox(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=keys())


@pytest.fixture
def thread_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OnionMailApp:
    """The sample box with a conversation of three (:func:`add_sample_thread`)."""
    monkeypatch.chdir(tmp_path)
    box = create_sample_box(tmp_path / "alice")
    add_sample_thread(box)
    return OnionMailApp(BoxApi(box))


def test_inbox_thread(snap_compare: Snap, thread_app: OnionMailApp) -> None:
    """Each reply under what it answers, the thread where its newest message stands."""
    assert snap_compare(thread_app, terminal_size=SIZE, run_before=thread_keys("down"))


def thread_keys(*pressed: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot, "#messages", MESSAGES + 2)
        await pilot.press(*pressed)
        await settle(pilot)

    return run


def test_message(snap_compare: Snap, app: OnionMailApp) -> None:
    run = keys("down", "down", "down", "down", "enter")  # "The report": sealed, attachment
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_message_via_gateway_openpgp(snap_compare: Snap, app: OnionMailApp) -> None:
    """The newest message: relayed by the gateway, decrypted by the box, signature verified."""
    assert snap_compare(app, terminal_size=SIZE, run_before=keys("enter"))


def test_compose_leak_card_onion(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=compose_to("bob", "escape"))


def test_compose_leak_card_clearnet(snap_compare: Snap, app: OnionMailApp) -> None:
    run = compose_to("dave@example.org", "escape")
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_compose_leak_card_onion_mx(snap_compare: Snap, app: OnionMailApp) -> None:
    run = compose_to("frank@corp.example", "escape")
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_what_if(snap_compare: Snap, app: OnionMailApp) -> None:
    run = compose_to("bob", "ctrl+w", "down", "down", "right")
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_what_if_gateway_with_and_without_openpgp(snap_compare: Snap, app: OnionMailApp) -> None:
    run = compose_to("dave@example.org", "ctrl+w", "right", "right", "right", "right")
    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_address_book(snap_compare: Snap, app: OnionMailApp) -> None:
    compose = compose_to("", "escape", "ctrl+b")  # out of the To field: no blinking cursor

    async def run(pilot: Pilot[Any]) -> None:
        await compose(pilot)
        await settle(pilot, "#keys", 1)

    assert snap_compare(app, terminal_size=SIZE, run_before=run)


def test_queue(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=keys("u", table="#queue", rows=1))


def test_status(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=keys("s"))


def test_onion_qr_code(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=keys("s", "o"))


def test_ledger(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=keys("l", table="#entries", rows=3))


SMALL = (80, 24)
"""80x24 is a first-class size: the inbox keeps mark, sender and subject."""


def test_inbox_80x24(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SMALL, run_before=keys())


def test_inbox_thread_folded_80x24(snap_compare: Snap, thread_app: OnionMailApp) -> None:
    assert snap_compare(thread_app, terminal_size=SMALL, run_before=thread_keys("z"))


def test_message_80x24(snap_compare: Snap, app: OnionMailApp) -> None:
    run = keys("down", "down", "down", "down", "enter")
    assert snap_compare(app, terminal_size=SMALL, run_before=run)


def test_compose_leak_card_80x24(snap_compare: Snap, app: OnionMailApp) -> None:
    assert snap_compare(app, terminal_size=SMALL, run_before=compose_to("bob", "escape"))
