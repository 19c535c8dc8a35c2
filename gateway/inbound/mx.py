"""The gateway's clearnet SMTP server: the MX of its domain, mail for aliases only.

* ``RCPT TO`` must be an approved alias at the gateway's domain: another
  domain is ``550 5.7.1 Relaying denied`` (no open relay), an unknown,
  pending or denied alias ``550 5.1.1`` — the same answer, so probing does
  not tell them apart.
* ``MAIL FROM`` is counted per client address; more than ``rate_limit``
  messages in ``rate_window`` seconds get ``450 4.7.1``. The size limit is
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
is where ``gateway.inbound.auth.authentication_results(...)`` plugs in; the
field it returns is added to the message before it is sealed, so the box
sees the gateway's verdict (authserv-id = the gateway's domain, which the
box shows as the gateway's word, not its own).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.inbound.operator_mail import operator_address
from gateway.registry import APPROVED, Registry
from onionmail.message.header_claims import claimed_onions, remove_results_claiming
from onionmail.message.rfc5322 import MessageFormatError, parse_message
from onionmail.smtp.server import NULL_SENDER, SafeHandler

log = logging.getLogger(__name__)

# seal_and_queue(clearnet sender, box addresses, message, the aliases as addressed, one per
# box address) -> queue ids; seals before writing
SealAndQueue = Callable[[str, list[str], bytes, list[str]], Awaitable[list[str]]]

OperatorMail = Callable[[bytes, list[str]], Awaitable[None]]
"""Hook: (message, operator addresses it was sent to) -> kept or forwarded, durably."""

AuthenticationResults = Callable[[Any, Any, bytes], Awaitable[bytes | None]]
"""Hook: (session, envelope, message) -> an ``Authentication-Results`` field value, or None.

The gateway daemon passes ``gateway.inbound.auth.authentication_results`` here
once that module exists (SPF for ``session.peer`` and ``envelope.mail_from``,
DKIM and DMARC on the message)."""


class RateLimit:
    """At most ``limit`` events per key in any ``window`` seconds (sliding)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, collections.deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        events = self._events.setdefault(key, collections.deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        if len(self._events) > 100_000:  # bound memory under a flood of addresses
            self._events = {k: v for k, v in self._events.items() if v}
        return True


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
        self.accepted = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not self.rate_limit.allow(peer):
            log.warning("rate limit reached for a client; mail deferred")
            return "450 4.7.1 Too much mail from your address; try again later"
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
            return "550 5.7.1 Relaying denied"
        entry = await asyncio.to_thread(self.registry.get, rcpt.local_part)
        if entry is None or entry.state != APPROVED:
            return "550 5.1.1 No such user here"
        return self.add_recipient(envelope, rcpt)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await self.finish(self._receive(session, envelope))

    async def _receive(self, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        try:
            message = parse_message(data)
        except MessageFormatError as exc:
            return f"554 5.6.0 Malformed message: {exc}"
        if claimed_onions(message):
            # The box refuses relayed mail whose From or Sender shows an onion
            # (check_relayed_from). Said here, before the 250, the sending server
            # bounces it to its author; said by the box, after it, nobody would.
            return (
                "550 5.7.1 Mail from the clearnet may not name a .onion sender in From "
                "or Sender: that claim cannot be verified and is refused"
            )
        remove_results_claiming(message, self.domain)  # RFC 8601 5: only ours may say so
        if self.authenticate is not None:
            verdict = await self.authenticate(session, envelope, data)
            if verdict is not None:
                message.prepend("Authentication-Results", verdict)
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
        if not boxes:
            return "250 2.0.0 OK, for the gateway's operator"
        sender = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        ids = await self.seal_and_queue(sender, boxes, message.to_bytes(), aliases)
        self.accepted += 1
        log.info("accepted a clearnet message for %d box(es), sealed", len(ids))
        return "250 2.0.0 OK, sealed for the recipient"
