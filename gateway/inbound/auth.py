"""SPF, DKIM and DMARC of mail arriving from the clearnet, as one ``Authentication-Results``.

The MX (:mod:`gateway.inbound.mx`) calls :func:`authentication_results` once
per message, before sealing it to the box, and prepends the field (RFC
8601): the box then knows what the gateway could verify. Every DNS query
goes to the gateway's own validating resolver, about the sender's domains
only, never about the box or its alias; the lookups run on the event loop
(SPF and DKIM keys concurrently), dkimpy's CPU work in a worker thread.
The verdict is recorded, never enforced here. Nothing raises on hostile
input: a malformed record, name or message ends as ``none`` or
``permerror``; domains and addresses are never logged above DEBUG. Why
these checks are the project's own: docs/design.md, "Maintained libraries".
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
