"""The box applies the timing policy when it queues mail and dummies (no tor needed).

``Box.submit`` and ``Box.send_cover`` are what submission and the cover task
call; the box is not started, so the queue is only written, never delivered,
and read back with the same listing ``onionmail queue`` prints.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from onionmail.box.create import NewBox
from onionmail.box.daemon import Box
from onionmail.config.box import CONFIG_NAME, load_config
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.seal.identity import Identity
from onionmail.store.queue import list_queue
from tests.box_process import create_test_box

BOB = Identity.generate().onion_address
CAROL = Identity.generate().onion_address


def box_with(tmp_path: Path, timing: str) -> tuple[Box, NewBox]:
    new = create_test_box(tmp_path / "alice", "alice", submission_port=0)
    config = new.box_dir / CONFIG_NAME
    config.write_text(config.read_text().replace("\n[timing]\n", "\n" + timing, 1))
    return Box(load_config(new.box_dir), new.identity), new


async def submit(box: Box, new: NewBox, *recipients: str) -> None:
    message = f"From: {new.address}\r\nSubject: s\r\n\r\nbody\r\n".encode()
    rcpts = [parse_mail_address(r) for r in recipients]
    await box.submit(parse_mail_address(new.address), rcpts, message)


def listing(new: NewBox) -> list[list[str]]:
    out = subprocess.run(
        [sys.executable, "-m", "onionmail.cli", "queue", "--dir", str(new.box_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.split() for line in out.splitlines()[1:]]


async def test_delay_mode_holds_a_submitted_message(tmp_path: Path) -> None:
    box, new = box_with(tmp_path, '[timing]\nmode = "delay"\nmean_delay = 3600.0\n')
    before = time.time()
    await submit(box, new, f"bob@{BOB}")
    (state,) = list_queue(new.box_dir / "queue")
    assert before < state.next_try and state.attempts == 0
    ((_, destination, attempts, wait, *_),) = listing(new)
    assert (destination, attempts) == (BOB, "0") and int(wait) >= 0


async def test_delays_differ_per_message(tmp_path: Path) -> None:
    box, new = box_with(tmp_path, '[timing]\nmode = "delay"\nmean_delay = 3600.0\n')
    for _ in range(5):
        await submit(box, new, f"bob@{BOB}")
    tries = [s.next_try for s in list_queue(new.box_dir / "queue")]
    assert len(set(tries)) == 5


async def test_batch_mode_aligns_to_the_epoch(tmp_path: Path) -> None:
    box, new = box_with(tmp_path, '[timing]\nmode = "batch"\nbatch_interval = 86400.0\n')
    before = time.time()
    await submit(box, new, f"bob@{BOB}", f"carol@{CAROL}")
    states = list_queue(new.box_dir / "queue")
    assert len(states) == 2  # one entry per onion, both at the same instant
    for state in states:
        assert state.next_try % 86400 == 0 and before < state.next_try <= before + 86400
    assert all(int(row[3]) > 0 for row in listing(new))


async def test_a_contact_override_wins_over_the_box_policy(tmp_path: Path) -> None:
    timing = (
        '[timing]\nmode = "batch"\nbatch_interval = 86400.0\n'
        f'[timing.contacts."bob@{BOB}"]\nmode = "immediate"\n'
    )
    box, new = box_with(tmp_path, timing)
    before = time.time()
    await submit(box, new, f"bob@{BOB}")
    await submit(box, new, f"carol@{CAROL}")
    states = {s.destination: s.next_try for s in list_queue(new.box_dir / "queue")}
    assert before <= states[BOB] <= time.time()
    assert states[CAROL] % 86400 == 0


async def test_immediate_mode_is_due_at_once(tmp_path: Path) -> None:
    box, new = box_with(tmp_path, "[timing]\n")
    await submit(box, new, f"bob@{BOB}")
    (state,) = list_queue(new.box_dir / "queue")
    assert state.next_try <= time.time()


async def test_a_dummy_is_queued_like_mail_to_the_contact_and_not_listed(tmp_path: Path) -> None:
    timing = (
        f'[timing]\nmode = "batch"\nbatch_interval = 3600.0\ncover_rate = 60.0\n'
        f'cover_contacts = ["bob@{BOB}", "{CAROL}"]\n'
    )
    box, new = box_with(tmp_path, timing)
    assert box.timing.cover_contacts == (MailAddress("bob", BOB), MailAddress("postmaster", CAROL))
    queue_id = await box.send_cover(MailAddress("bob", BOB))
    assert queue_id is not None
    entry = box.queue.load(queue_id)
    assert entry.cover and entry.message == b""
    assert (entry.mail_from, entry.recipients) == (new.address, (f"bob@{BOB}",))
    (state,) = box.queue.states()
    assert state.next_try % 3600 == 0  # the contact's policy applies to dummies too
    assert list_queue(new.box_dir / "queue") == [] and listing(new) == []
    assert box.status()["queue_length"] == 0


async def test_no_new_dummy_while_one_waits_for_a_retry(tmp_path: Path) -> None:
    timing = f'[timing]\ncover_rate = 60.0\ncover_contacts = ["bob@{BOB}", "{CAROL}"]\n'
    box, _ = box_with(tmp_path, timing)
    first = await box.send_cover(MailAddress("bob", BOB))
    assert await box.send_cover(MailAddress("bob", BOB)) is not None  # not tried yet: fine
    (state, *_) = [s for s in box.queue.states() if s.id == first]
    box.queue.record_failure(state, "descriptor not found", time.time() + 60)
    assert await box.send_cover(MailAddress("bob", BOB)) is None  # bob is unreachable
    assert await box.send_cover(MailAddress("postmaster", CAROL)) is not None
    assert len(box.queue.states()) == 3
