"""The gateway's DNS lookups: MX, MTA-STS discovery, TLSA and onion MX, with DNSSEC status.

Decisions, and why:

- **dnspython, not a hand-written resolver.** The lookups need EDNS0 with the
  DO bit, the AD bit of the answer, truncation and TCP retry, CNAME chasing,
  SERVFAIL/NXDOMAIN/NODATA told apart, and parsing of MX, TXT, TLSA and SRV
  rdata. dnspython does all of it, is typed and maintained; a hand-written
  parser of DNS packets on a security boundary would be new attack surface
  for no gain. The ``asyncio`` resolver is used so a slow lookup never
  blocks the gateway's event loop.
- **Validation is the resolver's job; the gateway reads the AD bit.** The
  gateway talks to one configured *validating* resolver (Unbound, or any
  resolver on a trusted path such as 127.0.0.1) with ``RD|AD`` and EDNS DO,
  and trusts an answer as DNSSEC-secure only when that resolver set AD.
  Validating signatures in-process would need the whole chain from the root
  and its key rollovers; a local validating resolver already does that
  well. The price: the path to the resolver must be trusted, so point
  :class:`ResolverConfig` at a loopback resolver, never at a remote one.
- **A failure never downgrades.** SERVFAIL (which is what a validating
  resolver answers for bogus signatures), no reachable server, or a timeout
  raise :class:`~gateway.errors.DnsDeferError` /
  :class:`~gateway.errors.DnsTimeoutError`: the message stays queued. Only
  an authenticated "this does not exist" (NXDOMAIN, NODATA) changes the
  decision. An attacker who drops TLSA answers therefore delays mail, and
  never gets it in clear.
- **Every query has a time limit** (:attr:`ResolverConfig.timeout`, 5 s by
  default, for all tries of one lookup together).
- MX rules: RFC 5321 §5.1 (no MX → the domain's own A/AAAA as an implicit
  MX of preference 0), RFC 7505 (a null MX ``0 .`` → permanent failure).
  ``_mta-sts`` TXT per RFC 8461 §3.1 (exactly one ``v=STSv1`` record, else
  no policy), TLSA at ``_25._tcp.<mx host>`` per RFC 7672, and
  ``_onion-mx._tcp.<domain>`` SRV records whose targets are v3 onion
  addresses (this project's convention for reaching a domain's mail over Tor).
- Domain names never appear in log messages at INFO or above (the log is an
  observer too); lookups are logged at DEBUG without names.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.SRV
import dns.resolver

from gateway.errors import (
    DnsDeferError,
    DnsPermanentError,
    DnsTimeoutError,
    MtaStsPolicyError,
    NullMxError,
)
from onionmail.core.onion_address import is_onion_address

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
"""Seconds one lookup may take in all (every retry and server included)."""
EDNS_PAYLOAD = 1232
"""The EDNS UDP payload size of the 2020 DNS flag day: no IP fragmentation."""


@dataclass(frozen=True)
class ResolverConfig:
    """Where the validating resolver listens, and how long a lookup may take."""

    address: str = "127.0.0.1"
    """The validating resolver's IP address; keep it on a trusted path (loopback)."""
    port: int = 53
    timeout: float = DEFAULT_TIMEOUT
    """Seconds for one lookup, all retries included."""


@dataclass(frozen=True)
class MxHost:
    preference: int
    host: str
    """Lower case, without the trailing dot."""


@dataclass(frozen=True)
class MxResult:
    """Where mail for a domain goes, most preferred first."""

    hosts: tuple[MxHost, ...]
    implicit: bool
    """True when the domain has no MX and its own A/AAAA serve (RFC 5321 §5.1)."""
    secure: bool
    """True when the answer was DNSSEC-validated (AD)."""

    def delivery_order(self, rng: random.Random | None = None) -> tuple[MxHost, ...]:
        """The hosts by preference, shuffled within equal preference (RFC 5321 §5.1)."""
        rng = rng or random.SystemRandom()
        keyed = [(mx.preference, rng.random(), mx) for mx in self.hosts]
        return tuple(mx for _, _, mx in sorted(keyed, key=lambda item: item[:2]))


@dataclass(frozen=True)
class AddressResult:
    addresses: tuple[str, ...]
    secure: bool


@dataclass(frozen=True)
class StsRecord:
    """The ``_mta-sts`` TXT record of a domain (RFC 8461 §3.1)."""

    policy_id: str
    secure: bool


@dataclass(frozen=True)
class TlsaRecord:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class TlsaResult:
    """TLSA records for ``_25._tcp.<host>``.

    ``records`` holds what the DNS returned, but only :attr:`usable_for_dane`
    results may be used: an insecure TLSA RRset is ignored, as RFC 7672 §2.2
    requires (an attacker could forge it).
    """

    records: tuple[TlsaRecord, ...]
    secure: bool

    @property
    def usable_for_dane(self) -> bool:
        return self.secure and bool(self.records)


@dataclass(frozen=True)
class OnionMxTarget:
    priority: int
    weight: int
    port: int
    host: str
    """A v3 onion address (``<56 chars>.onion``), lower case."""


@dataclass(frozen=True)
class OnionMxResult:
    """The onion targets from ``_onion-mx._tcp.<domain>`` SRV, by priority then weight.

    Only a :attr:`secure` answer should redirect mail to an onion: an
    unsigned SRV could be forged to send the mail to an attacker's onion.
    """

    targets: tuple[OnionMxTarget, ...]
    secure: bool


def _normal(name: dns.name.Name | str) -> str:
    text = name.to_text(omit_final_dot=True) if isinstance(name, dns.name.Name) else name
    return text.rstrip(".").lower()


class GatewayResolver:
    """Lookups against one validating resolver; every method is bounded by the timeout.

    Raises :class:`~gateway.errors.DnsDeferError` (or its
    :class:`~gateway.errors.DnsTimeoutError`) when no trustworthy answer can
    be had now, :class:`~gateway.errors.DnsPermanentError` where noted.
    """

    def __init__(self, config: ResolverConfig | None = None) -> None:
        self.config = config or ResolverConfig()
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [self.config.address]
        resolver.port = self.config.port
        resolver.timeout = self.config.timeout
        resolver.lifetime = self.config.timeout
        resolver.use_edns(0, dns.flags.DO, EDNS_PAYLOAD)
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.cache = None
        self._resolver = resolver

    async def _query(
        self, qname: str, rdtype: str, *, nxdomain_is_empty: bool = True
    ) -> tuple[dns.resolver.Answer | None, bool]:
        """(answer or ``None`` for NODATA/NXDOMAIN, AD bit of the response).

        NXDOMAIN raises :class:`DnsPermanentError` unless ``nxdomain_is_empty``.
        """
        log.debug("DNS lookup of type %s", rdtype)
        try:
            answer = await self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            if not nxdomain_is_empty:
                raise DnsPermanentError("the domain does not exist (NXDOMAIN)") from exc
            responses = exc.kwargs.get("responses") or {}
            return None, any(_authenticated(r) for r in responses.values())
        except dns.resolver.LifetimeTimeout as exc:
            raise DnsTimeoutError(
                f"no {rdtype} answer from the resolver within {self.config.timeout:g} s"
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsDeferError(
                f"the resolver failed the {rdtype} lookup (SERVFAIL: broken DNSSEC or an "
                "unreachable server); retrying later, never downgrading"
            ) from exc
        except dns.exception.DNSException as exc:
            raise DnsDeferError(f"the {rdtype} lookup failed: {type(exc).__name__}") from exc
        secure = _authenticated(answer.response)
        if answer.rrset is None:
            return None, secure
        return answer, secure

    async def mx(self, domain: str) -> MxResult:
        """The mail hosts of ``domain``.

        Raises :class:`~gateway.errors.NullMxError` for a null MX and
        :class:`~gateway.errors.DnsPermanentError` when the domain does not
        exist or has neither MX nor address records.
        """
        answer, secure = await self._query(domain, "MX", nxdomain_is_empty=False)
        if answer is not None:
            hosts: list[MxHost] = []
            for rdata in answer:
                if not isinstance(rdata, dns.rdtypes.ANY.MX.MX):
                    continue
                if rdata.exchange == dns.name.root:
                    raise NullMxError("the domain accepts no mail (null MX, RFC 7505)")
                hosts.append(MxHost(rdata.preference, _normal(rdata.exchange)))
            if hosts:
                hosts.sort(key=lambda mx: (mx.preference, mx.host))
                return MxResult(tuple(hosts), implicit=False, secure=secure)
        addresses = await self.addresses(domain)
        if not addresses.addresses:
            raise DnsPermanentError("the domain has no MX and no address: nowhere to deliver")
        return MxResult(
            (MxHost(0, _normal(domain)),), implicit=True, secure=secure and addresses.secure
        )

    async def addresses(self, host: str) -> AddressResult:
        """The IPv4 and IPv6 addresses of ``host`` (empty when it has none)."""
        found: list[str] = []
        secure = True
        for rdtype in ("A", "AAAA"):
            answer, rrset_secure = await self._query(host, rdtype)
            secure = secure and rrset_secure
            if answer is not None:
                found.extend(rdata.to_text() for rdata in answer)
        return AddressResult(tuple(found), secure)

    async def records(self, name: str, rdtype: str) -> tuple[dns.rdata.Rdata, ...]:
        """The ``rdtype`` records at ``name`` (CNAMEs followed), ``()`` for NXDOMAIN or NODATA.

        A general lookup for callers with their own rules (SPF, DMARC);
        raises :class:`~gateway.errors.DnsDeferError` like every lookup here.
        """
        answer, _ = await self._query(name, rdtype)
        return () if answer is None else tuple(answer)

    async def txt(self, name: str) -> tuple[bytes, ...]:
        """Each TXT record at ``name`` as its strings joined without separator
        (RFC 7208 §3.3, RFC 6376 §3.6.2.2); ``()`` for NXDOMAIN or NODATA."""
        return tuple(
            b"".join(rdata.strings)
            for rdata in await self.records(name, "TXT")
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
        )

    async def mta_sts_record(self, domain: str) -> StsRecord | None:
        """The ``_mta-sts`` TXT record, or ``None`` when the domain publishes no usable one.

        Per RFC 8461 §3.1 records not starting with ``v=STSv1`` are ignored,
        and more than one ``v=STSv1`` record, or a malformed one, means no
        policy is available (a cached policy still applies).
        """
        answer, secure = await self._query(f"_mta-sts.{domain}", "TXT")
        if answer is None:
            return None
        texts = [
            b"".join(rdata.strings).decode("ascii", "replace")
            for rdata in answer
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
        ]
        candidates = [text for text in texts if text.startswith("v=STSv1")]
        if len(candidates) != 1:
            return None
        try:
            return StsRecord(parse_sts_txt(candidates[0]), secure)
        except MtaStsPolicyError:
            log.debug("ignoring a malformed _mta-sts record")
            return None

    async def tlsa(self, mx_host: str, port: int = 25) -> TlsaResult:
        """The TLSA records at ``_<port>._tcp.<mx_host>``, with their DNSSEC status."""
        answer, secure = await self._query(f"_{port}._tcp.{mx_host}", "TLSA")
        if answer is None:
            return TlsaResult((), secure)
        records = tuple(
            TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert))
            for rdata in answer
            if isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA)
        )
        return TlsaResult(records, secure)

    async def onion_mx(self, domain: str) -> OnionMxResult:
        """The onion mail hosts from ``_onion-mx._tcp.<domain>`` SRV.

        Targets that are not v3 onion addresses are dropped (a clearnet name
        must never be taken for an onion); a single ``.`` target means "no
        such service" (RFC 2782) and gives no targets.
        """
        answer, secure = await self._query(f"_onion-mx._tcp.{domain}", "SRV")
        if answer is None:
            return OnionMxResult((), secure)
        targets: list[OnionMxTarget] = []
        for rdata in answer:
            if not isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
                continue
            host = _normal(rdata.target)
            if host and is_onion_address(host):
                targets.append(OnionMxTarget(rdata.priority, rdata.weight, rdata.port, host))
        targets.sort(key=lambda t: (t.priority, -t.weight, t.host))
        return OnionMxResult(tuple(targets), secure)


def _authenticated(response: dns.message.Message | None) -> bool:
    return response is not None and bool(response.flags & dns.flags.AD)


def parse_sts_txt(text: str) -> str:
    """The policy id of an ``_mta-sts`` TXT record (``v=STSv1; id=...``), RFC 8461 §3.1.

    Fields are ``key=value`` separated by ``;`` with optional spaces; the
    first must be ``v=STSv1``; ``id`` is 1 to 32 letters and digits.
    Unknown fields are ignored. Raises
    :class:`~gateway.errors.MtaStsPolicyError` otherwise.
    """
    fields: list[tuple[str, str]] = []
    for part in text.split(";"):
        part = part.strip(" \t")
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise MtaStsPolicyError("an _mta-sts TXT field is not key=value")
        fields.append((key, value))
    if not fields or fields[0] != ("v", "STSv1"):
        raise MtaStsPolicyError("an _mta-sts TXT record must start with v=STSv1")
    ids = [value for key, value in fields if key == "id"]
    if len(ids) != 1 or not _is_sts_id(ids[0]):
        raise MtaStsPolicyError("an _mta-sts TXT record needs one id of 1-32 letters and digits")
    return ids[0]


def _is_sts_id(value: str) -> bool:
    return 1 <= len(value) <= 32 and value.isascii() and value.isalnum()


def is_public(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast address (not loopback, private,
    link-local, shared, reserved or multicast; an IPv4-mapped IPv6 address as its IPv4)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
