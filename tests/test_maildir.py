"""Maildir delivery: durable, readable by any client, names that say nothing."""

from __future__ import annotations

import mailbox
import os
import stat
from pathlib import Path

import pytest

from onionmail.store import maildir
from onionmail.store.maildir import Maildir
from tests.leaks import host_identity_in


def test_delivered_message_is_readable_by_stdlib_mailbox(tmp_path: Path) -> None:
    folder = Maildir(tmp_path / "alice")
    path = folder.deliver(b"From: a@b.example\nSubject: hi\n\nbody\n")
    assert path.parent.name == "new"
    store = mailbox.Maildir(tmp_path / "alice", create=False)
    (msg,) = list(store)
    assert msg["Subject"] == "hi"
    assert folder.count() == 1
    assert not list((tmp_path / "alice" / "tmp").iterdir())


def test_a_copy_filed_as_seen_goes_straight_to_cur_with_the_flag(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "Sent")
    path = box.deliver(b"Subject: mine\n\nsent\n", seen=True)
    assert path.parent.name == "cur" and path.name.endswith(":2,S")
    assert [p for sub in ("new", "tmp") for p in (tmp_path / "Sent" / sub).iterdir()] == []
    (key,) = mailbox.Maildir(tmp_path / "Sent", create=False).keys()
    message = mailbox.Maildir(tmp_path / "Sent", create=False)[key]
    assert message["Subject"] == "mine" and message.get_flags() == "S"


def test_permissions_and_names_leak_nothing(tmp_path: Path) -> None:
    folder = Maildir(tmp_path / "alice")
    path = folder.deliver(b"Subject: x\n\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for sub in ("tmp", "new", "cur"):
        assert stat.S_IMODE(os.stat(tmp_path / "alice" / sub).st_mode) == 0o700
    assert host_identity_in(path.name) == []
    assert path.name.endswith(".onionmail")


def test_clean_tmp_removes_leftovers(tmp_path: Path) -> None:
    folder = Maildir(tmp_path / "alice")
    (tmp_path / "alice" / "tmp" / "half-written").write_bytes(b"Subj")
    assert folder.clean_tmp(older_than=0) == 1
    assert folder.count() == 0


def test_clean_tmp_removes_empty_files_from_new_and_keeps_messages(tmp_path: Path) -> None:
    """An empty file in new/ (left by versions that linked before the fsync): never
    acknowledged."""
    folder = Maildir(tmp_path / "alice")
    kept = folder.deliver(b"Subject: kept\n\nbody\n")
    (tmp_path / "alice" / "new" / "1.torn.onionmail").write_bytes(b"")
    assert folder.clean_tmp() == 1
    assert [p.name for p in (tmp_path / "alice" / "new").iterdir()] == [kept.name]
    assert kept.read_bytes() == b"Subject: kept\n\nbody\n"


def test_nothing_is_in_new_before_the_message_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write, fsync, rename into new/, fsync new/: a reader never sees a message that a
    power cut could still tear, and nothing unacknowledged is ever visible."""
    folder = Maildir(tmp_path / "alice")
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(f"fsync file, new/ holds {len(list((tmp_path / 'alice' / 'new').iterdir()))}")
        real_fsync(fd)

    def rename(src: Path, dst: Path) -> None:
        events.append("rename into new/")
        real_rename(src, dst)

    def fsync_dir(path: Path) -> None:
        events.append(f"fsync {path.name}/")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        real_fsync(fd)
        os.close(fd)

    monkeypatch.setattr(maildir.os, "fsync", fsync)
    monkeypatch.setattr(maildir.os, "rename", rename)
    monkeypatch.setattr(maildir, "fsync_dir", fsync_dir)
    path = folder.deliver(b"Subject: x\n\nwhole\n")
    assert events == ["fsync file, new/ holds 0", "rename into new/", "fsync new/"]
    assert path.read_bytes() == b"Subject: x\n\nwhole\n"
    assert not list((tmp_path / "alice" / "tmp").iterdir())


@pytest.mark.parametrize("failing", ["fsync", "fsync_dir"])
def test_a_failed_fsync_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Not durable, so not acknowledged: the message must not stay in new/."""
    folder = Maildir(tmp_path / "alice")

    def broken(_arg: object) -> None:
        raise OSError(5, "Input/output error")

    target = maildir.os if failing == "fsync" else maildir
    monkeypatch.setattr(target, failing, broken)
    with pytest.raises(OSError, match="Input/output"):
        folder.deliver(b"Subject: x\n\n")
    for sub in ("tmp", "new"):
        assert not list((tmp_path / "alice" / sub).iterdir())
