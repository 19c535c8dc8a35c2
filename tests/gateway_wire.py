"""What the gateway wire tests share (test_leaks_gateway_wire, test_leaks_gateway_openpgp_wire).

The world's names and the tokens planted in every message; :class:`GatewayRun`, what both
modules keep of their run; setting the world up (the test CA, Knot + Unbound and Postfix for
``clear.test``, the gateway and alice's registered box) and tearing it down
(:class:`Started`); alice's sends; reading the captures and the logs
(:class:`GatewayOperatorView`: what the gateway's operator has of an outbound send); and the
probes both modules hold to the model: a clearnet SMTP leg, the gateway operator, Postfix's
stored copy, alice's log, the Tor links.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme

from onionmail.box.create import NewBox
from onionmail.seal.envelope import decode_from_smtp, open_envelope
from onionmail.seal.handshake import HEADER as HANDSHAKE_HEADER
from onionmail.seal.identity import load_identity
from tests.box_process import RunningBox, create_test_box, stop_process, submit_raw
from tests.dns_server import DnsWorld, Zone, a, mx, running_dns
from tests.gateway_process import cli, gateway_init, start_registration
from tests.keylog import open_with_log
from tests.leaks import (
    HarnessWarnings,
    LogRecord,
    Probe,
    Unchecked,
    Window,
    both_ways,
    collect_quietly,
    data_of,
    has,
    has_all,
    judge,
    one_stream,
    records,
    sent_in,
    tls_stream,
)
from tests.postfix import Postfix, postfix_for_domain
from tests.wire_capture import LoopbackCapture, connections_to
from threat_model import Item, Observer

GW_DOMAIN = "gw.test"
CLEAR_DOMAIN = "clear.test"
MX_NAME = "mx.clear.test"
ZONES = [Zone(CLEAR_DOMAIN, [mx(10, MX_NAME + "."), a("mx")])]
ALIAS = f"alice@{GW_DOMAIN}"
BOB = f"bob@{CLEAR_DOMAIN}"

_TAG = secrets.token_hex(4)
SUBJECT = f"gsubj-{_TAG}-Hy3pQ8"
BODY = f"gbody-{_TAG}-Nw6tK1"
ATTACHMENT = f"gw-plan-{_TAG}.pdf"
USER_AGENT = f"GUA-{_TAG}-Vb2cD7"
X_MAILER = f"GXM-{_TAG}-Vb2cD7"
EHLO = f"gehlo-{_TAG}.client.example"
MSGID_HOST = f"gmsgid-{_TAG}.client.example"
FINGERPRINT = (USER_AGENT, X_MAILER, EHLO)
IP_TRACE = re.compile(rb"\b127\.0\.0\.1\b|X-Originating-IP", re.I)
LOOPBACK_IP = "on loopback every address is 127.0.0.1: the capture cannot tell whose it is"


@dataclass
class GatewayRun:
    """What both modules keep of their run; each module's ``Run`` adds its own. The fields
    after ``_`` are keyword-only, so a ``Run`` may add positional ones (after the first six)."""

    capture: LoopbackCapture
    postfix: Postfix
    gw_dir: Path
    gw_log: list[str]
    alice: RunningBox
    or_ports: set[int]
    _: KW_ONLY
    gw_onion_port: int = 0
    alice_socks: int = 0
    alice_links: set[int] = field(default_factory=set)
    windows: dict[str, Window] = field(default_factory=dict)
    alice_log: list[str] = field(default_factory=list)


# -- the world -------------------------------------------------------------------------


def message(frm: str, to: str, subject: str, *, filler: int = 0) -> bytes:
    """A message with every token; ``filler`` > 0 makes a plain one of about that length."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = frm, to, subject
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@{MSGID_HOST}>"
    msg["Date"] = email.utils.formatdate()
    if filler:
        msg.set_content("x" * filler)
        return msg.as_bytes(policy=email.policy.SMTP)
    msg["User-Agent"], msg["X-Mailer"] = USER_AGENT, X_MAILER
    msg.set_content(f"Hello,\n{BODY}\n")
    msg.add_attachment(
        b"%PDF-1.4\n% plan\n", maintype="application", subtype="pdf", filename=ATTACHMENT
    )
    return msg.as_bytes(policy=email.policy.SMTP)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def tor_pid(directory: Path) -> int:
    """The pid of the tor that the box or gateway in ``directory`` runs."""
    return int((directory / "tor" / "tor.pid").read_text().strip())


async def submit(box: RunningBox, to: str, raw: bytes) -> None:
    await submit_raw(box, to, raw, ehlo=EHLO)


def send_from_alice(
    run: GatewayRun, name: str, subject: str, filler: int, arrived: Callable[[], bool]
) -> None:
    """alice -> gateway -> Postfix until ``arrived``; keep the send's window."""
    start = time.time()
    asyncio.run(submit(run.alice, BOB, message(run.alice.address, BOB, subject, filler=filler)))
    wait_until(f"{name} at Postfix", arrived)
    run.alice_links |= connections_to(tor_pid(run.alice.new.box_dir), run.or_ports)
    time.sleep(0.3)  # QUIT and the last segments
    run.windows[name] = Window(start, time.time())


def _gateway_toml(run_dir: Path, testnet: Any, dns: Any, smtp_port: int, mx_port: int) -> str:
    tls = run_dir / "gw-tls"
    return f"""
[gateway]
domain = "{GW_DOMAIN}"
require_approval = false
[smtp]
port = {smtp_port}
tls_cert = "{tls / "chain.pem"}"
tls_key = "{tls / "key.pem"}"
[dns]
resolver = "{dns.resolver_host}"
port = {dns.resolver_port}
[outbound]
ca_file = "{run_dir / "ca.pem"}"
mx_port = {mx_port}
allow_private_mx = true
[tor]
testnet = "{testnet.directory}"
[delivery]
retry_initial = 2.0
"""


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


def spawn_gateway(
    gw_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    """The gateway in ``gw_dir``, its sessions' keys logged to ``gw_dir/keylog``
    (:mod:`tests.keylog`: what its operator could keep); ``env`` added to its environment."""
    process = subprocess.Popen(
        cli(
            "tests.keylog", str(gw_dir / "keylog"), "gateway.cli", "-v", "run", "--dir", str(gw_dir)
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    log: list[str] = []
    threading.Thread(target=_drain, args=(process.stderr, log), daemon=True).start()
    return process, log


def wait_gateway(
    process: subprocess.Popen[str], log: list[str], timeout: float = 90
) -> dict[str, str]:
    """Until the gateway printed its clearnet port (the last thing it starts); what it
    printed (``onion``, ``instance onion``, ``metrics``, ``smtp``: their values)."""
    assert process.stdout is not None
    printed: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        key, _, value = process.stdout.readline().partition(":")
        if not key:
            break
        printed[key] = value.strip()
        if key == "smtp":
            return printed
    stop_process(process)
    raise AssertionError("the gateway did not start:\n" + "".join(log[-30:]))


def gateway_certificate(root: Path) -> trustme.CA:
    """A test CA (``root/ca.pem``) and the gateway's certificate for GW_DOMAIN (``root/gw-tls``)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    (root / "gw-tls").mkdir()
    gw_cert = ca.issue_cert(GW_DOMAIN)
    gw_cert.private_key_pem.write_to_path(str(root / "gw-tls" / "key.pem"))
    gw_cert.cert_chain_pems[0].write_to_path(str(root / "gw-tls" / "chain.pem"))
    return ca


@contextmanager
def clear_domain(
    root: Path, ca: trustme.CA, postfix_settings: Mapping[str, str]
) -> Iterator[tuple[DnsWorld, Postfix]]:
    """Knot + Unbound serving ``clear.test`` (in ``root/dns``) and Postfix as its MX, with
    ``ca``'s certificate for MX_NAME and bob as its one user, for a ``with`` block."""
    with (
        running_dns(ZONES, root / "dns") as dns,
        postfix_for_domain(
            CLEAR_DOMAIN,
            tls=ca.issue_cert(MX_NAME),
            known_users=["bob"],
            extra_settings=postfix_settings,
        ) as postfix,
    ):
        yield dns, postfix


def gateway_and_alice(
    root: Path, testnet: Any, dns: Any, smtp_port: int, mx_port: int
) -> tuple[subprocess.Popen[str], list[str], str, NewBox]:
    """``gateway init`` in ``root/gateway`` and the gateway started; alice's box created
    and registered with it (while it starts: the command waits for its onion).

    Returns the gateway's process, its log, its onion and alice's new box (not
    running yet). If anything fails, the gateway is stopped before the error goes on.
    """
    gw_dir = root / "gateway"
    gw_onion = gateway_init(gw_dir, GW_DOMAIN)
    (gw_dir / "gateway.toml").write_text(_gateway_toml(root, testnet, dns, smtp_port, mx_port))
    gw_process, gw_log = spawn_gateway(gw_dir)
    try:
        new = create_test_box(root / "alice", "alice", testnet=testnet.directory, submission_port=0)
        register = start_registration(new.box_dir, gw_onion)
        try:
            wait_gateway(gw_process, gw_log)
            _, err = register.communicate(timeout=150)
        finally:
            if register.poll() is None:
                register.kill()
                register.communicate()
        assert register.returncode == 0, err
    except BaseException:
        stop_process(gw_process)
        raise
    return gw_process, gw_log, gw_onion, new


@dataclass
class Started:
    """What a module's ``run`` fixture started around its sends: the harness's quiet set-up
    (:class:`tests.leaks.HarnessWarnings`), the test CA, the capture, and (once they run)
    alice's box and the gateway; :meth:`stop` stops them whatever happened."""

    harness: HarnessWarnings
    ca: trustme.CA
    capture: LoopbackCapture
    alice: RunningBox | None = None
    gw_process: subprocess.Popen[str] | None = None

    @classmethod
    def begin(cls, root: Path) -> Started:
        """The quiet set-up begins, the CA and the gateway's certificate are made in ``root``
        (:func:`gateway_certificate`), the capture starts."""
        harness = HarnessWarnings().start()
        ca = gateway_certificate(root)
        return cls(harness, ca, LoopbackCapture().start())

    def captured(self) -> None:
        """The sends are over: the capture stops, having lost nothing, and the set-up ends."""
        drops = self.capture.stop()
        assert drops == 0, f"the loopback capture lost {drops} packets"
        self.harness.end()  # see HarnessWarnings

    def stop(self, *also: Callable[[], None]) -> None:
        """The capture, alice, the gateway, then ``also`` (the module's own), in that order."""
        self.capture.stop()
        if self.alice is not None:
            self.alice.stop()
        if self.gw_process is not None:
            stop_process(self.gw_process)
        for stop in also:
            stop()
        self.harness.end()
        collect_quietly()


# -- reading the captures --------------------------------------------------------------


def date_in_window(raw: bytes, window: Window) -> bool:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    date = email.utils.parsedate_to_datetime(str(parsed["Date"])).timestamp()
    return window.start // 60 * 60 <= date <= window.end


def message_id_host(raw: bytes) -> str:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return str(parsed["Message-ID"]).strip("<>").rpartition("@")[2]


def names_more_than(raw: bytes, *known: str) -> bool:
    """The client's host is there, or the Message-ID names a host beyond ``known``."""
    return MSGID_HOST.encode() in raw or message_id_host(raw) not in known


def received_beyond_first(raw: bytes) -> bool:
    """Trace fields other than the one the storing server wrote about its own peer."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return len(parsed.get_all("Received") or []) > 1 or "X-Originating-IP" in parsed


def opened_by_gateway(run: GatewayRun, name: str) -> bytes:
    """The message inside the sealed DATA the gateway's onion socket got, opened as the
    gateway opened it: with its mail key and the session's ephemeral key, which its
    operator can keep (:mod:`tests.keylog`); a version 1 seal with its onion key."""
    stream = one_stream(run, run.gw_onion_port, name)
    identity = load_identity(run.gw_dir / "keys" / "identity.key")
    envelope = decode_from_smtp(data_of(stream))
    if envelope.startswith(HANDSHAKE_HEADER):
        return open_with_log(
            run.gw_dir / "keylog",
            envelope,
            sender=run.alice.onion,
            recipient=identity.onion_address,
        )
    return open_envelope(envelope, recipient=identity, sender_onion=run.alice.onion).message


def log_text(lines: list[str], *, debug: bool) -> tuple[bytes, list[LogRecord]]:
    found = [r for r in records(lines) if debug or r.level != "DEBUG"]
    return "".join(r.text for r in found).encode(), found


@dataclass(frozen=True)
class GatewayOperatorView:
    """What the gateway's operator has of alice's outbound sends: the token send's bytes on
    the gateway's onion-side socket (``stream``), its seal opened with the gateway's key
    (``opened``), the gateway's DEBUG log; ``sizes``: the opened lengths of the others."""

    stream: bytes
    opened: bytes
    log: bytes
    sizes: set[int]

    @classmethod
    def read(cls, run: GatewayRun, names: tuple[str, ...]) -> GatewayOperatorView:
        """The view of the sends ``names``, the token send first."""
        token, *others = names
        stream = one_stream(run, run.gw_onion_port, token)
        opened = opened_by_gateway(run, token)
        log, _ = log_text(run.gw_log, debug=True)
        return cls(stream, opened, log, {len(opened_by_gateway(run, n)) for n in others})

    @property
    def seen(self) -> bytes:
        return self.stream + self.opened + self.log


def tor_bytes(run: GatewayRun, ports: set[int] | None, names: tuple[str, ...]) -> bytes:
    """Link bytes during ``names``: every ORPort link, or only those of ``ports``' tors."""

    def on_link(sport: int, dport: int) -> bool:
        if ports is None:
            return sport in run.or_ports or dport in run.or_ports
        return (sport in ports and dport in run.or_ports) or (
            dport in ports and sport in run.or_ports
        )

    chunks: list[bytes] = []
    for name in names:
        w = run.windows[name]
        chunks += [
            s.payload for s in run.capture.between(w.start, w.end) if on_link(s.sport, s.dport)
        ]
    return b"".join(chunks)


def alice_tor_links(run: GatewayRun, observer: Observer, names: tuple[str, ...]) -> bytes:
    """What ``observer`` of alice's side sees of the Tor links during ``names``: her tor's
    links (her network, her guard) or every ORPort link (the relays)."""
    assert run.alice_links, "no connection of alice's tor to a relay"
    links = tor_bytes(run, None if observer is Observer.TOR_RELAYS else run.alice_links, names)
    assert len(links) > 10_000, "too little Tor traffic captured to judge"
    return links


# -- probes both modules hold to the model ---------------------------------------------


def smtp_leg_probes(
    run: GatewayRun,
    wire: bytes,
    sizes: set[int],
    port: int,
    name: str,
    senders: tuple[str, ...],
    rcpt: str,
) -> dict[Item, Probe]:
    """A clearnet SMTP leg to ``port`` both ways (``wire``) during send ``name``; ``sizes``:
    the lengths of sends that differ only in length; ``senders``: every form of the sender's
    address, the envelope's first."""
    return {
        Item.SENDER_ADDRESS: has(wire, *senders),
        Item.RECIPIENT_ADDRESS: has(wire, rcpt),
        Item.SENDER_IP: Unchecked(LOOPBACK_IP),
        Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
        Item.SUBJECT: has(wire, SUBJECT),
        Item.BODY: has(wire, BODY),
        Item.ATTACHMENT_NAMES: has(wire, ATTACHMENT),
        Item.SIZE: lambda: len(sizes) > 1,
        Item.SEND_TIME: sent_in(run, port, name),
        Item.RELATION: has_all(wire, senders[0], rcpt),
        Item.CLIENT_FINGERPRINT: has(wire, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: has(wire, MSGID_HOST),
    }


def judge_outbound_mx_network(matrix: Any, run: GatewayRun, names: tuple[str, ...]) -> None:
    """``gateway-mx-network`` outbound: every byte between the gateway and Postfix while
    the token message (the first of ``names``) went by; sizes from the others."""
    token, *others = names
    port = run.postfix.port
    wire = both_ways(run, port, token)
    client = tls_stream(run, port, token)
    lengths = {len(tls_stream(run, port, n)) for n in others}
    probes = smtp_leg_probes(run, wire, lengths, port, token, (ALIAS, run.alice.address), BOB)
    judge(
        matrix,
        Observer.GATEWAY_MX_NETWORK,
        "the gateway <-> Postfix TCP stream (both ways)",
        probes | {Item.MESSAGE_ID_HOST: has(wire, run.alice.onion, MSGID_HOST)},
    )
    # What does cross in clear, as the reasons say: the gateway's own name in EHLO before
    # STARTTLS, and the MX host name (so the recipient's domain) in the TLS handshake's SNI.
    head, _, rest = client.partition(b"STARTTLS\r\n")
    assert head.startswith(f"EHLO {GW_DOMAIN}\r\n".encode()) and b"MAIL FROM" not in head
    assert MX_NAME.encode() in rest


def gateway_operator_probes(
    run: GatewayRun, view: GatewayOperatorView, name: str
) -> dict[Item, Probe]:
    """The gateway operator's row for send ``name`` (``view``): the envelope read on the
    onion-side socket, the message in the opened seal."""
    stream, opened = view.stream, view.opened
    return {
        Item.SENDER_ADDRESS: has_all(stream, run.alice.address),
        Item.RECIPIENT_ADDRESS: has(stream, BOB),
        Item.SENDER_IP: lambda: received_beyond_first(opened) or b"Received:" in opened,
        Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
        Item.SUBJECT: has(opened, SUBJECT),
        Item.BODY: has(opened, BODY),
        Item.ATTACHMENT_NAMES: has(opened, ATTACHMENT),
        Item.SIZE: lambda: len(view.sizes) > 1,
        Item.SEND_TIME: lambda: date_in_window(opened, run.windows[name]),
        Item.RELATION: has_all(stream, run.alice.address, BOB),
        Item.CLIENT_FINGERPRINT: has(view.seen, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: lambda: names_more_than(opened, run.alice.onion, GW_DOMAIN),
    }


def recipient_side_probes(
    run: GatewayRun, name: str, stored: bytes, seen: bytes, small: bytes, large: bytes
) -> dict[Item, Probe]:
    """Postfix's stored copy of send ``name`` read as the message in clear (``seen``: the copy
    with Postfix's log); ``small`` and ``large``: the copies of two sends of different
    lengths."""
    return {
        Item.SENDER_ADDRESS: has(stored, ALIAS),
        Item.RECIPIENT_ADDRESS: has(stored, BOB),
        Item.SENDER_IP: lambda: received_beyond_first(stored),
        Item.RECIPIENT_IP: Unchecked("bob's mail client never connects in this test"),
        Item.SUBJECT: has(stored, SUBJECT),
        Item.BODY: has(stored, BODY),
        Item.ATTACHMENT_NAMES: has(stored, ATTACHMENT),
        Item.SIZE: lambda: len(small) != len(large),
        Item.SEND_TIME: lambda: date_in_window(stored, run.windows[name]),
        Item.RELATION: has_all(stored, ALIAS, BOB),
        Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: lambda: (
            run.alice.onion.encode() in seen or names_more_than(stored, GW_DOMAIN)
        ),
    }


def box_log_probes(
    run: GatewayRun, sender: tuple[str, ...], rcpt: tuple[str, ...], name: str, stored: bytes
) -> dict[Item, Probe]:
    """alice's stderr at INFO and above around send ``name`` (``stored``: the message as
    stored at the other end); ``sender`` and ``rcpt``: every form the address takes (box
    address, alias)."""
    blob, log = log_text(run.alice_log, debug=False)
    window = run.windows[name]
    correspondent = rcpt[0] if run.alice.address in sender else sender[0]
    return {
        Item.SENDER_ADDRESS: has(blob, *sender),
        Item.RECIPIENT_ADDRESS: has(blob, *rcpt),
        Item.SENDER_IP: lambda: bool(IP_TRACE.search(blob)),
        Item.RECIPIENT_IP: lambda: bool(IP_TRACE.search(blob)),
        Item.SUBJECT: has(blob, SUBJECT),
        Item.BODY: has(blob, BODY),
        Item.ATTACHMENT_NAMES: has(blob, ATTACHMENT),
        Item.SIZE: lambda: bool(re.search(rf"(?<![\d.]){len(stored)}(?![\d.])".encode(), blob)),
        Item.SEND_TIME: lambda: any(
            r.level == "INFO" and window.start - 1 <= r.at <= window.end for r in log
        ),
        Item.RELATION: has(blob, correspondent),
        Item.CLIENT_FINGERPRINT: has(blob, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: has(blob, MSGID_HOST, message_id_host(stored)),
    }


def link_probes(
    run: GatewayRun,
    links: bytes,
    sizes: set[int],
    send_port: int,
    name: str,
    sender: str,
    rcpt: str,
) -> dict[Item, Probe]:
    """Tor link bytes (``links``) around send ``name``, which entered at ``send_port``;
    ``sizes``: the lengths of two sends that differ only in length, where they are read."""
    return {
        Item.SENDER_ADDRESS: has(links, sender, run.alice.onion),
        Item.RECIPIENT_ADDRESS: has(links, rcpt),
        Item.SENDER_IP: Unchecked(LOOPBACK_IP),
        Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
        Item.SUBJECT: has(links, SUBJECT),
        Item.BODY: has(links, BODY),
        Item.ATTACHMENT_NAMES: has(links, ATTACHMENT),
        Item.SIZE: lambda: len(sizes) > 1,
        Item.SEND_TIME: sent_in(run, send_port, name),
        Item.RELATION: Unchecked(
            "a relation shows by correlating two ends' flows in time, not in bytes; the names "
            "that would show it in clear are probed as the addresses"
        ),
        Item.CLIENT_FINGERPRINT: has(links, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: has(links, MSGID_HOST),
    }
