"""Maildir delivery: durable, readable by any client, names that say nothing."""

from __future__ import annotations

import mailbox
import os
import stat
from pathlib import Path

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
