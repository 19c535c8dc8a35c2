"""Run a program whose handshake seal records each session's keys, as its operator could.

``python -m tests.keylog FILE MODULE ARGS...`` runs ``python -m MODULE ARGS...``
with :class:`onionmail.seal.handshake.ReceiverSession` appending, for every
SMTP session it answers, the session's ephemeral private key, the mail key and
its certificate (hex) to FILE. The threat-model wire tests use it for the
gateway: its operator is the recipient of what boxes send it and can run any
code, so "what the operator sees" is what its sessions open. The project never
writes such a file; only this test wrapper does.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

from onionmail.seal.handshake import ReceiverSession, open_in_session
from onionmail.seal.mail_key import MailKeyring
from onionmail.seal.noise import KeyPair


def install(path: Path) -> None:
    original = ReceiverSession.start

    def start(keyring: MailKeyring) -> ReceiverSession:
        session = original(keyring)
        with path.open("a") as log:
            log.write(
                f"{session.ephemeral.private.hex()} {session.mail_key.private.hex()} "
                f"{session.certificate.hex()}\n"
            )
        return session

    ReceiverSession.start = staticmethod(start)  # type: ignore[method-assign,assignment]


def sessions(path: Path) -> list[ReceiverSession]:
    found = []
    for line in path.read_text().splitlines():
        ephemeral, mail_key, certificate = line.split()
        found.append(
            ReceiverSession(
                KeyPair.from_private(bytes.fromhex(mail_key)),
                bytes.fromhex(certificate),
                KeyPair.from_private(bytes.fromhex(ephemeral)),
            )
        )
    return found


def open_with_log(path: Path, envelope: bytes, *, sender: str, recipient: str) -> bytes:
    """The message of a version 2 envelope, opened with whichever logged session it was in."""
    for session in sessions(path):
        try:
            content = open_in_session(
                envelope,
                session=session,
                sender_onion=sender,
                recipient_onion=recipient,
                now=time.time(),
            )
        except Exception:
            continue
        return content.message
    raise AssertionError("no logged session opens the envelope")


if __name__ == "__main__":
    install(Path(sys.argv[1]))
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
