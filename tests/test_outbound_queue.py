"""The outbound queue: durable, encrypted at rest, recoverable."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from onionmail.core.errors import QueueError
from onionmail.core.files import write_all
from onionmail.store import queue as outbound_queue
from onionmail.store.queue import (
    CLEAR_HEADER_MAGIC,
    OutboundQueue,
    count_queue,
    list_queue,
    queue_key,
    reschedule_queue,
    scan_due,
)

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


def test_count_and_size_read_the_queue_without_the_key(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    mail = queue.enqueue("peer.onion", "a@x.onion", ("b@peer.onion",), MESSAGE)
    queue.enqueue("peer.onion", "a@x.onion", ("b@peer.onion",), MESSAGE + b"more\r\n")
    queue.enqueue("peer.onion", "a@x.onion", ("b@peer.onion",), b"", cover=True)
    assert count_queue(tmp_path / "q") == 2  # the dummy is not mail
    assert count_queue(tmp_path / "elsewhere") == 0
    assert len(MESSAGE) < queue.size(mail.id) < len(MESSAGE) + 512
    queue.remove(mail.id)
    assert queue.size(mail.id) == 0  # gone: nothing to hold in memory


def test_message_is_ciphertext_at_rest_and_private(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("peer.onion", "a@x.onion", ("b@peer.onion",), MESSAGE)
    (path,) = (tmp_path / "q" / "active").iterdir()  # one file per message, no state yet
    assert path.name == f"{entry.id}.msg"
    data = path.read_bytes()
    assert b"secret" not in data and b"a@x.onion" not in data and b"b@peer" not in data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "q").st_mode) == 0o700


def test_the_clear_header_shows_what_the_state_file_showed_and_nothing_more(
    tmp_path: Path,
) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE, next_try=2e9)
    line = (tmp_path / "q" / "active" / f"{entry.id}.msg").read_bytes().split(b"\n")[0]
    assert line.startswith(CLEAR_HEADER_MAGIC)
    assert json.loads(line[len(CLEAR_HEADER_MAGIC) :]) == {
        "destination": "p.onion",
        "created": entry.created,
        "first_try": 2e9,
        "cover": False,
    }


def test_state_file_appears_only_when_the_state_changes(tmp_path: Path) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE, next_try=2e9)
    state_path = tmp_path / "q" / "active" / f"{entry.id}.state"
    (state,) = queue.states()
    assert state == entry.first_state() and not state_path.exists()
    assert queue.reschedule_all(5.0) == 0 and not state_path.exists()  # held: not moved
    assert reschedule_queue(tmp_path / "q", 5.0) == 1  # queue flush: moved, state written
    assert json.loads(state_path.read_bytes())["next_try"] == 5.0
    (state,) = queue.states()
    queue.record_failure(state, "offline", 99.0)
    (state,) = queue.states()
    assert (state.attempts, state.next_try, state.destination) == (1, 99.0, "p.onion")


def test_an_edited_clear_header_makes_the_entry_fail_to_load(tmp_path: Path) -> None:
    """The destination comes from a verified header only: an edit never redirects the mail."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    path = tmp_path / "q" / "active" / f"{entry.id}.msg"
    path.write_bytes(path.read_bytes().replace(b'"p.onion"', b'"e.onion"', 1))
    assert [s.destination for s in queue.states()] == ["e.onion"]
    with pytest.raises(QueueError, match="altered"):
        queue.load(entry.id)


@pytest.mark.parametrize("failing_call", ["directory fsync", "file fsync"])
def test_a_failed_fsync_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_call: str
) -> None:
    """Not durable, so not acknowledged (451): nothing may be delivered after all.

    The file's fsync fails after the rename: the name was already in active/,
    and the 451 must take it back out.
    """
    queue = OutboundQueue(tmp_path / "q", KEY)

    def failing(_target: object) -> None:
        raise OSError(5, "Input/output error")

    if failing_call == "directory fsync":
        monkeypatch.setattr(outbound_queue, "fsync_dir", failing)
    else:
        monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(QueueError, match="Input/output"):
        queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    assert list((tmp_path / "q" / "active").iterdir()) == []
    assert list((tmp_path / "q" / "tmp").iterdir()) == []


def test_the_file_is_the_clear_line_a_nonce_the_ciphertext_and_a_tag(tmp_path: Path) -> None:
    """AES-256-GCM: 12-byte nonce, ciphertext as long as the plaintext, 16-byte tag."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    data = (tmp_path / "q" / "active" / f"{entry.id}.msg").read_bytes()
    clear, _, sealed = data.partition(b"\n")
    secret = {"mail_from": "a@x.onion", "recipients": ["b@p.onion"]}
    secret["envelope_id"] = entry.envelope_id.hex()
    plain = json.dumps(secret, separators=(",", ":")).encode() + b"\n" + MESSAGE
    assert clear.startswith(CLEAR_HEADER_MAGIC)
    assert len(sealed) == 12 + len(plain) + 16
    second = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    other = (tmp_path / "q" / "active" / f"{second.id}.msg").read_bytes().partition(b"\n")[2]
    assert other[:12] != sealed[:12]  # a fresh random nonce per entry


@pytest.mark.parametrize("damage", ["torn", "flipped", "no tag"])
def test_a_damaged_ciphertext_under_an_intact_header_fails_to_load(
    tmp_path: Path, damage: str
) -> None:
    """It still lists (the clear header); loading it fails clearly (the agent quarantines it)."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    path = tmp_path / "q" / "active" / f"{entry.id}.msg"
    data = bytearray(path.read_bytes())
    if damage == "torn":
        del data[len(data) // 2 :]
    elif damage == "flipped":
        data[-30] ^= 0x01
    else:
        del data[-16:]
    path.write_bytes(bytes(data))
    assert [s.id for s in queue.states()] == [entry.id]
    with pytest.raises(QueueError, match="does not decrypt"):
        queue.load(entry.id)


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_write_all_resumes_short_writes_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    """writev may write less than asked: the rest follows, in order, nothing twice."""
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        budget, taken = step, []
        for buffer in buffers:
            if budget <= 0:
                break
            taken.append(buffer[:budget])
            budget -= len(taken[-1])
        return real_writev(fd, taken)

    monkeypatch.setattr(os, "writev", short_writev)
    chunks = [b"clear\n", b"", os.urandom(5000), b"x", os.urandom(300)]
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_all(fd, *chunks)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(chunks)


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


def test_a_crash_mid_write_leaves_no_entry(tmp_path: Path) -> None:
    """Killed before the rename (the commit point): never acknowledged, removed at start-up."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    kept = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    whole = (tmp_path / "q" / "active" / f"{kept.id}.msg").read_bytes()
    (tmp_path / "q" / "tmp" / "0123.msg").write_bytes(whole[:100])
    (tmp_path / "q" / "active" / f".{kept.id}.state.abcd.tmp").write_bytes(b"{")
    assert queue.recover() == 2
    assert [s.id for s in queue.states()] == [kept.id]
    assert list((tmp_path / "q" / "tmp").iterdir()) == []


@pytest.mark.parametrize("damage", ["empty", "torn"])
def test_a_damaged_state_means_never_tried_yet(tmp_path: Path, damage: str) -> None:
    queue = OutboundQueue(tmp_path / "q", KEY)
    held_until = time.time() + 3600
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE, next_try=held_until)
    state_path = tmp_path / "q" / "active" / f"{entry.id}.state"
    state_path.write_bytes(b"" if damage == "empty" else b'{"id": "')
    assert queue.states() == [entry.first_state()]  # before recovery already
    queue.recover()
    assert not state_path.exists()
    assert queue.states() == [entry.first_state()]


@pytest.mark.parametrize("content", [b"damaged", b"", b"omq2 {}\nold"])
def test_unreadable_entry_is_quarantined_not_lost(tmp_path: Path, content: bytes) -> None:
    """Also an empty one (a power cut between the rename and the fsync: never
    acknowledged), and one of another layout (no ``omq3`` clear header)."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    (tmp_path / "q" / "active" / f"{entry.id}.msg").write_bytes(content)
    queue.recover()
    assert queue.states() == []
    assert (tmp_path / "q" / "damaged" / f"{entry.id}.msg").read_bytes() == content


def test_the_name_is_in_place_before_the_file_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rename, then fsync: data and name go to disk in one journal commit."""
    queue = OutboundQueue(tmp_path / "q", KEY)
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def watching(fd: int) -> None:
        seen.append(sorted(p.name for p in (tmp_path / "q" / "active").iterdir()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watching)
    entry = queue.enqueue("p.onion", "a@x.onion", ("b@p.onion",), MESSAGE)
    assert seen[0] == [f"{entry.id}.msg"]
    assert list((tmp_path / "q" / "tmp").iterdir()) == []


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
