"""The submission server: the user's own mail client hands mail to the box here.

Loopback only, AUTH required (PLAIN or LOGIN; no TLS because the socket
never leaves the machine), and a client may send only as the local part it
authenticated as. Each message is scrubbed (:mod:`onionmail.message.scrub`),
split per destination onion and queued durably before ``250``.
Non-onion recipients are accepted only when the box has a route for them
(``route``: a ``[gateway]`` or an ``[onion_mx]`` entry); otherwise they are
refused at RCPT with a reason: nothing is silently dropped or sent some other way.

After DATA, scrubbing, parsing and storing (``store``, the box's queue) run
in one worker thread, one hop: they are the CPU and disk work of a
submission, and on the event loop they held up every other session. What
runs afterwards (the ``.Sent`` copy, the box's ledger, waking its delivery
agent) comes back as :attr:`Stored.then`, run after the ``250``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from onionmail.config.box import ScrubSection
from onionmail.core.errors import AddressError, OnionMailError
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.core.redaction import redact
from onionmail.message.rfc5322 import MessageFormatError
from onionmail.message.scrub import DEFAULT_SCRUB, SenderMismatchError, scrub_submission
from onionmail.smtp.server import SafeHandler
from onionmail.store.credentials import Credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stored:
    """What ``store`` did with a message: its queue ids, and what is left for the event loop."""

    ids: list[str]
    then: Callable[[], Coroutine[Any, Any, None]] | None = None
    """Bookkeeping on the event loop once stored (the ``.Sent`` copy, the ledger's
    forecast, waking the delivery agent), run after the ``250``: what the ``250`` promises
    is the queue's fsynced entry, and the next transaction overlaps it (None: nothing)."""


Store = Callable[[MailAddress, list[MailAddress], bytes], Stored]
"""``store(sender, recipients, scrubbed message)``: queue it durably, one entry per destination.

Blocking: called in a worker thread, right after scrubbing. Raises
:class:`~onionmail.core.errors.OnionMailError` when the message was not stored
(and then nothing of it may stay queued: the client is told to retry)."""


class SubmissionHandler(SafeHandler):
    """aiosmtpd hooks of the submission server."""

    def __init__(
        self,
        *,
        onion: str,
        local_parts: tuple[str, ...],
        credentials: Credentials,
        store: Store,
        device_passwords: Callable[[str, bytes], bool] | None = None,
        max_recipients: int,
        check_recipient: Callable[[MailAddress], str | None] | None = None,
        route: Callable[[MailAddress], str | None] | None = None,
        scrub: ScrubSection = DEFAULT_SCRUB,
        message_id_key: bytes | None = None,
    ) -> None:
        self.onion = onion
        self.local_parts = local_parts
        self.credentials = credentials
        self.device_passwords = device_passwords
        """Also accepted: a device's password, for the local part it reads (onionmail.devices)."""
        self.store = store
        self.max_recipients = max_recipients
        self.check_recipient = check_recipient
        """The policy gate: a reason to refuse mail to this recipient, or None."""
        self.route = route
        """The onion a recipient's mail goes to (a gateway for clearnet ones), or None."""
        self.scrub = scrub
        """What to remove and rewrite in each message ([scrub] in onionmail.toml)."""
        self.message_id_key = message_id_key
        """Key of the deterministic Message-ID rewriting (:mod:`onionmail.message.scrub`);
        None: random."""

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", errors="replace").lower()
        if user.endswith("@" + self.onion):
            user = user.rsplit("@", 1)[0]
        password = auth_data.password
        devices = self.device_passwords
        ok = user in self.local_parts and (
            self.credentials.check(user, password)
            or (devices is not None and devices(user, password))
        )
        if ok:
            session.onionmail_user = user
        log.info("submission AUTH %s", "accepted" if ok else "refused")
        return AuthResult(success=ok, handled=False)

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        user = getattr(session, "onionmail_user", None)
        if user is None:  # aiosmtpd's auth_required answers first; defence in depth
            return "530 5.7.0 Authentication required"
        try:
            sender = parse_mail_address(address)
        except AddressError as exc:
            return f"553 5.1.7 Bad sender address: {exc}"
        if sender != MailAddress(user, self.onion):
            return f"553 5.7.1 You may send only as {user}@{self.onion}"
        return self.accept_sender(envelope, str(sender), options)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        rcpt = self.next_recipient(envelope, address, self.max_recipients)
        if isinstance(rcpt, str):
            return rcpt
        refusal = self.check_recipient(rcpt) if self.check_recipient is not None else None
        if refusal is not None:
            return f"550 5.7.1 Refused by {refusal}"
        if not rcpt.is_onion and (self.route is None or self.route(rcpt) is None):
            return (
                "550 5.7.1 Only .onion recipients can be reached: clearnet delivery needs "
                "a gateway, and none is configured"
            )
        try:
            if rcpt.is_onion:
                rcpt.onion_public_key()
        except AddressError as exc:
            return f"553 5.1.2 Bad onion address: {exc}"
        return self.add_recipient(envelope, rcpt, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return await self.finish(self._queue(envelope))

    async def _queue(self, envelope: Any) -> str:
        # The envelope is read here, on the loop; the thread gets plain values.
        outcome = await asyncio.to_thread(
            self._scrub_and_store,
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.original_content,
        )
        if isinstance(outcome, str):
            return outcome
        if outcome.then is not None:
            await self.after(outcome.then())
        log.info("submission queued %d message(s)", len(outcome.ids))
        return f"250 2.0.0 Queued as {' '.join(outcome.ids)}"

    def _scrub_and_store(self, mail_from: str, rcpt_tos: list[str], content: bytes) -> Stored | str:
        """Runs in a worker thread: the stored message, or the reply refusing it."""
        sender = parse_mail_address(mail_from)
        try:
            message, _ = scrub_submission(
                content,
                sender=sender,
                settings=self.scrub,
                message_id_key=self.message_id_key,
            )
        except MessageFormatError as exc:
            return f"554 5.6.0 Malformed message: {exc}"
        except SenderMismatchError as exc:
            return f"550 5.7.1 {exc}"
        recipients = [parse_mail_address(r) for r in rcpt_tos]
        try:
            return self.store(sender, recipients, message)
        except OnionMailError as exc:
            log.error("could not queue a submitted message: %s", redact(str(exc)))
            return "451 4.3.0 Could not store the message; nothing was accepted, try again"
