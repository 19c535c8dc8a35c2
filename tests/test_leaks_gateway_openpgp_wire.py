"""The ``gateway-clearnet-openpgp`` path on the wire: what each observer receives, held to
the model cell by cell.

The world of :mod:`tests.test_leaks_gateway_wire` (shared through :mod:`tests.gateway_wire`),
cut to the outbound leg: the private Tor network, Knot + Unbound serving ``clear.test`` (MX
``mx.clear.test``), a private Postfix as bob's provider, ``onionmail-gateway run`` for
``gw.test`` (its outbound MX port is Postfix's own: no proxy), the box alice (``--verbose``)
registered as ``alice@gw.test``, and a loopback packet capture. Before alice starts, bob's
OpenPGP key, made by the real ``gpg`` in a throwaway GNUPGHOME, is imported into her box with
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

import email
import email.policy
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import gateway_wire
from tests.box_process import free_port, run_box
from tests.gateway_process import cli
from tests.gateway_wire import (
    ALIAS,
    ATTACHMENT,
    BOB,
    BODY,
    FINGERPRINT,
    GW_DOMAIN,
    MSGID_HOST,
    SUBJECT,
    GatewayOperatorView,
    GatewayRun,
    Started,
)
from tests.gnupg_home import GpgHome, gnupg_home
from tests.leaks import (
    Probe,
    Unchecked,
    both_ways,
    has,
    has_all,
    judge,
    one_stream,
    records,
    tls_stream,
)
from tests.postfix import Postfix
from tests.wire_capture import listening_ports
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
class Run(GatewayRun):
    gpg: GpgHome
    stored: dict[str, bytes] = field(default_factory=dict)


def postfix_files(postfix: Postfix) -> set[Path]:
    new = postfix.maildir / "new"
    return set(new.iterdir()) if new.is_dir() else set()


def send(run: Run, name: str, subject: str, filler: int = 0) -> None:
    """alice -> gateway -> Postfix; the subject is encrypted, so the new file is the one."""
    before = postfix_files(run.postfix)
    gateway_wire.send_from_alice(
        run, name, subject, filler, lambda: bool(postfix_files(run.postfix) - before)
    )
    (path,) = postfix_files(run.postfix) - before
    run.stored[name] = path.read_bytes()


@pytest.fixture(scope="module")
def run(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("gw-pgp-wire")
    started = Started.begin(root)
    gw_smtp_port = free_port()
    gw_dir = root / "gateway"
    settings = {"smtp_tls_security_level": "may"}
    try:
        with (
            gnupg_home() as gpg,
            gateway_wire.clear_domain(root, started.ca, settings) as (dns, postfix),
        ):
            gpg.generate_key(BOB)
            (root / "bob.asc").write_bytes(gpg.export(BOB))
            gw_process, gw_log, _, new = gateway_wire.gateway_and_alice(
                root, testnet, dns, gw_smtp_port, postfix.port
            )
            started.gw_process = gw_process
            imported = subprocess.run(
                cli("onionmail.cli", "keys", "import", "--dir", str(new.box_dir))
                + [str(root / "bob.asc")],
                capture_output=True,
                text=True,
            )
            assert imported.returncode == 0, imported.stderr
            alice = started.alice = run_box(new, verbose=True)
            or_ports = {node.or_port for node in testnet.nodes}
            scenario = Run(started.capture, postfix, gw_dir, gw_log, alice, or_ports, gpg)
            (scenario.gw_onion_port,) = listening_ports(gw_process.pid) - {gw_smtp_port}
            (scenario.alice_socks,) = listening_ports(gateway_wire.tor_pid(new.box_dir))
            send(scenario, "token", SUBJECT)
            send(scenario, "small", SUBJECT + "-small", SMALL)
            send(scenario, "large", SUBJECT + "-large", LARGE)
            scenario.alice_log = list(alice.stderr_lines)
            started.captured()
            yield scenario
    finally:
        started.stop()


# -- reading the captures --------------------------------------------------------------


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
        parsed["Message-ID"] is not None and gateway_wire.names_more_than(raw, *known)
    )


# -- the gateway and the clearnet leg --------------------------------------------------


def test_gateway_operator(run: Run) -> None:
    """The gateway's onion socket, the seal opened with its key, its DEBUG log."""
    view = GatewayOperatorView.read(run, SENDS)
    assert is_pgp_mime(view.opened), "the gateway got no PGP/MIME message"
    seen, opened = view.seen, view.opened
    judge(
        MATRIX,
        Observer.GATEWAY_OPERATOR,
        "the gateway's onion socket, the opened seal, its DEBUG log",
        gateway_wire.gateway_operator_probes(run, view, "token")
        | {  # what differs for a PGP/MIME message
            Item.SENDER_ADDRESS: has_all(seen, run.alice.address, ALIAS),
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
            Item.MESSAGE_ID_HOST: lambda: (
                run.alice.onion.encode() in opened
                or msgid_names_more(opened, run.alice.onion, GW_DOMAIN)
            ),
        },
    )


def test_gateway_mx_network(run: Run) -> None:
    """Every byte between the gateway and Postfix while the token message went by; what
    crosses in clear: the gateway's EHLO before STARTTLS, the MX name in the SNI."""
    gateway_wire.judge_outbound_mx_network(MATRIX, run, SENDS)


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
        gateway_wire.recipient_side_probes(run, "token", stored, seen, small, large)
        | {  # what differs for a PGP/MIME copy
            Item.SUBJECT: has(seen, SUBJECT),
            Item.BODY: has(seen, BODY),
            Item.ATTACHMENT_NAMES: has(seen, ATTACHMENT),
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
            Item.SENDER_IP: lambda: gateway_wire.received_beyond_first(stored),
            Item.RECIPIENT_IP: Unchecked("its own address; bob's client never connects here"),
            Item.SUBJECT: has(inner, SUBJECT),
            Item.BODY: has(inner, BODY),
            Item.ATTACHMENT_NAMES: has(inner, ATTACHMENT),
            Item.SIZE: lambda: len(sizes) > 1,
            Item.SEND_TIME: lambda: gateway_wire.date_in_window(stored, run.windows["token"]),
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
    blob, _ = gateway_wire.log_text(run.alice_log, debug=False)
    stored = run.stored["token"]
    probes = gateway_wire.box_log_probes(run, (run.alice.address, ALIAS), (BOB,), "token", stored)
    judge(
        MATRIX,
        Observer.BOX_LOGS,
        "alice's stderr at INFO and above (run with --verbose)",
        probes
        | {  # the length of the encrypted message or of the message inside it
            Item.SIZE: lambda: any(
                f"{n}".encode() in blob.split() for n in (len(stored), len(decrypted(run, "token")))
            ),
        },
    )


# -- the Tor links and the global view -------------------------------------------------


def alice_link_probes(run: Run, links: bytes, sizes: set[int], port: int) -> dict[Item, Probe]:
    """:func:`tests.gateway_wire.link_probes` for the token send; alice's address in any of
    its forms (box address, onion, alias)."""
    probes = gateway_wire.link_probes(run, links, sizes, port, "token", run.alice.address, BOB)
    return probes | {Item.SENDER_ADDRESS: has(links, run.alice.address, run.alice.onion, ALIAS)}


@pytest.mark.parametrize(
    "observer", [Observer.SENDER_NETWORK, Observer.TOR_GUARD, Observer.TOR_RELAYS]
)
def test_tor_leg(run: Run, observer: Observer) -> None:
    """alice's tor's links (her network, her guard) or every ORPort link; sizes from the
    stream into alice's tor (the sealed, padded envelope)."""
    links = gateway_wire.alice_tor_links(run, observer, SENDS)
    sizes = {len(one_stream(run, run.alice_socks, n)) for n in ("small", "large")}
    judge(
        MATRIX,
        observer,
        "Tor links to ORPorts (sizes: the stream into alice's tor)",
        alice_link_probes(run, links, sizes, run.alice_socks),
    )


def test_global_passive(run: Run) -> None:
    """Every ORPort link and the clearnet leg."""
    port = run.postfix.port
    links = gateway_wire.tor_bytes(run, None, SENDS)
    wire = links + b"".join(both_ways(run, port, n) for n in SENDS)
    sizes = {len(tls_stream(run, port, n)) for n in ("small", "large")}
    judge(
        MATRIX,
        Observer.GLOBAL_PASSIVE,
        "every ORPort link and the clearnet leg",
        alice_link_probes(run, wire, sizes, port),
    )
