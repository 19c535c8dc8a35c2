"""The SMTP server behind the gateway's onion: registered boxes send clearnet mail here.

Only a registered, approved box may send, and only to clearnet addresses
outside the gateway's own domain: no open relay.

* ``EHLO`` announces the seal (:data:`~onionmail.seal.envelope.SEAL_KEYWORD`)
  with a fresh challenge, exactly like a box: a box's delivery agent seals
  to the gateway without knowing it is one.
* ``MAIL FROM`` must be a box address (a ``.onion`` one): the seal will
  prove it. A box whose registration is pending or denied is refused here,
  with the reason (its user sees it in the bounce), also for registering
  again; its state changes only by the operator's decision.
  ``RCPT TO:<register@<gateway onion>>`` alone is a registration
  (:mod:`onionmail.gateway_link.protocol`); any other recipient needs the sender
  registered and approved (``550 5.7.1`` otherwise, naming why), and must be
  a clearnet address not at the gateway's domain nor at an onion.
* ``DATA`` must be a sealed envelope that opens with the sender's key and
  binds this session. The message inside must come ``From`` the box (or
  from its alias, as a box that encrypted it with OpenPGP sends it); it is
  rewritten to the alias (:mod:`gateway.outbound.sender_rewrite`), DKIM-signed
  (:mod:`gateway.outbound.dkim_signing`) and queued durably per recipient domain
  before ``250``. A retry of an envelope already queued is acknowledged and
  not queued twice (the replay cache, as in a box).

Logs carry SMTP codes and counts, never addresses, aliases or subjects.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.counters import Refusals
from gateway.errors import DkimError, SenderRewriteError
from gateway.outbound.dkim_signing import DkimSigner
from gateway.outbound.sender_rewrite import rewrite_sender
from gateway.outbound.sending_limits import SendingLimits
from gateway.registry import APPROVED, DENIED, BoxMailKeys, Registry
from gateway.storage import StoredReplay
from onionmail.box.inbound import announce_seals, open_sealed
from onionmail.core.errors import (
    AddressError,
    RegistrationError,
)
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.gateway_link.protocol import (
    REGISTRATION_LOCAL_PART,
    format_registration_reply,
    parse_registration,
    verify_registration,
)
from onionmail.message.rfc5322 import MessageFormatError, parse_message
from onionmail.seal.envelope import (
    SealedContent,
)
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.smtp.server import SafeHandler
from onionmail.store.replay_cache import ReplayCache

log = logging.getLogger(__name__)

SEALED_MAGIC_B64 = b"T01TR"
# Queue the signed message for clearnet delivery: (alias address, recipients, message) -> ids
QueueClearnet = Callable[[str, list[str], bytes], Awaitable[list[str]]]


class GatewayOnionHandler(SafeHandler):
    """aiosmtpd hooks of the box-facing server."""

    def __init__(
        self,
        *,
        identity: Identity,
        domain: str,
        registry: Registry,
        replay_cache: ReplayCache | StoredReplay,
        signer: DkimSigner,
        queue_clearnet: QueueClearnet,
        require_approval: bool,
        max_recipients: int,
        keep_display_name: bool = True,
        mail_keys: MailKeyring | None = None,
        box_mail_keys: BoxMailKeys | None = None,
        limits: SendingLimits | None = None,
        max_aliases_per_box: int = 3,
    ) -> None:
        self.identity = identity
        self.mail_keys = mail_keys
        """The gateway's own mail keys (the handshake seal); None: version 1 only."""
        self.box_mail_keys = box_mail_keys
        """Where the boxes' certified mail keys are learned, for sealing their inbound mail."""
        self.onion = identity.onion_address
        self.domain = domain.lower()
        self.registry = registry
        self.replay_cache = replay_cache
        self.signer = signer
        self.queue_clearnet = queue_clearnet
        self.require_approval = require_approval
        self.max_recipients = max_recipients
        self.keep_display_name = keep_display_name
        self.limits = limits
        """Messages and recipients per alias and per box (:mod:`.sending_limits`)."""
        self.max_aliases_per_box = max_aliases_per_box
        self.register_address = f"{REGISTRATION_LOCAL_PART}@{self.onion}"
        self.relayed = 0
        self.registrations = 0
        self.refused = Refusals()
        """Refusals by reason, for the metrics."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        seals = [f"250-{words}" for words in announce_seals(self.mail_keys, session)]
        return [*responses[:-1], *seals, responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        try:
            sender = parse_mail_address(address)
            sender.onion_public_key()
        except AddressError:
            return self.refused(
                "not_a_box",
                "550 5.7.1 Only onionmail boxes send through this gateway (a .onion sender "
                "that seals its mail); clearnet mail goes to the gateway's MX",
            )
        # A pending or denied box is told at once (the reply reaches its user's
        # bounce); an unknown one may go on, to register.
        refusal = await asyncio.to_thread(self._sender_refusal, str(sender))
        if refusal is not None and "not registered" not in refusal:
            return self.refused("not_approved", refusal)
        return self.accept_sender(envelope, str(sender), options)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        rcpt = self.next_recipient(envelope, address, self.max_recipients)
        if isinstance(rcpt, str):
            return rcpt
        alone = "550 5.5.1 A registration goes alone to the registration address"
        if str(rcpt) == self.register_address:
            if envelope.rcpt_tos:
                return alone
            envelope.rcpt_tos.append(str(rcpt))
            return "250 2.1.5 OK"
        if self.register_address in envelope.rcpt_tos:
            return alone
        refusal = await asyncio.to_thread(self._sender_refusal, envelope.mail_from)
        if refusal is not None:
            return self.refused("not_approved", refusal)
        if rcpt.is_onion:
            return self.refused(
                "onion_recipient",
                "550 5.7.1 The gateway relays only to clearnet addresses; "
                "send to .onion addresses directly",
            )
        if rcpt.domain == self.domain or rcpt.domain.endswith("." + self.domain):
            return self.refused(
                "own_domain", "550 5.7.1 Mail to this gateway's own domain is not relayed"
            )
        return self.add_recipient(envelope, rcpt)

    def _sender_refusal(self, box: str) -> str | None:
        entry = self.registry.by_box(box)
        if entry is None:
            return (
                "550 5.7.1 This box is not registered with this gateway "
                "(onionmail gateway register)"
            )
        if entry.state == DENIED:
            return "550 5.7.1 This box's registration was denied by the gateway's operator"
        if entry.state != APPROVED:
            return "550 5.7.1 This box's registration is pending the operator's approval"
        return None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await self.finish(self._receive(session, envelope))

    async def _receive(self, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        challenge = getattr(session, "onionmail_challenge", None)
        if challenge is None or not data.startswith(SEALED_MAGIC_B64):
            return self.refused(
                "not_sealed",
                "550 5.7.1 Mail to the gateway must be a sealed envelope (an onionmail box)",
            )
        content = await open_sealed(self.identity, envelope, data, session)
        if isinstance(content, str):
            return content
        if content.sender_certificate and self.box_mail_keys is not None:
            onion = parse_mail_address(content.mail_from).domain
            await asyncio.to_thread(
                self.box_mail_keys.learn, onion, content.sender_certificate, time.time()
            )
        if content.cover:
            return "550 5.7.1 The gateway takes no cover traffic"
        if envelope.rcpt_tos == [self.register_address]:
            return await self._register(content)
        if await asyncio.to_thread(self.replay_cache.seen, content.envelope_id):
            return "250 2.0.0 Already queued"
        return await self._relay(content, parse_mail_address(content.mail_from))

    async def _register(self, content: SealedContent) -> str:
        now = time.time()
        try:
            request = parse_registration(content.message)
            verify_registration(
                request, sender=content.mail_from, gateway_onion=self.onion, now=now
            )
            # The nonce, remembered like an envelope id (for longer than the time window).
            if await asyncio.to_thread(self.replay_cache.seen, request.nonce):
                raise RegistrationError("this request was seen before (replayed)")
            await asyncio.to_thread(self.replay_cache.record, request.nonce, request.time)
            entry = await asyncio.to_thread(
                self.registry.request,
                request,
                require_approval=self.require_approval,
                max_per_box=self.max_aliases_per_box,
            )
        except RegistrationError as exc:
            log.warning("refused a registration: %s", type(exc).__name__)  # never the alias
            return self.refused("registration", f"550 5.7.1 Registration refused: {exc}")
        self.registrations += 1
        log.info("registration recorded (%s)", entry.state)
        state = "registered" if entry.state == APPROVED else "pending"
        return format_registration_reply(state, f"{entry.alias}@{self.domain}")

    async def _relay(self, content: SealedContent, sender: MailAddress) -> str:
        entry = await asyncio.to_thread(self.registry.by_box, str(sender))
        if entry is None or entry.state != APPROVED:
            return "550 5.7.1 This box may not send through this gateway"
        alias = f"{entry.alias}@{self.domain}"
        try:
            _check_from(content.message, sender, alias)
            rewritten = rewrite_sender(
                content.message,
                box_address=str(sender),
                alias=alias,
                keep_display_name=self.keep_display_name,
            )
            signed = await asyncio.to_thread(self.signer.sign, rewritten.message)
        except (SenderRewriteError, MessageFormatError) as exc:
            return self.refused("malformed", f"554 5.6.0 The message cannot be relayed: {exc}")
        except DkimError as exc:
            log.error("DKIM signing failed: %s", exc)
            return "451 4.3.0 The gateway could not sign the message; try again later"
        if self.limits is not None:
            refusal = await asyncio.to_thread(
                self.limits.take, entry.alias, sender.domain, len(content.recipients)
            )
            if refusal is not None:
                log.warning("a box reached a sending limit; its message is deferred")
                return self.refused("sending_limit", refusal)
        ids = await self.queue_clearnet(rewritten.envelope_sender, list(content.recipients), signed)
        await asyncio.to_thread(self.replay_cache.record, content.envelope_id, content.created)
        self.relayed += 1
        log.info("queued a message from a box for %d clearnet domain(s)", len(ids))
        return f"250 2.0.0 Queued for the clearnet as {' '.join(ids)}"


def _check_from(message: bytes, sender: MailAddress, alias: str) -> None:
    """The box's message must come From the box address the seal proved, or from its
    own alias (a box that encrypts with OpenPGP rewrites From itself, before the
    encryption, since the gateway cannot rewrite the protected header inside)."""
    parsed = parse_message(message)
    values = parsed.get_all("From")
    if len(values) != 1:
        raise MessageFormatError("the message needs exactly one From field")
    pairs = email.utils.getaddresses([values[0].decode("utf-8", "replace")])
    try:
        named = parse_mail_address(pairs[0][1]) if len(pairs) == 1 else None
    except AddressError:
        named = None
    if named != sender and str(named) != alias:
        raise MessageFormatError("the From field does not match the sealed sender")
