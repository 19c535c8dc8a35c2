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
- **Checks that fit this use.** The SPF evaluator (:mod:`gateway.inbound.spf`) and
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
import logging
import re
from dataclasses import dataclass

from gateway.inbound.dkim import DkimResult, check_dkim
from gateway.inbound.dmarc import (
    DmarcResult,
    OrganizationalDomain,
    check_dmarc,
    registered_domain,
)
from gateway.inbound.spf import DnsLookups, SpfResult, check_spf

log = logging.getLogger(__name__)


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
