"""Maildir delivery: durable, readable by any client, names that say nothing."""

from __future__ import annotations

import mailbox
import os
import stat
from pathlib import Path

import pytest

from onionmail import maildir
from onionmail.maildir import Maildir
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
    """An empty file in new/: a power cut between the link and the fsync, never acknowledged."""
    folder = Maildir(tmp_path / "alice")
    kept = folder.deliver(b"Subject: kept\n\nbody\n")
    (tmp_path / "alice" / "new" / "1.torn.onionmail").write_bytes(b"")
    assert folder.clean_tmp() == 1
    assert [p.name for p in (tmp_path / "alice" / "new").iterdir()] == [kept.name]
    assert kept.read_bytes() == b"Subject: kept\n\nbody\n"


def test_the_message_is_in_new_before_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Link, then fsync: data and name go to disk in one journal commit."""
    folder = Maildir(tmp_path / "alice")
    seen: list[list[bytes]] = []
    real_fsync = os.fsync

    def watching(fd: int) -> None:
        seen.append([p.read_bytes() for p in (tmp_path / "alice" / "new").iterdir()])
        real_fsync(fd)

    monkeypatch.setattr(maildir.os, "fsync", watching)
    folder.deliver(b"Subject: x\n\nwhole\n")
    assert seen[0] == [b"Subject: x\n\nwhole\n"]
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
