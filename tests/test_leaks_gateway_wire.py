"""The gateway paths on the wire: what each observer really receives, held to the model.

One real run: the private Tor network, Knot + Unbound serving ``clear.test``
(MX ``mx.clear.test``), a private Postfix that is both the recipient's provider
(bob@clear.test) and the clearnet sender's (carol@clear.test, relayed to the
gateway as its ``relayhost``), ``onionmail-gateway run`` for ``gw.test`` with
its own tor, and the box alice (``--verbose``) registered as ``alice@gw.test``.
Two :class:`tests.mitm_proxy.MitmProxy` sit on the clearnet legs (gateway ->
Postfix, Postfix -> gateway); each is an honest relay except where a test turns
it into an attacker that strips STARTTLS. A loopback packet capture
(:class:`tests.wire_capture.LoopbackCapture`) records every TCP segment.

``gateway-clearnet`` (alice -> gateway -> Postfix -> bob), by observer:

- ``gateway-mx-network``: every byte between the gateway and Postfix (EHLO and
  STARTTLS in clear, then the TLS handshake with its SNI, then ciphertext), and
  what the stripping attacker got (nothing: the gateway refuses to go on);
- ``recipient-provider`` and ``recipient-box`` (bob, a clearnet reader): the
  file Postfix stored and Postfix's log;
- ``gateway-operator``: the bytes the gateway's onion-side socket received (from
  its tor), the seal opened with the gateway's own key, the gateway's DEBUG log;
- ``box-logs``, ``box-seizure``: alice's stderr at INFO and above; alice's disk,
  stopped while a message waits for the (stopped) gateway, the queue decrypted
  with the key the seed on the same disk gives;
- ``sender-network``/``tor-guard``: alice's tor's links to the ORPorts;
  ``tor-relays``: every ORPort link; ``global-passive``: those plus the clearnet leg.

``clearnet-inbound`` (carol -> Postfix -> gateway -> alice):

- ``sender-network``: carol's client's connection to Postfix (STARTTLS);
- ``sender-provider``: Postfix's log and what it relayed;
- ``gateway-mx-network``: Postfix -> gateway. One send goes through an attacker
  who strips STARTTLS (the gateway offers it, never requires it, and Postfix's
  ``may`` falls back to plaintext), the others through an honest relay (TLS);
- ``gateway-operator``: what the gateway's clearnet socket received (the
  stripped send: what the gateway itself reads after TLS) and its DEBUG log;
- ``recipient-box``: alice's inbound socket and her Maildir file;
- ``box-logs``, ``box-seizure``: alice's stderr; alice's disk once stopped;
- ``tor-guard``: the gateway's and alice's tors' links; ``tor-relays``: every
  ORPort link; ``global-passive``: those plus both clearnet legs.

Someone who seizes the *gateway* is no observer of the model; its prose and the
gateway operator's reasons make claims about it, checked here on the gateway's
disk with a message waiting in each of its queues.

``gateway-clearnet-openpgp`` is checked in test_leaks_gateway_openpgp_wire.py; what the
two modules share (the world, its set-up, the probes alike on both) is in tests/gateway_wire.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from onionmail.core.errors import SealError
from onionmail.seal.envelope import (
    ANONYMOUS_MAGIC,
    mail_key_id,
    open_anonymous,
    open_sealed_to_mail_key,
)
from onionmail.seal.identity import (
    Identity,
    derive_subkey,
    load_identity,
)
from onionmail.seal.mail_key import MailKeyring
from onionmail.store.queue import CLEAR_HEADER_MAGIC, queue_key
from tests.box_process import free_port, run_box, stop_process, wait_for_mail
from tests.gateway_wire import (
    ALIAS,
    ATTACHMENT,
    BOB,
    BODY,
    CLEAR_DOMAIN,
    EHLO,
    FINGERPRINT,
    IP_TRACE,
    LOOPBACK_IP,
    MSGID_HOST,
    SUBJECT,
    USER_AGENT,
    X_MAILER,
    GatewayOperatorView,
    GatewayRun,
    Started,
    alice_tor_links,
    box_log_probes,
    clear_domain,
    date_in_window,
    gateway_and_alice,
    gateway_operator_probes,
    judge_outbound_mx_network,
    link_probes,
    log_text,
    message,
    names_more_than,
    recipient_side_probes,
    send_from_alice,
    smtp_leg_probes,
    submit,
    tor_bytes,
    tor_pid,
    wait_until,
)
from tests.leaks import (
    Unchecked,
    Window,
    both_ways,
    data_of,
    has,
    has_all,
    judge,
    one_stream,
    read_queue_entry,
    records,
    tls_stream,
)
from tests.mitm_proxy import AttackMode, MitmProxy
from tests.postfix import Postfix
from tests.wire_capture import connections_to, listening_ports
from threat_model import Item, MailPath, MessageTraits, ModelConfig, Observer, leaks

pytestmark = pytest.mark.tor

CAROL = f"carol@{CLEAR_DOMAIN}"
SMALL, LARGE = 500, 2000
"""Two lengths inside one Padmé bucket: equal on a sealed Tor leg, different elsewhere."""
OUT_SENDS = ("out-token", "out-small", "out-large")
IN_SENDS = ("in-token", "in-small", "in-large")

MATRIX_OUT = leaks(MailPath.GATEWAY_CLEARNET, MessageTraits(has_attachments=True), ModelConfig())
MATRIX_IN = leaks(MailPath.CLEARNET_INBOUND, MessageTraits(has_attachments=True), ModelConfig())
"""The box and the gateway run their defaults: this is the ModelConfig default (TLS
required outbound, padding on, immediate timing, scrubbing on, no passphrase)."""


# -- the world -------------------------------------------------------------------------


class ProxyThread:
    """The clearnet-leg proxies, run on an event loop of their own in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxies: list[MitmProxy] = []

    def start(self, upstream_port: int) -> MitmProxy:
        proxy = MitmProxy(upstream_port, AttackMode.PASSTHROUGH)
        asyncio.run_coroutine_threadsafe(proxy.__aenter__(), self.loop).result(10)
        self.proxies.append(proxy)
        return proxy

    def stop(self) -> None:
        for proxy in self.proxies:
            future = asyncio.run_coroutine_threadsafe(proxy.__aexit__(None, None, None), self.loop)
            future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Run(GatewayRun):
    proxy_out: MitmProxy
    proxy_in: MitmProxy
    gw_onion: str
    gw_smtp_port: int
    gw_process: subprocess.Popen[str]
    alice_inbound: int = 0
    gw_socks: int = 0
    gw_links: set[int] = field(default_factory=set)
    postfix_copy: dict[str, bytes] = field(default_factory=dict)
    maildir: dict[str, bytes] = field(default_factory=dict)
    alice_received_disk: bytes = b""
    alice_maildir_files: bytes = b""
    alice_sent_disk: bytes = b""
    alice_queue_plain: bytes = b""
    alice_queue_files: list[tuple[int, int, float]] = field(default_factory=list)
    gw_disk: bytes = b""
    gw_clearnet_queue: bytes = b""
    gw_box_queue_opened: bytes = b""
    gw_box_queue_for_alice: bytes = b""
    gw_box_queue_entries: list[bytes] = field(default_factory=list)
    stripped_out: bytes = b""


def read_tree(root: Path, skip: Path | None = None) -> bytes:
    return b"\n".join(
        p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (skip is None or not p.is_relative_to(skip))
    )


def postfix_copy(postfix: Postfix, token: str) -> bytes | None:
    new = postfix.maildir / "new"
    for path in sorted(new.iterdir()) if new.is_dir() else []:
        data = path.read_bytes()
        if token.encode() in data:
            return data
    return None


def send_out(run: Run, name: str, subject: str, filler: int = 0) -> None:
    """alice -> gateway -> Postfix; keep the window and Postfix's stored copy."""
    send_from_alice(
        run, name, subject, filler, lambda: postfix_copy(run.postfix, subject) is not None
    )
    stored = postfix_copy(run.postfix, subject)
    assert stored is not None
    run.postfix_copy[name] = stored


def send_in(run: Run, name: str, subject: str, filler: int = 0, *, strip: bool = False) -> None:
    """carol -> Postfix (STARTTLS) -> gateway -> alice; keep the window and the Maildir file."""
    run.proxy_in.mode = AttackMode.STRIP_STARTTLS if strip else AttackMode.PASSTHROUGH
    start = time.time()
    asyncio.run(carol_sends(run.postfix, message(CAROL, ALIAS, subject, filler=filler)))

    def arrived() -> bool:
        return any(subject.encode() in m for m in wait_for_mail(run.alice.maildir, 0, timeout=1))

    wait_until(f"{name} in alice's Maildir", arrived, 90)
    run.alice_links |= connections_to(tor_pid(run.alice.new.box_dir), run.or_ports)
    run.gw_links |= connections_to(tor_pid(run.gw_dir), run.or_ports)
    time.sleep(0.3)
    run.windows[name] = Window(start, time.time())
    run.proxy_in.mode = AttackMode.PASSTHROUGH
    (stored,) = [m for m in wait_for_mail(run.alice.maildir, 0) if subject.encode() in m]
    run.maildir[name] = stored


async def carol_sends(postfix: Postfix, raw: bytes) -> None:
    """carol's client submits over STARTTLS, as the model assumes (it does not check the
    test certificate: the point is the encryption on her network, not her provider's name)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    await aiosmtplib.send(
        raw,
        sender=CAROL,
        recipients=[ALIAS],
        hostname="127.0.0.1",
        port=postfix.port,
        local_hostname=EHLO,
        start_tls=True,
        tls_context=context,
        timeout=30,
    )


def active_entries(queue: Path) -> list[Path]:
    active = queue / "active"
    return sorted(active.glob("*.msg")) if active.is_dir() else []


def decrypt_queue(queue: Path, key: bytes) -> list[bytes]:
    """Every active entry of an OutboundQueue, decrypted: a JSON head line, then the message.

    A queue file is a clear header line (what listing needs without the key:
    destination, times) and the ciphertext after it.
    """
    return [read_queue_entry(path.read_bytes(), key)[1] for path in active_entries(queue)]


def hold_and_seize(run: Run, gw_identity: Identity) -> None:
    """A message waiting in each gateway queue, the gateway stopped and its disk read; alice's
    disk read twice: stopped after receiving, and stopped with a message for the gateway."""
    gw_queue = run.gw_dir / "queue"
    # Outbound held: an attacker strips STARTTLS, the gateway keeps the message queued.
    run.proxy_out.mode = AttackMode.STRIP_STARTTLS
    sessions, seen_before = run.proxy_out.sessions, len(run.proxy_out.cleartext)
    asyncio.run(submit(run.alice, BOB, message(run.alice.address, BOB, SUBJECT + "-held-out")))
    wait_until("the gateway's clearnet queue", lambda: bool(active_entries(gw_queue / "clearnet")))
    wait_until("a stripped delivery attempt", lambda: run.proxy_out.sessions > sessions)
    time.sleep(0.5)
    run.stripped_out = bytes(run.proxy_out.cleartext[seen_before:])
    # alice stops: her disk after receiving; then clearnet mail for her waits at the gateway.
    run.alice_log = list(run.alice.stderr_lines)
    run.alice.stop()
    run.alice_received_disk = read_tree(run.alice.new.box_dir)
    run.alice_maildir_files = read_tree(run.alice.maildir)
    asyncio.run(carol_sends(run.postfix, message(CAROL, ALIAS, SUBJECT + "-held-in")))
    wait_until("the gateway's box queue", lambda: bool(active_entries(gw_queue / "boxes")), 30)
    stop_process(run.gw_process)
    run.gw_disk = read_tree(run.gw_dir)
    seed = gw_identity.seed  # read from the gateway's own disk: no passphrase by default
    run.gw_clearnet_queue = b"\n".join(
        decrypt_queue(gw_queue / "clearnet", derive_subkey(seed, b"om-gw-clearnet"))
    )
    alice_identity = load_identity(run.alice.new.box_dir / "keys" / "identity.key")
    keyrings = {
        identity: MailKeyring.open(directory / "keys" / "mail-keys", identity)
        for identity, directory in (
            (gw_identity, run.gw_dir),
            (alice_identity, run.alice.new.box_dir),
        )
    }
    for plain in decrypt_queue(gw_queue / "boxes", derive_subkey(seed, b"om-gw-boxes")):
        inner = plain.partition(b"\n")[2]
        run.gw_box_queue_entries.append(inner)
        for key, ring in keyrings.items():  # what the gateway's own keys open, if any
            try:
                opened = _open_inner(inner, key, ring)
            except SealError:
                continue
            if key is gw_identity:
                run.gw_box_queue_opened += opened
            else:
                run.gw_box_queue_for_alice += opened
    # alice again, with the gateway gone: her message waits in her own queue.
    alice = run_box(run.alice.new, verbose=True)
    run.alice = alice
    start = time.time()
    asyncio.run(submit(alice, BOB, message(alice.address, BOB, SUBJECT + "-queued")))
    box_queue = alice.new.box_dir / "queue"
    wait_until("alice's queue", lambda: bool(active_entries(box_queue)), 30)
    run.windows["queued"] = Window(start, time.time())
    alice.stop()
    # Her Maildir is left out: it holds the mail she received, which is another row.
    run.alice_sent_disk = read_tree(alice.new.box_dir, skip=alice.new.box_dir / "mail")
    seed = load_identity(alice.new.box_dir / "keys" / "identity.key").seed
    plains = decrypt_queue(box_queue, queue_key(seed))
    for path, plain in zip(active_entries(box_queue), plains, strict=True):
        queued = plain.partition(b"\n")[2]
        clear = path.read_bytes().partition(b"\n")[0]
        created = float(json.loads(clear.removeprefix(CLEAR_HEADER_MAGIC))["created"])
        run.alice_queue_files.append((path.stat().st_size, len(queued), created))
    run.alice_queue_plain = b"\n".join(plains)


@pytest.fixture(scope="module")
def run(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("gw-wire")
    started = Started.begin(root)
    proxies = ProxyThread()
    gw_smtp_port = free_port()
    proxy_in = proxies.start(gw_smtp_port)
    settings = {
        "relayhost": f"[127.0.0.1]:{proxy_in.port}",
        "smtp_tls_security_level": "may",  # what most sending providers do
        "smtp_connection_cache_on_demand": "no",  # one session per message
    }
    gw_dir = root / "gateway"
    try:
        with clear_domain(root, started.ca, settings) as (dns, postfix):
            proxy_out = proxies.start(postfix.port)
            gw_process, gw_log, gw_onion, new = gateway_and_alice(
                root, testnet, dns, gw_smtp_port, proxy_out.port
            )
            started.gw_process = gw_process
            alice = started.alice = run_box(new, verbose=True)
            or_ports = {node.or_port for node in testnet.nodes}
            scenario = Run(
                started.capture,
                postfix,
                gw_dir,
                gw_log,
                alice,
                or_ports,
                proxy_out,
                proxy_in,
                gw_onion,
                gw_smtp_port,
                gw_process,
            )
            (scenario.alice_socks,) = listening_ports(tor_pid(new.box_dir))
            (scenario.alice_inbound,) = listening_ports(alice.process.pid) - {alice.submission_port}
            (scenario.gw_socks,) = listening_ports(tor_pid(gw_dir))
            (scenario.gw_onion_port,) = listening_ports(gw_process.pid) - {gw_smtp_port}
            send_out(scenario, "out-token", SUBJECT)
            send_out(scenario, "out-small", SUBJECT + "-out-small", SMALL)
            send_out(scenario, "out-large", SUBJECT + "-out-large", LARGE)
            send_in(scenario, "in-token", SUBJECT + "-in", strip=True)
            send_in(scenario, "in-small", SUBJECT + "-in-small", SMALL)
            send_in(scenario, "in-large", SUBJECT + "-in-large", LARGE)
            gw_identity = load_identity(gw_dir / "keys" / "identity.key")
            hold_and_seize(scenario, gw_identity)
            started.alice = scenario.alice
            started.captured()
            yield scenario
    finally:
        started.stop(proxies.stop)


# -- gateway-clearnet ------------------------------------------------------------------


def test_gateway_mx_network_outbound(run: Run) -> None:
    """Every byte between the gateway and Postfix while the token message went by; what
    crosses in clear: the gateway's EHLO before STARTTLS, the MX name in the SNI."""
    judge_outbound_mx_network(MATRIX_OUT, run, OUT_SENDS)


def test_stripping_starttls_outbound_gets_the_attacker_nothing(run: Run) -> None:
    """TLS required: with STARTTLS stripped the gateway sends no envelope and no message."""
    stripped = run.stripped_out
    assert b"EHLO" in stripped and b"502" not in stripped  # it never even tried STARTTLS
    assert b"MAIL FROM" not in stripped and SUBJECT.encode() not in stripped
    assert ALIAS.encode() not in stripped and BOB.encode() not in stripped


@pytest.mark.parametrize("observer", [Observer.RECIPIENT_PROVIDER, Observer.RECIPIENT_BOX])
def test_clearnet_recipient_side(run: Run, observer: Observer) -> None:
    """The file Postfix stored (what bob reads) and Postfix's log."""
    stored = run.postfix_copy["out-token"]
    seen = stored + run.postfix.log.read_bytes()
    small, large = run.postfix_copy["out-small"], run.postfix_copy["out-large"]
    judge(
        MATRIX_OUT,
        observer,
        "Postfix's stored copy and its log",
        recipient_side_probes(run, "out-token", stored, seen, small, large),
    )
    assert b".onion" not in stored  # nothing in the stored copy names the box's onion


def test_gateway_operator_outbound(run: Run) -> None:
    """The gateway's onion-side socket, the seal opened with its key, its DEBUG log."""
    view = GatewayOperatorView.read(run, OUT_SENDS)
    judge(
        MATRIX_OUT,
        Observer.GATEWAY_OPERATOR,
        "the gateway's onion socket, the opened seal, its DEBUG log",
        gateway_operator_probes(run, view, "out-token"),
    )
    # Not a cell: the gateway's log names no address, alias or subject even at DEBUG.
    assert not any(t.encode() in view.log for t in (BOB, ALIAS, run.alice.address, SUBJECT))


# -- clearnet-inbound ------------------------------------------------------------------


def test_gateway_mx_network_inbound(run: Run) -> None:
    """Postfix -> gateway: once through an attacker who strips STARTTLS, twice honestly."""
    port = run.gw_smtp_port
    wire = both_ways(run, port, "in-token")
    lengths = {len(tls_stream(run, port, n)) for n in ("in-small", "in-large")}
    judge(
        MATRIX_IN,
        Observer.GATEWAY_MX_NETWORK,
        "the Postfix -> gateway stream, STARTTLS stripped on the way",
        smtp_leg_probes(run, wire, lengths, port, "in-token", (CAROL,), ALIAS)
        | {Item.SENDER_IP: lambda: bool(re.search(rb"^Received: .*127\.0\.0\.1", wire, re.M))},
    )
    # A passive observer of an honest session sees only TLS after STARTTLS.
    honest = tls_stream(run, port, "in-small")
    assert b"MAIL FROM" not in honest and CAROL.encode() not in honest


def test_gateway_operator_inbound(run: Run) -> None:
    """What the gateway's clearnet socket read (the stripped send: what it reads inside TLS
    otherwise), its registrations, its DEBUG log."""
    stream = one_stream(run, run.gw_smtp_port, "in-token")
    data = data_of(stream)
    log, _ = log_text(run.gw_log, debug=True)
    registry = (run.gw_dir / "state" / "gateway.sqlite").read_bytes()
    lengths = {len(tls_stream(run, run.gw_smtp_port, n)) for n in ("in-small", "in-large")}
    judge(
        MATRIX_IN,
        Observer.GATEWAY_OPERATOR,
        "the gateway's clearnet socket, its registrations (state/gateway.sqlite), its DEBUG log",
        {
            Item.SENDER_ADDRESS: has(stream, CAROL),
            Item.RECIPIENT_ADDRESS: has(stream, ALIAS),
            Item.SENDER_IP: lambda: bool(re.search(rb"^Received: .*127\.0\.0\.1", data, re.M)),
            Item.RECIPIENT_IP: lambda: bool(IP_TRACE.search(registry)),
            Item.SUBJECT: has(data, SUBJECT),
            Item.BODY: has(data, BODY),
            Item.ATTACHMENT_NAMES: has(data, ATTACHMENT),
            Item.SIZE: lambda: len(lengths) > 1,
            Item.SEND_TIME: lambda: date_in_window(data, run.windows["in-token"]),
            Item.RELATION: lambda: (
                CAROL.encode() in stream and run.alice.address.encode() in registry
            ),
            Item.CLIENT_FINGERPRINT: has(data, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: has(data, MSGID_HOST),
        },
    )
    assert not any(t.encode() in log for t in (CAROL, ALIAS, SUBJECT, BODY))


def test_sender_provider_inbound(run: Run) -> None:
    """Postfix as carol's provider: its log and the message it relayed to the gateway."""
    relayed = one_stream(run, run.gw_smtp_port, "in-token")
    log = run.postfix.log.read_bytes()
    judge(
        MATRIX_IN,
        Observer.SENDER_PROVIDER,
        "Postfix's log and what it relayed",
        {
            Item.SENDER_ADDRESS: has(relayed, CAROL),
            Item.RECIPIENT_ADDRESS: has(relayed, ALIAS),
            Item.SENDER_IP: lambda: bool(IP_TRACE.search(log)),
            Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
            Item.SUBJECT: has(relayed, SUBJECT),
            Item.BODY: has(relayed, BODY),
            Item.ATTACHMENT_NAMES: has(relayed, ATTACHMENT),
            Item.SIZE: lambda: b"size=" in log,
            Item.SEND_TIME: lambda: date_in_window(data_of(relayed), run.windows["in-token"]),
            Item.RELATION: has_all(relayed, CAROL, ALIAS),
            Item.CLIENT_FINGERPRINT: has(relayed, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: has(relayed, MSGID_HOST),
        },
    )


def test_recipient_box_inbound(run: Run) -> None:
    """alice's inbound socket (from her tor) and her Maildir file."""
    stored = run.maildir["in-token"]
    socket_bytes = one_stream(run, run.alice_inbound, "in-token")
    judge(
        MATRIX_IN,
        Observer.RECIPIENT_BOX,
        "alice's inbound socket + her Maildir file",
        {
            Item.SENDER_ADDRESS: has(stored, CAROL),
            Item.RECIPIENT_ADDRESS: has(stored, ALIAS),
            Item.SENDER_IP: lambda: bool(re.search(rb"^Received: .*127\.0\.0\.1", stored, re.M)),
            Item.RECIPIENT_IP: Unchecked("its own address; on loopback it is 127.0.0.1 for all"),
            Item.SUBJECT: has(stored, SUBJECT),
            Item.BODY: has(stored, BODY),
            Item.ATTACHMENT_NAMES: has(stored, ATTACHMENT),
            Item.SIZE: lambda: len(run.maildir["in-small"]) != len(run.maildir["in-large"]),
            Item.SEND_TIME: lambda: date_in_window(stored, run.windows["in-token"]),
            Item.RELATION: has_all(stored, CAROL, ALIAS),
            Item.CLIENT_FINGERPRINT: has(stored, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: has(stored, MSGID_HOST),
        },
    )
    assert SUBJECT.encode() not in socket_bytes  # sealed on the Tor leg


# -- box-logs and box-seizure ------------------------------------------------------------


def test_box_logs_outbound(run: Run) -> None:
    assert any(r.level == "DEBUG" for r in records(run.alice_log)), "not verbose?"
    judge(
        MATRIX_OUT,
        Observer.BOX_LOGS,
        "alice's stderr at INFO and above (run with --verbose)",
        box_log_probes(
            run, (run.alice.address, ALIAS), (BOB,), "out-token", run.postfix_copy["out-token"]
        ),
    )


def test_box_logs_inbound(run: Run) -> None:
    judge(
        MATRIX_IN,
        Observer.BOX_LOGS,
        "alice's stderr at INFO and above (run with --verbose)",
        box_log_probes(
            run, (CAROL,), (ALIAS, run.alice.address), "in-token", run.maildir["in-token"]
        ),
    )


def test_box_seizure_outbound(run: Run) -> None:
    """alice stopped with a message waiting for the (stopped) gateway: her whole disk."""
    seen = run.alice_sent_disk + b"\n" + run.alice_queue_plain
    ((msg_size, length, created),) = run.alice_queue_files
    window = run.windows["queued"]
    queued = run.alice_queue_plain.partition(b"\n")[2]
    judge(
        MATRIX_OUT,
        Observer.BOX_SEIZURE,
        "alice's box directory, the queue decrypted with the seed found on it",
        {
            Item.SENDER_ADDRESS: has(run.alice_queue_plain, run.alice.address),
            Item.RECIPIENT_ADDRESS: has(seen, BOB),
            Item.SENDER_IP: Unchecked("physical: where the machine ran, not bytes on its disk"),
            Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            Item.SIZE: lambda: 0 < msg_size - length < 512,
            Item.SEND_TIME: lambda: window.start <= created <= window.end,
            Item.RELATION: has_all(seen, run.alice.address, BOB),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: names_more_than(queued, run.alice.onion),
        },
    )
    # The queue's .state names the gateway's onion, not bob; its files alone hold no content.
    assert run.gw_onion.encode() in run.alice_sent_disk
    assert BOB.encode() not in run.alice_sent_disk
    assert (SUBJECT + "-queued").encode() not in run.alice_sent_disk


def test_box_seizure_inbound(run: Run) -> None:
    """alice stopped after receiving: her whole disk (the Maildir is clear by design)."""
    seen = run.alice_received_disk
    stored = run.maildir["in-token"]
    judge(
        MATRIX_IN,
        Observer.BOX_SEIZURE,
        "alice's box directory",
        {
            Item.SENDER_ADDRESS: has(seen, CAROL),
            Item.RECIPIENT_ADDRESS: has(seen, ALIAS),
            Item.SENDER_IP: lambda: bool(IP_TRACE.search(run.alice_maildir_files)),
            Item.RECIPIENT_IP: Unchecked("physical: where the machine ran, not bytes on its disk"),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            Item.SIZE: lambda: stored in seen,
            Item.SEND_TIME: lambda: date_in_window(stored, run.windows["in-token"]),
            Item.RELATION: has_all(seen, CAROL, ALIAS),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: has(seen, MSGID_HOST),
        },
    )


# -- the gateway's disk ----------------------------------------------------------------


def test_gateway_seizure_reads_outgoing_mail_but_not_mail_held_for_a_box(run: Run) -> None:
    """Not a cell (the model has no gateway-seizure observer), but the prose's claims: a
    stopped gateway without a passphrase on its key gives up the clearnet mail waiting to
    leave; the mail it holds for an offline box is sealed under a one-time key to the
    box's mail key: nothing on its disk opens it, nor does the key the box's tor holds."""
    raw = run.gw_disk
    for token in (SUBJECT + "-held-out", SUBJECT + "-held-in", BOB, CAROL):
        assert token.encode() not in raw, f"{token} in clear on the gateway's disk"
    # Outbound: the queue key derives from the seed on the same disk.
    assert (SUBJECT + "-held-out").encode() in run.gw_clearnet_queue
    assert BOB.encode() in run.gw_clearnet_queue and ALIAS.encode() in run.gw_clearnet_queue
    # Inbound: the queue layer opens, the envelope inside does not, but for alice's key.
    assert run.gw_box_queue_entries and run.gw_box_queue_opened == b""
    # sealed to alice's mail key (learned when she registered), not to her onion's key
    assert all(entry.startswith(ANONYMOUS_MAGIC + b"\x02") for entry in run.gw_box_queue_entries)
    assert (SUBJECT + "-held-in").encode() in run.gw_box_queue_for_alice
    assert CAROL.encode() in run.gw_box_queue_for_alice


# -- the Tor links and the global view -----------------------------------------------------


@pytest.mark.parametrize(
    "observer", [Observer.SENDER_NETWORK, Observer.TOR_GUARD, Observer.TOR_RELAYS]
)
def test_tor_leg_outbound(run: Run, observer: Observer) -> None:
    """alice's tor's links (her network, her guard) or every ORPort link (the relays); sizes
    from the stream the circuit carries, read where it enters alice's tor."""
    links = alice_tor_links(run, observer, OUT_SENDS)
    sizes = {len(one_stream(run, run.alice_socks, n)) for n in ("out-small", "out-large")}
    hop = one_stream(run, run.alice_socks, "out-token")
    assert run.alice.address.encode() in hop  # the capture reads the clear envelope there
    judge(
        MATRIX_OUT,
        observer,
        "Tor links to ORPorts (sizes: the stream into alice's tor)",
        link_probes(run, links, sizes, run.alice_socks, "out-token", run.alice.address, BOB),
    )


@pytest.mark.parametrize("observer", [Observer.TOR_GUARD, Observer.TOR_RELAYS])
def test_tor_leg_inbound(run: Run, observer: Observer) -> None:
    """The gateway's and alice's tors' links (the guards of both ends) or every ORPort link;
    sizes from the stream into the gateway's tor and out of alice's."""
    ports = None if observer is Observer.TOR_RELAYS else run.alice_links | run.gw_links
    links = tor_bytes(run, ports, IN_SENDS)
    ends = [
        {len(one_stream(run, port, n)) for n in ("in-small", "in-large")}
        for port in (run.gw_socks, run.alice_inbound)
    ]
    probes = link_probes(run, links, set(), run.gw_socks, "in-token", CAROL, ALIAS)
    judge(
        MATRIX_IN,
        observer,
        "Tor links to ORPorts (sizes: the stream at each end of the circuit)",
        probes | {Item.SIZE: lambda: any(len(at_one_end) > 1 for at_one_end in ends)},
    )


def test_sender_network_inbound(run: Run) -> None:
    """carol's client's connection to her provider (STARTTLS)."""
    port = run.postfix.port
    wire = both_ways(run, port, "in-token")
    lengths = {len(tls_stream(run, port, n)) for n in ("in-small", "in-large")}
    judge(
        MATRIX_IN,
        Observer.SENDER_NETWORK,
        "carol's client <-> Postfix stream",
        smtp_leg_probes(run, wire, lengths, port, "in-token", (CAROL,), ALIAS)
        | {Item.CLIENT_FINGERPRINT: has(wire, USER_AGENT, X_MAILER)},
    )


@pytest.mark.parametrize("path", [MailPath.GATEWAY_CLEARNET, MailPath.CLEARNET_INBOUND])
def test_global_passive(run: Run, path: MailPath) -> None:
    """Every link at once: the Tor links and the clearnet legs."""
    outbound = path is MailPath.GATEWAY_CLEARNET
    names = OUT_SENDS if outbound else IN_SENDS
    clearnet = (run.postfix.port,) if outbound else (run.postfix.port, run.gw_smtp_port)
    wire = tor_bytes(run, None, names) + b"".join(
        both_ways(run, port, names[0]) for port in clearnet
    )
    mx_port = run.postfix.port if outbound else run.gw_smtp_port
    sizes = {len(tls_stream(run, mx_port, n)) for n in names[1:]}
    sender, rcpt = (run.alice.address, BOB) if outbound else (CAROL, ALIAS)
    probes = link_probes(run, wire, sizes, mx_port, names[0], sender, rcpt)
    judge(
        MATRIX_OUT if outbound else MATRIX_IN,
        Observer.GLOBAL_PASSIVE,
        "every ORPort link and the clearnet legs",
        probes | {Item.SENDER_ADDRESS: has(wire, sender, ALIAS if outbound else CAROL)},
    )


def _open_inner(inner: bytes, identity: Identity, ring: MailKeyring) -> bytes:
    """An inner envelope opened with a box's keys: its mail keys, or (version 1) its onion's."""
    if not inner.startswith(ANONYMOUS_MAGIC + b"\x02"):
        return open_anonymous(inner, recipient=identity).message

    def key_for(key_id: bytes) -> tuple[bytes, bytes] | None:
        for pair in (ring.current, *(r.pair for r in ring.retired)):
            if mail_key_id(pair.public) == key_id:
                return pair.private, pair.public
        return None

    return open_sealed_to_mail_key(inner, key_for).message
