"""The box's side of the threat model: the policy gate and the ledger, for one box.

It asks :mod:`threat_model` what a path leaks under this box's settings,
refuses what the box's policy forbids (:mod:`onionmail.box.policy`), and writes
what really happened to the ledger (:mod:`onionmail.store.ledger`). The ledger is
bookkeeping for the user, never a condition of delivery: if it cannot be
written, the mail still goes and the failure is logged.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import functools
import logging
from collections.abc import Callable

from onionmail.box.policy import check, predicted_path, route
from onionmail.box.timing import TimingPolicy
from onionmail.config.box import Config
from onionmail.core.errors import AddressError
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.message.rfc5322 import Message, MessageFormatError, parse_message
from onionmail.openpgp.autocrypt import PeerKeyStore
from onionmail.openpgp.clearnet import KnownKeys, peers_path
from onionmail.store.ledger import Ledger, LedgerEntry, ledger_key
from onionmail.store.queue import QueuedMessage
from threat_model import LeakMatrix, MailPath, MessageTraits, ModelConfig, Timing, leaks

log = logging.getLogger(__name__)


def has_attachments(message: Message) -> bool:
    """Whether a reader would see an attachment: a leaf part declared ``attachment`` or
    naming a file (RFC 2183 ``filename``, or the older ``Content-Type`` ``name``).

    A message that is not multipart is judged by its own fields, without parsing its
    body (most mail, and the cost stays off the accept path); a multipart one is walked
    part by part.
    """
    content_type = (message.get("Content-Type") or b"").decode("ascii", "replace").lower()
    if not content_type.strip().startswith("multipart/"):
        return _names_a_file(message.get("Content-Disposition"), content_type)
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message.to_bytes())
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename():
            return True
        if part.get_param("name") is not None:
            return True
    return False


def _names_a_file(disposition: bytes | None, content_type: str) -> bool:
    text = (disposition or b"").decode("ascii", "replace").lower()
    return text.strip().startswith("attachment") or "filename" in text or "name=" in content_type


def message_traits(message: bytes | Message, direction: str) -> MessageTraits:
    """What the model needs to know about this message (:class:`MessageTraits`), from the
    message itself: every field is derived here, none is left at its default."""
    parsed = message if isinstance(message, Message) else _parsed(message)
    return MessageTraits(
        has_attachments=parsed is not None and has_attachments(parsed), direction=direction
    )


def _parsed(message: bytes) -> Message | None:
    try:
        return parse_message(message)
    except MessageFormatError:
        return None


def message_id_of(message: bytes | Message) -> str:
    """The Message-ID without angle brackets, or ``""`` (none, or not a message)."""
    parsed = message if isinstance(message, Message) else _parsed(message)
    value = (parsed.get("Message-ID") if parsed is not None else None) or b""
    return value.decode("ascii", "replace").strip().strip("<>")


def ledger_facts(message: bytes, direction: str) -> tuple[str, MessageTraits]:
    """The Message-ID and the traits of ``message``, its fields parsed once (blocking:
    call it from a worker thread). A message that does not parse has no id and no
    attachments."""
    parsed = _parsed(message)
    if parsed is None:
        return "", MessageTraits(direction=direction)
    return message_id_of(parsed), message_traits(parsed, direction)


# The matrix depends only on these three frozen values; asked for on every
# RCPT, queueing and delivery, it is computed once per combination.
_leaks = functools.lru_cache(maxsize=128)(leaks)


def seal_name(version: int) -> str:
    """How the ledger and the TUI name a seal version: ``v2``, ``sealed-v1``, or none."""
    return {0: "", 1: "sealed-v1", 2: "v2"}.get(version, f"v{version}")


class LeakKeeper:
    """Policy and ledger for the box configured by ``config``."""

    def __init__(
        self,
        config: Config,
        seed: bytes,
        *,
        key_encrypted: bool = False,
        has_openpgp_key: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.key_encrypted = key_encrypted
        if has_openpgp_key is None:
            has_openpgp_key = KnownKeys(PeerKeyStore(peers_path(config.box_dir)))
        self.has_openpgp_key = has_openpgp_key
        """Whether the box holds a clearnet recipient's OpenPGP key (the encrypted path)."""
        self.ledger = Ledger(config.box_dir / "ledger", ledger_key(seed))
        self._timing = TimingPolicy(config.timing)

    def model_config(self, recipient: str = "", *, starttls_enforced: bool = True) -> ModelConfig:
        """The settings the model needs; the timing is the recipient's own if it has one.
        ``starttls_enforced=False``: the gateway may send in clear (``plaintext_allowed``)."""
        timing = self._timing.timing_for(
            recipient.rsplit("@", 1)[-1], [recipient] if recipient else []
        )
        return ModelConfig(
            padding=True,
            timing=Timing(timing.mode),
            starttls_enforced=starttls_enforced,
            # Keeping any client field (User-Agent, X-Mozilla-*...) is a fingerprint again.
            scrubbing=not self.config.scrub.keep_headers,
            key_passphrase=self.key_encrypted,
            sent_copy=self.config.submission.keep_sent,
        )

    def matrix(
        self,
        path: MailPath,
        direction: str = "sent",
        recipient: str = "",
        *,
        starttls_enforced: bool = True,
        traits: MessageTraits | None = None,
    ) -> LeakMatrix:
        """``traits``: the message's (:func:`message_traits`); without a message, one with
        no attachments in ``direction``."""
        config = self.model_config(
            recipient if direction == "sent" else "", starttls_enforced=starttls_enforced
        )
        if traits is None:
            traits = MessageTraits(direction=direction)
        elif traits.direction != direction:
            raise ValueError("the message's traits are for the other direction")
        return _leaks(path, traits, config)

    def plaintext_allowed(self, recipients: tuple[str, ...] | list[str]) -> bool:
        """Whether ``[policy] plaintext_allowed`` covers every one of ``recipients``
        (clearnet ones: an onion-routed recipient never goes through a gateway)."""
        policy = self.config.policy
        return bool(recipients) and all(
            not self._onion_routed(rcpt) and policy.allows_plaintext(rcpt) for rcpt in recipients
        )

    def _starttls_enforced(self, path: MailPath, recipients: tuple[str, ...] | list[str]) -> bool:
        gateway = path in (MailPath.GATEWAY_CLEARNET, MailPath.GATEWAY_CLEARNET_OPENPGP)
        return not (gateway and self.plaintext_allowed(recipients))

    def _onion_routed(self, recipient: str) -> bool:
        """Whether mail to ``recipient`` goes to an onion peer (not through a gateway)."""
        try:
            address = parse_mail_address(recipient)
        except AddressError:
            return False  # not an address any rule routes to an onion
        return not route(address, self.config.onion_mx, None).via_gateway

    def _sent_path(self, destination: str, sealed: bool, openpgp: bool = False) -> MailPath:
        if destination in self.config.gateway.onions:
            return MailPath.GATEWAY_CLEARNET_OPENPGP if openpgp else MailPath.GATEWAY_CLEARNET
        return MailPath.ONION_SEALED if sealed else MailPath.ONION_PLAIN

    def predicted_path(self, recipient: str) -> MailPath:
        """The path a message to ``recipient`` is expected to take (before the peer is known)."""
        onion = self._onion_routed(recipient)
        return predicted_path(onion, openpgp_key=not onion and self.has_openpgp_key(recipient))

    def predicted(self, recipient: str, *, has_attachments: bool = False) -> LeakMatrix:
        """What a message to ``recipient`` would leak, before sending (``leaks --to``)."""
        path = self.predicted_path(recipient)
        enforced = self._starttls_enforced(path, [recipient])
        traits = MessageTraits(has_attachments=has_attachments, direction="sent")
        return self.matrix(path, recipient=recipient, starttls_enforced=enforced, traits=traits)

    def refusal(self, recipient: str, path: MailPath) -> str | None:
        """Why the policy forbids ``path`` to ``recipient`` (rule and leak), or None."""
        enforced = self._starttls_enforced(path, [recipient])
        matrix = self.matrix(path, recipient=recipient, starttls_enforced=enforced)
        found = check(matrix, self.config.policy.rules_for(recipient))
        return str(found[0]) if found else None

    def check_recipient(self, rcpt: MailAddress) -> str | None:
        """The submission-time gate (the path expected before the peer is known)."""
        return self.refusal(str(rcpt), self.predicted_path(str(rcpt)))

    def refuse_plain(self, recipient: str) -> str | None:
        """The delivery-time gate, when the onion peer turned out to be plain SMTP."""
        return self.refusal(recipient, MailPath.ONION_PLAIN)

    def refuse_unencrypted(self, recipient: str) -> str | None:
        """The delivery-time gate when clearnet mail leaves a gateway without OpenPGP."""
        return self.refusal(recipient, MailPath.GATEWAY_CLEARNET)

    async def queued(
        self,
        message_id: str,
        destination: str,
        *,
        openpgp: bool = False,
        recipients: tuple[str, ...] = (),
        traits: MessageTraits | None = None,
    ) -> None:
        """A message just queued, by its Message-ID and traits (:func:`message_id_of`,
        :func:`message_traits`, worked out where the message was stored, off the event
        loop). ``openpgp``: the entry is to leave encrypted (the recipient's key is known)."""
        path = self._sent_path(destination, True, openpgp)
        enforced = self._starttls_enforced(path, recipients)
        await self._record(message_id, destination, "sent", path, "queued", enforced, traits=traits)

    async def delivered(
        self, entry: QueuedMessage, seal_version: int, *, openpgp: bool = False
    ) -> None:
        """``seal_version``: 0 plain, 1 or 2; ``openpgp``: it left the box encrypted
        (PGP/MIME through a gateway)."""
        path = self._sent_path(entry.destination, seal_version > 0, openpgp)
        enforced = self._starttls_enforced(path, entry.recipients)
        message_id, traits = await asyncio.to_thread(ledger_facts, entry.message, "sent")
        await self._record(
            message_id,
            entry.destination,
            "sent",
            path,
            "delivered",
            enforced,
            seal=seal_name(seal_version),
            traits=traits,
        )

    async def received(
        self,
        message_id: str,
        seal_version: int,
        traits: MessageTraits | None = None,
        state: str = "stored",
    ) -> None:
        """A message stored in a Maildir; ``state`` "request" when it went to Requests (a
        stranger's: it learned that this box is online and takes its mail)."""
        path = MailPath.ONION_SEALED if seal_version else MailPath.ONION_PLAIN
        await self._record(
            message_id.strip("<>"),
            "",
            "received",
            path,
            state,
            seal=seal_name(seal_version),
            traits=traits,
        )

    async def received_via_gateway(
        self, message_id: str, traits: MessageTraits | None = None, state: str = "stored"
    ) -> None:
        """Clearnet mail a configured gateway relayed (sealed to this box on arrival)."""
        await self._record(
            message_id.strip("<>"),
            "",
            "received",
            MailPath.CLEARNET_INBOUND,
            state,
            traits=traits,
        )

    async def _record(
        self,
        message_id: str,
        destination: str,
        direction: str,
        path: MailPath,
        state: str,
        starttls_enforced: bool = True,
        seal: str = "",
        traits: MessageTraits | None = None,
    ) -> None:
        # A message split for a gateway (OpenPGP for some recipients, plain for the
        # others) has one ledger entry per path, not one that the last write decides.
        openpgp = path is MailPath.GATEWAY_CLEARNET_OPENPGP
        where = f"{destination} openpgp" if openpgp else destination
        try:
            await asyncio.to_thread(
                self.ledger.record,
                message_ids=[message_id],
                destination=where,
                direction=direction,
                matrix=self.matrix(
                    path,
                    direction,
                    destination,
                    starttls_enforced=starttls_enforced,
                    traits=traits,
                ),
                state=state,
                seal=seal,
                durable=state != "queued",  # a forecast, rewritten once sent
            )
        except (OSError, ValueError) as exc:
            log.error("could not write the leak ledger: %s", type(exc).__name__)

    def find(self, message_id: str) -> list[LedgerEntry]:
        return self.ledger.find(message_id)
