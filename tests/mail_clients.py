"""Real mail clients (swaks, neomutt) submitting to the box's real submission server.

Each session starts :class:`~onionmail.box.submission.SubmissionHandler` on
127.0.0.1:0 in a thread of its own, runs the client as a subprocess with the
time zone of a user far from UTC, and keeps what the client sent (its EHLO
name and the raw DATA, before scrubbing) and what the box queued (after).

``.venv/bin/python -m tests.mail_clients`` records the clients again into
``tests/data/clients/`` (see the README there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from onionmail.box.submission import Stored, SubmissionHandler
from onionmail.config.box import ScrubSection
from onionmail.core.mail_address import MailAddress
from onionmail.message.scrub import DEFAULT_SCRUB
from onionmail.seal.identity import Identity
from onionmail.smtp.server import server_port
from tests.loopback_servers import PASSWORD, credentials_for, start_submission, stop

FIXTURES = Path(__file__).parent / "data" / "clients"

ALICE_ONION = Identity(bytes(range(32))).onion_address
BOB_ONION = Identity(bytes(range(32, 64))).onion_address
ALICE = f"alice@{ALICE_ONION}"
BOB = f"bob@{BOB_ONION}"

CLIENT_TZ = "<+0530>-05:30"
"""The clients' time zone (POSIX form, UTC+05:30, needs no tzdata): a Date the box must move."""

ATTACHMENT_NAME = "trip-notes.txt"
ATTACHMENT_TEXT = "Day 1: arrived late.\nDay 2: the museum.\n"
NEOMUTT_BODY = "See you at eight.\n"
RESEND_INPUT = FIXTURES / "saved-message.eml"


@dataclass
class Sent:
    """One message a client submitted: what it sent and what the box queued."""

    client: str
    ehlo: str
    raw: bytes
    queued: bytes


@dataclass
class RecordingServer:
    """The submission server on loopback, keeping every message it was given."""

    port: int = 0
    sent: list[tuple[str, bytes]] = field(default_factory=list)
    queued: list[bytes] = field(default_factory=list)

    def take(self, client: str) -> Sent:
        """The one message submitted since the last ``take``."""
        if len(self.sent) != 1 or len(self.queued) != 1:
            raise AssertionError(
                f"{client}: expected one message, got {len(self.sent)} sent and "
                f"{len(self.queued)} queued"
            )
        (ehlo, raw), queued = self.sent.pop(), self.queued.pop()
        return Sent(client, ehlo, raw, queued)


class _RecordingHandler(SubmissionHandler):
    def __init__(self, record: RecordingServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record = record

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.record.sent.append((str(session.host_name), bytes(envelope.original_content)))
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def submission_server(settings: ScrubSection = DEFAULT_SCRUB) -> Iterator[RecordingServer]:
    """The box's submission server for ``alice`` at :data:`ALICE_ONION`, scrubbing with
    ``settings``, run by an event loop in a thread so that clients can be plain subprocesses."""
    record = RecordingServer()

    def store(sender: MailAddress, rcpts: list[MailAddress], message: bytes) -> Stored:
        record.queued.append(message)
        return Stored(["q1"])

    with tempfile.TemporaryDirectory() as tmp:
        handler = _RecordingHandler(
            record,
            onion=ALICE_ONION,
            local_parts=("alice",),
            credentials=credentials_for(Path(tmp) / "submission.json"),
            store=store,
            max_recipients=10,
            scrub=settings,
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        server = asyncio.run_coroutine_threadsafe(start_submission(handler), loop).result(10)
        record.port = server_port(server)
        try:
            yield record
        finally:
            asyncio.run_coroutine_threadsafe(_close(server), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _close(server: asyncio.Server) -> None:
    await stop(server)
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def require_client(name: str) -> str:
    """The client's path; a missing client fails the test (``make`` installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package {name}; 'make test' installs it)")
    return path


def _client_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TZ": CLIENT_TZ}


def _attachment(work: Path) -> Path:
    path = work / ATTACHMENT_NAME
    path.write_text(ATTACHMENT_TEXT)
    return path


def run_swaks(
    record: RecordingServer, work: Path, *, attach: bool = False, helo: str | None = None
) -> Sent:
    """swaks with its defaults (EHLO = this machine's host name unless ``helo``)."""
    command = [require_client("swaks"), "--server", f"127.0.0.1:{record.port}"]
    command += ["--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD]
    command += ["--from", ALICE, "--to", BOB, "--timeout", "20"]
    if attach:
        command += ["--attach", f"@{_attachment(work)}"]  # @: a file (swaks 2020 and later)
    if helo is not None:
        command += ["--helo", helo]
    _run(command, work, None)
    return record.take("swaks-attachment" if attach else "swaks")


def run_neomutt(
    record: RecordingServer, work: Path, *, attach: bool = False, resend: Path | None = None
) -> Sent:
    """neomutt in batch mode over SMTP; ``resend``: send that stored message again (``-H``)."""
    rc = work / "neomuttrc"
    rc.write_text(
        f'set smtp_url="smtp://alice@127.0.0.1:{record.port}/"\n'
        f'set smtp_pass="{PASSWORD}"\n'
        f'set from="Alice <{ALICE}>"\n'
        "set user_agent=yes\n"  # off by default; many users turn it on
        'set record=""\nset ssl_starttls=no\nset ssl_force_tls=no\n'
    )
    command = [require_client("neomutt"), "-n", "-F", str(rc)]
    if resend is not None:
        command += ["-H", str(resend)]
        name, body = "neomutt-resend", "(sent again)\n"
    else:
        command += ["-s", "plans"]
        if attach:
            command += ["-a", str(_attachment(work))]
        command += ["--", BOB]
        name, body = ("neomutt-attachment" if attach else "neomutt"), NEOMUTT_BODY
    _run(command, work, body)
    return record.take(name)


def _run(command: list[str], work: Path, stdin: str | None) -> None:
    result = subprocess.run(
        command,
        input=stdin if stdin is not None else "",
        env=_client_env(work),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{Path(command[0]).name} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )


def record_fixtures() -> list[Path]:
    """Run every client once and write what it sent to ``tests/data/clients/``."""
    written = []
    with submission_server() as record, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = [
            run_swaks(record, work),
            run_swaks(record, work, attach=True),
            run_neomutt(record, work),
            run_neomutt(record, work, attach=True),
            run_neomutt(record, work, resend=RESEND_INPUT),
        ]
    for sent in runs:
        path = FIXTURES / f"{sent.client}.eml"
        path.write_bytes(sent.raw)
        written.append(path)
        print(f"{path.name}: EHLO {sent.ehlo}", file=sys.stderr)
    return written


if __name__ == "__main__":
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's AUTH-without-TLS notes
    record_fixtures()
