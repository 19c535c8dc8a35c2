"""Timing policy and cover traffic between two real boxes on the private Tor network.

Carol sends bob a dummy envelope about once a second (``cover_rate = 3600``)
through her own tor and bob's onion. Bob's box must answer each one, record
it in its replay cache, and store nothing; a real message sent meanwhile
arrives exactly once. Carol also holds mail for two (unreachable) contacts,
one with a random delay and one batched, and ``onionmail queue`` shows them
waiting, while it never lists a dummy.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from onionmail.config.box import CONFIG_NAME
from onionmail.seal.identity import Identity
from onionmail.store.queue import list_queue
from tests.box_process import RunningBox, create_test_box, run_box, start_box, submit, wait_for_mail

pytestmark = pytest.mark.tor

DELAYED = Identity.generate().onion_address
BATCHED = Identity.generate().onion_address
BATCH_INTERVAL = 86_400.0


def replay_rows(box: RunningBox) -> int:
    """Envelope ids bob's box recorded (mail and dummies alike), read from its SQLite file."""
    path = box.new.box_dir / "state" / "replay.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        rows: int = conn.execute("SELECT COUNT(*) FROM delivered").fetchone()[0]
    conn.close()
    return rows


def wait_for_rows(box: RunningBox, count: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = replay_rows(box)
        if rows >= count:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} envelopes reached bob in {timeout} s")


def maildir_count(box: RunningBox) -> int:
    return len(wait_for_mail(box.maildir, 0)) if box.maildir.exists() else 0


def queue_listing(box: RunningBox) -> str:
    return subprocess.run(
        [sys.executable, "-m", "onionmail.cli", "queue", "--dir", str(box.new.box_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def start_carol(root: Path, testnet: Any, bob: RunningBox) -> RunningBox:
    new = create_test_box(
        root / "carol", "carol", testnet=testnet.directory, submission_port=0, retry_initial=2.0
    )
    config = new.box_dir / CONFIG_NAME
    timing = (
        "[timing]\n"
        "cover_rate = 3600.0\n"
        f'cover_contacts = ["{bob.address}"]\n'
        f'[timing.contacts."{DELAYED}"]\n'
        'mode = "delay"\n'
        "mean_delay = 3600.0\n"
        f'[timing.contacts."{BATCHED}"]\n'
        'mode = "batch"\n'
        f"batch_interval = {BATCH_INTERVAL}\n"
    )
    text = config.read_text()
    assert text.count("\n[timing]\n") == 1
    config.write_text(text.replace("\n[timing]\n", "\n" + timing, 1))
    return run_box(new)


def test_cover_traffic_reaches_bob_and_is_dropped_and_held_mail_waits(
    testnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("cover")
    bob = start_box(root, "bob", testnet.directory)
    carol: RunningBox | None = None
    try:
        carol = start_carol(root, testnet, bob)
        submitted = time.time()
        asyncio.run(submit(carol, f"dave@{DELAYED}", "held", "for later\r\n"))
        asyncio.run(submit(carol, f"erin@{BATCHED}", "batched", "at the instant\r\n"))

        # Dummies arrive: bob's replay cache grows while his Maildir stays empty.
        rows = wait_for_rows(bob, 3)
        assert maildir_count(bob) == 0

        # A real message among the dummies arrives exactly once.
        asyncio.run(submit(carol, bob.address, "real", "not a dummy\r\n"))
        (real,) = wait_for_mail(bob.maildir, 1)
        assert b"Subject: real" in real and b"onionmail=pass" in real
        later = wait_for_rows(bob, rows + 4)
        assert maildir_count(bob) == 1
        assert later >= rows + 4

        # The queue listing names the held mail, never a dummy.
        states = {s.destination: s for s in list_queue(carol.new.box_dir / "queue")}
        assert set(states) == {DELAYED, BATCHED}, states
        assert states[DELAYED].next_try > submitted and states[DELAYED].attempts == 0
        batched = states[BATCHED].next_try
        assert batched % BATCH_INTERVAL == 0 and submitted < batched <= submitted + BATCH_INTERVAL
        listing = queue_listing(carol)
        lines = listing.splitlines()[1:]
        assert len(lines) == 2 and bob.onion not in listing
        for line in lines:
            assert int(line.split()[3]) > 0, listing  # seconds to the next try
        assert maildir_count(carol) == 0  # no bounce of any dummy
    finally:
        if carol is not None:
            carol.stop()
        bob.stop()
    for box in (bob, carol):
        assert box is not None
        assert "@" not in "".join(box.stderr_lines)  # neither box names an address
