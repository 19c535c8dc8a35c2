"""DMARC of clearnet mail (RFC 7489): the record, alignment, the verdict.

The record is ``_dmarc.<From domain>``, else ``_dmarc.<organizational
domain>``; exactly one ``v=DMARC1`` record must be found. DMARC passes when
SPF passed for an aligned domain (MAIL FROM, or HELO for a null reverse
path) or DKIM passed with an aligned ``d=``, strict or relaxed as
``aspf``/``adkim`` say. The policy that applies is reported, never
enforced; an aligned check that failed temporarily makes ``temperror``,
not ``fail``. Organizational domains come from the Public Suffix List as
the ``publicsuffixlist`` package ships it (:func:`registered_domain`), so
``evil.co.uk`` never aligns with ``bank.co.uk``; the list is updated with
the package, never fetched at run time.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from publicsuffixlist import PublicSuffixList

from gateway.errors import DnsError, GatewayError
from gateway.inbound.dkim import DkimResult, DkimVerdict
from gateway.inbound.spf import DnsLookups, SpfResult, SpfVerdict, valid_dns_name

log = logging.getLogger(__name__)

OrganizationalDomain = Callable[[str], str]


class DmarcVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class DmarcResult:
    verdict: DmarcVerdict
    from_domain: str | None = None
    """The RFC5322.From domain (lower case), when there is exactly one."""
    policy: str | None = None
    """``p=`` of the record found: ``none``, ``quarantine`` or ``reject``."""
    subdomain_policy: str | None = None
    """``sp=`` of the record found, when it has a valid one."""
    applied_policy: str | None = None
    """The policy for this From domain: ``sp=`` (else ``p=``) if the record came from the
    organizational domain, ``p=`` otherwise. ``None`` when no record applies."""
    spf_aligned: bool = False
    """SPF passed for a domain aligned with the From domain."""
    dkim_aligned: bool = False
    """A DKIM signature passed with a ``d=`` aligned with the From domain."""
    reason: str = ""


_SUFFIXES = PublicSuffixList()


def registered_domain(domain: str) -> str:
    """The registered domain of ``domain`` by the Public Suffix List (RFC 7489 3.2):
    its public suffix and one label more; a public suffix itself stays as it is."""
    name = domain.lower().rstrip(".")
    return _SUFFIXES.privatesuffix(name) or name


# --- DMARC (RFC 7489) --------------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcRecord:
    """The parts of a DMARC record (RFC 7489 §6.3) that the result reports or uses."""

    policy: str
    subdomain_policy: str | None
    adkim: str
    aspf: str


class _DmarcUnusable(GatewayError):
    """A record exists but cannot be used (internal; becomes ``dmarc=permerror``)."""


_POLICIES = ("none", "quarantine", "reject")


def parse_dmarc_record(text: str) -> DmarcRecord:
    """Parse a ``v=DMARC1`` record (RFC 7489 §6.3-6.4); raise ``_DmarcUnusable`` if no
    valid ``p=`` can be had. Invalid ``sp``/``adkim``/``aspf`` fall back to defaults."""
    tags: dict[str, str] = {}
    first = True
    for part in text.split(";"):
        key, sep, value = part.strip(" \t").partition("=")
        key, value = key.strip(" \t").lower(), value.strip(" \t")
        if first:
            if (key, sep, value) != ("v", "=", "DMARC1"):
                raise _DmarcUnusable("the record does not start with v=DMARC1")
            first = False
        elif key and sep:
            tags.setdefault(key, value)
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        if "rua" not in tags:
            raise _DmarcUnusable("the record has no valid p=")
        policy = "none"  # §6.6.3 step 6
    subdomain = tags.get("sp", "").lower()
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    return DmarcRecord(
        policy,
        subdomain if subdomain in _POLICIES else None,
        adkim if adkim in ("r", "s") else "r",
        aspf if aspf in ("r", "s") else "r",
    )


async def _dmarc_record(resolver: DnsLookups, domain: str) -> DmarcRecord | None:
    """The record at ``_dmarc.<domain>``: ``None`` for zero or several candidates.

    Raises :class:`~gateway.errors.DnsError` and ``_DmarcUnusable``."""
    texts = await resolver.txt(f"_dmarc.{domain}")
    candidates = [text for text in texts if re.match(rb"v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)", text)]
    if len(candidates) != 1:
        return None
    try:
        return parse_dmarc_record(candidates[0].decode("ascii"))
    except UnicodeDecodeError as exc:
        raise _DmarcUnusable("the record is not ASCII") from exc


def from_domain(message: bytes) -> tuple[str | None, str]:
    """(the RFC5322.From domain, ``""``) or (``None``, why there is no single one)."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
        values = [str(value) for value in headers.get_all("From") or []]
        if len(values) != 1:
            return None, f"{len(values)} From headers"
        addresses = [addr for _, addr in email.utils.getaddresses(values) if addr]
    except Exception:  # the stdlib parser on hostile bytes
        log.debug("DMARC: unparsable From", exc_info=True)
        return None, "unparsable From"
    if len(addresses) != 1:
        return None, "From does not hold exactly one address"
    domain = addresses[0].rpartition("@")[2].rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None, "From domain is not a valid name"
    if not valid_dns_name(domain):
        return None, "From domain is not a valid name"
    return domain, ""


def aligned(
    domain: str, from_dom: str, mode: str, organizational_domain: OrganizationalDomain
) -> bool:
    """RFC 7489 §3.1: strict = the same name; relaxed = the same organizational domain."""
    domain, from_dom = domain.lower().rstrip("."), from_dom.lower().rstrip(".")
    if mode == "s":
        return domain == from_dom
    return organizational_domain(domain) == organizational_domain(from_dom)


async def check_dmarc(
    message: bytes,
    spf: SpfResult,
    dkim_results: Sequence[DkimResult],
    resolver: DnsLookups,
    *,
    organizational_domain: OrganizationalDomain = registered_domain,
) -> DmarcResult:
    """DMARC for the message's From domain, given the SPF and DKIM results."""
    domain, problem = from_domain(message)
    if domain is None:
        return DmarcResult(DmarcVerdict.PERMERROR, reason=problem)
    org = organizational_domain(domain)
    try:
        record = await _dmarc_record(resolver, domain)
        at_org = record is None and org != domain
        if at_org:
            record = await _dmarc_record(resolver, org)
    except DnsError:
        return DmarcResult(DmarcVerdict.TEMPERROR, domain, reason="policy lookup failed")
    except _DmarcUnusable as exc:
        return DmarcResult(DmarcVerdict.PERMERROR, domain, reason=str(exc))
    if record is None:
        return DmarcResult(DmarcVerdict.NONE, domain, reason="no policy published")
    applied = (record.subdomain_policy or record.policy) if at_org else record.policy
    aspf, adkim = record.aspf, record.adkim

    def spf_aligned_with(verdict: SpfVerdict) -> bool:
        return spf.verdict is verdict and aligned(spf.domain, domain, aspf, organizational_domain)

    def dkim_aligned_with(verdict: DkimVerdict) -> bool:
        return any(
            r.verdict is verdict
            and r.domain is not None
            and aligned(r.domain, domain, adkim, organizational_domain)
            for r in dkim_results
        )

    spf_ok = spf_aligned_with(SpfVerdict.PASS)
    dkim_ok = dkim_aligned_with(DkimVerdict.PASS)
    if spf_ok or dkim_ok:
        verdict, reason = DmarcVerdict.PASS, ""
    elif spf_aligned_with(SpfVerdict.TEMPERROR) or dkim_aligned_with(DkimVerdict.TEMPERROR):
        verdict, reason = DmarcVerdict.TEMPERROR, "an aligned check failed temporarily"
    else:
        verdict, reason = DmarcVerdict.FAIL, "no aligned SPF or DKIM pass"
    return DmarcResult(
        verdict,
        domain,
        record.policy,
        record.subdomain_policy,
        applied,
        spf_aligned=spf_ok,
        dkim_aligned=dkim_ok,
        reason=reason,
    )


# --- rendering (RFC 8601 §2.2) ---------------------------------------------------------------
