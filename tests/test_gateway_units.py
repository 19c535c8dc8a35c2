"""The gateway's pieces without tor: registration protocol, registry, config, both SMTP handlers.

The handlers run in real aiosmtpd servers on 127.0.0.1 (port 0) and are
spoken to with aiosmtplib; sealing is the real one. What needs tor (the
onion, the box, Postfix as MX) is in ``tests/test_gateway_flow.py``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from gateway.cli import main as gateway_cli
from gateway.config import load_gateway_config, parse_gateway_config
from gateway.errors import GatewayConfigError
from gateway.inbound.mx import ClearnetInboundHandler, RateLimit
from gateway.outbound.dkim_signing import DkimAlgorithm, DkimSigner, load_or_create_key
from gateway.outbound.onion_side import GatewayOnionHandler
from gateway.outbound.sending_limits import SendingLimits
from gateway.registry import APPROVED, PENDING, Registry
from gateway.storage import Database
from onionmail.config.box import parse_config
from onionmail.core.errors import ConfigError, EnvelopeError, RegistrationError, SealError
from onionmail.gateway_link.protocol import (
    INNER_CHALLENGE,
    REGISTRATION_LOCAL_PART,
    build_registration,
    open_from_gateway,
    parse_registration,
    parse_registration_reply,
    seal_for_box,
    verify_registration,
)
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    open_anonymous,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.identity import Identity
from onionmail.smtp.server import server_port, start_smtp_server
from onionmail.store.replay_cache import ReplayCache

DOMAIN = "gw.test"
GATEWAY = Identity.generate()
BOX = Identity.generate()
BOX_ADDRESS = f"alice@{BOX.onion_address}"


# --- the registration protocol ------------------------------------------------------------


def test_a_registration_verifies_only_for_its_sender_gateway_and_time() -> None:
    now = time.time()
    request = build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "Alice", now)
    parsed = parse_registration(request.to_bytes())
    assert parsed == request and parsed.alias == "alice"
    verify_registration(parsed, sender=BOX_ADDRESS, gateway_onion=GATEWAY.onion_address, now=now)
    other = Identity.generate()
    with pytest.raises(RegistrationError, match="another gateway"):
        verify_registration(parsed, sender=BOX_ADDRESS, gateway_onion=other.onion_address, now=now)
    with pytest.raises(RegistrationError, match="differs from the sender"):
        verify_registration(
            parsed,
            sender=f"bob@{BOX.onion_address}",
            gateway_onion=GATEWAY.onion_address,
            now=now,
        )
    with pytest.raises(RegistrationError, match="stale"):
        verify_registration(
            parsed, sender=BOX_ADDRESS, gateway_onion=GATEWAY.onion_address, now=now + 3600
        )
    forged = parse_registration(request.to_bytes().replace(b'"alice"', b'"bob"'))
    with pytest.raises(RegistrationError, match="signature"):
        verify_registration(
            forged, sender=BOX_ADDRESS, gateway_onion=GATEWAY.onion_address, now=now
        )


def test_a_registration_signature_is_domain_separated() -> None:
    request = build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice")
    # The same bytes signed under another context do not verify as a registration.
    wrong = BOX.sign(b"some other use", request.signed_bytes())
    tampered = parse_registration(request.to_bytes())
    object.__setattr__(tampered, "signature", wrong)
    with pytest.raises(RegistrationError, match="signature"):
        verify_registration(
            tampered, sender=BOX_ADDRESS, gateway_onion=GATEWAY.onion_address, now=time.time()
        )


@pytest.mark.parametrize("alias", ["postmaster", "register", "a b", ""])
def test_reserved_or_malformed_aliases_are_refused(alias: str) -> None:
    with pytest.raises(RegistrationError):
        build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, alias)


def test_registration_replies_are_read() -> None:
    reply = parse_registration_reply("2.0.0 pending alice@gw.test awaits approval")
    assert (reply.state, reply.alias) == ("pending", "alice@gw.test")
    with pytest.raises(RegistrationError):
        parse_registration_reply("2.0.0 Delivered")


def test_the_inner_envelope_opens_for_its_box_and_not_with_the_gateway_s_key() -> None:
    blob = seal_for_box(
        BOX.onion_address,
        mail_from="carol@clear.test",
        recipients=(BOX_ADDRESS,),
        message=b"Subject: x\r\n\r\nhi\r\n",
    )
    content = open_from_gateway(
        blob, box=BOX, gateway_onion=GATEWAY.onion_address, recipients=(BOX_ADDRESS,)
    )
    assert content.mail_from == "carol@clear.test" and content.message.endswith(b"hi\r\n")
    for other in (GATEWAY, Identity.generate()):  # the sealer's own key opens nothing
        with pytest.raises(SealError):
            open_anonymous(blob, recipient=other)
    with pytest.raises(EnvelopeError):
        open_from_gateway(
            blob, box=BOX, gateway_onion=GATEWAY.onion_address, recipients=("x@y.test",)
        )


def test_an_inner_envelope_from_a_gateway_s_static_key_still_opens() -> None:
    """Gateways before the one-time key sealed from their own key; such mail may still wait
    in a queue, and the box opens it from its configured gateway only."""
    content = SealedContent(bytes(16), 1_800_000_000, INNER_CHALLENGE, "carol@clear.test",
                            (BOX_ADDRESS,), b"Subject: old\r\n\r\nhi\r\n")  # fmt: skip
    blob = seal(content, sender=GATEWAY, recipient_onion=BOX.onion_address)
    opened = open_from_gateway(
        blob, box=BOX, gateway_onion=GATEWAY.onion_address, recipients=(BOX_ADDRESS,)
    )
    assert opened.message.startswith(b"Subject: old")
    with pytest.raises(SealError):
        open_from_gateway(
            blob,
            box=BOX,
            gateway_onion=Identity.generate().onion_address,
            recipients=(BOX_ADDRESS,),
        )


# --- registry and configuration -----------------------------------------------------------


def test_registry_keeps_one_alias_per_box_and_one_box_per_alias(tmp_path: Path) -> None:
    registry = Registry(Database("", tmp_path / "state"))
    request = build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice")
    assert registry.request(request, require_approval=True).state == PENDING
    assert registry.request(request, require_approval=True).state == PENDING  # asked again
    other = Identity.generate()
    theft = build_registration(other, f"x@{other.onion_address}", GATEWAY.onion_address, "alice")
    with pytest.raises(RegistrationError, match="taken"):
        registry.request(theft, require_approval=False)
    second = build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice2")
    with pytest.raises(RegistrationError, match="already has"):
        registry.request(second, require_approval=False)
    # Another process (the CLI) decides; this instance sees it without a restart.
    Registry(Database("", tmp_path / "state")).decide("alice", approve=True)
    entry = registry.get("alice")
    assert entry is not None and entry.state == APPROVED
    assert (tmp_path / "state" / "gateway.sqlite").stat().st_mode & 0o777 == 0o600


def test_gateway_config_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    config = parse_gateway_config({"gateway": {"domain": DOMAIN}}, path)
    assert config.smtp.port == 25 and config.tor.mode == "launch"
    for raw, where in [
        ({"gateway": {"domain": "x.onion"}}, "[gateway] domain"),
        ({"gateway": {"domain": DOMAIN}, "smtp": {"port": "x"}}, "[smtp] port"),
        ({"gateway": {"domain": DOMAIN}, "smtp": {"tls_cert": "a"}}, "[smtp] tls_key"),
        ({"gateway": {"domain": DOMAIN}, "nope": {}}, "[nope]"),
        ({"gateway": {"domain": DOMAIN}, "dns": {"resolver": "192.0.2.53"}}, "[dns] resolver"),
        ({"gateway": {"domain": DOMAIN}, "dns": {"resolver": "dns.test"}}, "[dns] resolver"),
        ({"gateway": {"domain": DOMAIN}, "smtp": {"max_commands": 0}}, "[smtp] max_commands"),
        ({"gateway": {"domain": DOMAIN}, "onion": {"max_session_time": 0}}, "[onion] max_session"),
    ]:
        with pytest.raises(GatewayConfigError, match=str(path)) as caught:
            parse_gateway_config(raw, path)
        assert where in str(caught.value)
    remote = {"gateway": {"domain": DOMAIN}, "dns": {"resolver": "192.0.2.53"}}
    remote["dns"]["trust_remote_resolver"] = True  # said explicitly: accepted
    assert parse_gateway_config(remote, path).dns.resolver == "192.0.2.53"


def test_box_gateway_and_onion_mx_sections(tmp_path: Path) -> None:
    path = tmp_path / "onionmail.toml"
    mx_onion = Identity.generate().onion_address
    raw = {
        "gateway": {GATEWAY.onion_address: f"alice@{DOMAIN}"},
        "onion_mx": {"Corp.Test": mx_onion},
    }
    config = parse_config(raw, path)
    assert config.gateway.sending_gateway == GATEWAY.onion_address
    assert config.gateway.onions == {GATEWAY.onion_address}
    assert config.onion_mx.onion_for("corp.test") == mx_onion
    with pytest.raises(ConfigError, match=r"\[gateway\] entry 1"):
        parse_config({"gateway": {"notanonion.onion": "a@b.test"}}, path)
    with pytest.raises(ConfigError, match=r"\[onion_mx\] entry 1"):
        parse_config({"onion_mx": {"corp.test": "corp.test"}}, path)


# --- the box-facing handler -----------------------------------------------------------------


@pytest.fixture
async def onion_side(tmp_path: Path) -> AsyncIterator[tuple[int, Registry, list[Any]]]:
    registry = Registry(Database("", tmp_path / "state"))
    queued: list[Any] = []

    async def queue_clearnet(alias: str, rcpts: list[str], message: bytes) -> list[str]:
        queued.append((alias, rcpts, message))
        return ["q1"]

    keys = tmp_path / "dkim"
    signer = DkimSigner(
        [load_or_create_key(keys, domain=DOMAIN, selector="t", algorithm=DkimAlgorithm.ED25519)]
    )
    with ReplayCache(tmp_path / "replay.sqlite") as cache:
        handler = GatewayOnionHandler(
            identity=GATEWAY,
            domain=DOMAIN,
            registry=registry,
            replay_cache=cache,
            signer=signer,
            queue_clearnet=queue_clearnet,
            require_approval=True,
            max_recipients=5,
            limits=SendingLimits(
                alias_messages_per_hour=2,
                alias_recipients_per_day=3,
                box_messages_per_hour=100,
                box_recipients_per_day=100,
            ),
        )
        server = await start_smtp_server(handler, "127.0.0.1", 0, hostname=GATEWAY.onion_address)
        try:
            yield server_port(server), registry, queued
        finally:
            server.close()
            await handler.drain()


async def sealed_session(
    port: int, identity: Identity, sender: str, rcpts: list[str], message: bytes
) -> tuple[int, str]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="localhost", timeout=10)
    await smtp.connect()
    try:
        await smtp.ehlo()
        challenge = parse_seal_keyword_params(smtp.esmtp_extensions[SEAL_KEYWORD.lower()])
        response = await smtp.execute_command(b"MAIL", f"FROM:<{sender}>".encode())
        if response.code >= 400:
            return response.code, response.message
        for rcpt in rcpts:
            response = await smtp.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            if response.code >= 400:
                return response.code, response.message
        content = SealedContent(
            secrets.token_bytes(16), int(time.time()), challenge, sender, tuple(rcpts), message
        )
        envelope = seal(content, sender=identity, recipient_onion=GATEWAY.onion_address)
        try:
            reply = await smtp.data(encode_for_smtp(envelope))
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return reply.code, reply.message
    finally:
        smtp.close()


async def test_register_then_relay_after_approval(
    onion_side: tuple[int, Registry, list[Any]],
) -> None:
    port, registry, queued = onion_side
    register = f"{REGISTRATION_LOCAL_PART}@{GATEWAY.onion_address}"
    request = build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice").to_bytes()
    code, text = await sealed_session(port, BOX, BOX_ADDRESS, [register], request)
    assert code == 250 and text.startswith("2.0.0 pending alice@gw.test"), text
    # The same signed request again: its nonce was seen.
    code, text = await sealed_session(port, BOX, BOX_ADDRESS, [register], request)
    assert code == 550

    message = f"From: Alice <{BOX_ADDRESS}>\r\nTo: bob@clear.test\r\nSubject: s\r\n\r\nhi\r\n"
    code, text = await sealed_session(port, BOX, BOX_ADDRESS, ["bob@clear.test"], message.encode())
    assert code == 550 and "pending" in text and not queued

    registry.decide("alice", approve=True)
    code, text = await sealed_session(port, BOX, BOX_ADDRESS, ["bob@clear.test"], message.encode())
    assert code == 250, text
    ((alias, rcpts, signed),) = queued
    assert alias == f"alice@{DOMAIN}" and rcpts == ["bob@clear.test"]
    assert signed.startswith(b"DKIM-Signature:") and b"From: Alice <alice@gw.test>" in signed
    assert BOX.onion_address.encode() not in signed


async def test_a_box_past_its_sending_limits_gets_450_and_nothing_is_queued(
    onion_side: tuple[int, Registry, list[Any]],
) -> None:
    """Over a real socket, sealed: the third message of an hour from an alias (limit 2),
    and a message to more recipients than the alias has left today (limit 3), are
    deferred with 450 4.7.1 naming the limit; nothing of them is queued."""
    port, registry, queued = onion_side
    registry.request(
        build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice"),
        require_approval=False,
    )
    message = f"From: {BOX_ADDRESS}\r\nTo: bob@clear.test\r\nSubject: s\r\n\r\nhi\r\n".encode()
    for _ in range(2):
        code, text = await sealed_session(port, BOX, BOX_ADDRESS, ["bob@clear.test"], message)
        assert code == 250, text
    code, text = await sealed_session(port, BOX, BOX_ADDRESS, ["bob@clear.test"], message)
    assert code == 450 and text.startswith("4.7.1 Sending limit reached: at most 2 messages")
    assert len(queued) == 2
    other = Identity.generate()
    address = f"carol@{other.onion_address}"
    registry.request(
        build_registration(other, address, GATEWAY.onion_address, "carol"), require_approval=False
    )
    rcpts = [f"r{n}@clear.test" for n in range(4)]
    body = f"From: {address}\r\nTo: r0@clear.test\r\nSubject: s\r\n\r\nhi\r\n".encode()
    code, text = await sealed_session(port, other, address, rcpts, body)
    assert code == 450 and "at most 3 recipients a day from this alias" in text
    code, text = await sealed_session(port, other, address, rcpts[:3], body)
    assert code == 250, text  # within the limit: the refusal counted nothing
    assert len(queued) == 3


def test_sending_limits_slide_and_a_box_counts_all_its_aliases() -> None:
    now = [1000.0]
    limits = SendingLimits(
        alias_messages_per_hour=10,
        alias_recipients_per_day=50,
        box_messages_per_hour=3,
        box_recipients_per_day=5,
        clock=lambda: now[0],
    )
    assert limits.take("alice", "box1", 1) is None
    assert limits.take("bob", "box1", 1) is None
    assert limits.take("carol", "box1", 1) is None
    refused = limits.take("dave", "box1", 1)  # a fourth alias of the same box
    assert refused is not None and "3 messages an hour from this box" in refused
    assert limits.take("erin", "box2", 1) is None  # another box is not held back
    now[0] += 3601  # an hour later the messages slide out; the day's recipients do not
    assert limits.take("alice", "box1", 2) is None
    refused = limits.take("alice", "box1", 1)
    assert refused is not None and "5 recipients a day from this box" in refused
    now[0] += 86400
    assert limits.take("alice", "box1", 5) is None


def test_registry_caps_aliases_per_box_and_removes_and_renames(tmp_path: Path) -> None:
    gw = tmp_path / "gw"
    assert gateway_cli(["init", "--dir", str(gw), "--domain", DOMAIN]) == 0
    registry = Registry(Database("", gw / "state"))
    for n in range(2):
        address = f"u{n}@{BOX.onion_address}"
        request = build_registration(BOX, address, GATEWAY.onion_address, f"a{n}")
        registry.request(request, require_approval=False, max_per_box=2)
    third = build_registration(BOX, f"u2@{BOX.onion_address}", GATEWAY.onion_address, "a2")
    with pytest.raises(RegistrationError, match="holds 2 aliases here already"):
        registry.request(third, require_approval=False, max_per_box=2)
    assert gateway_cli(["rename", "--dir", str(gw), "a0", "Zed"]) == 0
    renamed = registry.get("zed")
    assert renamed is not None and renamed.box == f"u0@{BOX.onion_address}"
    assert registry.get("a0") is None
    assert gateway_cli(["rename", "--dir", str(gw), "zed", "a1"]) == 1  # taken
    assert gateway_cli(["remove", "--dir", str(gw), "zed"]) == 0
    assert registry.get("zed") is None
    assert registry.request(third, require_approval=False, max_per_box=2).alias == "a2"


def test_a_new_gateway_requires_approval_unless_opened_explicitly(tmp_path: Path) -> None:
    assert gateway_cli(["init", "--dir", str(tmp_path / "a"), "--domain", DOMAIN]) == 0
    assert load_gateway_config(tmp_path / "a").gateway.require_approval is True
    opened = ["init", "--dir", str(tmp_path / "b"), "--domain", DOMAIN, "--open-registration"]
    assert gateway_cli(opened) == 0
    assert load_gateway_config(tmp_path / "b").gateway.require_approval is False


# --- the clearnet handler -------------------------------------------------------------------


async def test_clearnet_side_seals_refuses_and_rate_limits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(Database("", tmp_path / "state"))
    request = build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice")
    registry.request(request, require_approval=False)
    sealed: list[Any] = []

    async def seal_and_queue(
        sender: str, boxes: list[str], message: bytes, aliases: list[str]
    ) -> list[str]:
        sealed.append((sender, boxes, message))
        return ["q"]

    handler = ClearnetInboundHandler(
        domain=DOMAIN,
        registry=registry,
        seal_and_queue=seal_and_queue,
        max_recipients=5,
        rate_limit=RateLimit(2, 60),
    )
    server = await start_smtp_server(handler, "127.0.0.1", 0, hostname=DOMAIN)
    port = server_port(server)
    try:
        message = b"From: carol@clear.test\r\nSubject: hi\r\n\r\nbody\r\n"
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="c.test", timeout=10)
        await smtp.connect()
        assert (await smtp.execute_command(b"MAIL", b"FROM:<carol@clear.test>")).code == 250
        for rcpt, code in [
            (f"nosuch@{DOMAIN}", 550),
            ("bob@elsewhere.test", 550),
            (BOX_ADDRESS, 550),
            (f"alice@{DOMAIN}", 250),
        ]:
            response = await smtp.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            assert response.code == code, rcpt
        assert (await smtp.data(message)).code == 250
        assert sealed == [("carol@clear.test", [BOX_ADDRESS], message)]
        for _ in range(5):  # aborted transactions are not messages: they do not count
            assert (await smtp.execute_command(b"MAIL", b"FROM:<carol@clear.test>")).code == 250
            await smtp.rset()
        assert (await smtp.execute_command(b"MAIL", b"FROM:<carol@clear.test>")).code == 250
        assert (await smtp.execute_command(b"RCPT", f"TO:<alice@{DOMAIN}>".encode())).code == 250
        assert (await smtp.data(message)).code == 250  # the second message of the window
        with caplog.at_level(logging.WARNING, logger="gateway.inbound.mx"):
            refused = await smtp.execute_command(b"MAIL", b"FROM:<carol@clear.test>")
        assert refused.code == 450 and refused.message.startswith("4.7.1")
        (logged,) = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
        assert "127.0.0.1" in logged and "carol" not in logged  # the IP, never an address
        await smtp.quit()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("failed", "enforce", "code", "marked"),
    [
        ("", True, 250, False),
        ("none", True, 250, False),
        ("quarantine", True, 250, True),
        ("reject", True, 550, False),
        ("reject", False, 250, False),
    ],
)
async def test_dmarc_policy_of_a_failing_message_is_acted_on_and_never_forged(
    tmp_path: Path, failed: str, enforce: bool, code: int, marked: bool
) -> None:
    """The MX's part of DMARC enforcement (the verdict itself comes from the real DNS in
    test_gateway_flow): what each failed policy does, and a sender's own
    Onionmail-Quarantine field never reaches the box."""
    from gateway.inbound.mx import Verdict
    from onionmail.gateway_link.protocol import QUARANTINE_FIELD

    sealed: list[bytes] = []

    async def seal_and_queue(
        sender: str, boxes: list[str], message: bytes, aliases: list[str]
    ) -> list[str]:
        sealed.append(message)
        return ["q"]

    async def authenticate(session: Any, envelope: Any, data: bytes) -> Verdict:
        return Verdict(f"{DOMAIN}; dmarc=fail".encode(), failed)

    handler = alice_mx(tmp_path, seal_and_queue, authenticate=authenticate, enforce_dmarc=enforce)
    server = await start_smtp_server(handler, "127.0.0.1", 0, hostname=DOMAIN)
    message = (
        f"From: ceo@clear.test\r\n{QUARANTINE_FIELD}: forged by the sender\r\n"
        "Subject: s\r\n\r\nbody\r\n"
    ).encode()
    try:
        reply = await aiosmtplib.send(
            message,
            sender="x@clear.test",
            recipients=[f"alice@{DOMAIN}"],
            hostname="127.0.0.1",
            port=server_port(server),
            start_tls=False,
        )
        got = reply[1] and 250
    except aiosmtplib.SMTPDataError as exc:
        got = exc.code
    finally:
        server.close()
    assert got == code
    assert len(sealed) == (0 if code == 550 else 1)
    for data in sealed:
        assert b"forged by the sender" not in data
        assert (QUARANTINE_FIELD.encode() in data) is marked


def test_rate_limit_slides_and_spares_the_allowed_networks() -> None:
    now = [0.0]
    limit = RateLimit(2, 60, clock=lambda: now[0], allow=("192.0.2.0/24", "::1"))
    for _ in range(2):
        assert limit.allow("203.0.113.9")
        limit.record("203.0.113.9")
    assert not limit.allow("203.0.113.9")
    now[0] = 30.0
    assert not limit.allow("203.0.113.9")
    now[0] = 61.0  # both events slid out of the window
    assert limit.allow("203.0.113.9")
    for _ in range(10):  # an operator's own relay is never limited
        limit.record("192.0.2.25")
        limit.record("::1")
    assert limit.allow("192.0.2.25") and limit.allow("::1")


def alice_mx(tmp_path: Path, seal_and_queue: Any, **hooks: Any) -> ClearnetInboundHandler:
    """The clearnet MX of DOMAIN with alias alice approved (five recipients, 10 a minute)."""
    registry = Registry(Database("", tmp_path / "state"))
    registry.request(
        build_registration(BOX, BOX_ADDRESS, GATEWAY.onion_address, "alice"),
        require_approval=False,
    )
    return ClearnetInboundHandler(
        domain=DOMAIN,
        registry=registry,
        seal_and_queue=seal_and_queue,
        max_recipients=5,
        rate_limit=RateLimit(10, 60),
        **hooks,
    )


async def test_postmaster_and_abuse_reach_the_operator_and_other_roles_do_not(
    tmp_path: Path,
) -> None:
    """RFC 5321 4.5.1: Postmaster, with or without the domain, in any case; RFC 2142:
    abuse@. A message for an alias and for abuse@ goes to both; root@ stays refused."""
    sealed: list[Any] = []
    operator: list[tuple[bytes, list[str]]] = []

    async def seal_and_queue(
        sender: str, boxes: list[str], message: bytes, aliases: list[str]
    ) -> list[str]:
        sealed.append((boxes, aliases))
        return ["q"]

    async def operator_mail(message: bytes, recipients: list[str]) -> None:
        operator.append((message, recipients))

    handler = alice_mx(tmp_path, seal_and_queue, operator_mail=operator_mail)
    server = await start_smtp_server(handler, "127.0.0.1", 0, hostname=DOMAIN)
    message = b"From: carol@clear.test\r\nSubject: spam report\r\n\r\nbody\r\n"
    try:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=server_port(server), local_hostname="c.test", timeout=10
        )
        await smtp.connect()
        assert (await smtp.execute_command(b"MAIL", b"FROM:<carol@clear.test>")).code == 250
        for rcpt, code in [
            ("Postmaster", 250),
            (f"root@{DOMAIN}", 550),
            (f"mailer-daemon@{DOMAIN}", 550),
            ("postmaster@elsewhere.test", 550),
        ]:
            response = await smtp.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            assert response.code == code, (rcpt, response)
        assert (await smtp.data(message)).code == 250
        assert operator == [(message, [f"postmaster@{DOMAIN}"])] and not sealed
        assert (await smtp.execute_command(b"MAIL", b"FROM:<carol@clear.test>")).code == 250
        for rcpt in (f"ABUSE@{DOMAIN}", f"alice@{DOMAIN}"):
            assert (await smtp.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())).code == 250
        assert (await smtp.data(message)).code == 250
        assert operator[-1][1] == [f"abuse@{DOMAIN}"]
        assert sealed == [([BOX_ADDRESS], [f"alice@{DOMAIN}"])]
        await smtp.quit()
    finally:
        server.close()


def test_the_box_routes_onions_onion_mx_domains_and_the_rest_to_its_gateway(
    tmp_path: Path,
) -> None:
    from onionmail.box.daemon import Box
    from onionmail.core.mail_address import parse_mail_address

    mx_onion = Identity.generate().onion_address
    peer = Identity.generate().onion_address
    raw = {
        "gateway": {GATEWAY.onion_address: f"alice@{DOMAIN}"},
        "onion_mx": {"corp.test": mx_onion},
    }
    box = Box(parse_config(raw, tmp_path / "onionmail.toml"), BOX)
    assert box.route(parse_mail_address(f"bob@{peer}")) == peer
    assert box.route(parse_mail_address("ceo@corp.test")) == mx_onion
    assert box.route(parse_mail_address("bob@clear.test")) == GATEWAY.onion_address
    # The ledger and the policy gate see the path each route takes.
    assert str(box.leaks.predicted("ceo@corp.test").path) == "onion-sealed"
    assert str(box.leaks.predicted("bob@clear.test").path) == "gateway-clearnet"
    without = Box(parse_config({}, tmp_path / "other" / "onionmail.toml"), BOX)
    assert without.route(parse_mail_address("bob@clear.test")) is None


def test_a_report_to_a_clearnet_sender_names_the_alias_never_the_box(tmp_path: Path) -> None:
    """What a clearnet sender reads when a box refused its mail for good: the alias it
    wrote to, the box's reason with every onion address taken out, the status from that
    reason, and nothing of the message (the gateway holds it only sealed)."""
    import email
    import email.policy

    from gateway.inbound.undeliverable import report_for
    from onionmail.store.queue import OutboundQueue

    box = f"ghost@{BOX.onion_address}"
    queue = OutboundQueue(tmp_path / "queue", bytes(32))
    entry = queue.enqueue(
        BOX.onion_address,
        f"gateway@{GATEWAY.onion_address}",
        (box,),
        b"OMSA sealed bytes",
        dsn_to="carol@clear.test",
        dsn_names=(f"ghost@{DOMAIN}",),
    )
    loaded = queue.load(entry.id)
    assert (loaded.dsn_to, loaded.dsn_names) == ("carol@clear.test", (f"ghost@{DOMAIN}",))
    reason = (
        f"the peer refused every recipient: 550 5.1.1 <{box}>: no such user at {BOX.onion_address}"
    )
    report = report_for(loaded, reason, (box,), domain=DOMAIN)
    assert b".onion" not in report and b"OMSA" not in report
    assert b"\r\n" in report and b"\n" not in report.replace(b"\r\n", b"")
    msg = email.message_from_bytes(report, policy=email.policy.default)
    assert msg["To"] == "carol@clear.test"
    assert msg["From"] == f"Mail Delivery System <mailer-daemon@{DOMAIN}>"
    assert msg.get_content_type() == "multipart/report"
    parts = [part.get_content_type() for part in msg.iter_parts()]
    assert parts == ["text/plain", "message/delivery-status"]  # nothing quoted
    status = msg.get_payload()[1].as_string()
    assert f"Final-Recipient: rfc822; ghost@{DOMAIN}" in status
    assert "Status: 5.1.1" in status
    assert f"Reporting-MTA: dns; {DOMAIN}" in status


def test_onionbalance_config_names_the_instances_and_carries_the_key_in_tor_s_form(
    tmp_path: Path,
) -> None:
    from gateway.balance import TOR_SECRET_KEY_HEADER, write_onionbalance_config

    gateway = Identity.generate()
    backends = [Identity.generate().onion_address for _ in range(2)]
    config = write_onionbalance_config(gateway, [backends[0], backends[1].upper()], tmp_path / "ob")
    text = config.read_text()
    assert all(f"address: {b}" in text for b in backends) and "key: gateway.key" in text
    key = (tmp_path / "ob" / "gateway.key").read_bytes()
    assert key == TOR_SECRET_KEY_HEADER + gateway.tor_expanded_key() and len(key) == 96
    assert (tmp_path / "ob" / "gateway.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(GatewayConfigError, match="the gateway's own onion"):
        write_onionbalance_config(gateway, [gateway.onion_address], tmp_path / "x")
    with pytest.raises(GatewayConfigError, match="not a v3 onion address"):
        write_onionbalance_config(gateway, ["example.onion"], tmp_path / "x")


def test_an_onionbalance_instance_refuses_an_attached_tor(tmp_path: Path) -> None:
    raw = {
        "gateway": {"domain": "gw.test"},
        "onion": {"onionbalance_instance": True},
        "tor": {"mode": "attach"},
    }
    with pytest.raises(GatewayConfigError, match=r"\[onion\] onionbalance_instance: needs a tor"):
        parse_gateway_config(raw, tmp_path / "gateway.toml")
    raw["tor"] = {"mode": "launch"}
    assert parse_gateway_config(raw, tmp_path / "gateway.toml").onion.onionbalance_instance
