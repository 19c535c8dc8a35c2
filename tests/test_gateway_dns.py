"""The gateway's DNS lookups against a real Knot DNS behind a real validating Unbound.

What these prove: the AD bit the gateway reads comes from real DNSSEC
validation (signed zone → secure, unsigned → insecure, bogus → SERVFAIL →
defer, never a downgrade); MX rules of RFC 5321 (implicit MX) and RFC 7505
(null MX); ``_mta-sts`` TXT discovery; TLSA and onion SRV parsing; and that
the lookup time limit holds against a resolver that never answers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from gateway.dns import GatewayResolver, MxHost, ResolverConfig, parse_sts_txt
from gateway.errors import (
    DnsDeferError,
    DnsPermanentError,
    DnsTimeoutError,
    MtaStsPolicyError,
    NullMxError,
)
from onionmail.core.onion_address import encode_onion_address
from tests.dns_server import DnsWorld, Security, Zone, a, aaaa, mx, running_dns, srv, tlsa, txt

ONION_A = encode_onion_address(bytes(range(32)))
ONION_B = encode_onion_address(bytes(range(1, 33)))
EE_HASH = bytes.fromhex("aa" * 32)

ZONES = [
    Zone(
        "signed.test",
        [
            mx(20, "mx2"),
            mx(10, "mx1"),
            a("mx1"),
            a("mx2"),
            aaaa("mx2"),
            tlsa("_25._tcp.mx1", 3, 1, 1, EE_HASH),
            tlsa("_25._tcp.mx1", 2, 0, 1, bytes(32)),
            txt("_mta-sts", "v=STSv1; id=20240101T000000"),
            txt("@", "v=spf1 -all"),
            txt("_dmarc", "v=DMARC1; p=reject"),
            srv("_onion-mx._tcp", 10, 5, 25, ONION_A + "."),
            srv("_onion-mx._tcp", 5, 0, 2525, ONION_B + "."),
            srv("_onion-mx._tcp", 1, 0, 25, "mx1.signed.test."),
            a("implicit"),
            aaaa("implicit"),
            mx(0, ".", owner="nullmx"),
            txt("nothing", "exists, but no mail host"),
            txt("_mta-sts.twice", "v=STSv1; id=one"),
            txt("_mta-sts.twice", "v=STSv1; id=two"),
            txt("_mta-sts.bad", "v=STSv1; id=not-alnum!"),
            txt("_mta-sts.other", "something else entirely"),
            srv("_onion-mx._tcp.nosrv", 0, 0, 0, "."),
        ],
    ),
    Zone(
        "insecure.test",
        [mx(10, "mx1"), a("mx1"), tlsa("_25._tcp.mx1", 3, 1, 1, EE_HASH)],
        Security.INSECURE,
    ),
    Zone("wrong.test", [mx(10, "mx1"), a("mx1")], Security.WRONG_ANCHOR),
    Zone(
        "stripped.test",
        [mx(10, "mx1"), a("mx1"), tlsa("_25._tcp.mx1", 3, 1, 1, EE_HASH)],
        Security.STRIPPED,
    ),
    Zone(
        "expired.test",
        [mx(10, "mx1"), a("mx1"), tlsa("_25._tcp.mx1", 3, 1, 1, EE_HASH)],
        Security.EXPIRED,
    ),
]


@pytest.fixture(scope="module")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
    with running_dns(ZONES, tmp_path_factory.mktemp("dns")) as world:
        yield world


@pytest.fixture
def resolver(dns_world: DnsWorld) -> GatewayResolver:
    return GatewayResolver(ResolverConfig(dns_world.resolver_host, dns_world.resolver_port, 3.0))


# --- DNSSEC status ----------------------------------------------------------------------


async def test_signed_zone_answers_are_validated(resolver: GatewayResolver) -> None:
    result = await resolver.mx("signed.test")
    assert result.secure is True
    assert result.implicit is False
    assert result.hosts == (MxHost(10, "mx1.signed.test"), MxHost(20, "mx2.signed.test"))


async def test_insecure_zone_answers_lack_ad_and_its_tlsa_is_not_usable(
    resolver: GatewayResolver,
) -> None:
    result = await resolver.mx("insecure.test")
    assert result.secure is False
    assert result.hosts == (MxHost(10, "mx1.insecure.test"),)
    tlsa_result = await resolver.tlsa("mx1.insecure.test")
    assert [r.data for r in tlsa_result.records] == [EE_HASH]  # the records are there...
    assert tlsa_result.secure is False
    assert tlsa_result.usable_for_dane is False  # ...but unvalidated, so DANE ignores them


@pytest.mark.parametrize("zone", ["wrong.test", "stripped.test", "expired.test"])
async def test_bogus_dnssec_defers_every_lookup(
    resolver: GatewayResolver, dns_world: DnsWorld, zone: str
) -> None:
    with pytest.raises(DnsDeferError) as mx_error:
        await resolver.mx(zone)
    assert isinstance(mx_error.value, ConnectionError)
    assert not isinstance(mx_error.value, DnsPermanentError)
    with pytest.raises(DnsDeferError):
        await resolver.tlsa(f"mx1.{zone}")
    with pytest.raises(DnsDeferError):
        await resolver.mta_sts_record(zone)
    # It was the validator that refused (not a lost packet): Unbound logged why.
    log = (dns_world.directory / "unbound.log").read_text()
    assert f"validation failure <{zone}. MX IN>" in log


async def test_expired_signatures_are_what_unbound_rejects(
    resolver: GatewayResolver, dns_world: DnsWorld
) -> None:
    with pytest.raises(DnsDeferError):
        await resolver.mx("expired.test")
    log = (dns_world.directory / "unbound.log").read_text()
    assert "signature expired" in log


async def test_tlsa_of_signed_zone_is_usable(resolver: GatewayResolver) -> None:
    result = await resolver.tlsa("mx1.signed.test")
    assert result.secure is True
    assert result.usable_for_dane is True
    assert sorted((r.usage, r.selector, r.mtype, r.data) for r in result.records) == [
        (2, 0, 1, bytes(32)),
        (3, 1, 1, EE_HASH),
    ]


async def test_no_tlsa_is_a_secure_empty_answer(resolver: GatewayResolver) -> None:
    result = await resolver.tlsa("mx2.signed.test")
    assert result.records == ()
    assert result.secure is True  # authenticated denial: DANE does not apply, provably
    assert result.usable_for_dane is False


# --- MX rules -----------------------------------------------------------------------------


async def test_no_mx_falls_back_to_the_domain_itself(resolver: GatewayResolver) -> None:
    result = await resolver.mx("implicit.signed.test")
    assert result.implicit is True
    assert result.hosts == (MxHost(0, "implicit.signed.test"),)
    assert result.secure is True
    addresses = await resolver.addresses("implicit.signed.test")
    assert set(addresses.addresses) == {"127.0.0.1", "::1"}


async def test_null_mx_is_a_permanent_failure(resolver: GatewayResolver) -> None:
    with pytest.raises(NullMxError) as error:
        await resolver.mx("nullmx.signed.test")
    assert isinstance(error.value, LookupError)
    assert not isinstance(error.value, DnsDeferError)


async def test_no_mx_and_no_address_is_permanent(resolver: GatewayResolver) -> None:
    with pytest.raises(DnsPermanentError) as error:
        await resolver.mx("nothing.signed.test")
    assert not isinstance(error.value, NullMxError)


async def test_nxdomain_is_permanent(resolver: GatewayResolver) -> None:
    with pytest.raises(DnsPermanentError, match="NXDOMAIN"):
        await resolver.mx("no-such-name.signed.test")


async def test_delivery_order_keeps_preference(resolver: GatewayResolver) -> None:
    result = await resolver.mx("signed.test")
    for _ in range(5):
        assert [h.preference for h in result.delivery_order()] == [10, 20]


# --- MTA-STS TXT and onion SRV --------------------------------------------------------------


async def test_mta_sts_txt_is_discovered(resolver: GatewayResolver) -> None:
    record = await resolver.mta_sts_record("signed.test")
    assert record is not None
    assert record.policy_id == "20240101T000000"
    assert record.secure is True


@pytest.mark.parametrize("domain", ["twice.signed.test", "bad.signed.test", "other.signed.test"])
async def test_unusable_mta_sts_txt_means_no_policy(resolver: GatewayResolver, domain: str) -> None:
    assert await resolver.mta_sts_record(domain) is None


async def test_missing_mta_sts_txt_means_no_policy(resolver: GatewayResolver) -> None:
    assert await resolver.mta_sts_record("insecure.test") is None


def test_sts_txt_syntax() -> None:
    assert parse_sts_txt("v=STSv1; id=abc123;") == "abc123"
    assert parse_sts_txt("v=STSv1;id=X ; ext=1") == "X"
    for bad in [
        "id=1; v=STSv1",
        "v=STSv2; id=1",
        "v=STSv1",
        "v=STSv1; id=" + "a" * 33,
        "v=STSv1 id=1",
    ]:
        with pytest.raises(MtaStsPolicyError):
            parse_sts_txt(bad)


async def test_onion_mx_srv_returns_only_onion_targets(resolver: GatewayResolver) -> None:
    result = await resolver.onion_mx("signed.test")
    assert result.secure is True
    assert [(t.priority, t.port, t.host) for t in result.targets] == [
        (5, 2525, ONION_B),
        (10, 25, ONION_A),
    ]  # the clearnet target mx1.signed.test was dropped


async def test_onion_mx_dot_target_and_absence_give_nothing(resolver: GatewayResolver) -> None:
    assert (await resolver.onion_mx("nosrv.signed.test")).targets == ()
    assert (await resolver.onion_mx("insecure.test")).targets == ()


# --- time limit ---------------------------------------------------------------------------


async def test_a_silent_resolver_times_out_as_a_deferral() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))  # bound, never read: queries vanish
        port = black_hole.getsockname()[1]
        silent = GatewayResolver(ResolverConfig("127.0.0.1", port, timeout=0.3))
        started = time.monotonic()
        with pytest.raises(DnsTimeoutError) as error:
            await silent.tlsa("mx1.signed.test")
        assert time.monotonic() - started < 2.0
    assert isinstance(error.value, TimeoutError)
    assert isinstance(error.value, DnsDeferError)


async def test_lookups_run_concurrently(resolver: GatewayResolver) -> None:
    results = await asyncio.gather(*(resolver.mx("signed.test") for _ in range(20)))
    assert all(r.secure for r in results)
