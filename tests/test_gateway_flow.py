"""The clearnet gateway end to end: real tor, real Postfix, real Knot + Unbound.

One world per module (the tests run in file order and build on each other):

* the private Tor network (session fixture);
* Knot + a validating Unbound serving ``clear.test`` (signed): MX
  ``mx.clear.test`` -> 127.0.0.1;
* a private Postfix as the MX of ``clear.test`` (STARTTLS with a trustme
  certificate for ``mx.clear.test``, user ``bob`` only), which relays mail for
  other domains to the gateway's clearnet port (its ``relayhost``);
* ``onionmail-gateway run`` for ``gw.test`` with ``--require-approval``, its
  own tor and onion, DNS through the Unbound above, MX port = Postfix's;
* the box ``alice``, registered with ``onionmail gateway register`` before it
  first runs (the CLI launches a tor of its own for that), then ``onionmail
  run``;
* a plain client tor, for the tests that speak to the gateway's onion as an
  intruder (a box nobody registered, or alice's key misused).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import dkim
import nacl.exceptions
import nacl.public
import pytest
import trustme

from gateway.config import load_gateway_config
from gateway.daemon import dkim_signer
from gateway.registry import Registry
from gateway.storage import Database
from onionmail.gateway_link.protocol import build_registration, open_from_gateway
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.identity import Identity, derive_subkey, load_identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.store.queue import OutboundQueue
from onionmail.tor.socks import SocksError, open_tor_stream
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import (
    ClientTor,
    RunningBox,
    create_test_box,
    free_port,
    run_box,
    start_client_tor,
    stop_process,
    submit,
    wait_for_mail,
)
from tests.dns_server import Zone, a, mx, running_dns, txt
from tests.gateway_process import cli, gateway_init, start_registration
from tests.gateway_wire import spawn_gateway
from tests.neomutt import neomutt_subjects
from tests.postfix import Postfix, postfix_for_domain

pytestmark = pytest.mark.tor

GW_DOMAIN = "gw.test"
CLEAR_DOMAIN = "clear.test"
MX_NAME = "mx.clear.test"
QUARANTINE_DOMAIN = "quarantine.test"
"""Publishes DMARC p=quarantine, and nothing that would let mail from it pass."""
ZONES = [
    Zone(
        CLEAR_DOMAIN,
        [
            mx(10, MX_NAME + "."),
            a("mx"),
            txt("@", "v=spf1 ip4:127.0.0.1 -all"),  # the Postfix that sends for it
            txt("_dmarc", "v=DMARC1; p=reject"),
        ],
    ),
    Zone(QUARANTINE_DOMAIN, [txt("_dmarc", "v=DMARC1; p=quarantine")]),
]


@dataclass
class World:
    gw_dir: Path
    gw_onion: str
    gw_smtp_port: int
    gw_process: subprocess.Popen[str]
    gw_stderr: list[str]
    postfix: Postfix
    alice: RunningBox
    register_output: str
    client_tor: ClientTor
    notify: socket.socket
    """Where the gateway's sd_notify datagrams arrive (its ``$NOTIFY_SOCKET``)."""


def _gateway_config(
    testnet_dir: Path, smtp_port: int, dns: Any, postfix_port: int, tls: Path, cafile: Path
) -> str:
    return f"""
[gateway]
domain = "{GW_DOMAIN}"
require_approval = true
[smtp]
port = {smtp_port}
tls_cert = "{tls / "chain.pem"}"
tls_key = "{tls / "key.pem"}"
max_message_size = 200000
rate_limit = 50
[dns]
resolver = "{dns.resolver_host}"
port = {dns.resolver_port}
[outbound]
ca_file = "{cafile}"
mx_port = {postfix_port}
allow_private_mx = true
[tor]
testnet = "{testnet_dir}"
[delivery]
retry_initial = 2.0
[metrics]
listen = "127.0.0.1:0"
"""


def _wait_gateway_ready(process: subprocess.Popen[str], stderr: list[str]) -> tuple[str, int]:
    assert process.stdout is not None
    onion, port = "", 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        key, _, value = line.partition(":")
        if key == "onion":
            onion = value.strip()
        elif key == "smtp":
            port = int(value.strip().rsplit(":", 1)[1])
            return onion, port
    raise AssertionError("the gateway did not start:\n" + "".join(stderr[-30:]))


@pytest.fixture(scope="module")
def world(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:

    root = tmp_path_factory.mktemp("gw-world")
    ca = trustme.CA()
    cafile = root / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    tls = root / "gw-tls"
    tls.mkdir()
    gw_cert = ca.issue_cert(GW_DOMAIN)
    gw_cert.private_key_pem.write_to_path(str(tls / "key.pem"))
    gw_cert.cert_chain_pems[0].write_to_path(str(tls / "chain.pem"))
    gw_smtp_port = free_port()
    postfix_settings = {
        "relayhost": f"[127.0.0.1]:{gw_smtp_port}",
        "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "1",
    }
    gw_dir = root / "gateway"
    with (
        running_dns(ZONES, root / "dns") as dns,
        postfix_for_domain(
            CLEAR_DOMAIN,
            tls=ca.issue_cert(MX_NAME),
            known_users=["bob"],
            extra_settings=postfix_settings,
        ) as postfix,
    ):
        gw_onion = gateway_init(gw_dir, GW_DOMAIN)
        (gw_dir / "gateway.toml").write_text(
            _gateway_config(testnet.directory, gw_smtp_port, dns, postfix.port, tls, cafile)
        )
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(root / "notify"))
        gw_process, gw_stderr = spawn_gateway(gw_dir, {"NOTIFY_SOCKET": str(root / "notify")})
        new = create_test_box(
            root / "alice", "alice", testnet=testnet.directory, submission_port=0, retry_initial=2.0
        )
        # Registered while the gateway is still starting: the command waits for it.
        register = start_registration(new.box_dir, gw_onion)
        tors: list[ClientTor] = []
        tor_thread = threading.Thread(
            target=lambda: tors.append(
                start_client_tor(root / "client-tor", client_tor_options(testnet))
            )
        )
        tor_thread.start()
        alice: RunningBox | None = None
        try:
            _, gw_smtp = _wait_gateway_ready(gw_process, gw_stderr)
            out, err = register.communicate(timeout=150)
            assert register.returncode == 0, err
            alice = run_box(new)
            tor_thread.join(90)
            assert tors, "the client tor did not start"
            world = World(
                gw_dir,
                gw_onion,
                gw_smtp,
                gw_process,
                gw_stderr,
                postfix,
                alice,
                out + err,
                tors[0],
                notify,
            )
            yield world
            alice = world.alice  # a test may have started it again
        finally:
            if register.poll() is None:
                register.kill()
                register.communicate()
            if alice is not None:
                alice.stop()
            tor_thread.join(90)
            for tor in tors:
                tor.stop()
            stop_process(gw_process)
            notify.close()


# --- helpers ----------------------------------------------------------------------------


async def onion_session(
    world: World,
    identity: Identity,
    mail_from: str,
    rcpts: list[str],
    message: bytes,
    *,
    sealed: bool = True,
) -> tuple[int, str]:
    """One SMTP transaction with the gateway's onion; (code, text) of the deciding reply."""
    for attempt in range(5):
        try:
            sock = await open_tor_stream(
                "127.0.0.1",
                world.client_tor.socks_port,
                world.gw_onion,
                25,
                timeout=30,
                isolation=secrets.token_hex(8),
            )
            break
        except SocksError:
            if attempt == 4:
                raise
            await asyncio.sleep(1)
    smtp = aiosmtplib.SMTP(sock=sock, local_hostname="localhost", timeout=30, start_tls=False)
    try:
        await smtp.connect()
        await smtp.ehlo()
        params = smtp.esmtp_extensions[SEAL_KEYWORD.lower()]
        await smtp.mail(mail_from)
        for rcpt in rcpts:
            response = await smtp.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            if response.code >= 400:
                return response.code, response.message
        payload = message
        if sealed:
            content = SealedContent(
                envelope_id=secrets.token_bytes(16),
                created=int(time.time()),
                session_challenge=parse_seal_keyword_params(params),
                mail_from=mail_from,
                recipients=tuple(rcpts),
                message=message,
            )
            payload = encode_for_smtp(
                seal(content, sender=identity, recipient_onion=world.gw_onion)
            )
        try:
            reply = await smtp.data(payload)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return reply.code, reply.message
    finally:
        smtp.close()


def mail_from(address: str, to: str, subject: str, body: str) -> bytes:
    return (
        f"From: {address}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@{address.split('@')[1]}>\r\n\r\n{body}\r\n"
    ).encode()


def send_through_postfix(world: World, message: bytes, sender: str, rcpt: str) -> None:
    asyncio.run(
        aiosmtplib.send(
            message,
            sender=sender,
            recipients=[rcpt],
            hostname="127.0.0.1",
            port=world.postfix.port,
            local_hostname="client.test",
            start_tls=False,
            timeout=30,
        )
    )


def postfix_messages(postfix: Postfix) -> list[bytes]:
    new = postfix.maildir / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def wait_postfix(postfix: Postfix, token: str, timeout: float = 60, log: str = "") -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in postfix_messages(postfix):
            if token.encode() in message:
                return message
        time.sleep(0.2)
    raise AssertionError(f"{token} never reached Postfix:\n{postfix.log.read_text()[-3000:]}{log}")


def wait_box_mail(box: RunningBox, token: str, timeout: float = 90) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in wait_for_mail(box.maildir, 0, timeout=1):
            if token.encode() in message:
                return message
        time.sleep(0.2)
    raise AssertionError(f"{token} never reached the box")


def gateway(world: World, *args: str) -> str:
    result = subprocess.run(
        cli("gateway.cli", *args, "--dir", str(world.gw_dir)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- the tests, in order ------------------------------------------------------------------


def test_registration_is_pending_until_approved_and_mail_is_refused_meanwhile(
    world: World,
) -> None:
    alice = world.alice
    assert f"pending: alice@{GW_DOMAIN} -> {alice.address}" in world.register_output
    assert "tor bootstrap" in world.register_output  # progress while waiting on tor
    config = (alice.new.box_dir / "onionmail.toml").read_text()
    assert f'"{world.gw_onion}" = "alice@{GW_DOMAIN}"' in config
    assert f"alice@{GW_DOMAIN}" in gateway(world, "pending")

    token = f"pending-{secrets.token_hex(4)}"
    asyncio.run(submit(alice, f"bob@{CLEAR_DOMAIN}", token, "must not leave yet"))
    bounce = wait_box_mail(alice, token)
    assert b"Undelivered mail returned to sender" in bounce
    assert b"pending the operator's approval" in bounce
    assert not any(token.encode() in m for m in postfix_messages(world.postfix))

    assert "approved" in gateway(world, "approve", "alice")
    assert gateway(world, "pending").strip() == "no pending registrations"


def test_the_gateway_told_systemd_it_was_ready_once_it_took_mail(world: World) -> None:
    """``Type=notify``: READY=1 arrives at $NOTIFY_SOCKET; the gateway sends it after its
    last listener (the clearnet port) is open."""
    world.notify.settimeout(10)
    assert world.notify.recv(4096) == b"READY=1"


def test_box_to_gateway_to_postfix_as_the_alias_dkim_signed_over_tls(world: World) -> None:
    alice = world.alice
    token = f"out-{secrets.token_hex(4)}"
    asyncio.run(submit(alice, f"bob@{CLEAR_DOMAIN}", token, f"Hello Bob, {token}"))
    stored = wait_postfix(
        world.postfix, token, log="".join(world.gw_stderr[-20:] + alice.stderr_lines[-20:])
    )
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert parsed["Return-Path"] == f"<alice@{GW_DOMAIN}>"
    assert parsed["From"] == f"alice@{GW_DOMAIN}"
    assert b".onion" not in stored  # the box's address is gone from the whole message
    received = " ".join(str((parsed.get_all("Received") or [""])[0]).split())
    assert received.startswith(f"from {GW_DOMAIN} (") and "using TLSv1." in received

    assert_signed_by_the_gateway(world, stored)
    assert f"from=<alice@{GW_DOMAIN}>" in world.postfix.log.read_text()
    # Delivered means deleted: the gateway's clearnet queue is empty again.
    deadline = time.monotonic() + 10
    active = world.gw_dir / "queue" / "clearnet" / "active"
    while any(active.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(active.iterdir())


def _config(world: World) -> Any:
    return load_gateway_config(world.gw_dir)


def assert_signed_by_the_gateway(world: World, stored: bytes) -> None:
    """Both DKIM signatures (ed25519, RSA) of ``stored`` verify with the gateway's keys."""
    keys = {key.record_name: key.txt_record().encode() for key in dkim_signer(_config(world)).keys}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return keys.get(name.decode().rstrip("."))

    checker = dkim.DKIM(stored)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    assert count == 2
    for index in range(count):
        assert checker.verify(idx=index, dnsfunc=dnsfunc), f"DKIM signature {index} fails"


def test_permanent_refusal_by_the_mx_bounces_back_to_the_box_sealed(world: World) -> None:
    alice = world.alice
    token = f"nouser-{secrets.token_hex(4)}"
    asyncio.run(submit(alice, f"nobody@{CLEAR_DOMAIN}", token, "to a user Postfix lacks"))
    bounce = wait_box_mail(alice, token)
    parsed = email.message_from_bytes(bounce, policy=email.policy.default)
    assert parsed["From"] == f"Mail Delivery System <mailer-daemon@{world.gw_onion}>"
    assert "onionmail=gateway" in str(parsed["Authentication-Results"])
    assert b"nobody@clear.test" in bounce


def test_postfix_to_gateway_to_box_sealed_and_never_in_clear_at_the_gateway(
    world: World,
) -> None:
    alice = world.alice
    subject = f"SecretSubject{secrets.token_hex(6)}"
    body = f"SecretBody{secrets.token_hex(6)}"
    message = mail_from(f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}", subject, body)
    send_through_postfix(world, message, f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}")
    stored = wait_box_mail(alice, subject)
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    assert parsed["Subject"] == subject and body in str(parsed.get_body())
    assert parsed["Return-Path"] == f"<carol@{CLEAR_DOMAIN}>"
    results = " ".join(str(parsed["Authentication-Results"]).split())
    assert results.startswith(f"{alice.onion}; onionmail=gateway (clearnet mail relayed by ")
    assert world.gw_onion in results
    # The gateway's SPF/DKIM/DMARC verdict, sealed with the message: the sending
    # Postfix is the address the domain's SPF record names, and DMARC aligns on it.
    (verdict,) = [
        " ".join(str(v).split())
        for v in parsed.get_all("Authentication-Results", [])
        if str(v).startswith(GW_DOMAIN + ";")
    ]
    assert f"spf=pass smtp.mailfrom={CLEAR_DOMAIN}" in verdict, verdict
    assert "dkim=none" in verdict and "dmarc=pass (p=reject" in verdict, verdict
    # Postfix handed it to the gateway over TLS.
    assert "TLS connection established to 127.0.0.1" in world.postfix.log.read_text()
    # Nothing at the gateway, on disk or in its (debug) log, holds subject or body.
    for path in world.gw_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert subject.encode() not in data and body.encode() not in data, path
    log = "".join(world.gw_stderr)
    assert subject not in log and body not in log and "carol" not in log


def test_results_forged_by_a_clearnet_sender_never_reach_the_box(world: World) -> None:
    """RFC 8601 section 5: fields claiming the gateway's or the box's authserv-id, however
    written (a comment first, upper case, a trailing dot), are removed on the way."""
    alice, subject = world.alice, f"Forged{secrets.token_hex(6)}"
    forged = [
        f"{GW_DOMAIN}; spf=pass; dkim=pass; dmarc=pass",
        f"(looks official) {GW_DOMAIN.upper()}.; dmarc=pass",
        f"{alice.onion}; onionmail=pass (sealed envelope opened with the sender's onion key)",
    ]
    fields = "".join(f"Authentication-Results: {value}\r\n" for value in forged)
    message = fields.encode() + mail_from(f"carol@{CLEAR_DOMAIN}", alice.address, subject, "hi")
    send_through_postfix(world, message, f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}")
    parsed = email.message_from_bytes(wait_box_mail(alice, subject), policy=email.policy.default)
    results = [" ".join(str(v).split()) for v in parsed.get_all("Authentication-Results", [])]
    assert len(results) == 2, results  # the box's own, then the gateway's real verdict
    assert results[0].startswith(f"{alice.onion}; onionmail=gateway ")
    assert results[1].startswith(f"{GW_DOMAIN}; spf=pass smtp.mailfrom={CLEAR_DOMAIN}")


def test_clearnet_mail_naming_an_onion_in_from_is_refused_before_it_is_accepted(
    world: World,
) -> None:
    """The relayed-sender check reads From as a reader sees it (an onion address in a
    display name counts), and the gateway's MX applies it before its 250: the sending
    server bounces the message to its author (bob, Postfix's one user), and no box or
    gateway holds a message nobody will read."""
    alice, subject = world.alice, f"Spoof{secrets.token_hex(6)}"
    spoof = f'"alice@{alice.onion}" <bob@{CLEAR_DOMAIN}>'
    message = mail_from(f"bob@{CLEAR_DOMAIN}", alice.address, subject, "it is me")
    message = message.replace(f"From: bob@{CLEAR_DOMAIN}".encode(), f"From: {spoof}".encode())
    send_through_postfix(world, message, f"bob@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}")
    bounce = wait_postfix(world.postfix, subject, timeout=60)
    said = " ".join(bounce.decode("utf-8", "replace").split())  # Postfix folds the reply
    assert "550 5.7.1 Mail from the clearnet may not name a .onion sender" in said, said
    control = f"Control{secrets.token_hex(6)}"
    message = mail_from(f"carol@{CLEAR_DOMAIN}", alice.address, control, "plain carol")
    send_through_postfix(world, message, f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}")
    wait_box_mail(alice, control)
    stored = wait_for_mail(alice.maildir, 0, timeout=1)
    assert not any(subject.encode() in data for data in stored)
    assert not (world.gw_dir / "undeliverable").exists()


def test_clearnet_side_refuses_unknown_aliases_and_relaying(world: World) -> None:
    async def attempt(rcpt: str) -> int:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=world.gw_smtp_port,
            local_hostname="client.test",
            start_tls=False,
            timeout=10,
        )
        await smtp.connect()
        try:
            await smtp.ehlo()
            assert smtp.supports_extension("starttls")
            await smtp.mail(f"eve@{CLEAR_DOMAIN}")
            response = await smtp.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            return response.code
        finally:
            await smtp.quit()

    async def all_three() -> list[int]:
        return [
            await attempt(f"nosuchalias@{GW_DOMAIN}"),
            await attempt(f"bob@{CLEAR_DOMAIN}"),  # open relay to the clearnet
            await attempt(f"alice@{world.alice.onion}"),  # open relay to an onion
        ]

    assert asyncio.run(all_three()) == [550, 550, 550]


def test_onion_side_refuses_unregistered_boxes_and_relaying(world: World) -> None:
    mallory = Identity.generate()
    mallory_address = f"mallory@{mallory.onion_address}"
    alice_id = world.alice.new.identity
    alice = world.alice.address
    hello = mail_from(alice, f"bob@{CLEAR_DOMAIN}", "hi", "hello")

    async def run() -> list[tuple[int, str]]:
        return [
            # a box nobody registered
            await onion_session(world, mallory, mallory_address, [f"bob@{CLEAR_DOMAIN}"], hello),
            # a registered box, but to an onion and to the gateway's own domain
            await onion_session(world, alice_id, alice, [f"x@{mallory.onion_address}"], hello),
            await onion_session(world, alice_id, alice, [f"alice@{GW_DOMAIN}"], hello),
            # alice's address, but not sealed with her key: mallory's seal fails
            await onion_session(world, mallory, alice, [f"bob@{CLEAR_DOMAIN}"], hello),
            # unsealed
            await onion_session(
                world, alice_id, alice, [f"bob@{CLEAR_DOMAIN}"], hello, sealed=False
            ),
        ]

    results = asyncio.run(run())
    codes = [code for code, _ in results]
    assert codes == [550, 550, 550, 550, 550], results
    assert "not registered" in results[0][1]
    assert "only to clearnet" in results[1][1]
    assert "own domain" in results[2][1]
    assert "forged sender" in results[3][1]
    assert "sealed envelope" in results[4][1]


def test_a_gateway_disk_image_opens_none_of_the_mail_it_holds_for_a_box(world: World) -> None:
    """Clearnet mail queued for an offline box, read from a copy of the gateway's directory
    with every key in it (seed, queue key, mail keys), and with the key alice's tor holds:
    nothing opens it; alice's mail key does. It stops alice's box (the next test starts
    it again)."""
    alice = world.alice
    alice_identity = load_identity(alice.new.box_dir / "keys" / "identity.key")
    with closing(sqlite3.connect(world.gw_dir / "state" / "gateway.sqlite")) as db:
        learned = {row[0] for row in db.execute("SELECT onion FROM box_mail_keys")}
    assert alice.onion in learned  # from her registration (the handshake seal)
    alice.stop()  # the next test has the gateway deliver once it is back
    subject, body = f"Queued{secrets.token_hex(6)}", f"QueuedBody{secrets.token_hex(6)}"
    message = mail_from(f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}", subject, body)
    send_through_postfix(world, message, f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}")
    queue_dir = world.gw_dir / "queue" / "boxes"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(queue_dir.rglob("*.msg")):
        time.sleep(0.5)
    image = Path(  # the files a seized disk holds (tor's live sockets are no file)
        shutil.copytree(world.gw_dir, world.gw_dir.parent / "gw-image", ignore=_sockets)
    )
    gw_identity = load_identity(image / "keys" / "identity.key")
    queue = OutboundQueue(
        image / "queue" / "boxes", derive_subkey(gw_identity.seed, b"om-gw-boxes")
    )
    inners = [queue.load(state.id).message for state in queue.states()]
    assert inners, "the gateway queued nothing for the offline box"
    gw_keys = MailKeyring.open(image / "keys" / "mail-keys", gw_identity)
    everything_there = [
        bytes(gw_identity.x25519_private_key()),
        *(pair.private for pair in (gw_keys.current, *(r.pair for r in gw_keys.retired))),
        bytes(alice_identity.x25519_private_key()),  # the key alice's tor holds
    ]
    for inner in inners:
        assert inner.startswith(b"OMSA\x02") and subject.encode() not in inner
        for key in everything_there:
            with pytest.raises(nacl.exceptions.CryptoError):
                nacl.public.SealedBox(nacl.public.PrivateKey(key)).decrypt(inner[13:])
    for path in image.rglob("*"):
        if path.is_file():
            assert subject.encode() not in path.read_bytes(), path
    alice_keys = MailKeyring.open(alice.new.box_dir / "keys" / "mail-keys", alice_identity)
    opened = [
        open_from_gateway(
            inner,
            box=alice_identity,
            gateway_onion=world.gw_onion,
            recipients=(alice.address,),
            mail_keys=alice_keys,
        )
        for inner in inners
    ]
    assert any(subject.encode() in content.message for content in opened)


def _sockets(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if stat.S_ISSOCK(os.lstat(os.path.join(directory, n)).st_mode)]


def test_mail_held_for_a_box_that_was_down_arrives_once_it_is_back(world: World) -> None:
    """The gateway said 250 for mail to a box that is down (the test before stopped
    alice's): it keeps it, retrying, and the box gets it once it runs again. The
    operator sees it waiting (``queue``) and can have it retried at once (``flush``)."""
    alice = world.alice
    assert alice.process.poll() is not None, "alice's box should be down"
    token = f"HeldForAlice{secrets.token_hex(6)}"
    message = mail_from(f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}", token, "kept for her")
    send_through_postfix(world, message, f"carol@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}")
    deadline = time.monotonic() + 90
    listing = ""
    while time.monotonic() < deadline:
        listing = gateway(world, "queue")
        tried = [line.split() for line in listing.splitlines() if alice.onion in line]
        if any(row[0] == "boxes" and int(row[3]) >= 1 for row in tried):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"no failed attempt for the box that is down:\n{listing}")
    assert "carol" not in listing and token not in listing  # no sender, no subject
    world.alice = run_box(alice.new)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # the box's onion is republished meanwhile
        assert "due now" in gateway(world, "queue", "flush")
        try:
            stored = wait_box_mail(world.alice, token, timeout=15)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(
            "the held mail never reached the box:\n" + "".join(world.gw_stderr[-30:])
        )
    assert email.message_from_bytes(stored, policy=email.policy.default)["Subject"] == token


def test_a_box_refusing_for_good_gets_the_clearnet_sender_a_signed_report(world: World) -> None:
    """A message the gateway accepted (250) ends in the box or in a report to its clearnet
    sender: here the box refuses it for good (the alias names a local part the box does
    not have), and the report reaches the sender's real Postfix mailbox, DKIM-signed,
    from a null reverse path, naming the alias and never the box."""
    alice = world.alice
    identity = load_identity(alice.new.box_dir / "keys" / "identity.key")
    registry = Registry(Database("", world.gw_dir / "state"))  # as the operator's tools do
    request = build_registration(identity, f"ghost@{alice.onion}", world.gw_onion, "ghost")
    registry.request(request, require_approval=False)
    token = f"ForGhost{secrets.token_hex(6)}"
    message = mail_from(f"bob@{CLEAR_DOMAIN}", f"ghost@{GW_DOMAIN}", token, "nobody reads this")
    send_through_postfix(world, message, f"bob@{CLEAR_DOMAIN}", f"ghost@{GW_DOMAIN}")
    report = wait_postfix(
        world.postfix,
        f"Final-Recipient: rfc822; ghost@{GW_DOMAIN}",
        timeout=120,
        log="".join(world.gw_stderr[-30:]),
    )
    assert b".onion" not in report and token.encode() not in report
    parsed = email.message_from_bytes(report, policy=email.policy.default)
    assert parsed["To"] == f"bob@{CLEAR_DOMAIN}"
    assert parsed["Return-Path"] == "<>"
    assert parsed.get_content_type() == "multipart/report"
    status = parsed.get_payload()[1].as_string()
    assert "Action: failed" in status and "Status: 5.1.1" in status, status
    assert_signed_by_the_gateway(world, report)
    # reported means done: the refused message leaves the queue (right after its report)
    active = world.gw_dir / "queue" / "boxes" / "active"
    deadline = time.monotonic() + 30
    while list(active.glob("*.msg")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(active.glob("*.msg")), gateway(world, "queue") + "".join(world.gw_stderr[-60:])


def test_abuse_reports_reach_the_operator_s_maildir(world: World) -> None:
    """Another mail operator writes to abuse@ the gateway's domain through its real
    Postfix: the report is kept in GWDIR/operator, a Maildir a real client reads."""
    token = f"AbuseReport{secrets.token_hex(6)}"
    report = mail_from(f"bob@{CLEAR_DOMAIN}", f"abuse@{GW_DOMAIN}", token, "spam from an alias")
    send_through_postfix(world, report, f"bob@{CLEAR_DOMAIN}", f"abuse@{GW_DOMAIN}")
    folder = world.gw_dir / "operator"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [p for p in (folder / "new").glob("*") if token.encode() in p.read_bytes()]
        if found:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the report never reached the operator's Maildir")
    work = world.gw_dir.parent / "neomutt-operator"
    work.mkdir(exist_ok=True)
    assert token in neomutt_subjects(folder, work)
    stored = email.message_from_bytes(found[0].read_bytes(), policy=email.policy.default)
    verdicts = [str(v) for v in stored.get_all("Authentication-Results", [])]
    assert any(v.startswith(f"{GW_DOMAIN};") and "spf=pass" in v for v in verdicts)


def test_dmarc_reject_is_refused_and_quarantine_lands_in_the_box_s_junk(world: World) -> None:
    """The From domain's DMARC, through the real resolver: a message claiming clear.test
    (p=reject) sent from another envelope domain fails it and is refused at DATA, before
    any 250; one claiming quarantine.test (p=quarantine) is delivered, sealed, and the
    box files it in alice/.Junk, where a real neomutt reads it."""

    async def send(claimed: str, token: str) -> tuple[int, str]:
        message = mail_from(f"ceo@{claimed}", f"alice@{GW_DOMAIN}", token, "pay this invoice")
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=world.gw_smtp_port,
            local_hostname="forger.test",
            start_tls=False,
        )
        await smtp.connect(timeout=30)
        try:
            await smtp.mail("billing@forger.test")
            await smtp.rcpt(f"alice@{GW_DOMAIN}")
            try:
                reply = await smtp.data(message)
            except aiosmtplib.SMTPResponseException as exc:
                return exc.code, exc.message
            return reply.code, reply.message
        finally:
            smtp.close()

    rejected = f"Rejected{secrets.token_hex(6)}"
    code, text = asyncio.run(send(CLEAR_DOMAIN, rejected))
    assert code == 550 and text.startswith("5.7.1") and "DMARC" in text, (code, text)
    quarantined = f"Quarantined{secrets.token_hex(6)}"
    code, text = asyncio.run(send(QUARANTINE_DOMAIN, quarantined))
    assert code == 250, (code, text)
    junk = world.alice.maildir / ".Junk"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if junk.is_dir() and any(
            quarantined.encode() in p.read_bytes() for p in junk.rglob("*") if p.is_file()
        ):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the quarantined message never reached alice/.Junk")
    work = world.gw_dir.parent / "neomutt-junk"
    work.mkdir(exist_ok=True)
    assert quarantined in neomutt_subjects(junk, work)
    inbox = [p.read_bytes() for p in world.alice.maildir.glob("*/*") if p.is_file()]
    assert not any(quarantined.encode() in data or rejected.encode() in data for data in inbox)


def test_status_and_metrics_tell_the_operator_what_happened_and_name_nobody(
    world: World,
) -> None:
    """After the module's mail (last in it): ``status`` says the gateway runs and counts
    aliases and queues; the Prometheus endpoint on loopback counts what was accepted,
    refused by reason and delivered by TLS mode, and no label or value names an alias,
    an address or a domain."""
    status = gateway(world, "status")
    assert "state:      running (pid" in status
    assert f"onion:      {world.gw_onion}" in status
    assert "aliases:    2 approved, 0 pending, 0 denied; registration required" in status
    assert "queue:      boxes 0 message(s)" in status
    assert "operator:   1 new message(s)" in status
    url = json.loads((world.gw_dir / "run" / "status.json").read_text())["metrics"]
    assert url.startswith("http://127.0.0.1:") and f"metrics:    {url}" in status
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("onionmail_gateway_")
    }
    assert values["onionmail_gateway_clearnet_accepted_total"] >= 4
    assert values['onionmail_gateway_refused_total{reason="dmarc_reject",side="clearnet"}'] == 1
    assert values['onionmail_gateway_refused_total{reason="not_approved",side="onion"}'] >= 1
    assert values["onionmail_gateway_relayed_total"] >= 1
    tls = [k for k in values if k.startswith("onionmail_gateway_clearnet_deliveries_total")]
    assert tls and all('tls="' in k for k in tls), tls
    assert values["onionmail_gateway_sender_reports_total"] >= 1
    assert values['onionmail_gateway_aliases{state="approved"}'] == 2
    assert values['onionmail_gateway_queue_messages{queue="boxes"}'] == 0
    for secret in ("@", GW_DOMAIN, CLEAR_DOMAIN, "alice", "ghost", ".onion"):
        assert secret not in text, secret
