"""One TLS decision per MX host: DANE first, then MTA-STS, then the gateway's default.

The outbound SMTP client (:mod:`gateway.outbound.smtp`) only enforces what
this module decides. :class:`TlsPolicyDecision` implements its
``TlsDecision`` protocol (``require_tls``, ``server_hostname``,
``certificate_check``, ``ssl_context()``) and adds what the ledger and the
queue need (``permitted``, ``source``, ``reason``).

Order of precedence, and why:

1. **DANE** (RFC 7672). A TLSA RRset at ``_25._tcp.<mx>`` that the
   validating resolver marked secure (AD) makes TLS mandatory and the
   certificate is checked against it: DANE-EE (usage 3: SHA-256/512 or full
   match of the certificate or its SPKI; no name or date check, as §3.1.1
   says) and DANE-TA (usage 2: a trust anchor from the TLSA set, found in
   the server's chain or given in full in the record, must issue the chain,
   and the MX host name must be in the certificate). DANE is used even when
   the MX RRset itself is unsigned (§2.2.1 allows it; it only adds
   protection). An *insecure* TLSA RRset is ignored, as §2.2 requires. A
   TLSA lookup that fails (SERVFAIL, bogus, timeout) raises
   :class:`~gateway.errors.DnsDeferError`: the message waits; it is never
   sent with less protection. DANE overrides MTA-STS (RFC 8461 §2).
2. **MTA-STS** (RFC 8461) in ``enforce`` mode: an MX not listed is not used
   (``permitted`` False); a listed one needs TLS with a PKIX-valid
   certificate for its name. ``testing`` and ``none`` change nothing.
3. **The default: TLS required, certificate verified (PKIX, the MX host name
   against the CA bundle), no plaintext.** Stricter than the opportunistic
   TLS most MTAs use, because a gateway that reports "TLS" in the ledger
   must not be silently downgradable by an active attacker; the outbound
   client refuses a "required" decision that authenticates nothing. Only an
   explicit per-recipient :class:`RecipientTlsPreference` with
   ``allow_plaintext`` relaxes it, to opportunistic TLS (STARTTLS when
   offered, certificate not checked, plaintext when not offered) — and never
   where DANE or an enforced MTA-STS policy applies: the domain's own
   published policy wins over the user's relaxation.

TLSA sets present but with no usable record (usages 0/1, unknown selector or
matching type) call, per RFC 7672 §3.1.3, for encrypted but unauthenticated
TLS; the outbound client has no such mode, so such an MX gets the default
(PKIX) instead: stricter, never weaker.

Python's ``ssl`` shows the server's whole chain only from 3.13 on
(:func:`peer_certificate_chain`), and DANE-TA with a hashed anchor needs it.
On 3.11 and 3.12 the check sees the leaf, which proves DANE-EE, and DANE-TA
only where the record holds the full anchor certificate (``2 0 0``) that
issued the leaf directly; an MX whose TLSA records need more is refused.
Path validation for DANE-TA uses ``cryptography``'s X.509 verifier, not
hand-written chain logic.

Reasons are short fixed sentences without host or domain names, so they can
go to the ledger and to logs.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import hmac
import logging
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import verification

from gateway.dns import GatewayResolver, MxHost, MxResult, TlsaRecord
from gateway.errors import CertificateMismatchError
from gateway.outbound.mta_sts import MtaSts, StsMode

log = logging.getLogger(__name__)

DANE_EE = 3
DANE_TA = 2
SELECTOR_CERT = 0
SELECTOR_SPKI = 1
MATCH_FULL = 0
MATCH_SHA256 = 1
MATCH_SHA512 = 2


class Verification(enum.Enum):
    """How the MX's certificate is checked."""

    PKIX = "pkix"
    """Chain to a CA of the bundle, and the MX host name in the certificate."""
    DANE = "dane"
    """Matched against the DNSSEC-validated TLSA records after the handshake."""
    NONE = "none"
    """Not checked (opportunistic TLS; only where the user allowed plaintext)."""


class PolicySource(enum.Enum):
    """Which rule made the decision."""

    DANE = "dane"
    MTA_STS = "mta-sts"
    DEFAULT = "default"
    RECIPIENT = "recipient-policy"


@dataclass(frozen=True)
class RecipientTlsPreference:
    """The user's per-recipient relaxation of the default."""

    allow_plaintext: bool = False
    """Explicit opt-in: deliver with opportunistic TLS, or in clear when the MX
    offers no STARTTLS, where no DANE or enforced MTA-STS policy applies."""


DEFAULT_PREFERENCE = RecipientTlsPreference()


# --- TLSA matching --------------------------------------------------------------------


def tlsa_association(der_certificate: bytes, selector: int, mtype: int) -> bytes:
    """The data a TLSA record of ``selector``/``mtype`` holds for this certificate."""
    if selector == SELECTOR_CERT:
        selected = der_certificate
    elif selector == SELECTOR_SPKI:
        certificate = x509.load_der_x509_certificate(der_certificate)
        selected = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    else:
        raise ValueError(f"unsupported TLSA selector {selector}")
    if mtype == MATCH_FULL:
        return selected
    if mtype == MATCH_SHA256:
        return hashlib.sha256(selected).digest()
    if mtype == MATCH_SHA512:
        return hashlib.sha512(selected).digest()
    raise ValueError(f"unsupported TLSA matching type {mtype}")


def is_usable(record: TlsaRecord) -> bool:
    """Whether this gateway can use the record for SMTP (RFC 7672 §3.1)."""
    return (
        record.usage in (DANE_TA, DANE_EE)
        and record.selector in (SELECTOR_CERT, SELECTOR_SPKI)
        and record.mtype in (MATCH_FULL, MATCH_SHA256, MATCH_SHA512)
    )


def _matches(der_certificate: bytes, record: TlsaRecord) -> bool:
    try:
        association = tlsa_association(der_certificate, record.selector, record.mtype)
    except ValueError:
        return False
    return hmac.compare_digest(association, record.data)


def _anchor_candidates(chain: Sequence[bytes], records: Sequence[TlsaRecord]) -> list[bytes]:
    """DER trust anchors for DANE-TA: chain certificates matching a record, or full-cert records."""
    ta_records = [r for r in records if r.usage == DANE_TA]
    anchors = [der for der in chain[1:] if any(_matches(der, r) for r in ta_records)]
    anchors += [
        r.data
        for r in ta_records
        if r.selector == SELECTOR_CERT and r.mtype == MATCH_FULL and r.data not in anchors
    ]
    return anchors


def _must_be_ca(policy: verification.Policy, certificate: x509.Certificate, extension: Any) -> None:
    if not isinstance(extension, x509.BasicConstraints) or not extension.ca:
        raise ValueError("an issuer in the chain is not a CA")


# DANE-TA anchors are often private CAs, not CA/Browser-Forum ones: the chain must
# link, verify, be in date, have CAs as issuers and name the MX in a subjectAltName;
# the WebPKI profile's other extension rules (SAN criticality, key usage, ...) are not
# the domain owner's contract with its senders and are not enforced.
_DANE_CA_POLICY = verification.ExtensionPolicy.permit_all().require_present(
    x509.BasicConstraints, verification.Criticality.AGNOSTIC, _must_be_ca
)
_DANE_EE_POLICY = verification.ExtensionPolicy.permit_all().require_present(
    x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
)


def _verifies_to(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchor_der: bytes,
    names: Sequence[str],
    now: datetime.datetime,
) -> bool:
    try:
        anchor = x509.load_der_x509_certificate(anchor_der)
    except ValueError:
        return False
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store([anchor]))
        .time(now)
        .extension_policies(ca_policy=_DANE_CA_POLICY, ee_policy=_DANE_EE_POLICY)
    )
    for name in names:
        try:
            builder.build_server_verifier(x509.DNSName(name)).verify(leaf, intermediates)
        except (verification.VerificationError, ValueError):
            continue
        return True
    return False


def check_dane(
    chain: Sequence[bytes],
    records: Sequence[TlsaRecord],
    reference_names: Sequence[str],
    *,
    now: datetime.datetime | None = None,
) -> str:
    """Check the server's ``chain`` (DER, leaf first) against usable TLSA ``records``.

    Returns which usage matched (``"dane-ee"`` or ``"dane-ta"``); raises
    :class:`~gateway.errors.CertificateMismatchError` when none does.
    """
    if not chain:
        raise CertificateMismatchError("the MX sent no certificate")
    usable = [r for r in records if is_usable(r)]
    leaf_der = chain[0]
    if any(_matches(leaf_der, r) for r in usable if r.usage == DANE_EE):
        return "dane-ee"
    anchors = _anchor_candidates(chain, usable)
    if anchors:
        now = now or datetime.datetime.now(datetime.UTC)
        try:
            leaf = x509.load_der_x509_certificate(leaf_der)
            intermediates = [x509.load_der_x509_certificate(der) for der in chain[1:]]
        except ValueError as exc:
            raise CertificateMismatchError("the MX's certificate chain is malformed") from exc
        if any(_verifies_to(leaf, intermediates, a, reference_names, now) for a in anchors):
            return "dane-ta"
    if sys.version_info < (3, 13) and len(chain) == 1:
        if any(r.usage == DANE_TA and r.mtype != 0 for r in usable):
            raise CertificateMismatchError(
                "the MX's DANE-TA record names its anchor by digest; "
                "checking that needs the server's chain, which Python shows from 3.13 on"
            )
    raise CertificateMismatchError(
        "the MX's certificate matches none of its DNSSEC-validated TLSA records"
    )


def peer_certificate_chain(tls: ssl.SSLObject | ssl.SSLSocket) -> tuple[bytes, ...]:
    """The certificates the server sent (DER, leaf first), as far as Python lets us see them.

    The whole chain on Python 3.13+ (``get_unverified_chain``); before, the
    leaf alone, so a DANE-TA record that holds only a digest of its anchor
    cannot be matched there and the MX is refused (never sent to unchecked).
    """
    if sys.version_info >= (3, 13):
        return tuple(bytes(der) for der in tls.get_unverified_chain())
    leaf = tls.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


# --- the decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class TlsPolicyDecision:
    """What the gateway must do with one MX host (the outbound client's ``TlsDecision``)."""

    mx_host: str
    permitted: bool
    """False: do not deliver to this MX at all (an enforced MTA-STS policy excludes it)."""
    require_tls: bool
    verification: Verification
    source: PolicySource
    reason: str
    """A fixed sentence for the ledger; names no host, domain or address."""
    ca_file: str | None = None
    """PEM CA bundle for PKIX; ``None`` is the system trust store."""
    tlsa: tuple[TlsaRecord, ...] = ()
    """The usable, DNSSEC-validated TLSA records (DANE only)."""
    reference_names: tuple[str, ...] = ()
    """Names a DANE-TA certificate may carry: the MX host, and the domain when the MX
    RRset was validated (RFC 7672 §3.2.2)."""

    @property
    def server_hostname(self) -> str:
        return self.mx_host

    @property
    def certificate_check(self) -> Callable[[bytes], None] | None:
        """For DANE: a check of the leaf certificate (DER) raising ``ValueError``."""
        if self.verification is not Verification.DANE:
            return None
        return self._check_leaf

    def _check_leaf(self, der_leaf: bytes) -> None:
        self.check_chain((der_leaf,))

    def check_chain(self, chain: Sequence[bytes]) -> str:
        """DANE check of the whole chain; see :func:`check_dane`."""
        return check_dane(chain, self.tlsa, self.reference_names)

    def check_peer(self, tls: ssl.SSLObject | ssl.SSLSocket) -> str:
        """DANE check of an established TLS session (the chain, DANE-TA included)."""
        return self.check_chain(peer_certificate_chain(tls))

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh client context: verifying for PKIX, not verifying for DANE (checked
        after the handshake) and for opportunistic TLS. TLS 1.2 at least."""
        context = ssl.create_default_context(
            cafile=self.ca_file if self.verification is Verification.PKIX else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.verification is not Verification.PKIX:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class DeliveryPlan:
    """The MX hosts of a domain in delivery order, each with its decision."""

    mx: MxResult
    decisions: tuple[TlsPolicyDecision, ...]

    @property
    def permitted(self) -> tuple[TlsPolicyDecision, ...]:
        """The MX hosts that may be tried; empty means "defer" (RFC 8461 §5.1)."""
        return tuple(d for d in self.decisions if d.permitted)


class TlsPolicy:
    """Makes :class:`TlsPolicyDecision` objects from DNS, MTA-STS and the user's preference.

    ``mta_sts`` ``None`` disables MTA-STS (DANE and the default still apply).
    ``ca_file`` is the PKIX bundle (``None``: the system trust store).
    """

    def __init__(
        self,
        resolver: GatewayResolver,
        mta_sts: MtaSts | None = None,
        *,
        ca_file: str | None = None,
    ) -> None:
        self.resolver = resolver
        self.mta_sts = mta_sts
        self.ca_file = ca_file

    async def plan(
        self, domain: str, preference: RecipientTlsPreference = DEFAULT_PREFERENCE
    ) -> DeliveryPlan:
        """MX lookup, then one decision per MX host in delivery order.

        Raises what :meth:`GatewayResolver.mx` and :meth:`decide` raise.
        """
        mx = await self.resolver.mx(domain)
        decisions = []
        for host in mx.delivery_order():
            decisions.append(
                await self.decide(domain, host, mx_secure=mx.secure, preference=preference)
            )
        return DeliveryPlan(mx, tuple(decisions))

    async def decide(
        self,
        domain: str,
        mx: MxHost | str,
        *,
        mx_secure: bool = False,
        preference: RecipientTlsPreference = DEFAULT_PREFERENCE,
    ) -> TlsPolicyDecision:
        """The decision for delivering mail for ``domain`` to the MX host ``mx``.

        Raises :class:`~gateway.errors.DnsDeferError` when the TLSA lookup (or,
        with no cached policy, the MTA-STS TXT lookup) fails: retry later.
        """
        mx_host = (mx.host if isinstance(mx, MxHost) else mx).rstrip(".").lower()
        domain = domain.rstrip(".").lower()
        tlsa = await self.resolver.tlsa(mx_host)
        if tlsa.usable_for_dane:
            usable = tuple(r for r in tlsa.records if is_usable(r))
            if usable:
                names = (mx_host, domain) if mx_secure and domain != mx_host else (mx_host,)
                return TlsPolicyDecision(
                    mx_host,
                    permitted=True,
                    require_tls=True,
                    verification=Verification.DANE,
                    source=PolicySource.DANE,
                    reason="DANE: DNSSEC-validated TLSA; TLS required, certificate must match",
                    tlsa=usable,
                    reference_names=names,
                )
            return self._pkix(
                mx_host,
                PolicySource.DANE,
                "DANE: validated TLSA records, none usable; TLS required, PKIX-verified",
            )
        elif tlsa.records:
            log.debug("ignoring TLSA records that are not DNSSEC-validated")
        note = ""
        if self.mta_sts is not None:
            policy = await self.mta_sts.policy_for(domain)
            if policy is not None and policy.mode is StsMode.ENFORCE:
                if not policy.allows_mx(mx_host):
                    return TlsPolicyDecision(
                        mx_host,
                        permitted=False,
                        require_tls=True,
                        verification=Verification.PKIX,
                        source=PolicySource.MTA_STS,
                        reason="MTA-STS enforce: MX not listed in the policy; not used",
                        ca_file=self.ca_file,
                    )
                return self._pkix(
                    mx_host,
                    PolicySource.MTA_STS,
                    "MTA-STS enforce: TLS required, certificate valid for the MX host",
                )
            if policy is not None and policy.mode is StsMode.TESTING:
                note = " (MTA-STS testing policy: not enforced)"
        if preference.allow_plaintext:
            return TlsPolicyDecision(
                mx_host,
                permitted=True,
                require_tls=False,
                verification=Verification.NONE,
                source=PolicySource.RECIPIENT,
                reason="recipient policy allows plaintext: opportunistic TLS, unauthenticated"
                + note,
            )
        return self._pkix(
            mx_host,
            PolicySource.DEFAULT,
            "default: TLS required, certificate PKIX-verified for the MX host, no plaintext" + note,
        )

    def _pkix(self, mx_host: str, source: PolicySource, reason: str) -> TlsPolicyDecision:
        return TlsPolicyDecision(
            mx_host,
            permitted=True,
            require_tls=True,
            verification=Verification.PKIX,
            source=source,
            reason=reason,
            ca_file=self.ca_file,
        )
