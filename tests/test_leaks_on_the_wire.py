"""What each observer really receives in a real run, held to the threat model cell by cell.

One real run on the private Tor network: alice (``--verbose``, so her log holds
every level) and bob, two ``onionmail run`` processes with their own tors, and a
plain aiosmtpd peer behind an onion published by a client tor. During the run
a loopback packet capture (:class:`tests.wire_capture.LoopbackCapture`, an
``AF_PACKET`` socket on ``lo``) records every TCP segment. Captures, by observer:

- ``recipient-box``: the bytes bob's inbound server socket received (from bob's
  tor) and the file bob's Maildir stored; on ``onion-plain`` the bytes the plain
  peer's socket received;
- ``box-logs``: alice's and bob's stderr, split by level;
- ``box-seizure``: every file of a *stopped* box, read as whoever took the disk
  would: alice's while a message to an unreachable onion waits in her queue
  (decrypted with the key the seed on the same disk gives), bob's after delivery;
- ``sender-network``, ``tor-guard``, ``tor-relays``, ``global-passive``: the
  Tor links, i.e. every segment to or from an ORPort of the private network
  (alice's tor's own links for the sender's network and guard), plus, for
  sizes, the stream that the circuit carries, read where it enters alice's tor
  (the SOCKS hop) and where it leaves bob's (the inbound socket).

For every observer every :class:`Item` has either a probe or an explicit
:class:`Unchecked` reason. A probe answers "does this capture show the item in
clear (exactly, for sizes)?". ``visible`` must be shown; ``encrypted``,
``hidden`` and ``padded`` must not. A mismatch either way fails, naming the
observer, the item, the capture and the model's reason.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from onionmail.seal.identity import Identity, load_identity
from onionmail.smtp.server import server_port, start_smtp_server
from onionmail.store.queue import CLEAR_HEADER_MAGIC, queue_key
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import (
    RunningBox,
    create_test_box,
    start_client_tor,
    submit_raw,
    wait_for_mail,
)
from tests.leaks import (
    LogRecord,
    Probe,
    Unchecked,
    Window,
    carries_message,
    data_of,
    has,
    has_all,
    judge,
    read_queue_entry,
    records,
)
from tests.wire_capture import (
    LoopbackCapture,
    connections_to,
    listening_ports,
    run_verbose_box,
)
from threat_model import Item, MailPath, MessageTraits, ModelConfig, Observer, leaks

pytestmark = pytest.mark.tor

_TAG = secrets.token_hex(4)
SUBJECT = f"subj-{_TAG}-Qk7vX2"
BODY = f"body-{_TAG}-Zr9wL4"
ATTACHMENT = f"secret-plan-{_TAG}.pdf"
USER_AGENT = f"UA-{_TAG}-Fp5mB1"
X_MAILER = f"XM-{_TAG}-Fp5mB1"
EHLO = f"ehlo-{_TAG}.client.example"
MSGID_HOST = f"msgid-{_TAG}.client.example"
FINGERPRINT = (USER_AGENT, X_MAILER, EHLO)
SMALL, LARGE = 500, 2000
"""Two message lengths inside one Padmé bucket (both under the 4096-byte floor)."""
IP_LITERAL = re.compile(rb"\b127\.0\.0\.1\b|X-Originating-IP|^Received:", re.M | re.I)

MATRIX_SENT = leaks(MailPath.ONION_SEALED, MessageTraits(has_attachments=True), ModelConfig())
MATRIX_RECEIVED = leaks(
    MailPath.ONION_SEALED, MessageTraits(has_attachments=True, direction="received"), ModelConfig()
)
MATRIX_PLAIN = leaks(MailPath.ONION_PLAIN, MessageTraits(has_attachments=True), ModelConfig())
"""The boxes run onionmail's defaults: padding on, immediate timing, scrubbing on, no
passphrase; this is the :class:`ModelConfig` default."""


@dataclass
class Run:
    """Everything captured in the scenario."""

    alice: RunningBox
    bob: RunningBox
    capture: LoopbackCapture
    or_ports: set[int]
    alice_socks: int
    bob_inbound: int
    alice_links: set[int] = field(default_factory=set)
    windows: dict[str, Window] = field(default_factory=dict)
    maildir: dict[str, bytes] = field(default_factory=dict)
    plain_port: int = 0
    plain_onion: str = ""
    plain_data: dict[str, bytes] = field(default_factory=dict)
    queued_to: str = ""
    alice_disk: bytes = b""
    alice_disk_but_sent: bytes = b""
    """Her disk without the .Sent copies ([submission] keep_sent files one per message)."""
    alice_queue_plain: bytes = b""
    alice_queue_files: list[tuple[int, int, float]] = field(default_factory=list)
    """(size of the .msg, length of the message it holds, created) per entry."""
    bob_disk: bytes = b""
    bob_maildir_files: bytes = b""


def token_message(frm: str, to: str) -> bytes:
    message = EmailMessage()
    message["From"] = frm
    message["To"] = to
    message["Subject"] = SUBJECT
    message["Message-ID"] = f"<{secrets.token_hex(8)}@{MSGID_HOST}>"
    message["User-Agent"] = USER_AGENT
    message["X-Mailer"] = X_MAILER
    message.set_content(f"Hello,\n{BODY}\n")
    message.add_attachment(
        b"%PDF-1.4\n% plan\n", maintype="application", subtype="pdf", filename=ATTACHMENT
    )
    return message.as_bytes(policy=email.policy.SMTP)


def sized_message(frm: str, to: str, length: int) -> bytes:
    head = f"From: {frm}\r\nTo: {to}\r\nSubject: size probe\r\n\r\n".encode()
    filler = b"x" * 70 + b"\r\n"
    body = (filler * (length // len(filler) + 1))[: length - len(head) - 2] + b"\r\n"
    return head + body


async def submit(box: RunningBox, to: str, message: bytes) -> None:
    await submit_raw(box, to, message, ehlo=EHLO)


def send_to_box(run: Run, name: str, message: bytes) -> None:
    """Submit to alice for bob, wait until bob's Maildir has it; keep the window and the file."""
    before = len(wait_for_mail(run.bob.maildir, 0))
    start = time.time()
    asyncio.run(submit(run.alice, run.bob.address, message))
    stored = wait_for_mail(run.bob.maildir, before + 1, timeout=60)
    run.alice_links |= connections_to(_tor_pid(run.alice), run.or_ports)
    time.sleep(0.3)  # the QUIT and the last segments after the Maildir write
    run.windows[name] = Window(start, time.time())
    (new,) = [m for m in stored if m not in run.maildir.values()]
    run.maildir[name] = new


def _tor_pid(box: RunningBox) -> int:
    return int((box.new.box_dir / "tor" / "tor.pid").read_text().strip())


def read_tree(root: Path, *, leave_out: str = "") -> bytes:
    return b"\n".join(
        p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (leave_out and leave_out in p.parts)
    )


def plain_peer(run: Run, testnet: Any, directory: Path) -> None:
    """A plain aiosmtpd server behind an onion of a client tor; alice sends it three messages."""
    tor = start_client_tor(directory, client_tor_options(testnet))
    received: list[bytes] = []

    class PlainPeer:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.original_content)
            return "250 OK"

        async def handle_exception(self, error: Exception) -> str:
            return "451 error"

    async def scenario() -> None:
        server = await start_smtp_server(PlainPeer(), "127.0.0.1", 0, hostname="peer")  # type: ignore[arg-type]
        run.plain_port = server_port(server)
        service = tor.controller.create_ephemeral_hidden_service(
            {25: f"127.0.0.1:{run.plain_port}"},
            key_type="NEW",
            key_content="ED25519-V3",
            await_publication=True,
            timeout=60,
        )
        run.plain_onion = f"{service.service_id}.onion"
        to = f"postmaster@{run.plain_onion}"
        for name, message in (
            ("plain-token", token_message(run.alice.address, to)),
            ("plain-small", sized_message(run.alice.address, to, SMALL)),
            ("plain-large", sized_message(run.alice.address, to, LARGE)),
        ):
            start = time.time()
            await submit(run.alice, to, message)
            deadline = time.monotonic() + 60
            while len(received) < len(run.plain_data) + 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(received) == len(run.plain_data) + 1, f"the plain peer never got {name}"
            await asyncio.sleep(0.3)
            run.windows[name] = Window(start, time.time())
            run.plain_data[name] = received[-1]
        server.close()

    try:
        asyncio.run(scenario())
    finally:
        tor.stop()


def seize_alice(run: Run) -> None:
    """Queue a message for an onion nobody publishes, stop alice, read her disk."""
    run.queued_to = f"nobody@{Identity.generate().onion_address}"
    start = time.time()
    asyncio.run(submit(run.alice, run.queued_to, token_message(run.alice.address, run.queued_to)))
    active = run.alice.new.box_dir / "queue" / "active"
    deadline = time.monotonic() + 30
    while not list(active.glob("*.msg")) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.windows["queued"] = Window(start, time.time())
    run.alice.stop()
    box_dir = run.alice.new.box_dir
    run.alice_disk = read_tree(box_dir)
    run.alice_disk_but_sent = read_tree(box_dir, leave_out=".Sent")  # all but the .Sent copies
    seed = load_identity(box_dir / "keys" / "identity.key").seed  # no passphrase: none needed
    plains = []
    for path in sorted(active.glob("*.msg")):
        # The clear header line (what listing needs without the key), then the ciphertext.
        clear, plain = read_queue_entry(path.read_bytes(), queue_key(seed))
        plains.append(plain)
        message = plain.partition(b"\n")[2]
        created = float(json.loads(clear.removeprefix(CLEAR_HEADER_MAGIC))["created"])
        run.alice_queue_files.append((path.stat().st_size, len(message), created))
    run.alice_queue_plain = b"\n".join(plains)


@pytest.fixture(scope="module")
def run(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("wire")
    capture = LoopbackCapture().start()
    started: list[RunningBox] = []
    try:
        alice = run_verbose_box(
            create_test_box(
                root / "alice",
                "alice",
                testnet=testnet.directory,
                submission_port=0,
                retry_initial=2.0,
            )
        )
        started.append(alice)
        bob = run_verbose_box(
            create_test_box(
                root / "bob", "bob", testnet=testnet.directory, submission_port=0, retry_initial=2.0
            )
        )
        started.append(bob)
        (alice_socks,) = listening_ports(_tor_pid(alice))
        (bob_inbound,) = listening_ports(bob.process.pid) - {bob.submission_port}
        scenario = Run(
            alice,
            bob,
            capture,
            {node.or_port for node in testnet.nodes},
            alice_socks,
            bob_inbound,
        )
        send_to_box(scenario, "token", token_message(alice.address, bob.address))
        send_to_box(scenario, "small", sized_message(alice.address, bob.address, SMALL))
        send_to_box(scenario, "large", sized_message(alice.address, bob.address, LARGE))
        plain_peer(scenario, testnet, root / "client-tor")
        seize_alice(scenario)
        bob.stop()
        scenario.bob_disk = read_tree(bob.new.box_dir)
        scenario.bob_maildir_files = read_tree(bob.maildir)
        drops = capture.stop()
        assert drops == 0, f"the loopback capture lost {drops} packets: its absences prove nothing"
        yield scenario
    finally:
        capture.stop()
        for box in started:
            box.stop()


# -- judging ---------------------------------------------------------------------------


def stream_with_data(run: Run, port: int, name: str) -> bytes:
    window = run.windows[name]
    streams = [s for s in run.capture.to_port(port, window.start, window.end) if carries_message(s)]
    assert len(streams) == 1, f"{name}: {len(streams)} streams with a message to port {port}"
    return streams[0]


def message_id_host_shown(message: bytes, own_onion: str) -> bool:
    """The client's host is there, or the Message-ID names anything but the sender's onion."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    host = str(parsed["Message-ID"]).strip("<>").rpartition("@")[2]
    return MSGID_HOST.encode() in message or host != own_onion


def date_in_window(message: bytes, window: Window) -> bool:
    date = email.utils.parsedate_to_datetime(
        str(email.message_from_bytes(message, policy=email.policy.default)["Date"])
    ).timestamp()
    return window.start // 60 * 60 <= date <= window.end


# -- recipient-box ---------------------------------------------------------------------


def test_recipient_box_sealed(run: Run) -> None:
    """Bob's inbound socket (what his tor handed him) and his Maildir file."""
    alice, bob = run.alice, run.bob
    stored = run.maildir["token"]
    socket_bytes = stream_with_data(run, run.bob_inbound, "token")
    both = stored + socket_bytes
    judge(
        MATRIX_SENT,
        Observer.RECIPIENT_BOX,
        "bob's inbound socket + bob's Maildir file",
        {
            Item.SENDER_ADDRESS: has(stored, alice.address),
            Item.RECIPIENT_ADDRESS: has(stored, bob.address),
            Item.SENDER_IP: lambda: bool(IP_LITERAL.search(both)),
            Item.RECIPIENT_IP: Unchecked("its own address; on loopback it is 127.0.0.1 for all"),
            Item.SUBJECT: has(stored, SUBJECT),
            Item.BODY: has(stored, BODY),
            Item.ATTACHMENT_NAMES: has(stored, ATTACHMENT),
            Item.SIZE: lambda: len(run.maildir["small"]) != len(run.maildir["large"]),
            Item.SEND_TIME: lambda: date_in_window(stored, run.windows["token"]),
            Item.RELATION: has_all(stored, alice.address, bob.address),
            Item.CLIENT_FINGERPRINT: has(both, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: message_id_host_shown(stored, alice.onion),
        },
    )
    # The client really sent every fingerprint (its submission stream has them), so their
    # absence downstream is the box's scrubbing, not the test's.
    window = run.windows["token"]
    (submitted,) = run.capture.to_port(alice.submission_port, window.start, window.end)
    assert all(t.encode() in submitted for t in (*FINGERPRINT, MSGID_HOST, ATTACHMENT))
    # The capture reads plaintext where there is some: the envelope is in clear on this
    # socket, the message itself is sealed until the box opens it.
    assert alice.address.encode() in socket_bytes and SUBJECT.encode() not in socket_bytes


def test_recipient_box_plain(run: Run) -> None:
    """The bytes the plain onion peer's socket received (and what its handler kept)."""
    alice = run.alice
    stream = stream_with_data(run, run.plain_port, "plain-token")
    data = run.plain_data["plain-token"]
    to = re.search(rb"RCPT TO:<([^>]+)>", stream)
    assert to is not None and data.replace(b"\r\n", b"\n") in stream.replace(b"\r\n", b"\n")
    judge(
        MATRIX_PLAIN,
        Observer.RECIPIENT_BOX,
        "the plain peer's inbound socket",
        {
            Item.SENDER_ADDRESS: has(stream, alice.address),
            Item.RECIPIENT_ADDRESS: has(stream, to.group(1).decode()),
            Item.SENDER_IP: lambda: bool(IP_LITERAL.search(stream)),
            Item.RECIPIENT_IP: Unchecked("its own address; on loopback it is 127.0.0.1 for all"),
            Item.SUBJECT: has(stream, SUBJECT),
            Item.BODY: has(stream, BODY),
            Item.ATTACHMENT_NAMES: has(stream, ATTACHMENT),
            # unpadded: a small message arrives shorter than the sealed 4096-byte floor
            Item.SIZE: lambda: len(data_of(stream)) < 4096,
            Item.SEND_TIME: lambda: date_in_window(data, run.windows["plain-token"]),
            Item.RELATION: has_all(stream, alice.address, to.group(1).decode()),
            Item.CLIENT_FINGERPRINT: has(stream, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: message_id_host_shown(data, alice.onion),
        },
    )


# -- box-logs --------------------------------------------------------------------------


def log_probes(
    run: Run, log: list[LogRecord], own: RunningBox, peer: RunningBox, window: Window
) -> dict[Item, Probe]:
    blob = "".join(r.text for r in log).encode()
    stored = run.maildir["token"]
    message_id = str(email.message_from_bytes(stored)["Message-ID"]).strip("<>")
    lengths = {
        len(run.maildir["token"]),
        len(data_of(stream_with_data(run, run.bob_inbound, "token"))),
    }
    return {
        Item.SENDER_ADDRESS: has(blob, run.alice.address),
        Item.RECIPIENT_ADDRESS: has(blob, run.bob.address),
        Item.SENDER_IP: lambda: bool(IP_LITERAL.search(blob)),
        Item.RECIPIENT_IP: lambda: bool(IP_LITERAL.search(blob)),
        Item.SUBJECT: has(blob, SUBJECT),
        Item.BODY: has(blob, BODY),
        Item.ATTACHMENT_NAMES: has(blob, ATTACHMENT),
        Item.SIZE: lambda: any(
            re.search(rf"(?<![\d.]){n}(?![\d.])".encode(), blob) for n in lengths
        ),
        Item.SEND_TIME: lambda: any(
            r.level == "INFO" and window.start - 1 <= r.at <= window.end for r in log
        ),
        Item.RELATION: has(blob, peer.onion),
        Item.CLIENT_FINGERPRINT: has(blob, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: has(blob, MSGID_HOST, message_id),
    }


def info_and_above(box: RunningBox) -> list[LogRecord]:
    return [r for r in records(box.stderr_lines) if r.level != "DEBUG"]


def test_box_logs_of_the_sender(run: Run) -> None:
    log = info_and_above(run.alice)
    assert any(r.level == "DEBUG" for r in records(run.alice.stderr_lines)), "not verbose?"
    judge(
        MATRIX_SENT,
        Observer.BOX_LOGS,
        "alice's stderr at INFO and above (run with --verbose)",
        log_probes(run, log, run.alice, run.bob, run.windows["token"]),
    )


def test_box_logs_of_the_recipient(run: Run) -> None:
    log = info_and_above(run.bob)
    judge(
        MATRIX_RECEIVED,
        Observer.BOX_LOGS,
        "bob's stderr at INFO and above (run with --verbose)",
        log_probes(run, log, run.bob, run.alice, run.windows["token"]),
    )


def test_debug_log_keeps_content_out(run: Run) -> None:
    """DEBUG is outside the model's box-logs row; content and client fields stay out even there."""
    for box in (run.alice, run.bob):
        debug = "".join(r.text for r in records(box.stderr_lines) if r.level == "DEBUG")
        found = [t for t in (SUBJECT, BODY, ATTACHMENT, MSGID_HOST, *FINGERPRINT) if t in debug]
        assert found == [], f"{box.address.split('@')[0]}'s DEBUG log holds {found}"


# -- box-seizure -----------------------------------------------------------------------


def test_box_seizure_of_the_sender(run: Run) -> None:
    """Alice stopped with a message waiting for an unreachable onion: her whole disk."""
    alice = run.alice
    seen = run.alice_disk + b"\n" + run.alice_queue_plain
    ((msg_size, message_length, created),) = run.alice_queue_files
    window = run.windows["queued"]
    judge(
        MATRIX_SENT,
        Observer.BOX_SEIZURE,
        "alice's box directory, the queue decrypted with the seed found on it",
        {
            Item.SENDER_ADDRESS: has(run.alice_queue_plain, alice.address),
            Item.RECIPIENT_ADDRESS: has(seen, run.queued_to),
            Item.SENDER_IP: Unchecked("physical: where the machine ran, not bytes on its disk"),
            Item.RECIPIENT_IP: Unchecked(
                "on loopback every address is 127.0.0.1, the box's own too"
            ),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            # the clear header line (destination, times), the encrypted envelope header
            # (addresses, id) and the MAC on top
            Item.SIZE: lambda: 0 < msg_size - message_length < 512,
            Item.SEND_TIME: lambda: window.start <= created <= window.end,
            Item.RELATION: has_all(seen, alice.address, run.queued_to),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: message_id_host_shown(
                run.alice_queue_plain.partition(b"\n")[2], alice.onion
            ),
        },
    )
    # Not a cell: the queue's own promise that its files alone reveal no content; what the
    # disk shows in clear is the .Sent copy the matrix names (keep_sent, the default).
    raw = run.alice_disk_but_sent
    assert not any(t.encode() in raw for t in (SUBJECT, BODY, ATTACHMENT, run.queued_to))
    assert ".Sent" in MATRIX_SENT.cell(Observer.BOX_SEIZURE, Item.SUBJECT).reason


def test_box_seizure_of_the_recipient(run: Run) -> None:
    """Bob stopped after delivery: his whole disk (the Maildir is clear by design)."""
    alice, bob = run.alice, run.bob
    seen = run.bob_disk
    stored = run.maildir["token"]
    (maildir_file,) = [
        p for p in bob.maildir.rglob("*") if p.is_file() and p.read_bytes() == stored
    ]
    mtime = maildir_file.stat().st_mtime
    judge(
        MATRIX_RECEIVED,
        Observer.BOX_SEIZURE,
        "bob's box directory",
        {
            Item.SENDER_ADDRESS: has(seen, alice.address),
            Item.RECIPIENT_ADDRESS: has(seen, bob.address),
            Item.SENDER_IP: lambda: bool(IP_LITERAL.search(run.bob_maildir_files)),
            Item.RECIPIENT_IP: Unchecked("physical: where the machine ran, not bytes on its disk"),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            Item.SIZE: lambda: maildir_file.stat().st_size == len(stored),
            Item.SEND_TIME: lambda: (
                date_in_window(stored, run.windows["token"])
                and run.windows["token"].start <= mtime <= run.windows["token"].end
            ),
            Item.RELATION: has_all(seen, alice.address, bob.address),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: message_id_host_shown(stored, alice.onion),
        },
    )


# -- the Tor links ---------------------------------------------------------------------

_LOOPBACK_IP = (
    "on loopback every node's address is 127.0.0.1: the capture cannot tell one end's "
    "from another's"
)


def link_probes(
    run: Run, links: bytes, sends_at: Callable[[Window], bool], path: str
) -> dict[Item, Probe]:
    """Probes over Tor link bytes (TLS); sizes over the stream the circuit carries.

    Tor cells carry the SMTP stream alice's box writes into her tor's SOCKS port and
    bob's tor writes into his inbound socket: two messages whose streams have one
    length fill the same cells, so that is where the link's view of a size is read
    (the link's own byte count mixes in every other circuit and directory fetch).
    """
    alice, bob = run.alice, run.bob
    sealed = path == "sealed"
    names = ("small", "large") if sealed else ("plain-small", "plain-large")
    ends = (run.alice_socks, run.bob_inbound) if sealed else (run.alice_socks,)
    lengths = [{len(stream_with_data(run, port, n)) for n in names} for port in ends]
    window = run.windows["token" if sealed else "plain-token"]
    recipient = (bob.address, bob.onion) if sealed else (run.plain_onion,)
    return {
        Item.SENDER_ADDRESS: has(links, alice.address, alice.onion),
        Item.RECIPIENT_ADDRESS: has(links, *recipient),
        Item.SENDER_IP: Unchecked(_LOOPBACK_IP),
        Item.RECIPIENT_IP: Unchecked(_LOOPBACK_IP),
        Item.SUBJECT: has(links, SUBJECT),
        Item.BODY: has(links, BODY),
        Item.ATTACHMENT_NAMES: has(links, ATTACHMENT),
        Item.SIZE: lambda: any(len(at_one_end) > 1 for at_one_end in lengths),
        Item.SEND_TIME: lambda: sends_at(window),
        Item.RELATION: Unchecked(
            "a relation shows by correlating two ends' flows over time, not in bytes; the onion "
            "names that would show it in clear are probed as the addresses"
        ),
        Item.CLIENT_FINGERPRINT: has(links, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: has(links, MSGID_HOST),
    }


def _links(
    run: Run, ports: set[int] | None, names: tuple[str, ...]
) -> tuple[bytes, Callable[[Window], bool]]:
    """Link bytes during the ``names`` sends: all ORPort traffic, or only alice's tor's links."""

    def on_link(sport: int, dport: int) -> bool:
        if ports is None:
            return sport in run.or_ports or dport in run.or_ports
        return (sport in ports and dport in run.or_ports) or (
            dport in ports and sport in run.or_ports
        )

    chunks = []
    for name in names:
        w = run.windows[name]
        chunks += [
            s.payload for s in run.capture.between(w.start, w.end) if on_link(s.sport, s.dport)
        ]

    def sends_at(window: Window) -> bool:
        return any(
            on_link(s.sport, s.dport) and s.payload
            for s in run.capture.between(window.start, window.end)
        )

    return b"".join(chunks), sends_at


def clear_control(run: Run, path: str) -> None:
    """The same capture shows plaintext where the stream is clear: the SOCKS hop into alice's
    tor carries the envelope (and, on onion-plain, the message), so an absence on the links
    is the links' doing, not the capture's."""
    name = "token" if path == "sealed" else "plain-token"
    hop = stream_with_data(run, run.alice_socks, name)
    assert run.alice.address.encode() in hop
    assert (SUBJECT.encode() in hop) is (path == "plain")


SEALED_SENDS = ("token", "small", "large")
PLAIN_SENDS = ("plain-token", "plain-small", "plain-large")


@pytest.mark.parametrize("observer", [Observer.SENDER_NETWORK, Observer.TOR_GUARD])
@pytest.mark.parametrize("path", ["sealed", "plain"])
def test_alice_tor_links(run: Run, observer: Observer, path: str) -> None:
    """alice's tor's own connections to the relays: what her network and her guard carry."""
    assert run.alice_links, "found no connection of alice's tor to a relay"
    links, sends_at = _links(
        run, run.alice_links, SEALED_SENDS if path == "sealed" else PLAIN_SENDS
    )
    assert len(links) > 10_000, "too little Tor traffic captured to judge"
    clear_control(run, path)
    judge(
        MATRIX_SENT if path == "sealed" else MATRIX_PLAIN,
        observer,
        "alice's tor's TLS links to ORPorts (sizes: the stream the circuit carries)",
        link_probes(run, links, sends_at, path),
    )


@pytest.mark.parametrize("observer", [Observer.TOR_RELAYS, Observer.GLOBAL_PASSIVE])
@pytest.mark.parametrize("path", ["sealed", "plain"])
def test_every_tor_link(run: Run, observer: Observer, path: str) -> None:
    """Every link of the private network (relays to relays, both boxes' tors to relays)."""
    links, sends_at = _links(run, None, SEALED_SENDS if path == "sealed" else PLAIN_SENDS)
    clear_control(run, path)
    judge(
        MATRIX_SENT if path == "sealed" else MATRIX_PLAIN,
        observer,
        "every TLS link to or from an ORPort (sizes: the stream the circuit carries)",
        link_probes(run, links, sends_at, path),
    )


def test_same_bucket_same_length_on_the_wire(run: Run) -> None:
    """Messages of 500 and 2000 bytes: one length where the circuit starts and where it ends."""
    small, large = (
        stream_with_data(run, run.bob_inbound, "small"),
        stream_with_data(run, run.bob_inbound, "large"),
    )
    assert len(data_of(small)) == len(data_of(large)) >= 4096
    assert len(small) == len(large)
    assert len(stream_with_data(run, run.alice_socks, "small")) == len(
        stream_with_data(run, run.alice_socks, "large")
    )
    assert abs(len(run.maildir["small"]) - len(run.maildir["large"])) > 1000  # really different
