"""A real Postfix behind an onion (OnionMX style) receives a box's mail as ordinary SMTP."""

from __future__ import annotations

import asyncio
import mailbox
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import RunningBox, start_box, start_client_tor, submit
from tests.leaks import host_identity_in
from tests.postfix import postfix_for_domain

pytestmark = pytest.mark.tor


@pytest.fixture(scope="module")
def alice(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    box = start_box(tmp_path_factory.mktemp("pf-box"), "alice", testnet.directory)
    try:
        yield box
    finally:
        box.stop()


def test_postfix_onion_peer_gets_scrubbed_plain_mail(
    alice: RunningBox, testnet: Any, tmp_path: Path
) -> None:
    tor = start_client_tor(tmp_path / "tor", client_tor_options(testnet))
    try:
        service = tor.controller.create_ephemeral_hidden_service(
            {25: 1}, key_type="NEW", key_content="ED25519-V3", detached=False
        )
        onion = f"{service.service_id}.onion"
        tor.controller.remove_ephemeral_hidden_service(service.service_id)
        with postfix_for_domain(onion) as postfix:
            tor.controller.create_ephemeral_hidden_service(
                {25: f"127.0.0.1:{postfix.port}"},
                key_type=service.private_key_type,
                key_content=service.private_key,
                await_publication=True,
                timeout=60,
            )
            body = "to a real Postfix over an onion\r\n"
            asyncio.run(
                submit(alice, f"postmaster@{onion}", "to postfix", body, **{"User-Agent": "X/1"})
            )
            deadline = time.monotonic() + 120
            stored: list[bytes] = []
            while not stored and time.monotonic() < deadline:
                if (postfix.maildir / "new").is_dir():
                    store = mailbox.Maildir(postfix.maildir, create=False)
                    stored = [store.get_bytes(key) for key in store.keys()]
                time.sleep(0.25)
            assert stored, postfix.log.read_text()[-3000:]
            (message,) = stored
            assert (
                b"Subject: to postfix" in message and b"to a real Postfix over an onion" in message
            )
            assert f"from=<{alice.address}>" in postfix.log.read_text()
            assert b"User-Agent" not in message  # scrubbed at submission
            # Postfix's own Received line shows what the box said: EHLO localhost
            assert b"from localhost (localhost [127.0.0.1])" in message
            assert host_identity_in(message) == []
    finally:
        tor.stop()
