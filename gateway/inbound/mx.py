"""The gateway's clearnet SMTP server: the MX of its domain, mail for aliases only.

* ``RCPT TO`` must be an approved alias at the gateway's domain: another
  domain is ``550 5.7.1 Relaying denied`` (no open relay), an unknown,
  pending or denied alias ``550 5.1.1`` — the same answer, so probing does
  not tell them apart.
* ``MAIL FROM`` from a client address that sent ``rate_limit`` messages in
  the last ``rate_window`` seconds gets ``450 4.7.1`` (a sliding window; a
  message counts once accepted, not an aborted transaction; addresses of
  ``rate_allow`` are exempt). The refusal is logged with the client's IP:
  the clearnet side's log is the operator's MX log, and an IP is what
  blocking a flood takes; never a mail address. The size limit is
  aiosmtpd's (ESMTP SIZE); connections and idle time are capped by
  :func:`onionmail.smtp.server.start_smtp_server`, which also gives the
  anonymous banner and the safe error boundary.
* ``STARTTLS`` is offered when the gateway has a certificate (never
  required: a clearnet sender that cannot do TLS is the sender's leak, and
  refusing would lose the mail).
* ``DATA``: the message is sealed to each recipient box's key
  (:func:`onionmail.gateway_link.protocol.seal_for_box`) in memory, and only the
  sealed bytes are queued. The plaintext is never written to disk nor
  logged: a seizure of the gateway's directory finds ciphertext for the
  boxes, sealed under a one-time key that the gateway's own key does not
  open (the queue around it names the box and the times).

SPF/DKIM/DMARC verdicts: the hook :attr:`ClearnetInboundHandler.authenticate`
checks them (:mod:`gateway.inbound.auth`); the field it returns is added to
the message before it is sealed, so the box sees the gateway's verdict
(authserv-id = the gateway's domain, which the box shows as the gateway's
word, not its own). With ``enforce_dmarc`` a message that fails the DMARC
of its From domain gets what the domain asks for: ``p=reject`` is refused
at DATA with ``550 5.7.1`` (before the ``250``: the sending server tells
its author), ``p=quarantine`` is delivered with the gateway's
``Onionmail-Quarantine`` field, and the box files it in Junk.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.counters import Refusals
from gateway.inbound.operator_mail import operator_address
from gateway.registry import APPROVED, Registry
from onionmail.gateway_link.protocol import QUARANTINE_FIELD
from onionmail.message.header_claims import claimed_onions, remove_results_claiming
from onionmail.message.rfc5322 import MessageFormatError, parse_message
from onionmail.smtp.server import NULL_SENDER, SafeHandler

log = logging.getLogger(__name__)

# seal_and_queue(clearnet sender, box addresses, message, the aliases as addressed, one per
# box address) -> queue ids; seals before writing
SealAndQueue = Callable[[str, list[str], bytes, list[str]], Awaitable[list[str]]]

OperatorMail = Callable[[bytes, list[str]], Awaitable[None]]
"""Hook: (message, operator addresses it was sent to) -> kept or forwarded, durably."""


@dataclass(frozen=True)
class Verdict:
    """What the SPF/DKIM/DMARC checks of one message say."""

    header: bytes
    """The ``Authentication-Results`` field value."""
    dmarc_failed_policy: str = ""
    """When the message fails the DMARC of its From domain: the policy that applies
    (``none``, ``quarantine``, ``reject``); else empty."""


AuthenticationResults = Callable[[Any, Any, bytes], Awaitable[Verdict | None]]
"""Hook: (session, envelope, message) -> the :class:`Verdict`, or None (nothing checked):
SPF for ``session.peer`` and ``envelope.mail_from``, DKIM and DMARC on the message."""


class RateLimit:
    """At most ``limit`` events per client address in any ``window`` seconds (sliding);
    addresses in the ``allow`` networks are never limited."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        allow: tuple[str, ...] = (),
    ):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.allow_networks = tuple(ipaddress.ip_network(n, strict=False) for n in allow)
        self._events: dict[str, collections.deque[float]] = {}

    def exempt(self, key: str) -> bool:
        try:
            address = ipaddress.ip_address(key)
        except ValueError:
            return False
        return any(address in network for network in self.allow_networks)

    def allow(self, key: str) -> bool:
        """Whether one more event from ``key`` stays within the limit (nothing counted)."""
        if self.exempt(key):
            return True
        events = self._events.get(key)
        if not events:
            return True
        horizon = self.clock() - self.window
        while events and events[0] <= horizon:
            events.popleft()
        return len(events) < self.limit

    def record(self, key: str) -> None:
        """Count one event (an accepted message) for ``key``."""
        if self.exempt(key):
            return
        self._events.setdefault(key, collections.deque()).append(self.clock())
        if len(self._events) > 100_000:  # bound memory under a flood of addresses
            horizon = self.clock() - self.window
            self._events = {k: v for k, v in self._events.items() if v and v[-1] > horizon}


class ClearnetInboundHandler(SafeHandler):
    """aiosmtpd hooks of the clearnet MX."""

    def __init__(
        self,
        *,
        domain: str,
        registry: Registry,
        seal_and_queue: SealAndQueue,
        max_recipients: int,
        rate_limit: RateLimit,
        authenticate: AuthenticationResults | None = None,
        operator_mail: OperatorMail | None = None,
        enforce_dmarc: bool = True,
    ) -> None:
        self.domain = domain.lower()
        self.operator_mail = operator_mail
        """Where mail for postmaster@, abuse@... goes (:mod:`.operator_mail`); None:
        refused like any unknown address."""
        self.registry = registry
        self.seal_and_queue = seal_and_queue
        self.max_recipients = max_recipients
        self.rate_limit = rate_limit
        self.authenticate = authenticate
        """The SPF/DKIM/DMARC hook (see :data:`AuthenticationResults`); None: no verdict."""
        self.enforce_dmarc = enforce_dmarc
        self.refused = Refusals()
        """Refusals by reason, for the metrics."""
        self.accepted = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        peer = _client_ip(session)
        if not self.rate_limit.allow(peer):
            log.warning(
                "rate limit reached for client %s (%d messages in %.0f s); deferred with 450",
                peer,
                self.rate_limit.limit,
                self.rate_limit.window,
            )
            return self.refused(
                "rate_limit", "450 4.7.1 Too much mail from your address; try again later"
            )
        return self.accept_sender(envelope, address, options)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        operator = operator_address(address, self.domain)
        if operator is not None and self.operator_mail is not None:
            if len(envelope.rcpt_tos) >= self.max_recipients:
                return f"452 4.5.3 Too many recipients (at most {self.max_recipients} per message)"
            if operator not in envelope.rcpt_tos:
                envelope.rcpt_tos.append(operator)
            return "250 2.1.5 OK"
        rcpt = self.next_recipient(envelope, address, self.max_recipients)
        if isinstance(rcpt, str):
            return rcpt
        if rcpt.domain != self.domain:
            return self.refused("relay_denied", "550 5.7.1 Relaying denied")
        entry = await asyncio.to_thread(self.registry.get, rcpt.local_part)
        if entry is None or entry.state != APPROVED:
            return self.refused("unknown_recipient", "550 5.1.1 No such user here")
        return self.add_recipient(envelope, rcpt)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await self.finish(self._receive(session, envelope))

    async def _receive(self, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        try:
            message = parse_message(data)
        except MessageFormatError as exc:
            return self.refused("malformed", f"554 5.6.0 Malformed message: {exc}")
        if claimed_onions(message):
            # The box refuses relayed mail whose From or Sender shows an onion
            # (check_relayed_from). Said here, before the 250, the sending server
            # bounces it to its author; said by the box, after it, nobody would.
            return self.refused(
                "onion_sender",
                "550 5.7.1 Mail from the clearnet may not name a .onion sender in From "
                "or Sender: that claim cannot be verified and is refused",
            )
        remove_results_claiming(message, self.domain)  # RFC 8601 5: only ours may say so
        message.remove(QUARANTINE_FIELD)  # only the gateway may say so
        if self.authenticate is not None:
            verdict = await self.authenticate(session, envelope, data)
            if verdict is not None:
                refused = self._apply_dmarc(message, verdict.dmarc_failed_policy)
                if refused is not None:
                    return refused
                message.prepend("Authentication-Results", verdict.header)
        boxes: list[str] = []
        operator = [r for r in envelope.rcpt_tos if operator_address(r, self.domain) == r]
        aliases = [str(r) for r in envelope.rcpt_tos if r not in operator]
        for rcpt in aliases:
            entry = await asyncio.to_thread(self.registry.get, rcpt.split("@", 1)[0])
            if entry is None or entry.state != APPROVED:  # changed since RCPT
                return "451 4.3.0 A recipient changed meanwhile; try again later"
            boxes.append(entry.box)
        if operator and self.operator_mail is not None:
            await self.operator_mail(message.to_bytes(), operator)
            log.info("accepted a clearnet message for the operator")
        self.rate_limit.record(_client_ip(session))  # a message, not an aborted transaction
        if not boxes:
            return "250 2.0.0 OK, for the gateway's operator"
        sender = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        ids = await self.seal_and_queue(sender, boxes, message.to_bytes(), aliases)
        self.accepted += 1
        log.info("accepted a clearnet message for %d box(es), sealed", len(ids))
        return "250 2.0.0 OK, sealed for the recipient"

    def _apply_dmarc(self, message: Any, failed_policy: str) -> str | None:
        """The refusal of a message that fails ``p=reject``; a ``p=quarantine`` one is
        marked for the box's Junk folder."""
        if not self.enforce_dmarc or failed_policy not in ("reject", "quarantine"):
            return None
        if failed_policy == "reject":
            log.info("refused a clearnet message that fails its domain's DMARC (p=reject)")
            return self.refused(
                "dmarc_reject",
                "550 5.7.1 Refused: the message fails the DMARC policy of its From domain, "
                "which asks for rejection",
            )
        message.prepend(QUARANTINE_FIELD, b"dmarc (the From domain asks for quarantine)")
        return None


def _client_ip(session: Any) -> str:
    peer = getattr(session, "peer", None)
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
