"""End to end: compose in the TUI of a real box, see it queued, delivered over an onion.

Real boxes (``onionmail run`` processes with their own tor) on the private
Tor network. Bob's box is created but not started when Alice sends, so the
message is seen waiting in Alice's queue; then Bob starts, "retry now" in
the TUI wakes Alice's box, and the message reaches Bob's Maildir, where
Bob's TUI shows it as sealed and verified.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea

from onionmail.box.api import BoxApi
from onionmail.box.create import NewBox
from tests.box_process import RunningBox, create_test_box, run_box, start_box, wait_for_mail
from tests.tui_notifications import record_notifications
from tui.app import OnionMailApp
from tui.screens.compose import ComposeScreen

pytestmark = pytest.mark.tor

SIZE = (120, 40)


@pytest.fixture
def alice_and_bob(testnet: Any, tmp_path: Path) -> Iterator[tuple[RunningBox, NewBox]]:
    alice = start_box(tmp_path, "alice", testnet.directory)
    bob = create_test_box(tmp_path / "bob", "bob", testnet=testnet.directory, retry_initial=2.0)
    try:
        yield alice, bob
    finally:
        alice.stop()


async def until(pilot: Pilot[Any], check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


async def test_send_from_the_tui_is_queued_then_delivered_over_onion(
    alice_and_bob: tuple[RunningBox, NewBox],
) -> None:
    alice, bob_new = alice_and_bob
    app = OnionMailApp(BoxApi(alice.new.box_dir))
    shown = record_notifications(app)
    bob: RunningBox | None = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")
            compose = app.screen
            assert isinstance(compose, ComposeScreen)
            compose.query_one("#to", Input).value = bob_new.address
            compose.query_one("#subject", Input).value = "from the TUI"
            compose.query_one("#body", TextArea).text = "Hello Bob, typed in onionmail-tui.\n"
            # the leak card is predicted in a worker (it reads the config and key store)
            await until(pilot, lambda: bool(compose.predictions), 10, "the leak card")
            assert [str(p.path) for p in compose.predictions] == ["onion-sealed"]
            await pilot.press("ctrl+s")
            await until(
                pilot,
                lambda: any(n.title == "queued" for n in shown),
                30,
                f"the submission ({[n.message for n in shown]})",
            )
            await pilot.press("escape", "u")  # leave the fields, then the queue
            queue = app.screen.query_one("#queue", DataTable)
            await until(pilot, lambda: queue.row_count == 1, 10, "the queue entry")
            assert str(queue.get_row_at(0)[1]) == bob_new.identity.onion_address
            bob = await asyncio.to_thread(run_box, bob_new)
            await pilot.press("r")  # retry now: SIGUSR1 to alice's running box
            await until(pilot, lambda: queue.row_count == 0, 150, "the delivery")
            await pilot.press("l")
            ledger = app.screen.query_one("#entries", DataTable)
            await until(
                pilot,
                lambda: any(
                    [str(c) for c in ledger.get_row_at(i)[3:5]] == ["v2", "delivered"]
                    for i in range(ledger.row_count)
                ),
                10,
                "the ledger entry",
            )
        messages = await asyncio.to_thread(wait_for_mail, bob.maildir, 1, 30)
        assert b"Subject: from the TUI" in messages[0]
        bob_app = OnionMailApp(BoxApi(bob_new.box_dir))
        async with bob_app.run_test(size=SIZE) as pilot:
            inbox = bob_app.screen.query_one("#messages", DataTable)
            await until(pilot, lambda: inbox.row_count == 1, 10, "bob's inbox")
            row = inbox.get_row_at(0)
            assert (str(row[0]), str(row[2]), str(row[5])) == ("S", "verified", "from the TUI")
    finally:
        if bob is not None:
            bob.stop()
