"""The running gateway daemon enforces DANE and MTA-STS where a recipient domain publishes them.

The units (``test_tls_policy``, ``test_mta_sts``) show the decisions; this
module shows the daemon acting on them, end to end: a box sends over Tor to
``onionmail-gateway run``, which resolves through a validating Unbound (Knot
behind it, zones signed), fetches MTA-STS policies over HTTPS from a loopback
server (``[outbound] mta_sts_connect_to``, certificate checked against the
trustme CA in ``ca_file``) and delivers to a real Postfix with STARTTLS.

Postfix accepts mail for all three domains, and its certificate comes from a
CA the gateway does not trust (PKIX would refuse it):

* ``dane.test``: TLSA ``3 1 1`` of Postfix's key: delivered, which only the
  DANE-EE match can have allowed;
* ``badtlsa.test``: TLSA ``3 1 1`` of another key, same Postfix: kept in the
  queue with the DANE reason, nothing at Postfix;
* ``sts.test``: no TLSA, an ``enforce`` policy that lists another MX: kept in
  the queue with the MTA-STS reason, Postfix never contacted.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from onionmail.store.queue import QueueState, list_queue
from tests.box_process import RunningBox, create_test_box, free_port, run_box, stop_process, submit
from tests.dns_server import Zone, a, mx, running_dns, tlsa, txt
from tests.gateway_process import gateway_init, start_registration
from tests.gateway_wire import spawn_gateway
from tests.mta_sts_server import PolicyResponse, PolicyServer, policy_text, running_policy_server
from tests.postfix import Postfix, postfix_for_domain
from tests.test_gateway_flow import (
    GW_DOMAIN,
    _wait_gateway_ready,
    postfix_messages,
    wait_postfix,
)

pytestmark = pytest.mark.tor

DANE_DOMAIN = "dane.test"
BAD_DOMAIN = "badtlsa.test"
STS_DOMAIN = "sts.test"
STS_HOST = f"mta-sts.{STS_DOMAIN}"

CA = trustme.CA()
"""The gateway's ca_file: it issued the MTA-STS policy server's certificate."""
POSTFIX_CA = trustme.CA()
"""Unknown to the gateway: Postfix's certificate can be authenticated only by DANE."""
POSTFIX_CERT = POSTFIX_CA.issue_cert(f"mx.{DANE_DOMAIN}", f"mx.{BAD_DOMAIN}", f"mx.{STS_DOMAIN}")


def _spki_sha256(leaf: trustme.LeafCert) -> bytes:
    certificate = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


ZONES = [
    Zone(
        DANE_DOMAIN,
        [
            mx(10, f"mx.{DANE_DOMAIN}."),
            a("mx"),
            tlsa("_25._tcp.mx", 3, 1, 1, _spki_sha256(POSTFIX_CERT)),
        ],
    ),
    Zone(
        BAD_DOMAIN,
        [
            mx(10, f"mx.{BAD_DOMAIN}."),
            a("mx"),
            tlsa("_25._tcp.mx", 3, 1, 1, _spki_sha256(CA.issue_cert("someone-else.test"))),
        ],
    ),
    Zone(
        STS_DOMAIN,
        [mx(10, f"mx.{STS_DOMAIN}."), a("mx"), txt("_mta-sts", "v=STSv1; id=20240601T000000")],
    ),
]


POSTFIX_DOMAINS = {"virtual_mailbox_domains": f"{DANE_DOMAIN}, {BAD_DOMAIN}, {STS_DOMAIN}"}
"""Postfix takes mail for all three: only the gateway's policy keeps it from arriving."""


@dataclass
class World:
    gw_dir: Path
    gw_stderr: list[str]
    postfix: Postfix
    policy_server: PolicyServer
    alice: RunningBox


def _config(testnet_dir: Path, dns: Any, postfix_port: int, cafile: Path, sts_port: int) -> str:
    return f"""
[gateway]
domain = "{GW_DOMAIN}"
require_approval = false
[smtp]
port = {free_port()}
[dns]
resolver = "{dns.resolver_host}"
port = {dns.resolver_port}
[outbound]
ca_file = "{cafile}"
mx_port = {postfix_port}
allow_private_mx = true
mta_sts_connect_to = ["{STS_HOST}=127.0.0.1:{sts_port}"]
[tor]
testnet = "{testnet_dir}"
[delivery]
retry_initial = 2.0
"""


@pytest.fixture(scope="module")
def world(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:

    root = tmp_path_factory.mktemp("gw-tls")
    gw_dir = root / "gateway"
    responses = {STS_HOST: PolicyResponse(policy_text("enforce", "mx.elsewhere.test"))}
    with (
        running_dns(ZONES, root / "dns") as dns,
        running_policy_server(CA, root, responses) as policy_server,
        postfix_for_domain(
            DANE_DOMAIN, tls=POSTFIX_CERT, extra_settings=POSTFIX_DOMAINS
        ) as postfix,
    ):
        gw_onion = gateway_init(gw_dir, GW_DOMAIN)
        (gw_dir / "gateway.toml").write_text(
            _config(testnet.directory, dns, postfix.port, policy_server.ca_file, policy_server.port)
        )
        gw_process, gw_stderr = spawn_gateway(gw_dir)
        new = create_test_box(
            root / "alice", "alice", testnet=testnet.directory, submission_port=0, retry_initial=2.0
        )
        register = start_registration(new.box_dir, gw_onion)
        alice: RunningBox | None = None
        try:
            _wait_gateway_ready(gw_process, gw_stderr)
            _, err = register.communicate(timeout=150)
            assert register.returncode == 0, err
            alice = run_box(new)
            yield World(gw_dir, gw_stderr, postfix, policy_server, alice)
        finally:
            if register.poll() is None:
                register.kill()
                register.communicate()
            if alice is not None:
                alice.stop()
            stop_process(gw_process)


def _send(world: World, rcpt: str, token: str) -> None:
    asyncio.run(submit(world.alice, rcpt, token, f"body {token}"))


def _queued_with_error(world: World, domain: str, timeout: float = 60) -> QueueState:
    """The clearnet queue's entry for ``domain`` once an attempt has failed."""
    queue = world.gw_dir / "queue" / "clearnet"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for state in list_queue(queue):
            if state.destination == domain and state.last_error:
                return state
        time.sleep(0.2)
    raise AssertionError(
        f"no failed attempt for {domain} in the queue:\n" + "".join(world.gw_stderr[-30:])
    )


def test_matching_tlsa_delivers_over_dane(world: World) -> None:
    token = f"dane-ok-{secrets.token_hex(4)}"
    _send(world, f"bob@{DANE_DOMAIN}", token)
    stored = wait_postfix(world.postfix, token, log="".join(world.gw_stderr[-30:]))
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    received = " ".join(str((parsed.get_all("Received") or [""])[0]).split())
    assert "using TLSv1." in received, received
    # Delivered means gone from the gateway's queue.
    deadline = time.monotonic() + 10
    queue = world.gw_dir / "queue" / "clearnet"
    while list_queue(queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [s for s in list_queue(queue) if s.destination == DANE_DOMAIN]


def test_tlsa_mismatch_keeps_the_mail_queued_for_dane(world: World) -> None:
    token = f"dane-bad-{secrets.token_hex(4)}"
    _send(world, f"bob@{BAD_DOMAIN}", token)
    state = _queued_with_error(world, BAD_DOMAIN)
    assert "certificate failed the policy check" in state.last_error, state
    assert "matches none of its DNSSEC-validated TLSA records" in state.last_error, state
    time.sleep(3)  # a retry (retry_initial = 2 s) does not get it through either
    assert any(s.destination == BAD_DOMAIN for s in list_queue(world.gw_dir / "queue" / "clearnet"))
    assert not any(token.encode() in m for m in postfix_messages(world.postfix))


def test_mta_sts_enforce_policy_not_listing_the_mx_keeps_the_mail_queued(world: World) -> None:
    token = f"sts-{secrets.token_hex(4)}"
    _send(world, f"bob@{STS_DOMAIN}", token)
    state = _queued_with_error(world, STS_DOMAIN)
    assert state.last_error == "the domain's MTA-STS policy permits none of its MX hosts", state
    assert STS_HOST in world.policy_server.requests  # fetched over HTTPS through the override
    assert not any(token.encode() in m for m in postfix_messages(world.postfix))
