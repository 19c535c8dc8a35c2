"""The gateway's clearnet delivery against a real Postfix, with and without an attacker.

One private Postfix (``tests/postfix.py``) serves the module: STARTTLS with a
trustme certificate for ``mx.peer.test``, users ``bob`` and ``busy`` (the
latter answered ``451``), everyone else unknown (``550``). The attacks go
through :mod:`tests.mitm_proxy`. Each test uses its own alias, so "Postfix
never saw this sender" is checked in Postfix's log, which records even
refused transactions, and "not delivered" in its Maildir.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import hashlib
import logging
import mailbox
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import cast

import dkim
import pytest
import trustme

from gateway.dns import AddressResult, GatewayResolver, MxHost, MxResult, TlsaResult, is_public
from gateway.errors import (
    GatewayConfigError,
    GatewayError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    TlsUnavailableError,
)
from gateway.outbound.dkim_signing import DkimAlgorithm, DkimSigner, load_or_create_key
from gateway.outbound.relay import ClearnetAgent, undeliverable_maildir
from gateway.outbound.sender_rewrite import rewrite_sender
from gateway.outbound.smtp import (
    DeliveryResult,
    PeerCheckingTlsDecision,
    SmtpTimeouts,
    TlsRequirement,
    deliver,
)
from gateway.outbound.tls_policy import TlsPolicy
from onionmail.config.box import DeliverySection
from onionmail.core.errors import DeliveryError
from onionmail.core.errors import PermanentDeliveryError as OnionPermanentDeliveryError
from onionmail.gateway_link.protocol import GATEWAY_TLS_HEADER, mark_gateway_tls
from onionmail.seal.identity import Identity
from onionmail.store.queue import OutboundQueue
from tests.mitm_proxy import AttackMode, MitmProxy
from tests.postfix import Postfix, postfix_for_domain

GATEWAY_DOMAIN = "gw.test"
MX_NAME = "mx.peer.test"
CLEAR_DOMAIN = "clear.test"
BOX = "alice@" + "a" * 56 + ".onion"
FAST = SmtpTimeouts(connect=5, command=5, tls_handshake=5, data=10, total=20)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def postfix(ca: trustme.CA) -> Iterator[Postfix]:
    with postfix_for_domain(
        CLEAR_DOMAIN,
        tls=ca.issue_cert(MX_NAME),
        known_users=["bob", "busy"],
        recipient_access={f"busy@{CLEAR_DOMAIN}": "451 4.2.1 mailbox busy, try later"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> DkimSigner:
    keys = tmp_path_factory.mktemp("dkim") / "keys"
    return DkimSigner(
        [
            load_or_create_key(
                keys,
                domain=GATEWAY_DOMAIN,
                selector=f"s1-{algorithm.key_type}",
                algorithm=algorithm,
            )
            for algorithm in DkimAlgorithm
        ]
    )


@pytest.fixture
def alias() -> str:
    """A fresh alias per test, so Postfix's shared log and Maildir tell tests apart."""
    return f"a{secrets.token_hex(6)}@{GATEWAY_DOMAIN}"


def required(cafile: str) -> TlsRequirement:
    return TlsRequirement(require_tls=True, server_hostname=MX_NAME, cafile=cafile)


def box_message(token: str, to: str = f"bob@{CLEAR_DOMAIN}") -> bytes:
    return (
        f"From: Alice Example <{BOX}>\r\n"
        f"To: <{to}>\r\n"
        f"Subject: gateway test {token}\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        f"Message-ID: <{token}@{BOX.split('@')[1]}>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"secret body {token}\r\n"
    ).encode("ascii")


async def send(
    alias: str,
    signer: DkimSigner,
    decision: TlsRequirement,
    port: int,
    recipients: tuple[str, ...] = (f"bob@{CLEAR_DOMAIN}",),
) -> DeliveryResult:
    """What the gateway does: rewrite to the alias, sign, deliver."""
    token = alias.split("@")[0]
    rewritten = rewrite_sender(box_message(token, recipients[0]), box_address=BOX, alias=alias)
    return await deliver(
        host="127.0.0.1",
        port=port,
        decision=decision,
        sender=rewritten.envelope_sender,
        recipients=recipients,
        message=signer.sign(rewritten.message),
        local_hostname=GATEWAY_DOMAIN,
        timeouts=FAST,
    )


async def stored(postfix: Postfix, token: str, timeout: float = 15.0) -> bytes:
    """The message holding ``token`` once virtual(8) has written it to the Maildir."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if (postfix.maildir / "new").is_dir():
            for message in mailbox.Maildir(postfix.maildir, create=False):
                data = message.as_bytes()
                if token.encode() in data:
                    return data
        await asyncio.sleep(0.1)
    raise AssertionError(f"not delivered in {timeout}s:\n{postfix.log.read_text()[-3000:]}")


def assert_never_reached_postfix(postfix: Postfix, alias: str, proxy: MitmProxy) -> None:
    token = alias.split("@")[0].encode()
    assert f"from=<{alias}>" not in postfix.log.read_text()
    if (postfix.maildir / "new").is_dir():
        assert all(token not in m.as_bytes() for m in mailbox.Maildir(postfix.maildir))
    assert b"MAIL FROM" not in proxy.cleartext.upper()
    assert b"secret body" not in proxy.cleartext


def txt_records(signer: DkimSigner) -> dict[str, bytes]:
    return {key.record_name: key.txt_record().encode() for key in signer.keys}


def verify_all(message: bytes, signer: DkimSigner) -> list[bytes]:
    """The ``a=`` of each DKIM signature, after checking that every one verifies."""
    records = txt_records(signer)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    checker = dkim.DKIM(message)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    algorithms = []
    for index in range(count):
        assert checker.verify(idx=index, dnsfunc=dnsfunc), f"signature {index} fails"
        algorithms.append(checker.signature_fields[b"a"])
    return algorithms


async def test_delivers_over_starttls_as_the_alias_with_valid_dkim(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str
) -> None:
    result = await send(alias, signer, required(cafile), postfix.port)
    assert result.tls is not None and result.tls.authenticated
    assert result.transport_security == "tls-authenticated" and not result.plaintext
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.accepted == (f"bob@{CLEAR_DOMAIN}",) and not result.refused

    data = await stored(postfix, alias.split("@")[0])
    assert f"Return-Path: <{alias}>".encode() in data
    assert f"From: Alice Example <{alias}>".encode() in data
    assert BOX.encode() not in data and b".onion" not in data
    assert sorted(verify_all(data, signer)) == [b"ed25519-sha256", b"rsa-sha256"]
    received = " ".join(str(email.message_from_bytes(data)["Received"]).split())
    assert received.startswith(f"from {GATEWAY_DOMAIN} (")  # EHLO named the gateway's domain
    assert "using TLSv1." in received
    assert socket.gethostname() not in received.split(" by ")[0]
    assert "TLS connection established from" in postfix.log.read_text()


async def test_stripped_starttls_is_a_temporary_failure_and_nothing_is_sent(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str
) -> None:
    async with MitmProxy(postfix.port, AttackMode.STRIP_STARTTLS) as proxy:
        with pytest.raises(TlsUnavailableError) as caught:
            await send(alias, signer, required(cafile), proxy.port)
    assert caught.value.reason == "starttls-not-offered"
    assert isinstance(caught.value, TemporaryDeliveryError)
    assert isinstance(caught.value, ConnectionError) and isinstance(caught.value, GatewayError)
    assert "STARTTLS" in str(caught.value)
    assert proxy.sessions == 1
    assert_never_reached_postfix(postfix, alias, proxy)


@pytest.mark.parametrize("forgery", ["another CA", "another name"])
async def test_wrong_certificate_is_a_temporary_failure_and_nothing_is_sent(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str, ca: trustme.CA, forgery: str
) -> None:
    forged = (
        trustme.CA().issue_cert(MX_NAME) if forgery == "another CA" else ca.issue_cert("x.test")
    )
    attacker = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    forged.configure_cert(attacker)
    async with MitmProxy(postfix.port, AttackMode.WRONG_CERTIFICATE, certificate=attacker) as proxy:
        with pytest.raises(TlsUnavailableError) as caught:
            await send(alias, signer, required(cafile), proxy.port)
    assert caught.value.reason == "certificate-rejected"
    assert "certificate" in str(caught.value) and MX_NAME not in str(caught.value)
    assert proxy.tls_intercepted == 0  # the handshake never completed
    assert_never_reached_postfix(postfix, alias, proxy)


async def test_unauthenticated_tls_is_read_by_the_attacker_and_reported_as_such(
    postfix: Postfix, signer: DkimSigner, alias: str
) -> None:
    """Control for the test above: the attack is real against a client that does not
    verify (a plaintext-allowing, Postfix-``may``-like decision), and the result
    then says "tls", never "tls-authenticated"."""
    attacker = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert(MX_NAME).configure_cert(attacker)
    careless = TlsRequirement(require_tls=False, server_hostname=MX_NAME, verify=False)
    async with MitmProxy(postfix.port, AttackMode.WRONG_CERTIFICATE, certificate=attacker) as proxy:
        result = await send(alias, signer, careless, proxy.port)
    assert result.transport_security == "tls" and result.tls is not None
    assert proxy.tls_intercepted == 1
    assert b"secret body" in proxy.cleartext and f"MAIL FROM:<{alias}>".encode() in proxy.cleartext
    await stored(postfix, alias.split("@")[0])


async def test_plaintext_only_when_allowed_and_the_result_says_so(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str
) -> None:
    allowed = TlsRequirement(require_tls=False, server_hostname=MX_NAME, cafile=cafile)
    async with MitmProxy(postfix.port, AttackMode.STRIP_STARTTLS) as proxy:
        result = await send(alias, signer, allowed, proxy.port)
    assert result.plaintext and result.tls is None
    assert result.transport_security == "plaintext"
    assert b"secret body" in proxy.cleartext  # what "plaintext" costs
    data = await stored(postfix, alias.split("@")[0])
    assert "using TLS" not in str(email.message_from_bytes(data)["Received"])


async def test_honest_relay_sees_only_ciphertext(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str
) -> None:
    async with MitmProxy(postfix.port, AttackMode.PASSTHROUGH) as proxy:
        result = await send(alias, signer, required(cafile), proxy.port)
    assert result.transport_security == "tls-authenticated"
    assert alias.encode() not in proxy.cleartext and b"secret body" not in proxy.cleartext
    await stored(postfix, alias.split("@")[0])


async def test_dane_style_check_accepts_the_pinned_key_and_rejects_others(
    postfix: Postfix, signer: DkimSigner, ca: trustme.CA, alias: str
) -> None:
    """A DANE-EE-like decision: no PKIX, the leaf certificate's SHA-256 is pinned."""
    seen: list[bytes] = []

    def pin(expected: bytes | None) -> TlsRequirement:
        def check(der: bytes) -> None:
            seen.append(der)
            if expected is not None and hashlib.sha256(der).digest() != expected:
                raise ValueError("no TLSA record matches the certificate")

        return TlsRequirement(
            require_tls=True, server_hostname=MX_NAME, verify=False, certificate_check=check
        )

    with pytest.raises(TlsUnavailableError) as caught:
        await send(alias, signer, pin(b"\0" * 32), postfix.port)
    assert caught.value.reason == "certificate-check-failed"
    assert "TLSA" in str(caught.value)
    assert f"from=<{alias}>" not in postfix.log.read_text()

    result = await send(alias, signer, pin(hashlib.sha256(seen[0]).digest()), postfix.port)
    assert result.transport_security == "tls-authenticated"
    await stored(postfix, alias.split("@")[0])


class ChainCheckingDecision:
    """A decision that checks the TLS session itself (like DANE-TA in tls_policy)."""

    require_tls = True
    server_hostname = MX_NAME

    def __init__(self) -> None:
        self.sessions: list[str | None] = []

    @property
    def certificate_check(self) -> Callable[[bytes], None]:
        def leaf_only(der: bytes) -> None:
            raise AssertionError("check_peer should have been used")

        return leaf_only

    def ssl_context(self) -> ssl.SSLContext:
        return TlsRequirement(True, MX_NAME, verify=False).ssl_context()

    def check_peer(self, tls: ssl.SSLObject) -> str:
        self.sessions.append(tls.version())
        raise ValueError("no TLSA trust anchor in the chain")


async def test_a_decision_that_checks_the_session_gets_the_tls_object(
    postfix: Postfix, signer: DkimSigner, alias: str
) -> None:
    decision = ChainCheckingDecision()
    assert isinstance(decision, PeerCheckingTlsDecision)
    token = alias.split("@")[0]
    with pytest.raises(TlsUnavailableError, match="TLSA trust anchor") as caught:
        await deliver(
            host="127.0.0.1",
            port=postfix.port,
            decision=decision,
            sender=alias,
            recipients=[f"bob@{CLEAR_DOMAIN}"],
            message=signer.sign(box_message(token)),
            local_hostname=GATEWAY_DOMAIN,
            timeouts=FAST,
        )
    assert caught.value.reason == "certificate-check-failed"
    assert decision.sessions and decision.sessions[0] in ("TLSv1.2", "TLSv1.3")
    assert f"from=<{alias}>" not in postfix.log.read_text()


async def test_unknown_recipient_is_permanent_with_the_reply_and_a_redacted_message(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway")
    with pytest.raises(PermanentDeliveryError) as caught:
        await send(alias, signer, required(cafile), postfix.port, (f"nobody@{CLEAR_DOMAIN}",))
    error = caught.value
    assert error.reply_code == 550 and error.permanent
    assert "User unknown" in error.reply_text and f"nobody@{CLEAR_DOMAIN}" in error.reply_text
    assert "User unknown" in str(error) and "@" not in str(error)
    assert error.refused_recipients[f"nobody@{CLEAR_DOMAIN}"][0] == 550
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud and all("@" not in text and "gateway test" not in text for text in loud)


async def test_busy_recipient_is_temporary(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str
) -> None:
    with pytest.raises(TemporaryDeliveryError) as caught:
        await send(alias, signer, required(cafile), postfix.port, (f"busy@{CLEAR_DOMAIN}",))
    assert not isinstance(caught.value, PermanentDeliveryError)
    assert caught.value.reply_code == 451 and "mailbox busy" in str(caught.value)


async def test_partly_refused_recipients_are_reported_and_the_rest_delivered(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str
) -> None:
    recipients = (f"bob@{CLEAR_DOMAIN}", f"nobody@{CLEAR_DOMAIN}", f"busy@{CLEAR_DOMAIN}")
    result = await send(alias, signer, required(cafile), postfix.port, recipients)
    assert result.accepted == (f"bob@{CLEAR_DOMAIN}",)
    assert result.refused[f"nobody@{CLEAR_DOMAIN}"].permanent
    assert not result.refused[f"busy@{CLEAR_DOMAIN}"].permanent
    await stored(postfix, alias.split("@")[0])


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never says a word (a tar pit)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_silent_server_times_out_as_a_temporary_failure(
    silent_server: int, cafile: str
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TemporaryDeliveryError, match="did not answer in time"):
        await deliver(
            host="127.0.0.1",
            port=silent_server,
            decision=required(cafile),
            sender=f"x@{GATEWAY_DOMAIN}",
            recipients=[f"bob@{CLEAR_DOMAIN}"],
            message=box_message("tarpit"),
            local_hostname=GATEWAY_DOMAIN,
            timeouts=SmtpTimeouts(connect=0.5, command=0.5, total=5),
        )
    assert loop.time() - started < 3


async def test_a_refused_connection_is_temporary_and_names_no_host(cafile: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(TemporaryDeliveryError, match="Connection refused") as caught:
        await deliver(
            host="127.0.0.1",
            port=port,
            decision=required(cafile),
            sender=f"x@{GATEWAY_DOMAIN}",
            recipients=[f"bob@{CLEAR_DOMAIN}"],
            message=box_message("refused"),
            local_hostname=GATEWAY_DOMAIN,
            timeouts=FAST,
        )
    assert "127.0.0.1" not in str(caught.value)


async def test_required_tls_that_authenticates_nothing_is_refused_before_connecting(
    silent_server: int,
) -> None:
    unauthenticated = TlsRequirement(require_tls=True, server_hostname=MX_NAME, verify=False)
    with pytest.raises(GatewayConfigError, match="authenticates nothing|neither verifies"):
        await deliver(
            host="127.0.0.1",
            port=silent_server,
            decision=unauthenticated,
            sender=f"x@{GATEWAY_DOMAIN}",
            recipients=[f"bob@{CLEAR_DOMAIN}"],
            message=box_message("noauth"),
            local_hostname=GATEWAY_DOMAIN,
        )


# -- the ClearnetAgent and the box's Onionmail-Gateway-TLS mark ------------------------


class _LocalResolver:
    """DNS for the agent: ``clear.test`` has the MX ``mx.peer.test`` at 127.0.0.1, no TLSA."""

    async def mx(self, domain: str) -> MxResult:
        return MxResult((MxHost(10, MX_NAME),), implicit=False, secure=False)

    async def tlsa(self, mx_host: str, port: int = 25) -> TlsaResult:
        return TlsaResult((), secure=False)

    async def addresses(self, host: str) -> AddressResult:
        return AddressResult(("127.0.0.1",), secure=False)


def _clearnet_agent(
    tmp_path: Path, cafile: str, port: int, *, allow_private_mx: bool = True
) -> ClearnetAgent:
    resolver = cast(GatewayResolver, _LocalResolver())
    return ClearnetAgent(
        queue=OutboundQueue(tmp_path / "queue", bytes(32)),
        identity=Identity.generate(),
        settings=DeliverySection(),
        sender_maildir=undeliverable_maildir(tmp_path),
        policy=TlsPolicy(resolver, None, ca_file=cafile),
        resolver=resolver,
        local_hostname=GATEWAY_DOMAIN,
        mx_port=port,
        timeouts=FAST,
        allow_private_mx=allow_private_mx,
    )


def _marked(alias: str, signer: DkimSigner, *, plaintext_allowed: bool) -> tuple[str, bytes]:
    """What the gateway queues for a box's message: the mark (if the box set it)
    travels inside, outside the DKIM-signed fields."""
    token = alias.split("@")[0]
    message = mark_gateway_tls(box_message(token), plaintext_allowed=plaintext_allowed)
    rewritten = rewrite_sender(message, box_address=BOX, alias=alias)
    return rewritten.envelope_sender, signer.sign(rewritten.message)


async def test_agent_sends_in_clear_only_for_a_marked_message_and_strips_the_mark(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str, tmp_path: Path
) -> None:
    sender, signed = _marked(alias, signer, plaintext_allowed=True)
    assert GATEWAY_TLS_HEADER.encode() in signed
    async with MitmProxy(postfix.port, AttackMode.STRIP_STARTTLS) as proxy:
        agent = _clearnet_agent(tmp_path, cafile, proxy.port)
        entry = agent.queue.enqueue(CLEAR_DOMAIN, sender, (f"bob@{CLEAR_DOMAIN}",), signed)
        await agent.deliver(entry)
    assert agent.transport_security[entry.id] == "plaintext"
    assert b"secret body" in proxy.cleartext  # what the user accepted for this recipient
    assert GATEWAY_TLS_HEADER.encode() not in bytes(proxy.cleartext)  # the mark never leaves
    data = await stored(postfix, alias.split("@")[0])
    assert GATEWAY_TLS_HEADER.encode().lower() not in data.lower()
    assert verify_all(data, signer)  # DKIM holds without the mark


async def test_agent_keeps_tls_required_without_the_mark(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str, tmp_path: Path
) -> None:
    sender, signed = _marked(alias, signer, plaintext_allowed=False)
    assert GATEWAY_TLS_HEADER.encode() not in signed
    async with MitmProxy(postfix.port, AttackMode.STRIP_STARTTLS) as proxy:
        agent = _clearnet_agent(tmp_path, cafile, proxy.port)
        entry = agent.queue.enqueue(CLEAR_DOMAIN, sender, (f"bob@{CLEAR_DOMAIN}",), signed)
        with pytest.raises(DeliveryError) as raised:
            await agent.deliver(entry)
    assert not isinstance(raised.value, OnionPermanentDeliveryError)  # stays queued
    assert entry.id not in agent.transport_security
    assert_never_reached_postfix(postfix, alias, proxy)


async def test_an_mx_with_no_public_address_is_never_connected_to(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str, tmp_path: Path
) -> None:
    # A registered box names a domain whose MX resolves to loopback (or a private range):
    # the gateway must not connect there and read the banner back into a bounce (SSRF).
    sender, signed = _marked(alias, signer, plaintext_allowed=True)
    async with MitmProxy(postfix.port, AttackMode.STRIP_STARTTLS) as proxy:
        agent = _clearnet_agent(tmp_path, cafile, proxy.port, allow_private_mx=False)
        entry = agent.queue.enqueue(CLEAR_DOMAIN, sender, (f"bob@{CLEAR_DOMAIN}",), signed)
        with pytest.raises(OnionPermanentDeliveryError, match="no public address"):
            await agent.deliver(entry)
    assert proxy.cleartext == b""  # not one byte: no connection was made
    assert_never_reached_postfix(postfix, alias, proxy)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared (carrier-grade NAT)
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("192.0.2.1", False),  # documentation
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("not an address", False),
    ],
)
def test_which_mx_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(address) is public


async def test_mail_of_an_alias_withdrawn_after_it_was_queued_does_not_go_out(
    postfix: Postfix, signer: DkimSigner, cafile: str, alias: str, tmp_path: Path
) -> None:
    """The registry is checked at each attempt, not only when the box handed the mail
    over: the operator denies the alias while its mail waits, and it never leaves."""
    from gateway.registry import Registry
    from gateway.storage import Database
    from onionmail.gateway_link.protocol import build_registration

    box, gateway = Identity.generate(), Identity.generate()
    local = alias.split("@")[0]
    registry = Registry(Database("", tmp_path / "state"))
    request = build_registration(box, f"alice@{box.onion_address}", gateway.onion_address, local)
    registry.request(request, require_approval=False)
    sender, signed = _marked(alias, signer, plaintext_allowed=False)
    agent = _clearnet_agent(tmp_path, cafile, postfix.port)
    agent.registry = registry
    first = agent.queue.enqueue(CLEAR_DOMAIN, sender, (f"bob@{CLEAR_DOMAIN}",), signed)
    second = agent.queue.enqueue(CLEAR_DOMAIN, sender, (f"bob@{CLEAR_DOMAIN}",), signed)
    await agent.deliver(first)
    await stored(postfix, local)
    registry.decide(local, approve=False)
    with pytest.raises(OnionPermanentDeliveryError, match="withdrawn this alias"):
        await agent.deliver(second)
    letters = mailbox.Maildir(postfix.maildir, create=False)
    assert sum(local.encode() in m.as_bytes() for m in letters) == 1
    assert postfix.log.read_text().count(f"from=<{alias}>") == 1


async def test_operator_mail_forwarded_arrives_attached_signed_from_a_null_sender(
    postfix: Postfix, signer: DkimSigner, cafile: str, tmp_path: Path
) -> None:
    """[gateway] operator_forward: the message for abuse@ is attached to a note from
    postmaster@ the gateway's domain, DKIM-signed, sent with MAIL FROM:<> (never
    bounced back to the reporter); the real Postfix stores it for its user."""
    from gateway.inbound.operator_mail import forward_note

    token = f"Report{secrets.token_hex(6)}"
    original = (
        f"From: someone@else.test\r\nTo: abuse@{GATEWAY_DOMAIN}\r\nSubject: {token}\r\n"
        "\r\nYour alias sent spam.\r\n"
    ).encode()
    note = forward_note(
        original, domain=GATEWAY_DOMAIN, to=f"bob@{CLEAR_DOMAIN}", recipients=["abuse@gw"]
    )
    agent = _clearnet_agent(tmp_path, cafile, postfix.port)
    entry = agent.queue.enqueue(CLEAR_DOMAIN, "", (f"bob@{CLEAR_DOMAIN}",), signer.sign(note))
    await agent.deliver(entry)
    data = await stored(postfix, token)
    assert verify_all(data, signer)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Return-Path"] == "<>"
    assert parsed["From"] == f"Gateway postmaster <postmaster@{GATEWAY_DOMAIN}>"
    (attached,) = [p for p in parsed.iter_attachments() if p.get_content_type() == "message/rfc822"]
    inner = attached.get_content()
    assert inner["Subject"] == token and "Your alias sent spam." in inner.get_content()
