"""The outbound queue: durable, encrypted at rest, recoverable."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from onionmail.errors import QueueError
from onionmail.outbound_queue import OutboundQueue, list_queue, queue_key, scan_due

KEY = queue_key(b"\x01" * 32)
MESSAGE = b"From: a@x.onion\r\nSubject: secret subject\r\n\r\nsecret body\r\n"


def test_enqueue_load_remove(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("peer.onion", "a@x.onion", ("b@peer.onion",), MESSAGE)
    loaded = queue.load(entry.id)
    assert loaded == entry
    (state,) = queue.states()
    assert (state.id, state.destination, state.attempts) == (entry.id, "peer.onion", 0)
    queue.remove(entry.id)
    assert queue.states() == []


def test_message_is_ciphertext_at_rest_and_private(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("peer.onion", "a@x.onion", ("b@peer.onion",), MESSAGE)
    files = list((tmp_path / "q" / "active").iterdir())
    assert {f.suffix for f in files} == {".msg", ".state"}
    for f in files:
        data = f.read_bytes()
        assert b"secret" not in data and b"a@x.onion" not in data
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
        assert f.stem == entry.id
    assert stat.S_IMODE(os.stat(tmp_path / "q").st_mode) == 0o700


def test_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    entry = OutboundQueue(tmp_path / "q", KEY).enqueue("p.onion", "a@x.onion", ("b@p.onion",), b"")
    with pytest.raises(QueueError, match="does not decrypt"):
        OutboundQueue(tmp_path / "q", queue_key(b"\x02" * 32)).load(entry.id)


def test_failure_bookkeeping_and_recovery(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    (state,) = queue.states()
    queue.record_failure(state, "tor: descriptor not found", 123.0)
    (state,) = list_queue(tmp_path / "q")
    assert (state.attempts, state.next_try, state.last_error) == (
        1,
        123.0,
        "tor: descriptor not found",
    )
    (tmp_path / "q" / "tmp" / "crashed.msg").write_bytes(b"half")
    assert queue.recover() == 1
    assert [s.id for s in queue.states()] == [entry.id]


def test_message_without_state_is_kept_by_recovery(tmp_path: Path) -> None:
    """Killed between the message's fsync and its first state file: the message stays queued."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    (tmp_path / "q" / "active" / f"{entry.id}.state").unlink()
    queue.recover()
    (state,) = queue.states()
    assert (state.id, state.destination, state.attempts) == (entry.id, "p.onion", 0)


@pytest.mark.parametrize("damage", ["missing", "empty", "torn"])
def test_held_message_whose_first_state_a_crash_lost_keeps_its_first_try(
    tmp_path: Path, damage: str
) -> None:
    """The first state is not fsynced on its own: a crash may lose or empty it.

    The message (fsynced, acknowledged) stays, and a message the timing
    policy held is still held: the first try time comes back from the
    encrypted message.
    """
    queue = OutboundQueue(tmp_path / "q", KEY)
    held_until = time.time() + 3600
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE, next_try=held_until)
    state_path = tmp_path / "q" / "active" / f"{entry.id}.state"
    if damage == "missing":
        state_path.unlink()
    elif damage == "empty":
        state_path.write_bytes(b"")
    else:
        state_path.write_bytes(state_path.read_bytes()[:10])
    queue.recover()
    (state,) = queue.states()
    assert (state.id, state.destination, state.attempts) == (entry.id, "p.onion", 0)
    assert state.next_try == pytest.approx(held_until)
    assert queue.load(entry.id).message == MESSAGE


def test_unreadable_entry_is_quarantined_not_lost(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    (tmp_path / "q" / "active" / f"{entry.id}.state").unlink()
    (tmp_path / "q" / "active" / f"{entry.id}.msg").write_bytes(b"damaged")
    queue.recover()
    assert queue.states() == []
    assert (tmp_path / "q" / "damaged" / f"{entry.id}.msg").read_bytes() == b"damaged"


def test_flush_makes_every_entry_due(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    for _ in range(3):
        queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    for state in queue.states():
        queue.record_failure(state, "offline", 10_000.0)
    assert queue.reschedule_all(5.0) == 3
    assert [s.next_try for s in queue.states()] == [5.0, 5.0, 5.0]
    assert [s.attempts for s in queue.states()] == [1, 1, 1]
    assert queue.reschedule_all(5.0) == 0


def test_listing_skips_an_entry_removed_while_listing(tmp_path: Path) -> None:
    """Regression: the agent's listing raced with a removal and the agent died.

    A dangling link stands for a message that was removed between the
    directory listing and the read of its state.
    """
    queue = OutboundQueue(tmp_path / "q", KEY)
    kept = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    (tmp_path / "q" / "active" / "gone.msg").symlink_to(tmp_path / "nowhere")
    assert [s.id for s in list_queue(tmp_path / "q")] == [kept.id]


def test_scan_due_holds_at_most_the_limit_earliest_first(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    now = time.time()
    entries = [
        queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE, next_try=now - 100 + n)
        for n in range(10)
    ]
    later = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE, next_try=now + 50)
    scan = scan_due(tmp_path / "q", now, 4, skip={entries[0].id})
    assert [s.id for s in scan.due] == [e.id for e in entries[1:5]]
    assert scan.more_due
    assert scan.next_due == pytest.approx(later.first_try)
    everything = scan_due(tmp_path / "q", now, 100)
    assert len(everything.due) == 10 and not everything.more_due
