"""The inbound server behind the onion's virtual port 25.

Accepts mail only for local parts this box hosts at its own onion (anything
else is ``550``: no relaying), and delivers to ``BOXDIR/mail/<local part>``.

Two kinds of peer:

* another onionmail box sees the seal keywords in the greeting (the first
  message of the handshake seal, a fresh challenge) and sends a sealed
  envelope as DATA. The seal must complete the handshake with a mail key
  the MAIL FROM onion certifies (or, version 1 from an older box, open
  with the key derived from that onion) — else ``550``: a forged sender —
  bind this session's challenge and the SMTP sender and recipients (else
  ``550``: a replayed or redirected capture), and carry an envelope id not
  delivered before (a retry after a lost ``250`` is answered ``250`` and
  stored once);
* a plain SMTP peer (a Postfix reaching the onion through tor, OnionMX
  style) sends an ordinary message. It is delivered marked unverified —
  except when it claims a ``.onion`` sender, which a real onionmail box
  would have sealed, so it is refused as unverifiable (configurable).

A sealed envelope whose flags say cover traffic (a dummy, see
:mod:`onionmail.box.cover_traffic`) passes every check a message passes (seal,
binding, freshness, replay cache), is answered with the same ``250`` and
recorded in the replay cache, and is then dropped: nothing reaches a
Maildir. Nothing before the opened seal tells a dummy from mail.

A configured clearnet gateway (``[gateway]``) is the one onion whose mail
need not come *from* its own address: its outer envelope holds an inner one
that the gateway sealed to this box when the clearnet message arrived
(:mod:`onionmail.gateway_link.protocol`); the message inside may name any
clearnet sender (never an onion one: that sender could seal for itself) and
is marked ``onionmail=gateway``. Any other onion sending a clearnet From is
refused, as before. Such mail also passes the box's OpenPGP step
(``gateway_mail_filter``: Autocrypt keys learned, PGP/MIME decrypted, see
:mod:`onionmail.openpgp.clearnet`) before it is stored.

Each delivered message gets ``Return-Path`` and an ``Authentication-Results``
field (RFC 8601 style, authserv-id = this box's onion) saying which of the
two it was; such fields from the peer that claim this authserv-id are removed.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from onionmail.admission import REQUESTS
from onionmail.admission.gate import Admission
from onionmail.admission.stamps import RCPT_PARAM
from onionmail.box.policy_gate import message_traits
from onionmail.core.errors import (
    AddressError,
    EnvelopeError,
    OnionMailError,
    ReplayError,
    SealError,
)
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.gateway_link.protocol import (
    GATEWAY_SENDER_LOCAL_PART,
    QUARANTINE_FIELD,
    check_relayed_from,
    open_from_gateway,
)
from onionmail.message.header_claims import claimed_onions, remove_results_claiming
from onionmail.message.rfc5322 import Message, MessageFormatError, parse_message
from onionmail.seal.envelope import (
    ANONYMOUS_MAGIC,
    EXPRESS,
    SealedContent,
    decode_from_smtp,
    format_seal_keyword,
    open_envelope,
    verify_binding,
)
from onionmail.seal.handshake import HEADER as V2_HEADER
from onionmail.seal.handshake import SEAL2_KEYWORD, ReceiverSession, open_in_session
from onionmail.seal.handshake import VERSION as HANDSHAKE_VERSION
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.smtp.server import NULL_SENDER, SafeHandler
from onionmail.store.maildir import Maildir, new_message_name
from onionmail.store.replay_cache import ReplayCache
from threat_model import MessageTraits

log = logging.getLogger(__name__)

JUNK = ".Junk"
"""The Maildir++ folder of a local part that quarantined mail goes to."""

SEALED_MAGIC_B64 = b"T01TR"  # base64 of the envelope magic b"OMSE" begins so


async def open_sealed(
    identity: Identity, envelope: Any, data: bytes, session: Any, *, accept_v1: bool = True
) -> SealedContent | str:
    """A sealed DATA opened for ``identity`` and held to its SMTP session, or the ``550``.

    Version 2 (:mod:`onionmail.seal.handshake`) must complete the handshake
    the session's greeting began, with a mail key certified by the sender's
    onion; version 1 must open with the key of the sender's onion, and is
    refused unless ``accept_v1``. Either way the sealed envelope must name
    the session's sender, recipients and challenge, within the accepted time
    window (else the sender is forged, or the envelope replayed or
    redirected). The box's inbound server and the gateway's onion side both
    receive this way.
    """
    try:
        sender = parse_mail_address(envelope.mail_from)
        sender.onion_public_key()
    except AddressError:
        return "550 5.7.1 A sealed envelope needs a .onion sender to verify"
    challenge = getattr(session, "onionmail_challenge", None)
    receiver = getattr(session, "onionmail_seal2", None)
    try:
        if challenge is None:
            raise EnvelopeError("no seal was announced in this session")
        content = await asyncio.to_thread(
            _open_envelope, identity, receiver, data, sender.domain, accept_v1
        )
        verify_binding(
            content,
            mail_from=envelope.mail_from,
            recipients=envelope.rcpt_tos,
            session_challenge=challenge,
            now=time.time(),
        )
    except SealError:
        log.warning("refused a sealed envelope that does not open with the sender's key")
        return "550 5.7.1 The seal does not open with the sender's onion key: forged sender"
    except (ReplayError, EnvelopeError) as exc:
        log.warning("refused a sealed envelope: %s", type(exc).__name__)
        return f"550 5.7.1 Envelope refused: {exc}"
    return content


def _open_envelope(
    identity: Identity,
    receiver: ReceiverSession | None,
    data: bytes,
    sender_onion: str,
    accept_v1: bool,
) -> SealedContent:
    """Decode and open a sealed DATA: both a pass over the whole message, in a worker thread."""
    raw = decode_from_smtp(data)
    if raw.startswith(V2_HEADER):
        if receiver is None:
            raise EnvelopeError("a version 2 seal needs the handshake this session did not offer")
        return open_in_session(
            raw,
            session=receiver,
            sender_onion=sender_onion,
            recipient_onion=identity.onion_address,
            now=time.time(),
        )
    if not accept_v1:
        raise EnvelopeError(
            "this box no longer accepts version 1 seals (no forward secrecy); "
            "the sending box needs updating"
        )
    return open_envelope(raw, recipient=identity, sender_onion=sender_onion)


def announce_seals(handler_keys: MailKeyring | None, session: Any) -> list[str]:
    """The seal keywords for this session (the greeting's and EHLO's): version 2 first.

    Makes the session's challenge and, with a keyring, its handshake state
    (a fresh ephemeral key) once; later calls announce the same.
    """
    if getattr(session, "onionmail_challenge", None) is None:
        session.onionmail_challenge = secrets.token_bytes(16)
    words = [format_seal_keyword(session.onionmail_challenge)]
    if handler_keys is not None:
        if getattr(session, "onionmail_seal2", None) is None:
            handler_keys.refresh()  # a rotation by `onionmail keys rotate` takes effect
            session.onionmail_seal2 = ReceiverSession.start(handler_keys)
        words.insert(0, f"{SEAL2_KEYWORD} {session.onionmail_seal2.announcement()}")
    return words


class InboundHandler(SafeHandler):
    """aiosmtpd hooks of the inbound onion server."""

    RCPT_PARAMETERS = frozenset({RCPT_PARAM})
    """``POW=<stamp>``: a stranger's proof of work (:mod:`onionmail.admission.stamps`)."""

    def __init__(
        self,
        *,
        identity: Identity,
        local_parts: tuple[str, ...],
        mail_root: Path,
        replay_cache: ReplayCache,
        max_recipients: int,
        require_seal_for_onion_senders: bool = True,
        gateways: frozenset[str] = frozenset(),
        max_message_size: int | None = None,
        mail_keys: MailKeyring | None = None,
        accept_v1: bool = True,
    ) -> None:
        self.identity = identity
        self.mail_keys = mail_keys
        """The box's mail keys: without them only version 1 seals are offered."""
        self.accept_v1 = accept_v1
        self.onion = identity.onion_address
        self.local_parts = local_parts
        self.mail_root = mail_root
        self.replay_cache = replay_cache
        self.max_recipients = max_recipients
        self.require_seal = require_seal_for_onion_senders
        self.max_message_size = max_message_size
        """Largest plain message stored (the listener's DATA limit is sized for sealed
        mail, base64 and padding included, and so is larger)."""
        self.gateways = gateways
        """Onions of the configured gateways: their sealed mail may carry clearnet senders."""
        self.refresh_gateways: Callable[[], frozenset[str]] | None = None
        """Reads the configured gateways again (blocking): called when a gateway this box
        does not know sends relayed mail, as one does between a registration and the
        restart that would have read it."""
        self.on_gateway_stored: Callable[[str, MessageTraits, str], Awaitable[None]] | None = None
        """Called with the Message-ID and the message's traits after mail relayed by a
        gateway is durable (ledger)."""
        self.gateway_mail_filter: Callable[[bytes], bytes] | None = None
        """Run in a worker thread on mail a gateway relayed, before it is checked and
        stored (the box's OpenPGP step: Autocrypt, decryption); must not raise for
        what the message holds (:mod:`onionmail.openpgp.clearnet`)."""
        self._maildirs: dict[str, Maildir] = {}
        self._in_flight: dict[bytes, tuple[asyncio.Lock, int]] = {}
        """Envelope ids being stored right now: a retry that arrives while the first
        session is still storing (a sender killed and restarted mid-session) waits
        for it, then finds the id recorded, instead of storing a second copy."""
        self.delivered = 0
        self.cover_received = 0
        """Dummy envelopes (cover traffic) opened and dropped."""
        self.admission: Admission | None = None
        """Who may write and where it lands (contacts, Requests, stamps, limits)."""
        self.on_stored: Callable[[str, int, MessageTraits, str], Awaitable[None]] | None = None
        """Called with (Message-ID, seal version: 0 unsealed, 1 or 2, the message's traits)
        after a message is durable (the box's ledger)."""

    def maildir(self, local_part: str) -> Maildir:
        if local_part not in self._maildirs:
            self._maildirs[local_part] = Maildir(self.mail_root / local_part)
        return self._maildirs[local_part]

    def greeting(self, session: Any) -> str:
        """The banner's last words: the session's seals (challenge, handshake), at once.

        A sender that sees them may pipeline EHLO, MAIL, RCPT and ``BDAT ... LAST``
        with the sealed envelope in one write (:mod:`onionmail.smtp.client`):
        one round trip over the onion circuit instead of three, the handshake
        included. EHLO announces the same.
        """
        return " ".join([*announce_seals(self.mail_keys, session), EXPRESS])

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        seals = [f"250-{words}" for words in announce_seals(self.mail_keys, session)]
        if self.admission is not None and self.admission.cost.bits:
            seals.append(f"250-{self.admission.cost.announcement()}")
        # PIPELINING (RFC 2920): commands are read and answered strictly in order.
        return [*responses[:-1], *seals, "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return self.accept_sender(envelope, address, options)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        rcpt = self.next_recipient(envelope, address, self.max_recipients)
        if isinstance(rcpt, str):
            return rcpt
        if rcpt.domain != self.onion:
            return "550 5.7.1 Relaying denied: this box accepts mail only for its own onion"
        if rcpt.local_part not in self.local_parts:
            return "550 5.1.1 No such mailbox here"
        sender_onion = envelope.mail_from.rpartition("@")[2].lower()
        if self.admission is not None and sender_onion not in self.gateways:
            # (a configured gateway's mail is sorted at DATA, by its clearnet sender)
            stamp = next(
                (o.partition("=")[2].lower() for o in options if o.startswith(RCPT_PARAM + "=")),
                None,
            )
            refusal = await asyncio.to_thread(
                self.admission.at_rcpt,
                envelope.mail_from,
                str(rcpt),
                stamp,
                getattr(session, "onionmail_challenge", None),
            )
            if refusal is not None and not refusal.startswith("2"):
                # A refused stranger waits: a flood of RCPTs costs it time, not our CPU.
                await asyncio.sleep(self.admission.settings.stranger_refusal_delay)
                return refusal
            if refusal is not None:  # taken, and the sender told its stamp paid
                self.add_recipient(envelope, rcpt)
                return refusal
        return self.add_recipient(envelope, rcpt)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await self.finish(self._receive(session, envelope))

    async def _receive(self, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content
        challenge = getattr(session, "onionmail_challenge", None)
        if challenge is not None and data.startswith(SEALED_MAGIC_B64):
            return await self._receive_sealed(session, envelope, data)
        return await self._receive_plain(envelope, data)

    async def _receive_sealed(self, session: Any, envelope: Any, data: bytes) -> str:
        content = await open_sealed(
            self.identity, envelope, data, session, accept_v1=self.accept_v1
        )
        if isinstance(content, str):
            return content
        sender = parse_mail_address(content.mail_from)
        key = content.envelope_id
        lock, users = self._in_flight.get(key, (asyncio.Lock(), 0))
        self._in_flight[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._store_sealed(envelope, content, sender)
        finally:
            lock, users = self._in_flight[key]
            if users == 1:
                del self._in_flight[key]
            else:
                self._in_flight[key] = (lock, users - 1)

    async def _store_sealed(
        self, envelope: Any, content: SealedContent, sender: MailAddress
    ) -> str:
        if await asyncio.to_thread(self.replay_cache.seen, content.envelope_id):
            log.info("duplicate envelope (a retry): acknowledged, not stored again")
            return "250 2.0.0 Already delivered"
        if content.cover:
            # Cover traffic: answered like mail, remembered like mail (a retry or a
            # replay is handled the same way), stored nowhere. DEBUG only: the log
            # must not sort dummies from mail for whoever reads it.
            await asyncio.to_thread(self.replay_cache.record, content.envelope_id, content.created)
            self.cover_received += 1
            log.debug("a cover envelope: recorded against replays, dropped")
            return "250 2.0.0 Delivered (sealed)"
        if sender.domain not in self.gateways and _relayed(sender, content):
            if sender.domain not in await self._gateways_now():
                # Temporary: the gateway keeps it and retries; a registration this box
                # has not read yet is the likely cause, and a 5xx would lose the mail.
                log.warning("relayed mail from a gateway this box has no registration with")
                return "450 4.7.0 This box has no registration with your gateway (yet)"
        if sender.domain in self.gateways:
            return await self._store_from_gateway(envelope, content, sender)
        try:
            message = parse_message(content.message)
            _check_from_matches(message, sender)
        except MessageFormatError as exc:
            return f"554 5.6.0 Malformed message inside the envelope: {exc}"
        if content.seal_version == HANDSHAKE_VERSION:
            result = "pass (sealed v2: a handshake with the mail key the sender's onion certifies)"
        else:
            result = "pass (sealed-v1: opened with the sender's onion key; no forward secrecy)"
        stored_as = await self._begin(content)
        folder = await self._folder_for(str(sender))
        await self._deliver(
            message,
            envelope,
            sender=str(sender),
            result=result,
            name=stored_as,
            seal_version=content.seal_version,
            folder=folder,
        )
        await asyncio.to_thread(self.replay_cache.record, content.envelope_id, content.created)
        return "250 2.0.0 Delivered (sealed)"

    async def _gateways_now(self) -> frozenset[str]:
        if self.refresh_gateways is not None:
            try:
                self.gateways = await asyncio.to_thread(self.refresh_gateways)
            except OnionMailError as exc:  # an edit in progress: the gateways as they were
                log.warning("could not read the configured gateways again: %s", exc)
        return self.gateways

    async def _store_from_gateway(
        self, envelope: Any, content: SealedContent, gateway: MailAddress
    ) -> str:
        try:
            inner = await asyncio.to_thread(
                open_from_gateway,
                content.message,
                box=self.identity,
                gateway_onion=gateway.domain,
                recipients=tuple(envelope.rcpt_tos),
                mail_keys=self.mail_keys,
            )
            message = parse_message(inner.message)
            check_relayed_from(message, gateway.domain)
            if self.gateway_mail_filter is not None:
                # checked again after: the protected From of a decrypted message
                data = await asyncio.to_thread(self.gateway_mail_filter, inner.message)
                message = parse_message(data)
                check_relayed_from(message, gateway.domain)
        except EnvelopeError as exc:
            log.warning("refused mail from a gateway: %s", type(exc).__name__)
            return f"550 5.7.1 Refused mail from the gateway: {exc}"
        except MessageFormatError as exc:
            return f"554 5.6.0 Malformed message from the gateway: {exc}"
        result = (
            f"gateway (clearnet mail relayed by {gateway.domain}; "
            "the clearnet sender is not verified by this box)"
        )
        refusal, folder = await self._admit_at_data(inner.mail_from)
        if refusal is not None:
            return refusal
        if message.get(QUARANTINE_FIELD) is not None:  # the gateway's, inside its seal
            folder = JUNK
        stored_as = await self._begin(content)
        await self._deliver(
            message, envelope, sender=inner.mail_from, result=result, name=stored_as, folder=folder
        )
        await asyncio.to_thread(self.replay_cache.record, content.envelope_id, content.created)
        return "250 2.0.0 Delivered (sealed, via gateway)"

    async def _receive_plain(self, envelope: Any, data: bytes) -> str:
        limit = self.max_message_size
        if limit is not None and len(data) > limit:
            return f"552 5.3.4 Message too big for this box (at most {limit} bytes)"
        sender = "" if envelope.mail_from == NULL_SENDER else envelope.mail_from
        if sender and self.require_seal:
            if parse_mail_address(sender).is_onion:
                return (
                    "550 5.7.1 Mail from a .onion sender must be sealed; an unsealed "
                    "claim cannot be verified and is refused"
                )
        try:
            message = parse_message(data)
        except MessageFormatError as exc:
            return f"554 5.6.0 Malformed message: {exc}"
        if self.require_seal and claimed_onions(message):
            return (
                "550 5.7.1 An unsealed message may not name a .onion sender in From or "
                "Sender: that claim cannot be verified and is refused"
            )
        refusal, folder = await self._admit_at_data(sender)
        if refusal is not None:
            return refusal
        result = "none (plain SMTP peer; sender not verified)"
        await self._deliver(message, envelope, sender=sender, result=result, folder=folder)
        return "250 2.0.0 Delivered"

    async def _folder_for(self, sender: str) -> str:
        if self.admission is None:
            return ""
        return await asyncio.to_thread(self.admission.folder_for, sender)

    async def _admit_at_data(self, sender: str) -> tuple[str | None, str]:
        """A sender known only at DATA (gateway, plain peer): refusal, or the folder."""
        if self.admission is None:
            return None, ""
        return await asyncio.to_thread(self.admission.at_data, sender)

    async def _begin(self, content: SealedContent) -> tuple[str, bool]:
        """The Maildir name this envelope is stored under, and whether an attempt that
        did not reach :meth:`ReplayCache.record` (a crash) began with it already."""
        return await asyncio.to_thread(
            self.replay_cache.begin, content.envelope_id, content.created, new_message_name()
        )

    async def _deliver(
        self,
        message: Message,
        envelope: Any,
        *,
        sender: str,
        result: str,
        name: tuple[str, bool] | None = None,
        seal_version: int = 0,
        folder: str = "",
    ) -> None:
        """Store ``message`` for the envelope's recipients, in their INBOX or ``folder``
        (``.Requests``: a stranger's; ``.Junk``: mail a gateway marked for quarantine)."""
        message.remove("Return-Path")
        remove_results_claiming(message, self.onion)  # RFC 8601 5: only ours may say so
        mailfrom = f" smtp.mailfrom={sender}" if sender else ""
        message.prepend(
            "Authentication-Results", f"{self.onion}; onionmail={result}{mailfrom}".encode()
        )
        message.prepend("Return-Path", f"<{sender}>".encode())
        sub = "/" + folder if folder else ""
        folders = [self.maildir(rcpt.rsplit("@", 1)[0] + sub) for rcpt in envelope.rcpt_tos]
        traits = await asyncio.to_thread(_store_in, folders, message, name)
        if self.admission is not None:
            await asyncio.to_thread(self.admission.stored, sender)
        self.delivered += 1
        log.info("delivered a message to %d local mailbox(es)", len(envelope.rcpt_tos))
        message_id = (message.get("Message-ID") or b"").decode("ascii", "replace").strip()
        state = "request" if folder == REQUESTS else "stored"  # the ledger: a stranger's
        if result.startswith("gateway"):
            if self.on_gateway_stored is not None:
                await self.on_gateway_stored(message_id, traits, state)
        elif self.on_stored is not None:
            await self.on_stored(message_id, seal_version, traits, state)


def _store_in(
    folders: list[Maildir], message: Message, name: tuple[str, bool] | None = None
) -> MessageTraits:
    """Serialize once (LF line ends, a pass over the whole body) and store in each folder;
    the message's traits for the ledger (:func:`message_traits`), in the same worker call.

    ``name``: (the file name, whether an interrupted attempt began with it);
    after such an attempt a folder that already holds the file is skipped, so
    the sender's retry stores nothing twice. In a worker thread: neither the
    pass nor the fsyncs hold up the event loop.
    """
    stored = message.to_bytes(newline=b"\n")
    file_name, resumed = name if name is not None else (None, False)
    for folder in folders:
        if resumed and file_name is not None and folder.holds(file_name):
            log.info("a retry found its message stored before a crash: not stored again")
            continue
        folder.deliver(stored, file_name)
    return message_traits(message, "received")


def _check_from_matches(message: Message, sender: MailAddress) -> None:
    values = message.get_all("From")
    if len(values) != 1:
        raise MessageFormatError("a sealed message needs exactly one From field")
    addresses = email.utils.getaddresses([values[0].decode("utf-8", errors="replace")])
    try:
        named = parse_mail_address(addresses[0][1]) if len(addresses) == 1 else None
    except AddressError:
        named = None
    if named != sender:
        raise MessageFormatError("the From field does not match the sealed sender")
    if claimed_onions(message) - {sender.domain}:
        raise MessageFormatError("a sender field names another .onion than the sealed sender")


def _relayed(sender: MailAddress, content: SealedContent) -> bool:
    """Whether ``content`` is what a gateway relays: from its ``gateway@`` sender, an
    inner envelope sealed to this box (never a message in clear)."""
    return sender.local_part == GATEWAY_SENDER_LOCAL_PART and content.message.startswith(
        ANONYMOUS_MAGIC
    )
