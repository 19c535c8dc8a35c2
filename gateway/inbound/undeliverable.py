"""Clearnet mail a box never takes: reported to its clearnet sender, never dropped.

The gateway answered ``250`` to the clearnet sender, so the message is the
gateway's until the box has it. The box-bound queue retries what can change
(a box offline, tor trouble, a ``4xx``) with backoff, as a box's queue does;
what cannot (the box refused it for good, or stayed unreachable for the
whole ``[delivery] max_lifetime``) ends in a delivery status notification
(RFC 3464) to the clearnet sender, sent like any mail of the gateway's
domain. The report

* names the aliases the sender wrote to, never the box behind them: an onion
  address in a box's refusal is replaced, so a report does not tie an alias
  to its box for whoever sent the mail;
* quotes nothing of the message: the gateway holds it only sealed to the box;
* is DKIM-signed for the gateway's domain and sent with a null reverse path
  (``MAIL FROM:<>``), so a report that cannot be delivered is never answered
  with another one (RFC 5321 4.5.5, RFC 3464 2).

Mail that came with a null reverse path (itself a report) gets no report: the
gateway keeps a note without content in ``GWDIR/undeliverable`` for its
operator, as for entries queued before reports existed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from onionmail.message.dsn import build_dsn
from onionmail.store.queue import QueuedMessage

QueueReport = Callable[[str, bytes], Awaitable[object]]
"""(recipient, signed report) -> queued for the clearnet, with a null reverse path."""
Sign = Callable[[bytes], bytes]

_ONION_ADDRESS = re.compile(r"(?i)(?:[^\s<>@;,]+@)?[a-z2-7]{56}\.onion")


def diagnostic(reason: str, entry: QueuedMessage) -> str:
    """The failure as the clearnet sender may read it: each box address as its alias,
    any other onion address as "the recipient's box"."""
    for box, alias in zip(entry.recipients, entry.dsn_names, strict=False):
        reason = re.sub(re.escape(box), alias, reason, flags=re.IGNORECASE)
    return _ONION_ADDRESS.sub("the recipient's box", reason)


def report_for(
    entry: QueuedMessage, reason: str, recipients: tuple[str, ...], *, domain: str
) -> bytes:
    """The RFC 3464 report (CRLF line ends) of ``recipients`` (box addresses of ``entry``)
    for ``entry.dsn_to``, from ``mailer-daemon@domain``."""
    alias_of = dict(zip(entry.recipients, entry.dsn_names, strict=True))
    report = build_dsn(
        box_onion=domain,
        sender=entry.dsn_to,
        recipients=tuple(alias_of[r] for r in recipients),
        original=None,
        reason=diagnostic(reason, entry),
    )
    return report.replace(b"\n", b"\r\n")


class SenderReports:
    """The box-bound agent's ``report_failure`` hook: a failure of clearnet mail becomes
    a signed report queued for its sender; False when there is nobody to report to."""

    def __init__(self, *, domain: str, sign: Sign, queue_report: QueueReport) -> None:
        self.domain = domain
        self.sign = sign
        self.queue_report = queue_report
        self.sent = 0

    async def __call__(
        self, entry: QueuedMessage, reason: str, recipients: tuple[str, ...]
    ) -> bool:
        if not entry.dsn_to or len(entry.dsn_names) != len(entry.recipients):
            return False
        report = report_for(entry, reason, recipients, domain=self.domain)
        await self.queue_report(entry.dsn_to, self.sign(report))
        self.sent += 1
        return True
