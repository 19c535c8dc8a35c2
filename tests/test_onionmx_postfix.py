"""A real Postfix, configured as an OnionMX peer, delivers to a box's onion address.

The other half of ``test_postfix_peer.py``: here Postfix is the sender. Mail
for ``.onion`` domains leaves it through its own smtp(8) client run under
torsocks (``tests/postfix.py``, ``onion_socks_port=``), which hands the onion
name to a plain client tor on the private network. The box takes such mail as
unverified plain-peer mail, and refuses it when it claims a ``.onion`` sender
that only a sealed envelope could prove.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from stem.control import EventType

from onionmail.core.onion_address import encode_onion_address
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import RunningBox, start_box, start_client_tor, wait_for_mail
from tests.postfix import Postfix, postfix_for_domain

pytestmark = pytest.mark.tor

PEER_DOMAIN = "peer.test"
LOG_TIMEOUT = 45.0


@pytest.fixture(scope="module")
def bob(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    box = start_box(tmp_path_factory.mktemp("onionmx-box"), "bob", testnet.directory)
    try:
        yield box
    finally:
        box.stop()


@dataclass
class OnionMXPeer:
    """The running Postfix, and the streams its tor opened (``onion:port``, succeeded)."""

    postfix: Postfix
    tor_streams: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def peer(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnionMXPeer]:
    """Postfix relaying .onion mail through torsocks to a client tor on the testnet."""
    options = {**client_tor_options(testnet), "SocksTimeout": "20"}
    tor = start_client_tor(tmp_path_factory.mktemp("onionmx-tor") / "tor", options)
    try:
        with postfix_for_domain(PEER_DOMAIN, onion_socks_port=tor.socks_port) as postfix:
            running = OnionMXPeer(postfix)

            def record(event: Any) -> None:
                if event.status == "SUCCEEDED":
                    running.tor_streams.append(f"{event.target_address}:{event.target_port}")

            tor.controller.add_event_listener(record, EventType.STREAM)
            yield running
    finally:
        tor.stop()


def inject(postfix: Postfix, sender: str, recipient: str, subject: str) -> None:
    """Hand a message to Postfix on its loopback port, as a local client would."""
    message = (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@{PEER_DOMAIN}>\r\n\r\nfrom an OnionMX peer\r\n"
    )
    with smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="localhost", timeout=10) as smtp:
        smtp.sendmail(sender, [recipient], message.encode())


def wait_for_log(postfix: Postfix, pattern: str, timeout: float = LOG_TIMEOUT) -> re.Match[str]:
    """Poll Postfix's log (bounded) until a line matches ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, postfix.log.read_text(), re.MULTILINE)
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in the Postfix log:\n{postfix.log.read_text()[-4000:]}")


def messages_in(folder: Path) -> list[Message]:
    return list(mailbox.Maildir(folder, factory=None, create=False))


def test_postfix_delivers_to_the_box_over_tor_as_unverified_plain_mail(
    bob: RunningBox, peer: OnionMXPeer
) -> None:
    postfix = peer.postfix
    sender = f"carol@{PEER_DOMAIN}"
    inject(postfix, sender, bob.address, "onionmx-plain")

    sent = wait_for_log(
        postfix,
        rf"to=<{re.escape(bob.address)}>, relay={re.escape(bob.onion)}\[127\.42\.42\.\d+\]:25,"
        r".*status=sent \((.*)\)$",
    )
    assert sent.group(1).startswith("250 2.0.0 Delivered")
    # the connection to the torsocks address was a stream of the peer's tor to the onion
    assert f"{bob.onion}:25" in peer.tor_streams
    wait_for_mail(bob.maildir, 1, timeout=10)
    (message,) = [m for m in messages_in(bob.maildir) if m["Subject"] == "onionmx-plain"]
    assert message["From"] == sender
    assert message["Return-Path"] == f"<{sender}>"
    (results,) = message.get_all("Authentication-Results", [])
    assert results == (
        f"{bob.onion}; onionmail=none (plain SMTP peer; sender not verified) smtp.mailfrom={sender}"
    )
    # Postfix's own trace field: it really passed through this Postfix
    assert f"by {PEER_DOMAIN} (Postfix)" in message["Received"]
    assert "from an OnionMX peer" in str(message.get_payload())


def test_box_refuses_a_forged_onion_sender_and_postfix_bounces(
    bob: RunningBox, peer: OnionMXPeer
) -> None:
    postfix = peer.postfix
    stranger = encode_onion_address(bytes(nacl.signing.SigningKey.generate().verify_key))
    forged = f"mallory@{stranger}"
    before = len(wait_for_mail(bob.maildir, 0))
    inject(postfix, forged, bob.address, "onionmx-forged")

    bounced = wait_for_log(
        postfix,
        rf"^.*: (\w+): to=<{re.escape(bob.address)}>, relay={re.escape(bob.onion)}\[[\d.]+\]:25,"
        r".*dsn=5\.7\.1, status=bounced \(host \S+ said: (5\d\d .*)\)$",
    )
    queue_id, reply = bounced.group(1), bounced.group(2)
    assert reply.startswith("550 5.7.1 Mail from a .onion sender must be sealed")
    assert reply.endswith("(in reply to end of DATA command)")
    # Postfix turns the refusal into a non-delivery notification for the claimed sender
    wait_for_log(postfix, rf"{queue_id}: sender non-delivery notification: \w+")
    assert f"from=<{forged}>" in postfix.log.read_text()
    assert not [m for m in messages_in(bob.maildir) if m["Subject"] == "onionmx-forged"]
    assert len(wait_for_mail(bob.maildir, 0)) == before
