"""``onionmail demo``: two boxes exchange mail over onion services on a private Tor network.

Everything is real: a private Tor network of directory authorities and
relays on 127.0.0.1, one tor per box publishing the box's onion from its
own key, alice's mail client speaking SMTP submission with AUTH, delivery
through tor's SOCKS port to bob's onion, a sealed envelope, a Maildir.
The demo plays the mail client (as neomutt or Thunderbird would) and then
reads each Maildir back with Python's :mod:`mailbox`, as any client would.
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import mailbox
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from onionmail.box.create import NewBox, create_box
from onionmail.box.daemon import Box
from onionmail.box.delivery import DeliveryReport
from onionmail.config.box import load_config
from onionmail.core.errors import OnionMailError
from onionmail.store.contacts import AddressBook
from onionmail.tor.testnet.network import client_tor_options, start_testnet, stop_testnet


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _prefixed(name: str) -> Callable[[str], None]:
    def progress(message: str) -> None:
        say(f"{name}: {message}")

    return progress


@dataclass
class Exchange:
    """One message of the demo and what became of it."""

    label: str
    sender: str
    recipient: str
    subject: str
    body: str
    report: DeliveryReport | None = None
    end_to_end: float = 0.0
    stored_at: Path | None = None
    verdict: str = "not delivered"


def run_demo(work_dir: Path | None = None) -> int:
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="onionmail-demo-") as tmp:
            status = asyncio.run(_demo(Path(tmp)))
        print("(the demo's directory is removed now; keep it with --work-dir DIR)")
        return status
    work_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(work_dir.absolute()))


async def _demo(root: Path) -> int:
    network = root / "testnet"
    started = time.monotonic()
    say("starting a private Tor network on 127.0.0.1 (3 authorities, 3 relays)")
    try:
        await asyncio.to_thread(start_testnet, network, take_ownership=True, progress=say)
        say(f"private Tor network ready after {time.monotonic() - started:.1f} s")
        return await _with_network(root, network)
    finally:
        await asyncio.to_thread(stop_testnet, network)
        say("private Tor network stopped")


async def _with_network(root: Path, network: Path) -> int:
    from onionmail.tor.testnet.network import load_testnet

    options = client_tor_options(load_testnet(network))
    alice_new, bob_new = (
        create_box(root / name, name, testnet=network, submission_port=0, retry_initial=2.0)
        for name in ("alice", "bob")
    )
    # They have exchanged addresses: each is in the other's address book, so their mail
    # lands in INBOX, not in Requests behind a proof of work (a stranger's).
    AddressBook(alice_new.box_dir).put("bob", bob_new.address)
    AddressBook(bob_new.box_dir).put("alice", alice_new.address)
    boxes = {
        name: Box(
            load_config(new.box_dir),
            new.identity,
            testnet_options=options,
            progress=_prefixed(name),
        )
        for name, new in (("alice", alice_new), ("bob", bob_new))
    }
    try:
        t0 = time.monotonic()
        await asyncio.gather(*(box.start() for box in boxes.values()))
        say(f"both boxes running after {time.monotonic() - t0:.1f} s")
        first = Exchange(
            "alice -> bob",
            alice_new.address,
            bob_new.address,
            "Hello over onion services",
            "Hi Bob,\n\nthis travelled as a sealed envelope between two onions.\n\nAlice\n",
        )
        reply = Exchange(
            "bob -> alice",
            bob_new.address,
            alice_new.address,
            "Re: Hello over onion services",
            "Hi Alice,\n\nreceived, and this is the reply, the same way back.\n\nBob\n",
        )
        await _exchange(first, boxes["alice"], alice_new, boxes["bob"], "bob")
        await _exchange(reply, boxes["bob"], bob_new, boxes["alice"], "alice")
    finally:
        await asyncio.gather(*(box.stop() for box in boxes.values()))
    _print_summary(boxes, [first, reply])
    ok = first.verdict == reply.verdict == "intact"
    print("\nRESULT: " + ("both messages arrived intact" if ok else "FAILED"))
    return 0 if ok else 1


async def _exchange(ex: Exchange, src: Box, src_new: NewBox, dst: Box, dst_part: str) -> None:
    assert src.agent is not None
    delivered: asyncio.Future[DeliveryReport] = asyncio.get_running_loop().create_future()

    def on_delivered(report: DeliveryReport) -> None:
        if not delivered.done():
            delivered.set_result(report)

    src.agent.on_delivered = on_delivered
    message = email.message.EmailMessage()
    message["From"] = ex.sender
    message["To"] = ex.recipient
    message["Subject"] = ex.subject
    message["User-Agent"] = "DemoClient/1.0 (the box removes this)"
    message.set_content(ex.body)
    say(f"{ex.label}: the mail client submits to 127.0.0.1:{src.submission_port} with AUTH")
    await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=src.submission_port,
        username=src_new.local_part,
        password=src_new.password,
        local_hostname="localhost",
        start_tls=False,
        timeout=30,
    )
    accepted = time.monotonic()
    say(f"{ex.label}: accepted (250); delivering over tor")
    try:
        ex.report = await asyncio.wait_for(delivered, timeout=120)
    except TimeoutError:
        raise OnionMailError(f"{ex.label}: not delivered within 120 s") from None
    ex.end_to_end = time.monotonic() - accepted
    ex.stored_at, ex.verdict = _check_stored(dst, dst_part, ex)
    say(f"{ex.label}: in {dst_part}'s Maildir {ex.end_to_end:.2f} s after the 250 -> {ex.verdict}")


def _check_stored(box: Box, local_part: str, ex: Exchange) -> tuple[Path | None, str]:
    folder = box.paths.maildir(local_part)
    store = mailbox.Maildir(folder, factory=None, create=False)
    for key in store.keys():
        msg = store.get_message(key)
        if msg["Subject"] != ex.subject:
            continue
        parsed = email.message_from_bytes(store.get_bytes(key), policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        path = folder / "new" / key if (folder / "new" / key).exists() else folder / "cur" / key
        if text.replace("\r\n", "\n") != ex.body:
            return path, "body changed"
        if parsed["User-Agent"] is not None:
            return path, "User-Agent was not scrubbed"
        if "onionmail=pass" not in str(parsed["Authentication-Results"]):
            return path, "not marked as a verified sealed delivery"
        return path, "intact"
    return None, "not found in the Maildir"


def _print_summary(boxes: dict[str, Box], exchanges: list[Exchange]) -> None:
    print("\nonionmail demo: two boxes on a private Tor network (127.0.0.1 only)\n")
    for name, box in boxes.items():
        print(f"  {name:5}  {box.address(name)}")
    for ex in exchanges:
        print(f'\n  {ex.label}: "{ex.subject}"')
        kind = "sealed envelope (crypto_box, padded)" if ex.report and ex.report.sealed else "plain"
        print(
            f"    path:     mail client -> submission (loopback, AUTH) -> durable queue -> tor "
            f"(own circuit) -> recipient onion :25 -> {kind} -> Maildir"
        )
        if ex.report:
            print(
                f"    timing:   {ex.end_to_end:.2f} s from the submission's 250 to the "
                f"recipient's Maildir; {ex.report.seconds:.2f} s of it the final delivery "
                "attempt (tor stream + SMTP + fsync at the peer)"
            )
        print(f"    stored:   {ex.stored_at}")
        print(f"    check:    {ex.verdict}")
