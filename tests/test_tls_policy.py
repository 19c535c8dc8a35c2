"""The TLS decision per MX: DANE over MTA-STS over the default, against real DNS, HTTPS and TLS.

TLSA records live in a DNSSEC-signed zone served by Knot and validated by
Unbound; MTA-STS policies come from an HTTPS server on 127.0.0.1; the
certificates are trustme's, presented by real TLS servers on 127.0.0.1 so
each check runs on what a handshake really delivers (leaf, chain).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.dns import GatewayResolver, ResolverConfig, TlsaRecord
from gateway.errors import CertificateMismatchError, DnsDeferError
from gateway.outbound.mta_sts import MtaSts
from gateway.outbound.smtp import TlsDecision
from gateway.outbound.tls_policy import (
    PolicySource,
    RecipientTlsPreference,
    TlsPolicy,
    TlsPolicyDecision,
    Verification,
    check_dane,
)
from tests.dns_server import DnsWorld, Security, Zone, mx, running_dns, tlsa, txt
from tests.mta_sts_server import PolicyResponse, PolicyServer, policy_text, running_policy_server

# --- certificates ---------------------------------------------------------------------------

ROOT = trustme.CA()
"""The PKIX CA (the bundle the gateway trusts) and the issuer of most leaves."""
INTERMEDIATE = ROOT.create_child_ca()
"""A DANE-TA anchor that servers send in their chain."""
OWN_ROOT = trustme.CA()
"""A private CA published in full in DNS (TLSA 2 0 0), unknown to PKIX."""


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )


LEAVES = {
    "mx-ee": ROOT.issue_cert("mx-ee.dane.test"),
    "mx-ee-cert": ROOT.issue_cert("mx-ee-cert.dane.test"),
    "mx-bad": ROOT.issue_cert("mx-bad.dane.test"),
    "mx-ta": INTERMEDIATE.issue_cert("mx-ta.dane.test"),
    "mx-ta-name": INTERMEDIATE.issue_cert("not-the-mx.dane.test"),
    "mx-ta-full": OWN_ROOT.issue_cert("mx-ta-full.dane.test"),
    "mx1.insecure": ROOT.issue_cert("mx1.insecure.test"),
    "wrong-name": ROOT.issue_cert("somebody-else.test"),
}
LEAF_DER = {name: _der(leaf.cert_chain_pems[0].bytes()) for name, leaf in LEAVES.items()}
INTERMEDIATE_DER = _der(INTERMEDIATE.cert_pem.bytes())
OWN_ROOT_DER = _der(OWN_ROOT.cert_pem.bytes())
OTHER_KEY_DER = _der(ROOT.issue_cert("unrelated.test").cert_chain_pems[0].bytes())

# --- the world ------------------------------------------------------------------------------

ZONES = [
    Zone(
        "dane.test",
        [
            mx(10, "mx-ee"),
            mx(20, "mx-plain"),
            tlsa("_25._tcp.mx-ee", 3, 1, 1, hashlib.sha256(_spki(LEAF_DER["mx-ee"])).digest()),
            tlsa("_25._tcp.mx-ee-cert", 3, 0, 2, hashlib.sha512(LEAF_DER["mx-ee-cert"]).digest()),
            tlsa("_25._tcp.mx-bad", 3, 1, 1, hashlib.sha256(_spki(OTHER_KEY_DER)).digest()),
            tlsa("_25._tcp.mx-ta", 2, 1, 1, hashlib.sha256(_spki(INTERMEDIATE_DER)).digest()),
            tlsa("_25._tcp.mx-ta-name", 2, 1, 1, hashlib.sha256(_spki(INTERMEDIATE_DER)).digest()),
            tlsa("_25._tcp.mx-ta-full", 2, 0, 0, OWN_ROOT_DER),
            tlsa("_25._tcp.mx-unusable", 1, 1, 1, bytes(32)),
            txt("_mta-sts", "v=STSv1; id=d1"),
        ],
    ),
    Zone("plain.test", [mx(10, "mx1")]),
    Zone(
        "sts.test",
        [mx(10, "mx1"), mx(20, "mx.elsewhere.test."), txt("_mta-sts", "v=STSv1; id=s1")],
        Security.INSECURE,
    ),
    Zone(
        "testing.test",
        [mx(10, "mx.elsewhere.test."), txt("_mta-sts", "v=STSv1; id=t1")],
        Security.INSECURE,
    ),
    Zone(
        "insecure.test",
        [mx(10, "mx1"), tlsa("_25._tcp.mx1", 3, 1, 1, bytes(32))],
        Security.INSECURE,
    ),
    Zone("hosted.test", [mx(10, "mx-ee.dane.test.")], Security.INSECURE),
    Zone("elsewhere.test", [], Security.INSECURE),
    Zone(
        "wrong.test",
        [mx(10, "mx1"), tlsa("_25._tcp.mx1", 3, 1, 1, bytes(32))],
        Security.WRONG_ANCHOR,
    ),
    Zone("stripped.test", [mx(10, "mx1")], Security.STRIPPED),
]


@dataclass(frozen=True)
class World:
    dns: DnsWorld
    https: PolicyServer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    responses = {
        # dane.test's policy lists none of its MX: DANE must still win.
        "mta-sts.dane.test": PolicyResponse(policy_text("enforce", "nothing.dane.test")),
        "mta-sts.sts.test": PolicyResponse(policy_text("enforce", "*.sts.test")),
        "mta-sts.testing.test": PolicyResponse(policy_text("testing", "mx1.testing.test")),
    }
    with (
        running_dns(ZONES, tmp_path_factory.mktemp("dns")) as dns_world,
        running_policy_server(ROOT, tmp_path_factory.mktemp("https"), responses) as https,
    ):
        yield World(dns_world, https)


@pytest.fixture
def policy(world: World) -> TlsPolicy:
    resolver = GatewayResolver(
        ResolverConfig(world.dns.resolver_host, world.dns.resolver_port, 3.0)
    )
    return TlsPolicy(
        resolver, MtaSts(resolver, world.https.fetch_config()), ca_file=str(world.https.ca_file)
    )


# --- a real TLS server per certificate --------------------------------------------------------


@asynccontextmanager
async def tls_server(leaf: trustme.LeafCert) -> AsyncIterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def dane_check_over_tls(decision: TlsPolicyDecision, leaf: trustme.LeafCert) -> str:
    async with tls_server(leaf) as port:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=decision.ssl_context(), server_hostname=decision.server_hostname
        )
        try:
            tls = writer.get_extra_info("ssl_object")
            assert isinstance(tls, ssl.SSLObject)
            leaf_der = tls.getpeercert(binary_form=True)
            assert leaf_der is not None
            result = decision.check_peer(tls)
            check = decision.certificate_check
            assert check is not None
            if result == "dane-ee":
                check(leaf_der)  # the outbound client's leaf-only check agrees
            return result
        finally:
            writer.close()
            await writer.wait_closed()


async def pkix_handshake(decision: TlsPolicyDecision, leaf: trustme.LeafCert) -> None:
    async with tls_server(leaf) as port:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=decision.ssl_context(), server_hostname=decision.server_hostname
        )
        writer.close()
        await writer.wait_closed()


# --- DANE -----------------------------------------------------------------------------------


async def test_dane_ee_spki_match_over_a_real_handshake(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-ee.dane.test", mx_secure=True)
    assert (decision.source, decision.verification) == (PolicySource.DANE, Verification.DANE)
    assert decision.require_tls and decision.permitted
    assert decision.ssl_context().verify_mode == ssl.CERT_NONE  # checked after the handshake
    assert await dane_check_over_tls(decision, LEAVES["mx-ee"]) == "dane-ee"


async def test_dane_ee_full_certificate_sha512(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-ee-cert.dane.test", mx_secure=True)
    assert await dane_check_over_tls(decision, LEAVES["mx-ee-cert"]) == "dane-ee"


async def test_dane_ee_mismatch_is_refused(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-bad.dane.test", mx_secure=True)
    assert decision.verification is Verification.DANE
    with pytest.raises(CertificateMismatchError) as error:
        await dane_check_over_tls(decision, LEAVES["mx-bad"])
    assert isinstance(error.value, ValueError)  # what the outbound client's check expects
    # A certificate that is PKIX-valid for the name does not help: DANE decides.
    check = decision.certificate_check
    assert check is not None
    with pytest.raises(CertificateMismatchError):
        check(LEAF_DER["mx-bad"])


async def test_dane_ta_anchor_in_the_chain(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-ta.dane.test", mx_secure=True)
    if sys.version_info >= (3, 13):
        assert await dane_check_over_tls(decision, LEAVES["mx-ta"]) == "dane-ta"
    else:  # Python shows the chain from 3.13 on; before, the leaf cannot prove the anchor
        with pytest.raises(CertificateMismatchError, match="Python shows from 3.13 on"):
            await dane_check_over_tls(decision, LEAVES["mx-ta"])
    # The leaf alone cannot prove a hashed anchor: the leaf-only check refuses.
    check = decision.certificate_check
    assert check is not None
    with pytest.raises(CertificateMismatchError):
        check(LEAF_DER["mx-ta"])


async def test_dane_ta_requires_the_mx_name(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-ta-name.dane.test", mx_secure=True)
    with pytest.raises(CertificateMismatchError):
        await dane_check_over_tls(decision, LEAVES["mx-ta-name"])


async def test_dane_ta_full_anchor_in_dns_checks_the_leaf(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-ta-full.dane.test", mx_secure=True)
    check = decision.certificate_check
    assert check is not None
    check(LEAF_DER["mx-ta-full"])  # issued by the anchor the record holds in full
    with pytest.raises(CertificateMismatchError):
        check(LEAF_DER["mx-ee"])  # PKIX-valid elsewhere, not under this anchor
    assert await dane_check_over_tls(decision, LEAVES["mx-ta-full"]) == "dane-ta"


def test_dane_ta_checks_dates_but_dane_ee_does_not() -> None:
    anchor = (TlsaRecord(2, 0, 0, OWN_ROOT_DER),)
    chain = (LEAF_DER["mx-ta-full"],)
    assert check_dane(chain, anchor, ["mx-ta-full.dane.test"]) == "dane-ta"
    leaf = x509.load_der_x509_certificate(LEAF_DER["mx-ta-full"])
    later = leaf.not_valid_after_utc + datetime.timedelta(days=1)
    with pytest.raises(CertificateMismatchError):
        check_dane(chain, anchor, ["mx-ta-full.dane.test"], now=later)
    end_entity = (TlsaRecord(3, 0, 0, LEAF_DER["mx-ta-full"]),)
    assert check_dane(chain, end_entity, [], now=later) == "dane-ee"  # RFC 7672 §3.1.1


async def test_unusable_tlsa_keeps_tls_required_with_pkix(policy: TlsPolicy) -> None:
    decision = await policy.decide("dane.test", "mx-unusable.dane.test", mx_secure=True)
    assert decision.source is PolicySource.DANE
    assert decision.verification is Verification.PKIX
    assert decision.require_tls is True


async def test_dane_overrides_an_mta_sts_policy_that_omits_the_mx(policy: TlsPolicy) -> None:
    plan = await policy.plan("dane.test")
    assert [(d.mx_host, d.source, d.permitted) for d in plan.decisions] == [
        ("mx-ee.dane.test", PolicySource.DANE, True),
        ("mx-plain.dane.test", PolicySource.MTA_STS, False),  # no TLSA: STS enforce applies
    ]
    assert plan.decisions[0].reference_names == ("mx-ee.dane.test", "dane.test")


async def test_dane_applies_to_an_mx_in_a_signed_zone_under_an_unsigned_domain(
    policy: TlsPolicy,
) -> None:
    plan = await policy.plan("hosted.test")
    assert plan.mx.secure is False
    (decision,) = plan.decisions
    assert decision.source is PolicySource.DANE
    assert decision.reference_names == ("mx-ee.dane.test",)  # the domain is not trusted


async def test_insecure_tlsa_is_ignored(policy: TlsPolicy, world: World) -> None:
    decision = await policy.decide("insecure.test", "mx1.insecure.test")
    assert decision.source is PolicySource.DEFAULT
    assert decision.verification is Verification.PKIX
    assert decision.require_tls is True
    context = decision.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    await pkix_handshake(decision, LEAVES["mx1.insecure"])  # valid for the MX name: fine
    with pytest.raises(ssl.SSLCertVerificationError):
        await pkix_handshake(decision, LEAVES["wrong-name"])


@pytest.mark.parametrize("domain", ["wrong.test", "stripped.test"])
async def test_bogus_dnssec_defers_and_never_decides(policy: TlsPolicy, domain: str) -> None:
    with pytest.raises(DnsDeferError):
        await policy.decide(domain, f"mx1.{domain}")
    with pytest.raises(DnsDeferError):
        await policy.plan(domain)


# --- MTA-STS and the default --------------------------------------------------------------------


async def test_mta_sts_enforce_requires_pkix_and_refuses_unlisted_mx(policy: TlsPolicy) -> None:
    plan = await policy.plan("sts.test")
    listed, unlisted = plan.decisions
    assert (listed.mx_host, listed.source, listed.verification) == (
        "mx1.sts.test",
        PolicySource.MTA_STS,
        Verification.PKIX,
    )
    assert listed.permitted and listed.require_tls
    assert (unlisted.mx_host, unlisted.permitted) == ("mx.elsewhere.test", False)
    assert plan.permitted == (listed,)


async def test_mta_sts_testing_is_not_enforced(policy: TlsPolicy) -> None:
    (decision,) = (await policy.plan("testing.test")).decisions
    assert decision.permitted is True
    assert decision.source is PolicySource.DEFAULT
    assert "testing" in decision.reason


async def test_default_is_tls_required_with_pkix(policy: TlsPolicy) -> None:
    (decision,) = (await policy.plan("plain.test")).decisions
    assert (decision.source, decision.require_tls, decision.verification) == (
        PolicySource.DEFAULT,
        True,
        Verification.PKIX,
    )
    assert decision.certificate_check is None


async def test_plaintext_only_with_the_recipients_consent_and_never_against_policy(
    policy: TlsPolicy,
) -> None:
    allow = RecipientTlsPreference(allow_plaintext=True)
    (relaxed,) = (await policy.plan("plain.test", allow)).decisions
    assert (relaxed.source, relaxed.require_tls) == (PolicySource.RECIPIENT, False)
    assert relaxed.ssl_context().verify_mode == ssl.CERT_NONE
    sts = (await policy.plan("sts.test", allow)).decisions[0]
    assert (sts.source, sts.require_tls) == (PolicySource.MTA_STS, True)
    dane = (await policy.plan("dane.test", allow)).decisions[0]
    assert (dane.source, dane.require_tls) == (PolicySource.DANE, True)


async def test_reasons_name_no_host_or_domain(policy: TlsPolicy) -> None:
    decisions: list[TlsPolicyDecision] = []
    for domain in ("dane.test", "sts.test", "testing.test", "plain.test", "insecure.test"):
        decisions += (await policy.plan(domain)).decisions
    assert {d.source for d in decisions} == {
        PolicySource.DANE,
        PolicySource.MTA_STS,
        PolicySource.DEFAULT,
    }
    for decision in decisions:
        assert ".test" not in decision.reason and decision.reason


def test_decision_is_what_the_outbound_client_takes() -> None:
    decision: TlsDecision = TlsPolicyDecision(  # mypy checks the protocol here
        "mx.example", True, True, Verification.PKIX, PolicySource.DEFAULT, "default"
    )
    assert decision.server_hostname == "mx.example"
    assert decision.require_tls is True
