"""The gateway's two queues and what drains them.

Both are :class:`onionmail.store.queue.OutboundQueue` (durable, fsynced
before ``250``, encrypted at rest with a key derived from the gateway's
identity, removed as soon as delivered) drained by the box's
:class:`onionmail.box.delivery.DeliveryAgent` (retries with exponential backoff
and jitter, bounce after ``[delivery] max_lifetime``):

``queue/clearnet``  box -> clearnet. One entry per recipient domain, holding
    the rewritten, DKIM-signed message. :class:`ClearnetAgent` replaces the
    agent's one delivery attempt: MX lookup and TLS decision
    (:class:`gateway.outbound.tls_policy.TlsPolicy`: DANE, MTA-STS, TLS required by
    default), the MX's addresses from the same validating resolver, and
    :func:`gateway.outbound.smtp.deliver`. A DNS failure, a 4xx or TLS that
    cannot be had is retried; a 5xx, NXDOMAIN or a null MX bounces.
``queue/boxes``     clearnet -> box. Each entry's message is an inner sealed
    envelope (:func:`onionmail.gateway_link.protocol.seal_for_box`) that only the
    box can open; the stock agent seals it once more for the SMTP session
    and delivers it over Tor, as a box delivers to a box.

Bounces of clearnet mail go back to the box: :class:`BounceToBox` takes the
agent's delivery status notification (it looks like a Maildir to the
agent), seals it to the box registered for the alias and queues it in
``queue/boxes``. Box-bound mail that fails for good (the box refused it, or
stayed unreachable for the whole lifetime) is reported to its clearnet
sender (:mod:`gateway.inbound.undeliverable`: the aliases, never the box,
no content; DKIM-signed, null reverse path); only mail that had no sender to
report to leaves a note without content in ``GWDIR/undeliverable``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.dns import GatewayResolver, is_public
from gateway.errors import (
    DnsDeferError,
    DnsError,
    DnsPermanentError,
    OutboundDeliveryError,
)
from gateway.errors import (
    PermanentDeliveryError as MxRefused,
)
from gateway.outbound.smtp import SmtpTimeouts, deliver
from gateway.outbound.tls_policy import DEFAULT_PREFERENCE, RecipientTlsPreference, TlsPolicy
from gateway.registry import APPROVED, Registry
from onionmail.box.delivery import DeliveryAgent
from onionmail.config.box import DeliverySection
from onionmail.core.errors import DeliveryError, PermanentDeliveryError
from onionmail.gateway_link.protocol import (
    GATEWAY_SENDER_LOCAL_PART,
    seal_for_box,
    take_gateway_tls_mark,
)
from onionmail.message.rfc5322 import MessageFormatError
from onionmail.seal.identity import Identity
from onionmail.store.maildir import Maildir
from onionmail.store.queue import OutboundQueue, QueuedMessage

log = logging.getLogger(__name__)


def queue_for_boxes(
    queue: OutboundQueue,
    identity: Identity,
    *,
    mail_from: str,
    boxes: list[str],
    message: bytes,
    mail_key_for: Callable[[str], bytes | None] | None = None,
    aliases: list[str] | None = None,
) -> list[str]:
    """Seal ``message`` to each box (grouped by onion) and queue only the ciphertext.

    ``aliases``: the addresses the clearnet sender used, one per box address; with
    them a failure is reported to ``mail_from`` naming those (never the box).

    ``mail_key_for(onion)``: the box's certified mail key as last seen
    (:class:`gateway.registry.BoxMailKeys`). Blocking (sealing and fsync):
    call it in a worker thread.
    """
    by_onion: dict[str, list[str]] = {}
    for box in boxes:
        by_onion.setdefault(box.rsplit("@", 1)[1], []).append(box)
    ids = []
    alias_of = dict(zip(boxes, aliases, strict=True)) if aliases is not None else {}
    outer_sender = f"{GATEWAY_SENDER_LOCAL_PART}@{identity.onion_address}"
    for onion, rcpts in by_onion.items():
        recipients = tuple(dict.fromkeys(rcpts))
        inner = seal_for_box(
            onion,
            mail_from=mail_from,
            recipients=recipients,
            message=message,
            mail_key=None if mail_key_for is None else mail_key_for(onion),
        )
        names = tuple(alias_of[r] for r in recipients) if alias_of else ()
        entry = queue.enqueue(
            onion,
            outer_sender,
            recipients,
            inner,
            dsn_to=mail_from if names else "",
            dsn_names=names,
        )
        ids.append(entry.id)
    return ids


class BounceToBox(Maildir):
    """Where the clearnet agent "delivers" a bounce: sealed into the queue for the box.

    The agent hands a DSN to ``sender_maildir(<local part of the alias>)``;
    this stands in for that Maildir. ``deliver`` blocks (the agent calls it
    in a thread) and wakes the box-bound agent through ``wake``.
    """

    def __init__(
        self,
        alias: str,
        *,
        registry: Registry,
        queue: OutboundQueue,
        identity: Identity,
        wake: Callable[[], None],
        mail_key_for: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self.path = queue.directory  # no Maildir of its own
        self.mail_key_for = mail_key_for
        self.alias = alias
        self.registry = registry
        self.queue = queue
        self.identity = identity
        self.wake = wake

    def deliver(self, message: bytes, name: str | None = None, *, seen: bool = False) -> Path:
        if not self.alias:  # a report to a clearnet sender failed: reports are not answered
            log.warning("a report to a clearnet sender could not be delivered; dropped")
            return self.path
        entry = self.registry.get(self.alias)
        if entry is None:
            log.warning("a bounce for an alias that no longer exists was dropped")
            return self.path
        queue_for_boxes(
            self.queue,
            self.identity,
            mail_from="",
            boxes=[entry.box],
            message=message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
            mail_key_for=self.mail_key_for,
        )
        self.wake()
        return self.path


class ClearnetAgent(DeliveryAgent):
    """The delivery agent with one attempt = MX lookup, TLS policy, SMTP to the MX."""

    def __init__(
        self,
        *,
        queue: OutboundQueue,
        identity: Identity,
        settings: DeliverySection,
        sender_maildir: Callable[[str], Maildir],
        policy: TlsPolicy,
        resolver: GatewayResolver,
        local_hostname: str,
        mx_port: int = 25,
        timeouts: SmtpTimeouts | None = None,
        allow_private_mx: bool = False,
        registry: Registry | None = None,
    ) -> None:
        super().__init__(
            queue=queue,
            identity=identity,
            settings=settings,
            socks_address=lambda: ("127.0.0.1", 0),  # unused: the clearnet needs no tor
            socks_timeout=0.0,
            sender_maildir=sender_maildir,
        )
        self.policy = policy
        self.resolver = resolver
        self.local_hostname = local_hostname
        self.mx_port = mx_port
        self.timeouts = timeouts or SmtpTimeouts()
        self.allow_private_mx = allow_private_mx
        self.registry = registry
        """Checked at each attempt: mail of an alias denied or removed since it was queued
        does not go out."""
        self.transport_security: dict[str, str] = {}
        """Queue id -> how the last delivery went (``tls-authenticated`` ...), for tests."""
        self.deliveries_by_tls: collections.Counter[str] = collections.Counter()
        """Deliveries by how the session was protected, for the metrics."""

    async def deliver(self, entry: QueuedMessage) -> tuple[bool, list[str]]:
        """One attempt; returns (False, recipients refused for good). Raises DeliveryError.

        The box's ``Onionmail-Gateway-TLS`` mark is taken off the message here, before
        it leaves; ``plaintext-allowed`` relaxes the default TLS requirement (never
        DANE or MTA-STS) for this message only.
        """
        if self.registry is not None and entry.mail_from:
            alias = entry.mail_from.rsplit("@", 1)[0]
            registration = await asyncio.to_thread(self.registry.get, alias)
            if registration is None or registration.state != APPROVED:
                raise PermanentDeliveryError(
                    "the gateway's operator has withdrawn this alias; the message was not sent"
                )
        try:
            message, plaintext_allowed = take_gateway_tls_mark(entry.message)
        except MessageFormatError as exc:
            raise PermanentDeliveryError(f"the queued message is malformed: {exc}") from None
        preference = (
            RecipientTlsPreference(allow_plaintext=True)
            if plaintext_allowed
            else DEFAULT_PREFERENCE
        )
        try:
            plan = await self.policy.plan(entry.destination, preference)
        except DnsPermanentError as exc:
            raise PermanentDeliveryError(f"no mail host for the domain: {exc}") from None
        except DnsError as exc:
            raise DeliveryError(f"DNS: {exc}") from None
        if not plan.permitted:
            raise DeliveryError("the domain's MTA-STS policy permits none of its MX hosts")
        last = "no MX host had an address"
        refused_private = False
        for decision in plan.permitted:
            try:
                addresses = await self.resolver.addresses(decision.mx_host)
            except (DnsDeferError, DnsPermanentError) as exc:
                last = f"DNS for an MX host: {exc}"
                continue
            usable = [a for a in addresses.addresses if self.allow_private_mx or is_public(a)]
            refused_private = refused_private or len(usable) < len(addresses.addresses)
            for address in usable:
                try:
                    result = await deliver(
                        host=address,
                        port=self.mx_port,
                        decision=decision,
                        sender=entry.mail_from,
                        recipients=entry.recipients,
                        message=message,
                        local_hostname=self.local_hostname,
                        timeouts=self.timeouts,
                    )
                except MxRefused as exc:
                    raise PermanentDeliveryError(str(exc)) from None
                except OutboundDeliveryError as exc:
                    last = str(exc)
                    continue
                self.transport_security[entry.id] = result.transport_security
                while len(self.transport_security) > KEEP_RECENT:  # a long-running gateway
                    del self.transport_security[next(iter(self.transport_security))]
                self.deliveries_by_tls[result.transport_security] += 1
                return False, list(result.refused)
        if refused_private and last == "no MX host had an address":
            raise PermanentDeliveryError(NOT_PUBLIC)
        raise DeliveryError(last)


KEEP_RECENT = 1000
"""Deliveries whose transport security :attr:`ClearnetAgent.transport_security` remembers."""
NOT_PUBLIC = "the domain's mail hosts have no public address; the gateway connects to no other"


def undeliverable_maildir(gateway_dir: Path) -> Callable[[str], Maildir]:
    """Where reports about box-bound mail that could not be delivered are kept."""

    def folder(local_part: str) -> Maildir:
        return Maildir(gateway_dir / "undeliverable")

    return folder
