"""SPF, DKIM and DMARC of the gateway's clearnet inbound side (gateway/inbound/spf.py,
gateway/inbound/auth.py), against a real Knot DNS behind a real validating Unbound.

What these prove: the SPF evaluator gives RFC 7208's results for records a
real DNS server publishes (pass, fail, softfail, neutral, none, include
chains, redirect, a/mx/exists with macros, IPv6), enforces the 10-lookup and
void-lookup limits, and turns SERVFAIL and a silent resolver into
``temperror``; DKIM signatures made by dkimpy verify with the key published
in DNS and fail when the body changes; DMARC passes through an aligned SPF
or DKIM result, reports the policy on failure, honours strict versus relaxed
alignment and falls back to the organizational domain. The property tests
show that no record text and no message bytes make the checks raise.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from collections.abc import Iterator

import dkim
import dns.rdata
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dns import GatewayResolver, ResolverConfig
from gateway.errors import GatewayError, SpfRecordError
from gateway.inbound.auth import authentication_results, check_message
from gateway.inbound.dkim import DkimVerdict
from gateway.inbound.dmarc import DmarcVerdict, aligned, parse_dmarc_record, registered_domain
from gateway.inbound.spf import SpfVerdict, check_spf, parse_spf_record
from tests.dns_server import DnsWorld, Record, Security, Zone, a, aaaa, mx, running_dns, txt

CLIENT = "192.0.2.10"
OTHER_CLIENT = "198.51.100.1"
CLIENT6 = "2001:db8::10"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _split_txt(owner: str, text: str) -> Record:
    """A TXT record whose text is longer than one 255-byte string."""
    chunks = [text[i : i + 200] for i in range(0, len(text), 200)]
    return Record(owner, "TXT", " ".join(f'"{chunk}"' for chunk in chunks))


def _rsa_record() -> str:
    der = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def _ed_record() -> str:
    raw = ED_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


ELEVEN_A = " ".join(["a:h1.auth.test"] * 11)
TEN_A = " ".join(["a:h1.auth.test"] * 10)

ZONES = [
    Zone(
        "auth.test",
        [
            txt("ip4", "v=spf1 ip4:192.0.2.0/24 -all"),
            txt("soft", "v=spf1 ip4:203.0.113.0/24 ~all"),
            txt("neutral", "v=spf1 ?all"),
            txt("a", "v=spf1 a:host.auth.test/24 -all"),
            a("host", "192.0.2.77"),
            txt("mx", "v=spf1 mx -all"),
            mx(10, "mail.mx.auth.test.", owner="mx"),
            a("mail.mx", CLIENT),
            aaaa("mail.mx", CLIENT6),
            txt("v6", "v=spf1 ip6:2001:db8::/64 -all"),
            txt("inc", "v=spf1 include:inc2.auth.test -all"),
            txt("inc2", "v=spf1 include:ip4.auth.test ?all"),
            txt("incnone", "v=spf1 include:norecord.auth.test -all"),
            txt("redir", "v=spf1 redirect=ip4.auth.test"),
            txt("redirnone", "v=spf1 redirect=norecord.auth.test"),
            a("norecord", CLIENT),
            txt("ten", f"v=spf1 {TEN_A} -all"),
            txt("eleven", f"v=spf1 {ELEVEN_A} -all"),
            a("h1", OTHER_CLIENT),
            txt("twovoid", "v=spf1 a:nx1.auth.test a:nx2.auth.test -all"),
            txt("threevoid", "v=spf1 a:nx1.auth.test a:nx2.auth.test a:nx3.auth.test -all"),
            txt("exists", "v=spf1 exists:%{ir}.%{v}._spf.auth.test -all"),
            a("10.2.0.192.in-addr._spf", "127.0.0.2"),
            txt("two", "v=spf1 -all"),
            txt("two", "v=spf1 +all"),
            txt("bad", "v=spf1 ip4:300.1.1.1 -all"),
            txt("temp", "v=spf1 include:broken.test -all"),
            txt("@", "v=spf1 -all"),
            # DKIM keys and DMARC policies
            _split_txt("rsa._domainkey", _rsa_record()),
            txt("ed._domainkey", _ed_record()),
            txt("revoked._domainkey", "v=DKIM1; k=rsa; p="),
            txt("_dmarc", "v=DMARC1; p=reject; sp=quarantine"),
            txt("_dmarc.strict", "v=DMARC1; p=reject; adkim=s; aspf=s"),
            txt("_dmarc.relaxed", "v=DMARC1; p=none"),
        ],
    ),
    Zone("other.test", [txt("@", "v=spf1 ip4:198.51.100.0/24 -all")], Security.INSECURE),
    Zone("broken.test", [txt("@", "v=spf1 +all"), a("x")], Security.WRONG_ANCHOR),
]


@pytest.fixture(scope="module")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
    with running_dns(ZONES, tmp_path_factory.mktemp("dns")) as world:
        yield world


@pytest.fixture
def resolver(dns_world: DnsWorld) -> GatewayResolver:
    return GatewayResolver(ResolverConfig(dns_world.resolver_host, dns_world.resolver_port, 3.0))


async def spf(resolver: GatewayResolver, domain: str, ip: str = CLIENT) -> SpfVerdict:
    result = await check_spf(
        client_ip=ip, helo="client.example", mail_from=f"u@{domain}", resolver=resolver
    )
    return result.verdict


# --- SPF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "ip", "expected"),
    [
        ("ip4.auth.test", CLIENT, SpfVerdict.PASS),
        ("ip4.auth.test", OTHER_CLIENT, SpfVerdict.FAIL),
        ("soft.auth.test", CLIENT, SpfVerdict.SOFTFAIL),
        ("neutral.auth.test", CLIENT, SpfVerdict.NEUTRAL),
        ("norecord.auth.test", CLIENT, SpfVerdict.NONE),
        ("nx.auth.test", CLIENT, SpfVerdict.NONE),
        ("a.auth.test", CLIENT, SpfVerdict.PASS),  # a:host/24 covers the client
        ("a.auth.test", OTHER_CLIENT, SpfVerdict.FAIL),
        ("mx.auth.test", CLIENT, SpfVerdict.PASS),
        ("mx.auth.test", CLIENT6, SpfVerdict.PASS),
        ("mx.auth.test", OTHER_CLIENT, SpfVerdict.FAIL),
        ("v6.auth.test", CLIENT6, SpfVerdict.PASS),
        ("v6.auth.test", CLIENT, SpfVerdict.FAIL),
        ("exists.auth.test", CLIENT, SpfVerdict.PASS),  # %{ir}.%{v} macro expansion
        ("exists.auth.test", OTHER_CLIENT, SpfVerdict.FAIL),
        ("ip4.auth.test", "::ffff:192.0.2.10", SpfVerdict.PASS),  # IPv4-mapped is IPv4
    ],
)
async def test_spf_mechanisms(
    resolver: GatewayResolver, domain: str, ip: str, expected: SpfVerdict
) -> None:
    assert await spf(resolver, domain, ip) is expected


async def test_spf_include_chain_and_redirect(resolver: GatewayResolver) -> None:
    assert await spf(resolver, "inc.auth.test") is SpfVerdict.PASS  # two includes deep
    # the inner record says ?all for a stranger: that is "no match", so the outer -all decides
    assert await spf(resolver, "inc.auth.test", OTHER_CLIENT) is SpfVerdict.FAIL
    assert await spf(resolver, "redir.auth.test") is SpfVerdict.PASS
    assert await spf(resolver, "redir.auth.test", OTHER_CLIENT) is SpfVerdict.FAIL


async def test_spf_include_or_redirect_without_record_is_permerror(
    resolver: GatewayResolver,
) -> None:
    assert await spf(resolver, "incnone.auth.test") is SpfVerdict.PERMERROR
    assert await spf(resolver, "redirnone.auth.test") is SpfVerdict.PERMERROR


async def test_spf_lookup_limit(resolver: GatewayResolver) -> None:
    assert await spf(resolver, "ten.auth.test") is SpfVerdict.FAIL  # 10 lookups are allowed
    result = await check_spf(
        client_ip=CLIENT, helo="c.example", mail_from="u@eleven.auth.test", resolver=resolver
    )
    assert result.verdict is SpfVerdict.PERMERROR
    assert result.reason == "more than 10 DNS lookups"
    assert result.dns_terms == 11


async def test_spf_void_lookup_limit(resolver: GatewayResolver) -> None:
    assert await spf(resolver, "twovoid.auth.test") is SpfVerdict.FAIL
    result = await check_spf(
        client_ip=CLIENT, helo="c.example", mail_from="u@threevoid.auth.test", resolver=resolver
    )
    assert result.verdict is SpfVerdict.PERMERROR
    assert "void" in result.reason


async def test_spf_broken_records_are_permerror(resolver: GatewayResolver) -> None:
    assert await spf(resolver, "two.auth.test") is SpfVerdict.PERMERROR  # two v=spf1 records
    assert await spf(resolver, "bad.auth.test") is SpfVerdict.PERMERROR


async def test_spf_servfail_is_temperror(resolver: GatewayResolver) -> None:
    assert await spf(resolver, "broken.test") is SpfVerdict.TEMPERROR
    assert await spf(resolver, "temp.auth.test") is SpfVerdict.TEMPERROR  # via include


async def test_spf_silent_resolver_is_temperror_within_its_time_limit() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))  # bound, never read: queries vanish
        silent = GatewayResolver(ResolverConfig("127.0.0.1", black_hole.getsockname()[1], 0.3))
        started = time.monotonic()
        result = await check_spf(
            client_ip=CLIENT, helo="c.example", mail_from="u@ip4.auth.test", resolver=silent
        )
        assert time.monotonic() - started < 2.0
    assert result.verdict is SpfVerdict.TEMPERROR


async def test_spf_null_sender_checks_helo(resolver: GatewayResolver) -> None:
    result = await check_spf(
        client_ip=CLIENT, helo="ip4.auth.test", mail_from="", resolver=resolver
    )
    assert (result.verdict, result.identity, result.domain) == (
        SpfVerdict.PASS,
        "helo",
        "ip4.auth.test",
    )


async def test_spf_unusable_domain_is_none(resolver: GatewayResolver) -> None:
    for sender in ["u@localhost", "u@bad..name", "u@" + "x" * 64 + ".test", "u@a b.test"]:
        result = await check_spf(client_ip=CLIENT, helo="h", mail_from=sender, resolver=resolver)
        assert result.verdict is SpfVerdict.NONE


def test_spf_syntax() -> None:
    record = parse_spf_record("v=spf1 a:%{d}/24//64 mx/28 ip6:2001:db8::/32 exp=x.%{d} -all")
    assert [d.mechanism for d in record.directives] == ["a", "mx", "ip6", "all"]
    assert (record.directives[0].cidr4, record.directives[0].cidr6) == (24, 64)
    for bad in [
        "v=spf1 foo:bar",
        "v=spf1 a:localhost",
        "v=spf1 ip4:01.2.3.4",
        "v=spf1 ip4:1.2.3.4/33",
        "v=spf1 exists:%{c}.example.com",
        "v=spf1 exists:%{d0}.example.com",
        "v=spf1 redirect=a.test redirect=b.test",
        "v=spf1 all:x",
        "v=spf1 a:%x.example.com",
        "v=spf1 -all\t",
    ]:
        with pytest.raises(SpfRecordError):
            parse_spf_record(bad)


# --- DKIM -----------------------------------------------------------------------------------

BODY = b"Hello from the clearnet.\r\n"


def message(from_domain: str = "auth.test", body: bytes = BODY) -> bytes:
    return (
        f"From: Sender <someone@{from_domain}>\r\n"
        "To: alias@gw.test\r\n"
        "Subject: test\r\n"
        "Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
        "Message-ID: <1@auth.test>\r\n"
        "\r\n"
    ).encode() + body


def rsa_pem() -> bytes:
    return RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def signed(msg: bytes, *, domain: str = "auth.test", selector: str = "rsa") -> bytes:
    if selector == "ed":
        seed = ED_KEY.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        header = dkim.sign(
            msg,
            b"ed",
            domain.encode(),
            base64.b64encode(seed),
            signature_algorithm=b"ed25519-sha256",
        )
    else:
        header = dkim.sign(msg, selector.encode(), domain.encode(), rsa_pem())
    assert isinstance(header, bytes)
    return header + msg


async def results_for(
    resolver: GatewayResolver,
    msg: bytes,
    *,
    mail_from: str = "u@other.test",
    ip: str = CLIENT,
) -> str:
    return await authentication_results(
        authserv_id="gw.test",
        client_ip=ip,
        helo="client.example",
        mail_from=mail_from,
        message=msg,
        resolver=resolver,
    )


async def test_dkim_pass_rsa_and_ed25519(resolver: GatewayResolver) -> None:
    msg = signed(signed(message()), selector="ed")
    results = await check_message(
        authserv_id="gw.test",
        client_ip=CLIENT,
        helo="c.example",
        mail_from="",
        message=msg,
        resolver=resolver,
    )
    assert [(r.verdict, r.selector) for r in results.dkim] == [
        (DkimVerdict.PASS, "ed"),
        (DkimVerdict.PASS, "rsa"),
    ]
    value = results.header_value()
    assert "dkim=pass header.d=auth.test header.s=ed header.a=ed25519-sha256" in value
    assert "dkim=pass header.d=auth.test header.s=rsa header.a=rsa-sha256" in value


async def test_dkim_tampered_body_fails(resolver: GatewayResolver) -> None:
    msg = signed(message()).replace(b"clearnet", b"clear-net")
    value = await results_for(resolver, msg)
    assert 'dkim=fail reason="body hash mismatch" header.d=auth.test header.s=rsa' in value


async def test_dkim_none_and_key_problems(resolver: GatewayResolver) -> None:
    assert "; dkim=none; " in await results_for(resolver, message())
    no_key = await results_for(resolver, signed(message(), selector="absent"))
    assert 'dkim=permerror reason="no key for signature"' in no_key
    revoked = await results_for(resolver, signed(message(), selector="revoked"))
    assert 'dkim=permerror reason="unusable key record"' in revoked
    broken = await results_for(resolver, signed(message(), domain="broken.test"))
    assert 'dkim=temperror reason="key lookup failed" header.d=broken.test' in broken


async def test_dkim_malformed_signature_is_permerror(resolver: GatewayResolver) -> None:
    for header in [b"DKIM-Signature: garbage\r\n", b"DKIM-Signature: v=1; a=rsa-sha256; d=x\r\n"]:
        value = await results_for(resolver, header + message())
        assert "dkim=permerror" in value


# --- DMARC ----------------------------------------------------------------------------------


async def test_dmarc_pass_via_spf_alignment(resolver: GatewayResolver) -> None:
    value = await results_for(resolver, message(), mail_from="bounce@ip4.auth.test")
    assert value == (
        "gw.test; spf=pass smtp.mailfrom=ip4.auth.test; dkim=none; "
        "dmarc=pass (p=reject sp=quarantine) header.from=auth.test"
    )


async def test_dmarc_pass_via_dkim_alignment(resolver: GatewayResolver) -> None:
    results = await check_message(
        authserv_id="gw.test",
        client_ip=CLIENT,
        helo="c.example",
        mail_from="u@other.test",
        message=signed(message()),
        resolver=resolver,
    )
    assert results.spf.verdict is SpfVerdict.FAIL  # the envelope is someone else's
    assert results.dmarc.verdict is DmarcVerdict.PASS
    assert (results.dmarc.dkim_aligned, results.dmarc.spf_aligned) == (True, False)


async def test_dmarc_fail_reports_reject(resolver: GatewayResolver) -> None:
    tampered = signed(message()).replace(b"clearnet", b"clear-net")
    results = await check_message(
        authserv_id="gw.test",
        client_ip=CLIENT,
        helo="c.example",
        mail_from="u@other.test",
        message=tampered,
        resolver=resolver,
    )
    assert results.dmarc.verdict is DmarcVerdict.FAIL
    assert results.dmarc.applied_policy == "reject"
    assert results.header_value().endswith(
        'dmarc=fail reason="no aligned SPF or DKIM pass" (p=reject sp=quarantine) '
        "header.from=auth.test"
    )


async def test_dmarc_subdomain_uses_the_organizational_record(resolver: GatewayResolver) -> None:
    results = await check_message(
        authserv_id="gw.test",
        client_ip=OTHER_CLIENT,
        helo="c.example",
        mail_from="u@other.test",
        message=message("news.auth.test"),
        resolver=resolver,
    )
    assert results.dmarc.verdict is DmarcVerdict.FAIL
    assert (results.dmarc.policy, results.dmarc.applied_policy) == ("reject", "quarantine")


async def test_dmarc_relaxed_versus_strict_alignment(resolver: GatewayResolver) -> None:
    # DKIM d=auth.test and SPF for ip4.auth.test both pass; the From domains are subdomains.
    for from_domain, expected in [
        ("relaxed.auth.test", DmarcVerdict.PASS),
        ("strict.auth.test", DmarcVerdict.FAIL),
    ]:
        results = await check_message(
            authserv_id="gw.test",
            client_ip=CLIENT,
            helo="c.example",
            mail_from="u@ip4.auth.test",
            message=signed(message(from_domain)),
            resolver=resolver,
        )
        assert results.spf.verdict is SpfVerdict.PASS
        assert results.dkim[0].verdict is DkimVerdict.PASS
        assert results.dmarc.verdict is expected, from_domain


async def test_dmarc_none_without_record_and_temperror_on_servfail(
    resolver: GatewayResolver,
) -> None:
    value = await results_for(resolver, message("other.test"), ip=OTHER_CLIENT)
    assert value.endswith('dmarc=none reason="no policy published" header.from=other.test')
    assert "spf=pass smtp.mailfrom=other.test" in value
    value = await results_for(resolver, message("broken.test"))
    assert 'dmarc=temperror reason="policy lookup failed" header.from=broken.test' in value


async def test_dmarc_needs_exactly_one_from_address(resolver: GatewayResolver) -> None:
    two = b"From: a@auth.test\r\n" + message()
    assert 'dmarc=permerror reason="2 From headers"' in await results_for(resolver, two)
    many = message().replace(b"<someone@auth.test>", b"a@auth.test, b@other.test")
    assert "dmarc=permerror" in await results_for(resolver, many)


def test_dmarc_record_syntax() -> None:
    record = parse_dmarc_record("v=DMARC1 ; p=Reject; sp=bogus; adkim=s; aspf=x")
    assert (record.policy, record.subdomain_policy, record.adkim, record.aspf) == (
        "reject",
        None,
        "s",
        "r",
    )
    assert parse_dmarc_record("v=DMARC1; p=bogus; rua=mailto:r@x.test").policy == "none"
    for bad in ["p=reject; v=DMARC1", "v=DMARC1; p=bogus", "v=dmarc1; p=none"]:
        with pytest.raises(GatewayError):
            parse_dmarc_record(bad)


# --- hostile input: nothing raises ------------------------------------------------------------


class AnswersEverything:
    """A resolver in memory: every TXT query gets ``record``, every name has an address and an
    MX, so includes and redirects in the generated text recurse until the limits stop them."""

    def __init__(self, record: bytes) -> None:
        self.record = record

    async def txt(self, name: str) -> tuple[bytes, ...]:
        return (self.record,)

    async def records(self, name: str, rdtype: str) -> tuple[dns.rdata.Rdata, ...]:
        rdata = {"A": "192.0.2.1", "AAAA": "2001:db8::1", "MX": "10 mx.h.test."}.get(rdtype)
        return () if rdata is None else (dns.rdata.from_text("IN", rdtype, rdata),)


SPF_TOKENS = st.sampled_from(
    [
        "v=spf1",
        "all",
        "-all",
        "~all",
        "?",
        "+",
        "include:",
        "a",
        "mx",
        "ptr",
        "ip4:",
        "ip6:",
        "exists:",
        "redirect=",
        "exp=",
        "%{i}",
        "%{ir}",
        "%{d2}",
        "%{l1r-}",
        "%%",
        "%_",
        "%{c}",
        "%",
        ":",
        "/",
        "//",
        "24",
        "64",
        "0",
        "h.test",
        ".",
        "192.0.2.1",
        "::1",
        " ",
        "=",
        "x",
    ]
)
SPF_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(SPF_TOKENS, max_size=20).map(lambda parts: "v=spf1 " + "".join(parts)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=SPF_TEXT, ip=st.sampled_from([CLIENT, CLIENT6, "not an ip"]))
def test_arbitrary_spf_record_text_never_raises(text: str, ip: str) -> None:
    try:
        parse_spf_record(text)
    except SpfRecordError:
        pass
    resolver = AnswersEverything(text.encode("utf-8", "surrogateescape"))
    result = asyncio.run(
        check_spf(client_ip=ip, helo="h.test", mail_from="u%x@h.test", resolver=resolver)
    )
    assert result.verdict in set(SpfVerdict)
    assert result.dns_terms <= 11


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"From", b"DKIM-Signature", b"Subject", b"from", b" x"]),
            st.binary(max_size=60),
        ),
        max_size=6,
    ),
    body=st.binary(max_size=60),
)
def test_arbitrary_messages_never_raise(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    msg = b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n" + body
    resolver = AnswersEverything(b"v=DMARC1; p=reject")
    value = asyncio.run(
        authentication_results(
            authserv_id="gw.test",
            client_ip=CLIENT,
            helo="h.test",
            mail_from="u@h.test",
            message=msg,
            resolver=resolver,
        )
    )
    assert value.startswith("gw.test; spf=") and "\r" not in value and "\n" not in value


async def test_no_domain_reaches_the_log_at_info_or_above(
    resolver: GatewayResolver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tampered = signed(message()).replace(b"clearnet", b"clear-net")
    await results_for(resolver, tampered, mail_from="u@broken.test")
    await results_for(resolver, signed(message(), selector="revoked"))
    assert any("auth.test" in r.getMessage() for r in caplog.records)  # dkimpy, at DEBUG
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in loud if ".test" in r.getMessage()]


@pytest.mark.parametrize(
    ("domain", "organizational"),
    [
        ("example.com", "example.com"),
        ("a.b.example.com.", "example.com"),
        ("mail.bank.co.uk", "bank.co.uk"),
        ("evil.co.uk", "evil.co.uk"),
        ("user.github.io", "user.github.io"),  # a private suffix of the list
        ("co.uk", "co.uk"),  # a public suffix stays as it is
    ],
)
def test_organizational_domains_come_from_the_public_suffix_list(
    domain: str, organizational: str
) -> None:
    assert registered_domain(domain) == organizational


def test_relaxed_alignment_does_not_cross_a_multi_label_suffix() -> None:
    # With "the last two labels", evil.co.uk aligned with bank.co.uk (both "co.uk").
    assert not aligned("evil.co.uk", "bank.co.uk", "r", registered_domain)
    assert not aligned("alice.github.io", "mallory.github.io", "r", registered_domain)
    assert aligned("mail.bank.co.uk", "bank.co.uk", "r", registered_domain)
