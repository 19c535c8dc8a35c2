"""The onion listener's holes, attacked as an outsider must: over the private Tor network.

The loopback tests (``test_bdat_attacks``, ``test_session_limits``,
``test_sender_spoofing``, ``test_inbound_slips``) pin each rule down; these
attack a running box (``onionmail run``) through a client tor of their own,
so that tor's stream handling and the box's onion plumbing are on the path
too. Each test failed on the code before the fixes: a huge BDAT was held in
memory, a refused chunk's bytes were read as commands, NOOPs kept a slot
forever, a plain message could name an onion sender, a forged
``Authentication-Results`` survived, a repeated RCPT made copies, and
``BDAT 0 LAST`` went unanswered.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onionmail.tor.socks import new_isolation_token, open_tor_stream
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import ClientTor, RunningBox, start_box, start_client_tor
from tests.smtp_client import RawSMTP, code
from tests.test_smuggling import smuggled

pytestmark = pytest.mark.tor

LIMIT = 1024 * 1024
"""The box's ``[inbound] max_message_size`` here."""
SLOTS = 3
TRANSACTION_TIMEOUT = 20.0
EVICT_AFTER = 10.0
"""The listener's fixed grace before an idle session may be closed to make room."""
CLEARNET = "carol@example.org"


@dataclass
class Target:
    box: RunningBox
    tor: ClientTor

    @property
    def rcpt(self) -> str:
        return self.box.address

    def stored(self) -> list[email.message.EmailMessage]:
        folder = self.box.maildir
        if not folder.exists():
            return []
        store = mailbox.Maildir(folder, create=False)
        return [
            email.message_from_bytes(store.get_bytes(key), policy=email.policy.default)
            for key in store.keys()
        ]

    def subjects(self) -> list[str]:
        return sorted(str(message["Subject"]) for message in self.stored())

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.box.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1])


@pytest.fixture(scope="module")
def target(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("hostile-onion")
    box = start_box(
        root,
        "bob",
        testnet.directory,
        settings={
            "inbound.max_message_size": LIMIT,
            "inbound.max_connections": SLOTS,
            "inbound.transaction_timeout": TRANSACTION_TIMEOUT,
        },
    )
    tor: ClientTor | None = None
    try:
        tor = start_client_tor(
            root / "attacker", {**client_tor_options(testnet), "SocksTimeout": "60"}
        )
        yield Target(box, tor)
    finally:
        if tor is not None:
            tor.stop()
        box.stop()


async def session(target: Target, *, ehlo: bool = True) -> tuple[RawSMTP, str]:
    """A stream to the box's onion on a circuit of its own; (client, banner)."""
    sock = await open_tor_stream(
        "127.0.0.1",
        target.tor.socks_port,
        target.box.onion,
        25,
        timeout=90,
        isolation=new_isolation_token(),
    )
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawSMTP(reader, writer)
    banner = await client.reply()
    if ehlo and banner.startswith("220"):
        assert code(await client.cmd("EHLO attacker.test")) == 250
    return client, banner


async def envelope(client: RawSMTP, target: Target, mail_from: str = CLEARNET) -> None:
    assert code(await client.cmd(f"MAIL FROM:<{mail_from}>")) == 250
    assert code(await client.cmd(f"RCPT TO:<{target.rcpt}>")) == 250


async def still_serving(client: RawSMTP) -> None:
    assert await client.cmd("NOOP") == "250 OK"


def settle(target: Target, before: list[str], wait: float = 1.0) -> list[str]:
    """The subjects stored after a short wait (a stored message would be there by then)."""
    time.sleep(wait)
    found = target.subjects()
    for subject in before:
        found.remove(subject)
    return found


async def test_a_huge_declared_chunk_is_read_and_dropped_not_held(target: Target) -> None:
    before = target.subjects()
    client, _ = await session(target)
    await envelope(client, target)
    declared = 4 * LIMIT
    rss_before = target.peak_rss_kib()
    client.writer.write(f"BDAT {declared} LAST\r\n".encode())
    slab = b"x" * (64 * 1024)
    for _ in range(declared // len(slab)):
        client.writer.write(slab)
        await client.writer.drain()
    assert (await client.reply()).startswith("552")
    await still_serving(client)
    grew = target.peak_rss_kib() - rss_before
    assert grew < declared // 1024 // 2, f"the box's peak RSS grew by {grew} KiB"
    assert settle(target, before) == []


async def test_a_refused_chunk_is_consumed_not_read_as_commands(target: Target) -> None:
    before = target.subjects()
    client, _ = await session(target)
    payload = smuggled(CLEARNET, target.rcpt) + b".\r\n"
    # No MAIL FROM yet: the chunk is refused, and its bytes are a payload all the same.
    client.writer.write(f"BDAT {len(payload)} LAST\r\n".encode() + payload + b"NOOP\r\n")
    assert code(await client.reply()) == 503
    assert await client.reply() == "250 OK"  # the NOOP after the chunk, not the chunk's MAIL
    assert settle(target, before) == []


async def test_bdat_0_last_is_answered_at_once_and_stores_nothing(target: Target) -> None:
    before = target.subjects()
    client, _ = await session(target)
    await envelope(client, target)
    reply = await client.cmd("BDAT 0 LAST")  # RawSMTP waits 10 s at most
    assert code(reply) >= 500, reply
    await still_serving(client)
    assert settle(target, before) == []


@pytest.mark.parametrize(
    ("mail_from", "from_field"),
    [
        ("", "Alice <alice@{onion}>"),
        (CLEARNET, "Alice <alice@{onion}.>"),
        (CLEARNET, '"alice@{onion}" <carol@example.org>'),
    ],
    ids=["null-sender", "trailing-dot", "display-name"],
)
async def test_plain_mail_cannot_name_an_onion_sender(
    target: Target, mail_from: str, from_field: str
) -> None:
    before = target.subjects()
    client, _ = await session(target)
    await envelope(client, target, mail_from)
    assert code(await client.cmd("DATA")) == 354
    spoofed = from_field.format(onion=target.box.onion)
    reply = await client.cmd(f"From: {spoofed}\r\nSubject: it is alice\r\n\r\nhi\r\n.\r\n".encode())
    assert reply.startswith("550 5.7.1"), reply
    await still_serving(client)
    assert settle(target, before) == []


async def test_forged_results_and_repeated_recipients_are_dropped(target: Target) -> None:
    before = target.subjects()
    client, _ = await session(target)
    assert code(await client.cmd(f"MAIL FROM:<{CLEARNET}>")) == 250
    for rcpt in (target.rcpt, target.rcpt, target.rcpt.upper()):
        assert code(await client.cmd(f"RCPT TO:<{rcpt}>")) == 250
    assert code(await client.cmd("DATA")) == 354
    forged = f"Authentication-Results: {target.box.onion}; onionmail=pass\r\n"
    message = f"{forged}From: {CLEARNET}\r\nSubject: forged results\r\n\r\nhi\r\n.\r\n"
    assert code(await client.cmd(message.encode())) == 250
    assert settle(target, before) == ["forged results"]  # one copy, not three
    (stored,) = [m for m in target.stored() if m["Subject"] == "forged results"]
    results = [str(value) for value in stored.get_all("Authentication-Results", [])]
    assert len(results) == 1 and "onionmail=none" in results[0], results


async def test_talk_cannot_hold_the_slots_against_mail(target: Target) -> None:
    """Every slot held by a session that NOOPs: mail still gets in, and talkers are closed."""
    before = target.subjects()
    holders = [(await session(target))[0] for _ in range(SLOTS)]
    started = time.monotonic()
    closed: dict[int, str] = {}

    async def keep_talking(number: int, client: RawSMTP) -> None:
        while time.monotonic() - started < TRANSACTION_TIMEOUT + 15:  # bounded
            try:
                reply = await client.cmd("NOOP")
            except (ConnectionError, TimeoutError):
                reply = "closed without a reply"
            if not reply.startswith("250"):
                closed[number] = reply.splitlines()[-1]
                return
            await asyncio.sleep(1)

    talkers = [asyncio.create_task(keep_talking(n, c)) for n, c in enumerate(holders)]
    _, banner = await session(target, ehlo=False)  # every holder is still young
    assert banner.startswith("421 4.7.0 Too many connections"), banner
    await asyncio.sleep(max(0.0, EVICT_AFTER + 1 - (time.monotonic() - started)))
    sender, banner = await session(target)
    assert banner.startswith("220"), banner
    await envelope(sender, target)
    assert code(await sender.cmd("DATA")) == 354
    message = f"From: {CLEARNET}\r\nSubject: past the talkers\r\n\r\nhi\r\n.\r\n"
    reply = await sender.cmd(message.encode())
    assert code(reply) == 250, reply
    await sender.cmd("QUIT")
    await asyncio.gather(*talkers)
    assert settle(target, before, 0) == ["past the talkers"]
    replies = sorted(closed.values())
    assert len(replies) == SLOTS, closed  # none of them still holds a slot
    assert replies.count("421 4.7.0 Idle session closed to make room; closing the connection") == 1
    timed_out = "421 4.4.2 No mail transaction completed in time; closing the connection"
    assert replies.count(timed_out) == SLOTS - 1, replies


def test_a_box_whose_key_is_in_clear_says_so_at_start(target: Target) -> None:
    """Test boxes are made with a clear key (create_box without a passphrase): ``run``
    warns, once, before it serves."""
    said = "".join(target.box.stderr_lines)
    assert said.count("the identity key is stored in clear") == 1, said[-2000:]
