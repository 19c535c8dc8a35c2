"""SPF, DKIM and DMARC for mail arriving at the gateway from the clearnet, as one
``Authentication-Results`` header (RFC 8601).

The gateway's clearnet inbound SMTP handler calls :func:`authentication_results`
once per message, before sealing it to the box, and prepends
``Authentication-Results: <value>``. The box then knows what the gateway
could verify, and the gateway learns nothing it did not already see: every
DNS query goes to the gateway's own configured resolver, about the sender's
domains only, never about the box or its alias.

Why dnspython + dkimpy, not checkdmarc or pyspf:

- **One resolver, one time limit.** Every lookup (SPF records and
  mechanisms, DKIM keys, ``_dmarc``) goes through
  :class:`~gateway.dns.GatewayResolver`, i.e. the one validating resolver
  of :class:`~gateway.dns.ResolverConfig` with its timeout. pyspf and
  checkdmarc each set up their own resolver (their own name servers,
  caches and timeouts), which would be a second DNS stack and a second
  path out of the gateway, with no place to plug the gateway's in.
- **No new dependencies.** dnspython and dkimpy are already the gateway's
  (docs/design.md). checkdmarc is a domain-auditing tool whose extra
  dependencies (HTTP, public-suffix handling, report parsing) serve
  checks this handler does not make; pyspf is untyped and synchronous, so
  it would need a thread per message for its blocking DNS.
- **Checks that fit this use.** The SPF evaluator (:mod:`gateway.spf`) and
  the DMARC subset here are a few hundred lines, typed, async, and return
  results instead of raising. DKIM itself (canonicalization, hashing, RSA
  and Ed25519 signatures) is cryptography and stays with dkimpy.

**Async** because the resolver is: the DNS lookups run on the event loop
(SPF and the DKIM key lookups concurrently); the CPU-bound part, dkimpy's
canonicalization and signature checks, runs in a worker thread
(``asyncio.to_thread``) so a large message never stalls the loop. dkimpy's
``dnsfunc`` is fed from keys fetched beforehand through the resolver, so it
does no I/O of its own.

DKIM: every ``DKIM-Signature`` up to :data:`MAX_DKIM_SIGNATURES` gets its
own ``dkim=`` result with ``header.d``/``header.s``/``header.a`` (later ones
are not verified: a hostile message could otherwise make the gateway do
thousands of lookups). A malformed or expired signature, a missing,
revoked or malformed key, or an RSA key under 1024 bits (RFC 8301) is
``permerror``; a signature that does not verify (changed body or headers)
is ``fail``; a key lookup that fails now is ``temperror``; no signature is
``dkim=none``. dkimpy's own log lines (which name domains) go to DEBUG.

DMARC (RFC 7489): the policy record is ``_dmarc.<RFC5322.From domain>``,
else ``_dmarc.<organizational domain>``; exactly one ``v=DMARC1`` record
must be found (none or several: ``dmarc=none``). DMARC passes when SPF
passed for an aligned domain (the MAIL FROM domain, or the HELO name for a
null reverse path) or a DKIM signature passed with an aligned ``d=``;
``adkim``/``aspf`` choose strict (equal names) or relaxed (equal
organizational domains) alignment. The policy that applies (``p=``, or
``sp=`` when the record was found at the organizational domain) is
reported, never enforced here: the SMTP handler decides what to do with a
``fail``. When nothing aligned passed but an aligned check had a temporary
DNS failure, the result is ``temperror`` (retry), not ``fail``. A message
without exactly one From address, or a malformed record, is ``permerror``.

**Organizational domains** (RFC 7489 3.2) come from the Public Suffix List
as the maintained ``publicsuffixlist`` package ships it
(:func:`registered_domain`): ``a.example.co.uk`` belongs to
``example.co.uk``, so relaxed alignment never treats two domains under one
multi-label suffix (``evil.co.uk`` and ``bank.co.uk``) as aligned. The list
is updated with the package, through the lock; never fetched at run time.

Nothing here raises on hostile input: every malformed record, name or
message ends as a ``none``/``permerror`` result. Domains and addresses are
never logged at INFO or above (only verdicts at DEBUG).
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dkim
import dkim.util
from publicsuffixlist import PublicSuffixList

from gateway.errors import DnsError, GatewayError
from gateway.spf import DnsLookups, SpfResult, SpfVerdict, check_spf, valid_dns_name

log = logging.getLogger(__name__)

MAX_DKIM_SIGNATURES = 8
"""DKIM signatures verified per message; later ones are ignored."""
DKIM_MIN_RSA_BITS = 1024
"""RSA keys shorter than this never verify (RFC 8301 §3.2)."""

OrganizationalDomain = Callable[[str], str]


class DkimVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class DmarcVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class DkimResult:
    """The outcome for one ``DKIM-Signature`` header."""

    verdict: DkimVerdict
    domain: str | None = None
    """The signing domain ``d=``, lower case, when the signature names a usable one."""
    selector: str | None = None
    algorithm: str | None = None
    reason: str = ""


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


@dataclass(frozen=True)
class AuthenticationResults:
    """Everything checked for one message; :meth:`header_value` renders it (RFC 8601)."""

    authserv_id: str
    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    """One per verified signature; empty when the message has none."""
    dmarc: DmarcResult

    def header_value(self) -> str:
        """The field body of ``Authentication-Results:``, on one line, without CR or LF."""
        parts = [_value(self.authserv_id), _spf_resinfo(self.spf)]
        parts += [_dkim_resinfo(result) for result in self.dkim] or ["dkim=none"]
        parts.append(_dmarc_resinfo(self.dmarc))
        return "; ".join(parts)


_SUFFIXES = PublicSuffixList()


def registered_domain(domain: str) -> str:
    """The registered domain of ``domain`` by the Public Suffix List (RFC 7489 3.2):
    its public suffix and one label more; a public suffix itself stays as it is."""
    name = domain.lower().rstrip(".")
    return _SUFFIXES.privatesuffix(name) or name


async def check_message(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
    resolver: DnsLookups,
    organizational_domain: OrganizationalDomain = registered_domain,
) -> AuthenticationResults:
    """SPF, DKIM and DMARC for one message from a clearnet client, as typed results."""
    spf, dkim_results = await asyncio.gather(
        check_spf(client_ip=client_ip, helo=helo, mail_from=mail_from, resolver=resolver),
        check_dkim(message, resolver),
    )
    dmarc = await check_dmarc(
        message, spf, dkim_results, resolver, organizational_domain=organizational_domain
    )
    log.debug("inbound checks: spf=%s dmarc=%s", spf.verdict, dmarc.verdict)
    return AuthenticationResults(authserv_id, spf, dkim_results, dmarc)


async def authentication_results(
    *,
    authserv_id: str,
    client_ip: str,
    helo: str,
    mail_from: str,
    message: bytes,
    resolver: DnsLookups,
    organizational_domain: OrganizationalDomain = registered_domain,
) -> str:
    """The ``Authentication-Results`` field body for one message (see :func:`check_message`).

    ``authserv_id`` names the gateway (its domain), ``client_ip`` and
    ``helo`` are the SMTP peer's address and EHLO name, ``mail_from`` the
    envelope sender (empty for ``<>``), ``message`` the message as received.
    Never raises on hostile input; DNS problems become ``temperror`` results.
    """
    results = await check_message(
        authserv_id=authserv_id,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        message=message,
        resolver=resolver,
        organizational_domain=organizational_domain,
    )
    return results.header_value()


# --- DKIM (RFC 6376) -------------------------------------------------------------------------


class _DebugOnly(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs key names (domains) at ERROR; everything it says goes to DEBUG here."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


_DKIM_LOG = _DebugOnly(logging.getLogger(__name__ + ".dkimpy"), {})


@dataclass(frozen=True)
class _Signature:
    index: int
    domain: str | None
    selector: str | None
    algorithm: str | None
    problem: str = ""
    """Why this signature is ``permerror`` before any lookup; ``""`` when it is well formed."""

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}".lower()

    def result(self, verdict: DkimVerdict, reason: str = "") -> DkimResult:
        return DkimResult(verdict, self.domain, self.selector, self.algorithm, reason)


async def check_dkim(message: bytes, resolver: DnsLookups) -> tuple[DkimResult, ...]:
    """One result per DKIM signature (at most :data:`MAX_DKIM_SIGNATURES`); ``()`` for none."""
    parsed = await asyncio.to_thread(_parse_for_dkim, message)
    if parsed is None:
        return (DkimResult(DkimVerdict.PERMERROR, reason="unparsable header section"),)
    verifier, signatures = parsed
    names = sorted({sig.key_name for sig in signatures if not sig.problem})
    fetched = await asyncio.gather(*(_dkim_key(resolver, name) for name in names))
    keys = dict(zip(names, fetched, strict=True))
    return tuple(await asyncio.to_thread(_verify_all, verifier, signatures, keys))


def _parse_for_dkim(message: bytes) -> tuple[Any, list[_Signature]] | None:
    try:
        verifier = dkim.DKIM(message, logger=_DKIM_LOG, minkey=DKIM_MIN_RSA_BITS)
    except Exception:  # dkimpy's parser on hostile bytes: any failure is the message's
        log.debug("DKIM: unparsable message", exc_info=True)
        return None
    values = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    return verifier, [_signature(i, v) for i, v in enumerate(values[:MAX_DKIM_SIGNATURES])]


def _signature(index: int, value: bytes) -> _Signature:
    try:
        tags = dkim.util.parse_tag_value(value)
    except Exception:
        return _Signature(index, None, None, None, "malformed tag list")
    domain = _ascii_tag(tags, b"d")
    selector = _ascii_tag(tags, b"s")
    algorithm = _ascii_tag(tags, b"a")
    domain = domain.lower() if domain is not None else None
    try:
        dkim.validate_signature_fields(tags)
    except Exception as exc:
        return _Signature(index, domain, selector, algorithm, _short(exc, "malformed signature"))
    if domain is None or selector is None or not valid_dns_name(f"{selector}._domainkey.{domain}"):
        return _Signature(index, domain, selector, algorithm, "unusable d= or s=")
    return _Signature(index, domain, selector, algorithm)


def _ascii_tag(tags: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = tags.get(name)
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


async def _dkim_key(resolver: DnsLookups, name: str) -> tuple[DkimVerdict, bytes | str]:
    """``(PASS, record)`` when a usable key record was found, else ``(verdict, reason)``."""
    try:
        records = await resolver.txt(name)
    except DnsError:
        return DkimVerdict.TEMPERROR, "key lookup failed"
    if not records:
        return DkimVerdict.PERMERROR, "no key for signature"
    for record in records:
        try:
            dkim.evaluate_pk(name.encode(), record)
        except Exception:  # malformed, revoked (empty p=) or unknown-type keys
            continue
        return DkimVerdict.PASS, record
    return DkimVerdict.PERMERROR, "unusable key record"


def _verify_all(
    verifier: Any,
    signatures: Sequence[_Signature],
    keys: Mapping[str, tuple[DkimVerdict, bytes | str]],
) -> list[DkimResult]:
    def dnsfunc(name: bytes, timeout: float = 5.0) -> bytes | None:
        found = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        return found[1] if found and isinstance(found[1], bytes) else None

    results = []
    for sig in signatures:
        if sig.problem:
            results.append(sig.result(DkimVerdict.PERMERROR, sig.problem))
            continue
        verdict, key_or_reason = keys[sig.key_name]
        if verdict is not DkimVerdict.PASS:
            results.append(sig.result(verdict, str(key_or_reason)))
            continue
        results.append(_verify_one(verifier, sig, dnsfunc))
    return results


def _verify_one(verifier: Any, sig: _Signature, dnsfunc: Callable[..., bytes | None]) -> DkimResult:
    try:
        valid = bool(verifier.verify(sig.index, dnsfunc=dnsfunc))
    except dkim.ValidationError as exc:  # the fields were checked before: a hash mismatch
        return sig.result(DkimVerdict.FAIL, _short(exc, "signature did not verify"))
    except dkim.KeyFormatError as exc:
        return sig.result(DkimVerdict.PERMERROR, _short(exc, "unusable key"))
    except Exception:  # dkimpy on hostile input: count it against the signature
        log.debug("DKIM: verifier error", exc_info=True)
        return sig.result(DkimVerdict.PERMERROR, "signature could not be checked")
    if valid:
        return sig.result(DkimVerdict.PASS)
    return sig.result(DkimVerdict.FAIL, "signature did not verify")


_KNOWN_REASONS = {
    "body hash mismatch": "body hash mismatch",
    "public key too small": "public key too small",
    "x= value is past": "signature expired",
    "t= value is in the future": "signature from the future",
    "unknown signature algorithm": "unknown algorithm",
    "missing ": "missing required tag",
}


def _short(exc: Exception, default: str) -> str:
    """A fixed reason for a dkimpy error (its own messages quote tags and domains)."""
    text = str(exc)
    return next((r for prefix, r in _KNOWN_REASONS.items() if text.startswith(prefix)), default)


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

_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")


def _value(text: str) -> str:
    """``text`` as an RFC 8601 value: a bare dot-atom when safe, else a quoted-string with
    only printable ASCII (so no CR/LF can ever reach the header)."""
    if _PLAIN_VALUE.fullmatch(text):
        return text
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in text[:200])
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(text: str) -> str:
    return f" reason={_value(text)}" if text else ""


def _spf_resinfo(spf: SpfResult) -> str:
    prop = "smtp.helo" if spf.identity == "helo" else "smtp.mailfrom"
    identity = f" {prop}={_value(spf.domain)}" if spf.domain else ""
    return f"spf={spf.verdict}{_reason(spf.reason)}{identity}"


def _dkim_resinfo(result: DkimResult) -> str:
    props = ""
    for name, value in (("d", result.domain), ("s", result.selector), ("a", result.algorithm)):
        if value:
            props += f" header.{name}={_value(value)}"
    return f"dkim={result.verdict}{_reason(result.reason)}{props}"


def _dmarc_resinfo(result: DmarcResult) -> str:
    policy = ""
    if result.policy is not None:
        policy = f" (p={result.policy}"
        policy += f" sp={result.subdomain_policy})" if result.subdomain_policy else ")"
    header_from = f" header.from={_value(result.from_domain)}" if result.from_domain else ""
    return f"dmarc={result.verdict}{_reason(result.reason)}{policy}{header_from}"
