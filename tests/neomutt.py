"""Drive the real neomutt over a pseudo-terminal to read a Maildir, as a user's client would."""

from __future__ import annotations

import mailbox
import os
import pty
import select
import subprocess
import time
from pathlib import Path


def neomutt_subjects(
    maildir: Path | str,
    work: Path,
    timeout: float = 30,
    *,
    wrapper: list[str] | None = None,
    settings: str = "",
) -> list[str]:
    """Open ``maildir`` (a Maildir, or a folder URL such as ``imap://user@host/INBOX``) in
    neomutt, copy every message to an mbox, return their Subjects. ``wrapper`` goes before
    the command (``["torsocks"]``); ``settings`` are more neomuttrc lines."""
    return [s for s, _ in _copied(maildir, work, timeout, wrapper or [], settings)]


def neomutt_flags(maildir: Path, work: Path, timeout: float = 30) -> dict[str, set[str]]:
    """Every message's Subject and the flags neomutt sees on it: it copies each one to an
    mbox with ``Status`` (``R`` read) and ``X-Status`` (``A`` answered, ``F`` flagged)."""
    return dict(_copied(maildir, work, timeout, [], ""))


def _copied(
    maildir: Path | str, work: Path, timeout: float, wrapper: list[str], settings: str
) -> list[tuple[str, set[str]]]:
    out = work / "copied.mbox"
    out.unlink(missing_ok=True)
    rc = work / "neomuttrc"
    rc.write_text(
        "set wait_key=no\nset quit=yes\n"
        "set mbox_type=mbox\nset confirmappend=no\nset confirmcreate=no\n"
        f"set folder={work}\n"  # else neomutt first asks whether to create ~/Mail
        "set auto_tag=yes\nset header_cache=''\nset message_cachedir=''\n" + settings
    )
    keys = f'push "<tag-pattern>~A<enter><tag-prefix><copy-message>{out}<enter><exit>"'
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes neomutt
        os.environ.update({"TERM": "dumb", "HOME": str(work), "LINES": "40", "COLUMNS": "120"})
        command = ["neomutt", "-n", "-F", str(rc), "-R", "-f", str(maildir), "-e", keys]
        os.execvp([*wrapper, *command][0], [*wrapper, *command])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    os.read(fd, 65536)
                except OSError:
                    # EIO while neomutt runs the pipe command with the terminal
                    # released; it is not finished until the process exits.
                    time.sleep(0.05)
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        else:
            raise AssertionError("neomutt did not finish in time")
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    found: list[tuple[str, set[str]]] = []
    if out.exists():
        copied = mailbox.mbox(out, create=False)
        try:
            for msg in copied:
                flags = set(str(msg.get("Status", ""))) | set(str(msg.get("X-Status", "")))
                found.append((str(msg["Subject"]), flags - {"O"}))
        finally:
            copied.close()
    return found


def neomutt_available() -> bool:
    return subprocess.run(["neomutt", "-v"], capture_output=True).returncode == 0
