"""The ``gateway-clearnet-openpgp`` path on the wire: what each observer receives, held to
the model cell by cell.

The world of :mod:`tests.test_leaks_gateway_wire`, cut to the outbound leg: the private
Tor network, Knot + Unbound serving ``clear.test`` (MX ``mx.clear.test``), a private
Postfix as bob's provider, ``onionmail-gateway run`` for ``gw.test`` (its outbound MX
port is Postfix's own: no proxy), the box alice (``--verbose``) registered as
``alice@gw.test``, and a loopback packet capture. Before alice starts, bob's OpenPGP
key, made by the real ``gpg`` in a throwaway GNUPGHOME, is imported into her box with
``onionmail keys import``: every message to bob leaves the box as PGP/MIME.

Three sends (the token message with an attachment and the client's fingerprint, and two
plain ones of different lengths inside one Padmé bucket), then, by observer:

- ``gateway-operator``: the bytes the gateway's onion-side socket received, the seal
  opened with the gateway's own key, and its DEBUG log;
- ``gateway-mx-network``: every byte between the gateway and Postfix;
- ``recipient-provider``: the file Postfix stored and Postfix's log;
- ``recipient-box``: the same file, decrypted by bob's gpg (the positive control: what
  the others must not see is really in the message);
- ``box-logs``: alice's stderr at INFO and above;
- ``sender-network``/``tor-guard``: alice's tor's links to the ORPorts; ``tor-relays``:
  every ORPort link; ``global-passive``: those plus the clearnet leg.

Not judged here: ``box-seizure`` (the queue holds the scrubbed plaintext exactly as on
``gateway-clearnet``, whose module checks it; encryption happens at delivery time) and
``sender-provider`` (not on this path).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from onionmail.seal.envelope import decode_from_smtp, open_envelope
from onionmail.seal.identity import load_identity
from tests.box_process import RunningBox, free_port, run_box
from tests.dns_server import running_dns
from tests.gateway_process import cli
from tests.gnupg_home import GpgHome, gnupg_home
from tests.leaks import (
    HarnessWarnings,
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
from tests.test_leaks_gateway_wire import (
    ALIAS,
    ATTACHMENT,
    BOB,
    BODY,
    CLEAR_DOMAIN,
    FINGERPRINT,
    GW_DOMAIN,
    IP_TRACE,
    LOOPBACK_IP,
    MSGID_HOST,
    MX_NAME,
    SUBJECT,
    ZONES,
    _tor_pid,
    date_in_window,
    gateway_and_alice,
    gateway_certificate,
    log_text,
    message,
    message_id_host,
    names_more_than,
    received_beyond_first,
    stop_process,
    submit,
    wait_until,
)
from tests.wire_capture import LoopbackCapture, connections_to, listening_ports
from threat_model import Item, MailPath, MessageTraits, ModelConfig, Observer, leaks

pytestmark = pytest.mark.tor

SMALL, LARGE = 200, 800
"""Two lengths whose PGP/MIME form (armor, signature, the box's Autocrypt header) stays
inside the 4096-byte Padmé floor: equal on a sealed Tor leg, different elsewhere."""
SENDS = ("token", "small", "large")

MATRIX = leaks(
    MailPath.GATEWAY_CLEARNET_OPENPGP, MessageTraits(has_attachments=True), ModelConfig()
)
"""The box and the gateway run their defaults, the ModelConfig default."""


@dataclass
class Run:
    capture: LoopbackCapture
    postfix: Postfix
    gpg: GpgHome
    gw_dir: Path
    gw_log: list[str]
    alice: RunningBox
    or_ports: set[int]
    gw_onion_port: int = 0
    alice_socks: int = 0
    alice_links: set[int] = field(default_factory=set)
    windows: dict[str, Window] = field(default_factory=dict)
    stored: dict[str, bytes] = field(default_factory=dict)
    alice_log: list[str] = field(default_factory=list)


def postfix_files(postfix: Postfix) -> set[Path]:
    new = postfix.maildir / "new"
    return set(new.iterdir()) if new.is_dir() else set()


def send(run: Run, name: str, subject: str, filler: int = 0) -> None:
    """alice -> gateway -> Postfix; the subject is encrypted, so the new file is the one."""
    before = postfix_files(run.postfix)
    start = time.time()
    asyncio.run(submit(run.alice, BOB, message(run.alice.address, BOB, subject, filler=filler)))
    wait_until(f"{name} at Postfix", lambda: bool(postfix_files(run.postfix) - before))
    run.alice_links |= connections_to(_tor_pid(run.alice.new.box_dir), run.or_ports)
    time.sleep(0.3)  # QUIT and the last segments
    run.windows[name] = Window(start, time.time())
    (path,) = postfix_files(run.postfix) - before
    run.stored[name] = path.read_bytes()


@pytest.fixture(scope="module")
def run(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    harness = HarnessWarnings().start()
    root = tmp_path_factory.mktemp("gw-pgp-wire")
    ca = gateway_certificate(root)
    gw_smtp_port = free_port()
    gw_dir = root / "gateway"
    gw_process: subprocess.Popen[str] | None = None
    alice: RunningBox | None = None
    capture = LoopbackCapture().start()
    try:
        with (
            gnupg_home() as gpg,
            running_dns(ZONES, root / "dns") as dns,
            postfix_for_domain(
                CLEAR_DOMAIN,
                tls=ca.issue_cert(MX_NAME),
                known_users=["bob"],
                extra_settings={"smtp_tls_security_level": "may"},
            ) as postfix,
        ):
            gpg.generate_key(BOB)
            (root / "bob.asc").write_bytes(gpg.export(BOB))
            gw_process, gw_log, _, new = gateway_and_alice(
                root, testnet, dns, gw_smtp_port, postfix.port
            )
            imported = subprocess.run(
                cli("onionmail.cli", "keys", "import", "--dir", str(new.box_dir))
                + [str(root / "bob.asc")],
                capture_output=True,
                text=True,
            )
            assert imported.returncode == 0, imported.stderr
            alice = run_box(new, verbose=True)
            scenario = Run(
                capture,
                postfix,
                gpg,
                gw_dir,
                gw_log,
                alice,
                {node.or_port for node in testnet.nodes},
            )
            (scenario.gw_onion_port,) = listening_ports(gw_process.pid) - {gw_smtp_port}
            (scenario.alice_socks,) = listening_ports(_tor_pid(new.box_dir))
            send(scenario, "token", SUBJECT)
            send(scenario, "small", SUBJECT + "-small", SMALL)
            send(scenario, "large", SUBJECT + "-large", LARGE)
            scenario.alice_log = list(alice.stderr_lines)
            drops = capture.stop()
            assert drops == 0, f"the loopback capture lost {drops} packets"
            harness.end()  # see HarnessWarnings
            yield scenario
    finally:
        capture.stop()
        if alice is not None:
            alice.stop()
        if gw_process is not None:
            stop_process(gw_process)
        harness.end()
        collect_quietly()


# -- reading the captures --------------------------------------------------------------


def opened_by_gateway(run: Run, name: str) -> bytes:
    """The sealed DATA the gateway's onion socket got, opened with the gateway's key."""
    data = data_of(one_stream(run, run.gw_onion_port, name))
    identity = load_identity(run.gw_dir / "keys" / "identity.key")
    return open_envelope(
        decode_from_smtp(data), recipient=identity, sender_onion=run.alice.onion
    ).message


def is_pgp_mime(raw: bytes) -> bool:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return (
        parsed.get_content_type() == "multipart/encrypted"
        and parsed.get_param("protocol") == "application/pgp-encrypted"
        and str(parsed["Subject"]) == "..."
    )


def decrypted(run: Run, name: str) -> bytes:
    """What bob reads: Postfix's copy opened by his gpg (which lacks the box's key, so
    the signature goes unchecked: gpg exits 2 with the plaintext and DECRYPTION_OKAY)."""
    result = run.gpg.run(["--decrypt"], run.stored[name], check=False)
    assert "DECRYPTION_OKAY" in result.status, result.stderr.decode()
    return result.stdout


def msgid_names_more(raw: bytes, *known: str) -> bool:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return MSGID_HOST.encode() in raw or (
        parsed["Message-ID"] is not None and names_more_than(raw, *known)
    )


# -- the gateway and the clearnet leg --------------------------------------------------


def test_gateway_operator(run: Run) -> None:
    """The gateway's onion socket, the seal opened with its key, its DEBUG log."""
    stream = one_stream(run, run.gw_onion_port, "token")
    opened = opened_by_gateway(run, "token")
    assert is_pgp_mime(opened), "the gateway got no PGP/MIME message"
    log, _ = log_text(run.gw_log, debug=True)
    seen = stream + opened + log
    sizes = {len(opened_by_gateway(run, n)) for n in ("small", "large")}
    judge(
        MATRIX,
        Observer.GATEWAY_OPERATOR,
        "the gateway's onion socket, the opened seal, its DEBUG log",
        {
            Item.SENDER_ADDRESS: has_all(seen, run.alice.address, ALIAS),
            Item.RECIPIENT_ADDRESS: has(stream, BOB),
            Item.SENDER_IP: lambda: received_beyond_first(opened) or b"Received:" in opened,
            Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            Item.SIZE: lambda: len(sizes) > 1,
            Item.SEND_TIME: lambda: date_in_window(opened, run.windows["token"]),
            Item.RELATION: has_all(stream, run.alice.address, BOB),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: (
                run.alice.onion.encode() in opened
                or msgid_names_more(opened, run.alice.onion, GW_DOMAIN)
            ),
        },
    )


def test_gateway_mx_network(run: Run) -> None:
    """Every byte between the gateway and Postfix while the token message went by."""
    port = run.postfix.port
    wire = both_ways(run, port, "token")
    lengths = {len(tls_stream(run, port, n)) for n in ("small", "large")}
    judge(
        MATRIX,
        Observer.GATEWAY_MX_NETWORK,
        "the gateway <-> Postfix TCP stream (both ways)",
        {
            Item.SENDER_ADDRESS: has(wire, ALIAS, run.alice.address),
            Item.RECIPIENT_ADDRESS: has(wire, BOB),
            Item.SENDER_IP: Unchecked(LOOPBACK_IP),
            Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
            Item.SUBJECT: has(wire, SUBJECT),
            Item.BODY: has(wire, BODY),
            Item.ATTACHMENT_NAMES: has(wire, ATTACHMENT),
            Item.SIZE: lambda: len(lengths) > 1,
            Item.SEND_TIME: sent_in(run, port, "token"),
            Item.RELATION: has_all(wire, ALIAS, BOB),
            Item.CLIENT_FINGERPRINT: has(wire, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: has(wire, run.alice.onion, MSGID_HOST),
        },
    )
    # What crosses in clear: the gateway's EHLO before STARTTLS, the MX name in the SNI.
    client = tls_stream(run, port, "token")
    head, _, rest = client.partition(b"STARTTLS\r\n")
    assert head.startswith(f"EHLO {GW_DOMAIN}\r\n".encode()) and b"MAIL FROM" not in head
    assert MX_NAME.encode() in rest


def test_recipient_provider(run: Run) -> None:
    """The file Postfix stored and its log."""
    stored = run.stored["token"]
    assert is_pgp_mime(stored), "Postfix stored no PGP/MIME message"
    seen = stored + run.postfix.log.read_bytes()
    small, large = run.stored["small"], run.stored["large"]
    judge(
        MATRIX,
        Observer.RECIPIENT_PROVIDER,
        "Postfix's stored copy and its log",
        {
            Item.SENDER_ADDRESS: has(stored, ALIAS),
            Item.RECIPIENT_ADDRESS: has(stored, BOB),
            Item.SENDER_IP: lambda: received_beyond_first(stored),
            Item.RECIPIENT_IP: Unchecked("bob's mail client never connects in this test"),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            Item.SIZE: lambda: len(small) != len(large),
            Item.SEND_TIME: lambda: date_in_window(stored, run.windows["token"]),
            Item.RELATION: has_all(stored, ALIAS, BOB),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: (
                run.alice.onion.encode() in seen or msgid_names_more(stored, GW_DOMAIN)
            ),
        },
    )
    assert b".onion" not in stored
    # The reasons quote the outer Subject: it must be the one on the wire.
    outer = str(email.message_from_bytes(stored, policy=email.policy.default)["Subject"])
    for observer in (Observer.GATEWAY_OPERATOR, Observer.RECIPIENT_PROVIDER):
        assert f"'{outer}'" in MATRIX.cell(observer, Item.SUBJECT).reason, observer


def test_recipient_box(run: Run) -> None:
    """What bob reads: the stored copy, decrypted with his key."""
    stored = run.stored["token"]
    inner = decrypted(run, "token")
    seen = stored + inner
    sizes = {len(run.stored[n]) for n in ("small", "large")}
    judge(
        MATRIX,
        Observer.RECIPIENT_BOX,
        "Postfix's stored copy, decrypted by bob's gpg",
        {
            Item.SENDER_ADDRESS: has(inner, ALIAS),
            Item.RECIPIENT_ADDRESS: has(inner, BOB),
            Item.SENDER_IP: lambda: received_beyond_first(stored),
            Item.RECIPIENT_IP: Unchecked("its own address; bob's client never connects here"),
            Item.SUBJECT: has(inner, SUBJECT),
            Item.BODY: has(inner, BODY),
            Item.ATTACHMENT_NAMES: has(inner, ATTACHMENT),
            Item.SIZE: lambda: len(sizes) > 1,
            Item.SEND_TIME: lambda: date_in_window(stored, run.windows["token"]),
            Item.RELATION: has_all(inner, ALIAS, BOB),
            Item.CLIENT_FINGERPRINT: has(seen, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: lambda: (
                run.alice.onion.encode() in seen
                or msgid_names_more(stored, GW_DOMAIN)
                or msgid_names_more(inner, GW_DOMAIN)
            ),
        },
    )
    assert b".onion" not in inner


# -- the box's log ---------------------------------------------------------------------


def test_box_logs(run: Run) -> None:
    assert any(r.level == "DEBUG" for r in records(run.alice_log)), "not verbose?"
    blob, log = log_text(run.alice_log, debug=False)
    window = run.windows["token"]
    stored = run.stored["token"]
    judge(
        MATRIX,
        Observer.BOX_LOGS,
        "alice's stderr at INFO and above (run with --verbose)",
        {
            Item.SENDER_ADDRESS: has(blob, run.alice.address, ALIAS),
            Item.RECIPIENT_ADDRESS: has(blob, BOB),
            Item.SENDER_IP: lambda: bool(IP_TRACE.search(blob)),
            Item.RECIPIENT_IP: lambda: bool(IP_TRACE.search(blob)),
            Item.SUBJECT: has(blob, SUBJECT),
            Item.BODY: has(blob, BODY),
            Item.ATTACHMENT_NAMES: has(blob, ATTACHMENT),
            Item.SIZE: lambda: any(
                f"{n}".encode() in blob.split() for n in (len(stored), len(decrypted(run, "token")))
            ),
            Item.SEND_TIME: lambda: any(
                r.level == "INFO" and window.start - 1 <= r.at <= window.end for r in log
            ),
            Item.RELATION: has(blob, BOB),
            Item.CLIENT_FINGERPRINT: has(blob, *FINGERPRINT),
            Item.MESSAGE_ID_HOST: has(blob, MSGID_HOST, message_id_host(stored)),
        },
    )


# -- the Tor links and the global view -------------------------------------------------


def tor_bytes(run: Run, ports: set[int] | None) -> bytes:
    """Link bytes during the sends: every ORPort link, or only those of ``ports``."""

    def on_link(sport: int, dport: int) -> bool:
        if ports is None:
            return sport in run.or_ports or dport in run.or_ports
        return (sport in ports and dport in run.or_ports) or (
            dport in ports and sport in run.or_ports
        )

    chunks: list[bytes] = []
    for name in SENDS:
        w = run.windows[name]
        chunks += [
            s.payload for s in run.capture.between(w.start, w.end) if on_link(s.sport, s.dport)
        ]
    return b"".join(chunks)


def link_probes(run: Run, links: bytes, sizes: set[int], port: int) -> dict[Item, Probe]:
    return {
        Item.SENDER_ADDRESS: has(links, run.alice.address, run.alice.onion, ALIAS),
        Item.RECIPIENT_ADDRESS: has(links, BOB),
        Item.SENDER_IP: Unchecked(LOOPBACK_IP),
        Item.RECIPIENT_IP: Unchecked(LOOPBACK_IP),
        Item.SUBJECT: has(links, SUBJECT),
        Item.BODY: has(links, BODY),
        Item.ATTACHMENT_NAMES: has(links, ATTACHMENT),
        Item.SIZE: lambda: len(sizes) > 1,
        Item.SEND_TIME: sent_in(run, port, "token"),
        Item.RELATION: Unchecked(
            "a relation shows by correlating two ends' flows in time, not in bytes; the names "
            "that would show it in clear are probed as the addresses"
        ),
        Item.CLIENT_FINGERPRINT: has(links, *FINGERPRINT),
        Item.MESSAGE_ID_HOST: has(links, MSGID_HOST),
    }


@pytest.mark.parametrize(
    "observer", [Observer.SENDER_NETWORK, Observer.TOR_GUARD, Observer.TOR_RELAYS]
)
def test_tor_leg(run: Run, observer: Observer) -> None:
    """alice's tor's links (her network, her guard) or every ORPort link; sizes from the
    stream into alice's tor (the sealed, padded envelope)."""
    assert run.alice_links, "no connection of alice's tor to a relay"
    links = tor_bytes(run, None if observer is Observer.TOR_RELAYS else run.alice_links)
    assert len(links) > 10_000, "too little Tor traffic captured to judge"
    sizes = {len(one_stream(run, run.alice_socks, n)) for n in ("small", "large")}
    judge(
        MATRIX,
        observer,
        "Tor links to ORPorts (sizes: the stream into alice's tor)",
        link_probes(run, links, sizes, run.alice_socks),
    )


def test_global_passive(run: Run) -> None:
    """Every ORPort link and the clearnet leg."""
    port = run.postfix.port
    wire = tor_bytes(run, None) + b"".join(both_ways(run, port, n) for n in SENDS)
    sizes = {len(tls_stream(run, port, n)) for n in ("small", "large")}
    judge(
        MATRIX,
        Observer.GLOBAL_PASSIVE,
        "every ORPort link and the clearnet leg",
        link_probes(run, wire, sizes, port),
    )
