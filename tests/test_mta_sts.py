"""MTA-STS (RFC 8461): parsing, MX patterns, and discovery + HTTPS fetch + cache for real.

The ``_mta-sts`` TXT records come from a real Knot behind a real Unbound;
the policies from a real HTTPS server on 127.0.0.1 with a trustme
certificate, reached through the fetcher's host → address override while
the certificate is still checked against ``mta-sts.<domain>``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.dns import GatewayResolver, ResolverConfig
from gateway.errors import DnsDeferError, MtaStsFetchError, MtaStsPolicyError
from gateway.outbound.mta_sts import (
    FetchConfig,
    MtaSts,
    StsMode,
    StsPolicy,
    fetch_policy,
    mx_matches,
    parse_policy,
    requirement_for,
)
from tests.dns_server import DnsWorld, Record, Security, Zone, running_dns, txt
from tests.mta_sts_server import PolicyResponse, PolicyServer, policy_text, running_policy_server

DOMAINS = [
    "enforce",
    "testing",
    "none",
    "rotating",
    "sticky",
    "vanish",
    "aging",
    "badcert",
    "notfound",
    "redirect",
    "html",
    "huge",
    "invalid",
]


def _sts_txt(name: str, policy_id: str) -> Record:
    record = txt(f"_mta-sts.{name}", f"v=STSv1; id={policy_id}")
    return Record(record.owner, record.rtype, record.rdata, ttl=0)  # TTL 0: tests change them


ZONES = [
    Zone("sts.test", [_sts_txt(name, f"{name}1") for name in DOMAINS], Security.INSECURE),
    Zone("gone.test", [txt("_mta-sts", "v=STSv1; id=g1")], Security.STRIPPED),
]


def _host(name: str) -> str:
    return f"mta-sts.{name}.sts.test"


def _responses() -> dict[str, PolicyResponse]:
    responses = {
        _host(name): PolicyResponse(policy_text("enforce", f"mx1.{name}.sts.test"))
        for name in DOMAINS
    }
    responses[_host("enforce")] = PolicyResponse(
        policy_text("enforce", "mx1.enforce.sts.test", "*.backup.sts.test", max_age=604800)
    )
    responses[_host("testing")] = PolicyResponse(policy_text("testing", "mx1.testing.sts.test"))
    responses[_host("none")] = PolicyResponse(policy_text("none"))
    responses[_host("aging")] = PolicyResponse(
        policy_text("enforce", "mx1.aging.sts.test", max_age=100)
    )
    responses[_host("notfound")] = PolicyResponse(b"gone", status=404)
    responses[_host("redirect")] = PolicyResponse(
        b"",
        status=301,
        headers={"Location": "https://mta-sts.enforce.sts.test/.well-known/mta-sts.txt"},
    )
    responses[_host("html")] = PolicyResponse(
        policy_text("enforce", "mx1.html.sts.test"), content_type="text/html"
    )
    responses[_host("huge")] = PolicyResponse(
        policy_text("enforce", "mx1.huge.sts.test") + b"x-pad: " + b"a" * 70_000 + b"\r\n"
    )
    responses[_host("invalid")] = PolicyResponse(
        b"version: STSv1\r\nmode: enforce\r\nmax_age: 60\r\n"
    )
    return responses


@pytest.fixture(scope="module")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
    with running_dns(ZONES, tmp_path_factory.mktemp("dns")) as world:
        yield world


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyServer]:
    responses = _responses()
    names = [host for host in responses if host != _host("badcert")]
    with running_policy_server(
        trustme.CA(), tmp_path_factory.mktemp("https"), responses, certificate_names=names
    ) as server:
        yield server


@pytest.fixture
def mta_sts(dns_world: DnsWorld, policy_server: PolicyServer) -> MtaSts:
    resolver = GatewayResolver(
        ResolverConfig(dns_world.resolver_host, dns_world.resolver_port, 3.0)
    )
    return MtaSts(resolver, policy_server.fetch_config())


# --- parsing and matching (pure) -----------------------------------------------------------


def test_policy_parses_with_crlf_lf_and_unknown_keys() -> None:
    text = (
        "version: STSv1\nmode: enforce\r\nmx: MX1.Example.COM.\n"
        "mx: *.example.net\nx-new: 1\nmax_age:86400\n"
    )
    policy = parse_policy(text)
    assert policy == StsPolicy(StsMode.ENFORCE, ("mx1.example.com", "*.example.net"), 86400)


@pytest.mark.parametrize(
    "text",
    [
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        "mode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -5\n",
        "version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
        "version STSv1\n",
    ],
)
def test_invalid_policies_are_rejected(text: str) -> None:
    with pytest.raises(MtaStsPolicyError):
        parse_policy(text)


def test_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 60\n").mode is StsMode.NONE


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.example.com.", True),
        ("mail.example.com", "mail2.example.com", False),
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "mx1.example.com.evil.net", False),
        ("*.example.com", "mx1.notexample.com", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


def test_requirement_per_mode() -> None:
    enforce = StsPolicy(StsMode.ENFORCE, ("mx.example",), 60)
    assert requirement_for(enforce, "mx.example").require_valid_tls is True
    assert requirement_for(enforce, "mx.example").mx_permitted is True
    refused = requirement_for(enforce, "evil.example")
    assert refused.mx_permitted is False
    testing = requirement_for(StsPolicy(StsMode.TESTING, ("mx.example",), 60), "evil.example")
    assert (testing.mx_permitted, testing.require_valid_tls) == (True, False)
    assert requirement_for(None, "mx.example").require_valid_tls is False
    assert requirement_for(StsPolicy(StsMode.NONE, (), 60), "x").mx_permitted is True


# --- discovery + fetch, for real -------------------------------------------------------------


async def test_enforce_policy_is_fetched_and_refuses_unlisted_mx(
    mta_sts: MtaSts, policy_server: PolicyServer
) -> None:
    policy = await mta_sts.policy_for("enforce.sts.test")
    assert policy is not None
    assert policy.mode is StsMode.ENFORCE
    assert policy.policy_id == "enforce1"
    assert policy.max_age == 604800
    assert policy_server.requests[-1] == "mta-sts.enforce.sts.test"
    listed = await mta_sts.requirement("enforce.sts.test", "mx1.enforce.sts.test")
    assert (listed.mx_permitted, listed.require_valid_tls) == (True, True)
    wildcard = await mta_sts.requirement("enforce.sts.test", "b1.backup.sts.test")
    assert wildcard.mx_permitted is True
    attacker = await mta_sts.requirement("enforce.sts.test", "mx.attacker.test")
    assert attacker.mx_permitted is False
    assert "not listed" in attacker.reason


async def test_testing_and_none_policies_require_nothing(mta_sts: MtaSts) -> None:
    testing = await mta_sts.requirement("testing.sts.test", "mx.elsewhere.test")
    assert (testing.mx_permitted, testing.require_valid_tls) == (True, False)
    policy = await mta_sts.policy_for("none.sts.test")
    assert policy is not None and policy.mode is StsMode.NONE
    assert (await mta_sts.requirement("none.sts.test", "any.test")).require_valid_tls is False


async def test_no_txt_record_means_no_policy_and_no_fetch(
    mta_sts: MtaSts, policy_server: PolicyServer
) -> None:
    before = len(policy_server.requests)
    assert await mta_sts.policy_for("absent.sts.test") is None
    assert mta_sts.fetches == 0
    assert len(policy_server.requests) == before


async def test_same_id_is_served_from_the_cache(
    mta_sts: MtaSts, policy_server: PolicyServer
) -> None:
    first = await mta_sts.policy_for("enforce.sts.test")
    saved = policy_server.responses[_host("enforce")]
    policy_server.responses[_host("enforce")] = PolicyResponse(policy_text("none"))
    try:
        second = await mta_sts.policy_for("enforce.sts.test")
    finally:
        policy_server.responses[_host("enforce")] = saved
    assert second == first
    assert mta_sts.fetches == 1


async def test_a_new_id_triggers_a_fetch(
    mta_sts: MtaSts, dns_world: DnsWorld, policy_server: PolicyServer
) -> None:
    first = await mta_sts.policy_for("rotating.sts.test")
    assert first is not None and first.mx_patterns == ("mx1.rotating.sts.test",)
    policy_server.responses[_host("rotating")] = PolicyResponse(
        policy_text("enforce", "mx2.rotating.sts.test")
    )
    dns_world.set_records("sts.test", "_mta-sts.rotating", "TXT", ['"v=STSv1; id=rotating2"'])
    second = await mta_sts.policy_for("rotating.sts.test")
    assert second is not None
    assert second.policy_id == "rotating2"
    assert second.mx_patterns == ("mx2.rotating.sts.test",)
    assert mta_sts.fetches == 2


async def test_cached_policy_survives_a_failed_fetch_and_a_vanished_txt(
    mta_sts: MtaSts, dns_world: DnsWorld, policy_server: PolicyServer
) -> None:
    sticky = await mta_sts.policy_for("sticky.sts.test")
    policy_server.responses[_host("sticky")] = PolicyResponse(b"", status=500)
    dns_world.set_records("sts.test", "_mta-sts.sticky", "TXT", ['"v=STSv1; id=sticky2"'])
    assert await mta_sts.policy_for("sticky.sts.test") == sticky  # fetch failed: keep it
    assert mta_sts.fetches == 2

    vanish = await mta_sts.policy_for("vanish.sts.test")
    assert vanish is not None
    dns_world.set_records("sts.test", "_mta-sts.vanish", "TXT", [])  # an attacker drops it
    assert await mta_sts.policy_for("vanish.sts.test") == vanish


async def test_expired_policy_is_fetched_again(
    dns_world: DnsWorld, policy_server: PolicyServer
) -> None:
    now = [1000.0]
    resolver = GatewayResolver(ResolverConfig(dns_world.resolver_host, dns_world.resolver_port))
    mta_sts = MtaSts(resolver, policy_server.fetch_config(), clock=lambda: now[0])
    assert await mta_sts.policy_for("aging.sts.test") is not None
    now[0] += 99
    await mta_sts.policy_for("aging.sts.test")
    assert mta_sts.fetches == 1
    now[0] += 2  # past max_age 100
    assert mta_sts.cached("aging.sts.test") is None
    await mta_sts.policy_for("aging.sts.test")
    assert mta_sts.fetches == 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("badcert", "certificate did not verify"),
        ("notfound", "HTTP 404"),
        ("redirect", "HTTP 301"),
        ("html", "text/plain"),
        ("huge", "larger than"),
    ],
)
async def test_fetch_rules_of_rfc_8461(
    policy_server: PolicyServer, mta_sts: MtaSts, name: str, message: str
) -> None:
    with pytest.raises(MtaStsFetchError, match=message) as error:
        await fetch_policy(f"{name}.sts.test", policy_server.fetch_config())
    assert isinstance(error.value, ConnectionError)
    # With nothing cached, a failed fetch means no policy (RFC 8461 §5), not an error.
    assert await mta_sts.policy_for(f"{name}.sts.test") is None


async def test_invalid_policy_text_is_a_policy_error(policy_server: PolicyServer) -> None:
    with pytest.raises(MtaStsPolicyError, match="mx"):
        await fetch_policy("invalid.sts.test", policy_server.fetch_config())


async def test_untrusted_ca_is_refused(policy_server: PolicyServer) -> None:
    config = FetchConfig(connect_to=policy_server.fetch_config().connect_to, timeout=5.0)
    with pytest.raises(MtaStsFetchError, match="certificate did not verify"):
        await fetch_policy("enforce.sts.test", config)  # system store: the test CA is unknown


async def test_fetch_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # connections complete, nobody ever speaks TLS
        config = FetchConfig(
            ca_file=None, timeout=0.4, connect_to={"mta-sts.slow.test": silent.getsockname()}
        )
        started = time.monotonic()
        with pytest.raises(MtaStsFetchError, match="longer than"):
            await fetch_policy("slow.test", config)
        assert time.monotonic() - started < 2.0


async def test_dns_failure_without_cache_defers(mta_sts: MtaSts) -> None:
    with pytest.raises(DnsDeferError):
        await mta_sts.policy_for("gone.test")
