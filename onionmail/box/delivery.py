"""The delivery agent: drains the outbound queue over tor, with retries and bounces.

For each due message: take a session kept open from an earlier delivery to
the same destination, or open a tor stream to ``<destination>:25`` (SOCKS
credentials of its own per destination, so its own circuit) and speak ESMTP
as ``localhost`` (the EHLO name says nothing about this machine); then

* if the peer announces :data:`SEAL_KEYWORD`, seal the message to the peer's
  key, binding this session's challenge and the recipients, and send it as
  DATA (sealed again for the recipients the peer accepted, if it refused some);
* otherwise send the scrubbed message as ordinary SMTP (a plain onion peer).

MAIL, RCPT and DATA are pipelined where the peer announces PIPELINING, and
the session stays open
:data:`~onionmail.smtp.peer_pool.KEEP_IDLE` seconds for the next message
(:mod:`onionmail.smtp.client`: round trips are what an onion delivery costs).
Many messages to one peer share its sessions, several transactions in
flight on each where the peer allows (:mod:`onionmail.smtp.peer_pool`).

Outcomes: ``2xx`` removes the message from the queue; a tor or network
failure, a timeout or ``4xx`` schedules a retry (exponential backoff with
jitter, ``[delivery] retry_initial`` .. ``retry_max``); ``5xx`` or a
permanent tor error, or a message older than ``max_lifetime``, bounces: a
delivery status notification goes to the sender's own Maildir and the
message leaves the queue. Logs name queue ids and SMTP codes, never
addresses.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from onionmail.admission.stamps import PAID, RCPT_PARAM, StampCost, make_stamp
from onionmail.config.box import DeliverySection
from onionmail.core.errors import DeliveryError, OnionMailError, PermanentDeliveryError, QueueError
from onionmail.core.redaction import redact
from onionmail.message.dsn import build_dsn
from onionmail.seal.envelope import (
    ENVELOPE_VERSION,
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.handshake import SEAL2_KEYWORD, parse_announcement, seal_in_session
from onionmail.seal.handshake import VERSION as HANDSHAKE_VERSION
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.smtp.client import PeerSession, PeerSilent, ProtocolFailure
from onionmail.smtp.peer_pool import PeerSessions
from onionmail.store.maildir import Maildir
from onionmail.store.queue import OutboundQueue, QueuedMessage, QueueState, scan_due
from onionmail.tor.socks import new_isolation_token, open_tor_stream

log = logging.getLogger(__name__)

EHLO_NAME = "localhost"
MAX_PARALLEL = 8
"""Messages of any size being delivered at once (each is in memory while it is)."""
MAX_IN_FLIGHT = 32
"""Messages being delivered at once, counting those past :data:`MAX_PARALLEL`, which
must be small (:data:`SMALL_MESSAGE`): what pipelining to one peer needs in flight,
while the memory a backlog of large messages takes stays bounded."""
SMALL_MESSAGE = 256 * 1024
"""Queue file size up to which a message may take one of the slots past MAX_PARALLEL."""
SCAN_BATCH = 256
"""Due entries one pass over the queue hands the agent, at most."""


STAMPING = "computing proof of work: the recipient's box does not know this one yet"
"""The queue's note while a stamp is made (shown by ``onionmail queue`` and the TUI)."""


def sealed_time(entry: QueuedMessage, rounding: int) -> int:
    """The ``created`` an envelope tells its recipient: when the message was let go (its
    first try under a delay or batch policy, else when it was queued), rounded down to
    ``rounding`` seconds as submission rounds ``Date``. The exact second, or the moment
    the user pressed "send" under a delay policy, would tell more than the message does."""
    release = max(entry.created, entry.first_try)
    return int(release // rounding * rounding)


@dataclass(frozen=True)
class DeliveryReport:
    """What one successful delivery looked like (for the demo and tests)."""

    queue_id: str
    destination: str
    sealed: bool
    seconds: float
    refused: tuple[str, ...] = ()
    seal_version: int = 0
    """0 plain, 1 the static-key seal (an older peer), 2 the handshake seal."""


class DeliveryAgent:
    """Runs as one task of the box; ``wake()`` after enqueueing to skip the wait."""

    def __init__(
        self,
        *,
        queue: OutboundQueue,
        identity: Identity,
        settings: DeliverySection,
        socks_address: Callable[[], tuple[str, int]],
        socks_timeout: float,
        sender_maildir: Callable[[str], Maildir],
        clock: Callable[[], float] = time.time,
        date_rounding: int = 1,
        mail_keys: MailKeyring | None = None,
    ) -> None:
        self.queue = queue
        self.identity = identity
        self.mail_keys = mail_keys
        """This box's mail keys: a peer that offers the handshake seal gets it (else v1)."""
        self.on_peer_certificate: Callable[[str, bytes], None] | None = None
        """Called (in a worker thread) with a peer's onion and the mail key certificate
        its greeting showed, checked (the gateway keeps the boxes' keys this way)."""
        self.settings = settings
        self.socks_address = socks_address
        self.socks_timeout = socks_timeout
        self.sender_maildir = sender_maildir
        self.clock = clock
        self.date_rounding = date_rounding
        """Seconds the sealed ``created`` is rounded down to (``[scrub] date_rounding``)."""
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.reports: list[DeliveryReport] = []
        self.on_delivered: Callable[[DeliveryReport], None] | None = None
        self.plain_refusal: Callable[[str], str | None] | None = None
        """The policy gate for a peer that turned out plain: a reason to refuse, or None."""
        self.on_path: Callable[[QueuedMessage, int], Awaitable[None]] | None = None
        """Called with (message, seal version, 0 if plain) once a peer accepted it (the
        box's ledger)."""
        self.prepare: Callable[[QueuedMessage], Awaitable[QueuedMessage]] | None = None
        """Turns a loaded message into the form it is sent in, at each attempt (the box's
        clearnet step: alias and OpenPGP); a PermanentDeliveryError bounces the message."""
        self.report_failure: (
            Callable[[QueuedMessage, str, tuple[str, ...]], Awaitable[bool]] | None
        ) = None
        """Reports a message (or some of its recipients) that failed for good in its own
        way, True if it did (a gateway's report to a clearnet sender); else, or when it
        returns False, the report goes to ``sender_maildir``."""
        self._stopping = False
        self._isolation: dict[str, str] = {}
        self.stamp_costs: dict[str, StampCost] = {}
        """Destinations that asked this box for proof of work, and their cost."""
        self.sessions = PeerSessions(self._open_session)
        self._large: set[str] = set()
        """Due messages too large for the slots past MAX_PARALLEL: they wait for one below."""
        self._due: list[QueueState] = []
        """Due entries from the last pass over the queue (or offered), not yet started."""
        self._more_due = False
        self._next_due: float | None = None
        self._rescan = True
        self._scanning = False
        self._offered: list[QueueState] = []

    def wake(self) -> None:
        """Read the whole queue again (a flush, tor back, changes made by someone else)."""
        self._rescan = True
        self._wake.set()

    def offer(self, state: QueueState) -> None:
        """A message just queued: start it when due, without reading the queue again.

        Submissions call this instead of :meth:`wake`, so that accepting mail
        while thousands wait (tor down) costs no pass over the queue each time.
        """
        if self._scanning:
            self._offered.append(state)  # merged into the pass's result when it ends
        elif state.next_try <= self.clock():
            if len(self._due) < SCAN_BATCH:
                self._due.append(state)
            else:
                self._more_due = True
        else:
            self._note_next(state.next_try)
        self._wake.set()

    def _note_next(self, when: float) -> None:
        if self._next_due is None or when < self._next_due:
            self._next_due = when

    async def flush(self) -> int:
        """Make every queued message due now (``queue flush``, tor back); returns how many."""
        count = await asyncio.to_thread(self.queue.reschedule_all, self.clock())
        self.wake()
        return count

    async def run(self) -> None:
        """Loop forever: start due deliveries, sleep until the next is due or woken.

        The queue is read in passes (:func:`~onionmail.store.queue.scan_due`)
        that keep at most :data:`SCAN_BATCH` due entries in memory; a pass
        happens at start, on :meth:`wake`, when the next try time comes, and
        when the batch is used up while more were due. At most MAX_PARALLEL
        attempts exist at a time: a backlog (tor down, peer offline) stays on
        disk, not in memory as waiting tasks. Each attempt that ends wakes
        this loop.
        """
        self._stopping = False
        self.sessions.closing = False
        self._rescan = True
        while not self._stopping:
            self._wake.clear()
            now = self.clock()
            due_time = self._next_due is not None and self._next_due <= now
            if self._rescan or (not self._due and (self._more_due or due_time)):
                self._rescan = False
                self._scanning = True
                try:
                    scan = await asyncio.to_thread(
                        scan_due, self.queue.directory, now, SCAN_BATCH, set(self._in_flight)
                    )
                except OSError as exc:
                    # Never let the agent die: a queue it cannot read now is retried.
                    log.error("cannot read the queue (%s); retrying in 5 s", exc)
                    self._rescan = True
                    await asyncio.sleep(5)
                    continue
                finally:
                    self._scanning = False
                self._due, self._more_due, self._next_due = scan.due, scan.more_due, scan.next_due
                offered, self._offered = self._offered, []
                seen = {state.id for state in self._due}
                for state in offered:
                    if state.id not in seen:
                        self.offer(state)
            while self._due and len(self._in_flight) < MAX_IN_FLIGHT:
                small_only = len(self._in_flight) >= MAX_PARALLEL
                index = next(
                    (
                        i
                        for i, s in enumerate(self._due)
                        if not small_only or s.id not in self._large
                    ),
                    None,
                )
                if index is None:
                    break  # only large messages are due: they wait for a slot below MAX_PARALLEL
                state = self._due.pop(index)
                if state.id not in self._in_flight:
                    self._start(state, small_only)
            wait = 3600.0 if self._next_due is None else max(0.05, self._next_due - self.clock())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races with the event being set (gh-86296),
            # which would leave stop() waiting forever.
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _start(self, state: QueueState, small_only: bool = False) -> None:
        if self._stopping:
            return
        self._in_flight.add(state.id)
        task = asyncio.create_task(self._attempt(state, small_only))
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            # Here, not in the attempt's ``finally``: the loop must not start
            # the next attempt while this task still exists (MAX_PARALLEL).
            self._tasks.discard(task)
            self._in_flight.discard(state.id)
            self._wake.set()

        task.add_done_callback(done)

    async def stop(self) -> None:
        """Cancel attempts in flight (their messages stay queued); ``run()`` then returns."""
        self._stopping = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sessions.close_all()

    def _load(self, queue_id: str, small_only: bool) -> QueuedMessage | None:
        """The entry (in a worker thread); None when only a small one may be loaded and
        this one is not."""
        if small_only and self.queue.size(queue_id) > SMALL_MESSAGE:
            return None
        return self.queue.load(queue_id)

    async def _attempt(self, state: QueueState, small_only: bool = False) -> None:
        if not small_only:
            self._large.discard(state.id)
        try:
            loaded = await asyncio.to_thread(self._load, state.id, small_only)
        except QueueError as exc:
            if exc.errno == errno.ENOENT:
                return  # delivered by an attempt that finished after the listing

            where = await asyncio.to_thread(self.queue.quarantine, state.id)
            log.error("queue %s: unreadable (%s); moved to %s", state.id, exc, where.parent)
            return
        if loaded is None:  # too large for this slot: it waits for one below MAX_PARALLEL
            self._large.add(state.id)
            self._due.insert(0, state)
            return
        entry = loaded
        started = time.monotonic()
        sent = entry  # what goes out; bounces quote ``entry``, the message as queued
        try:
            if self.prepare is not None and not entry.cover:
                sent = await self.prepare(entry)
            seal_version, refused = await self.deliver(sent)
        except PermanentDeliveryError as exc:
            if entry.cover:  # a contact refusing dummies is misconfigured: say so
                await self._drop_cover(entry, f"refused: {exc}", logging.WARNING)
                return
            log.warning("queue %s: permanent failure: %s", entry.id, redact(str(exc)))
            await self._bounce(entry, str(exc))
            return
        except DeliveryError as exc:
            cost = None if entry.cover else StampCost.from_text(str(exc))
            if cost is not None and self.stamp_costs.get(entry.destination) != cost:
                # A stranger to that box: pay its proof of work and try again at once.
                self.stamp_costs[entry.destination] = cost
                log.info("queue %s: the recipient asks for proof of work; computing it", entry.id)
                state = await asyncio.to_thread(
                    self.queue.record_failure, state, STAMPING, self.clock()
                )
                await self._attempt(state, small_only)
                return
            await self._retry_or_bounce(entry, state, str(exc))
            return
        if entry.cover:
            # Logged at INFO like mail (the log must not sort dummies from mail).
            log.info("queue %s: delivered (sealed) in %.2f s", entry.id, time.monotonic() - started)
            log.debug("queue %s: that was a cover envelope", entry.id)
            await asyncio.to_thread(self.queue.remove, entry.id)
            return
        report = DeliveryReport(
            entry.id,
            entry.destination,
            seal_version > 0,
            time.monotonic() - started,
            tuple(refused),
            seal_version,
        )
        log.info(
            "queue %s: delivered (%s) in %.2f s",
            entry.id,
            "sealed" if seal_version else "plain",
            report.seconds,
        )
        if refused:
            await self._bounce(entry, "recipient refused by the peer", only=tuple(refused))
        if self.on_path is not None:
            await self.on_path(entry, seal_version)
        await asyncio.to_thread(self.queue.remove, entry.id)
        self.reports.append(report)
        if self.on_delivered is not None:
            self.on_delivered(report)

    async def _retry_or_bounce(self, entry: QueuedMessage, state: QueueState, error: str) -> None:
        now = self.clock()
        if now - entry.created > self.settings.max_lifetime:
            if entry.cover:
                await self._drop_cover(entry, f"gave up after {state.attempts + 1} attempts")
                return
            await self._bounce(entry, f"gave up after {state.attempts + 1} attempts: {error}")
            return
        delay = min(self.settings.retry_max, self.settings.retry_initial * 2**state.attempts)
        delay *= random.uniform(0.5, 1.5)
        log.info(
            "queue %s: attempt %d failed (%s); retry in %.0f s",
            entry.id,
            state.attempts + 1,
            redact(error),
            delay,
        )
        await asyncio.to_thread(self.queue.record_failure, state, error, now + delay)
        self._note_next(now + delay)

    async def _drop_cover(self, entry: QueuedMessage, why: str, level: int = logging.DEBUG) -> None:
        """A dummy (cover traffic) that failed leaves the queue and never bounces.

        DEBUG by default, as the log must not sort dummies from mail; a refusal is
        a WARNING all the same: a contact that refuses dummies is a configuration
        error the user has to see.
        """
        hint = "; check [timing] cover_contacts" if level >= logging.WARNING else ""
        log.log(level, "queue %s: cover envelope dropped (%s)%s", entry.id, redact(why), hint)
        await asyncio.to_thread(self.queue.remove, entry.id)

    async def _bounce(self, entry: QueuedMessage, reason: str, only: tuple[str, ...] = ()) -> None:
        recipients = only or entry.recipients
        if self.report_failure is not None and await self.report_failure(entry, reason, recipients):
            if not only:
                await asyncio.to_thread(self.queue.remove, entry.id)
            return
        dsn = build_dsn(
            box_onion=self.identity.onion_address,
            sender=entry.mail_from,
            recipients=recipients,
            original=entry.message,
            reason=reason,
        )
        local_part = entry.mail_from.rsplit("@", 1)[0]
        await asyncio.to_thread(self.sender_maildir(local_part).deliver, dsn)
        if not only:
            await asyncio.to_thread(self.queue.remove, entry.id)

    async def deliver(self, entry: QueuedMessage) -> tuple[int, list[str]]:
        """One attempt: (seal version, 0 if plain; recipients refused), or DeliveryError.

        On a session kept from an earlier message or shared with messages in flight
        (:class:`~onionmail.smtp.peer_pool.PeerSessions`); if that one turns out to be
        gone (the peer timed it out, another transaction on it broke it), on a new one."""
        session, kept = await self.sessions.take(entry.destination)
        try:
            return await self._carry(session, entry)
        except ProtocolFailure:
            # Data that went out before the session broke may have been stored:
            # sent again at once only when sealed (the peer drops the duplicate).
            sealed = SEAL_KEYWORD in session.extensions
            if not kept or (session.data_sent and not sealed):
                raise
            log.debug("a kept or shared session was gone; opening a new one")
        finally:
            self.sessions.release(entry.destination, session)
        session = await self.sessions.open(entry.destination)
        try:
            return await self._carry(session, entry)
        finally:
            self.sessions.release(entry.destination, session)

    async def _carry(self, session: PeerSession, entry: QueuedMessage) -> tuple[int, list[str]]:
        """:meth:`_transaction`. A peer gone silent (unlike one that closed) may sit behind a
        circuit lost without a word, where new streams hang too: its sessions are dropped
        and the next one takes a new circuit (so too in :meth:`_open_session`)."""
        try:
            return await self._transaction(session, entry)
        except ProtocolFailure:
            if session.silent:
                self._isolation.pop(entry.destination, None)
                self.sessions.forget(entry.destination)
            raise

    async def _open_session(self, destination: str) -> PeerSession:
        sock, timeout = await self.connect(destination), self.settings.smtp_timeout
        try:
            return await PeerSession.open(sock, ehlo_name=EHLO_NAME, timeout=timeout)
        except PeerSilent:  # no greeting: as in _carry
            self._isolation.pop(destination, None)
            raise

    async def connect(self, destination: str) -> socket.socket:
        """A tor stream to ``destination:25`` on the destination's own circuit."""
        host, port = self.socks_address()
        token = self._isolation.setdefault(destination, new_isolation_token())
        try:
            return await open_tor_stream(
                host, port, destination, 25, timeout=self.socks_timeout, isolation=token
            )
        except DeliveryError:
            self._isolation.pop(destination, None)  # next attempt: a new circuit
            raise

    async def _transaction(
        self, session: PeerSession, entry: QueuedMessage
    ) -> tuple[int, list[str]]:
        try:
            return await self._send(session, entry)
        except BaseException as exc:
            # A refusal read in full leaves a pipelining session in step for the
            # transactions that share it; anything else ends the session.
            in_step = isinstance(exc, DeliveryError) and not isinstance(exc, ProtocolFailure)
            if not (in_step and session.pipelines and session.usable):
                session.close()
            raise

    async def _send(self, session: PeerSession, entry: QueuedMessage) -> tuple[int, list[str]]:
        params = session.extensions.get(SEAL_KEYWORD.upper())
        handshake = session.extensions.get(SEAL2_KEYWORD.upper())
        if self.mail_keys is None:
            handshake = None  # a sender without mail keys seals as version 1
        if params is None and entry.cover:
            # A plain peer would store a dummy as mail: not even MAIL FROM.
            raise PermanentDeliveryError("the peer does not seal: no cover traffic to it")
        if params is None and self.plain_refusal is not None:
            for rcpt in entry.recipients:
                reason = self.plain_refusal(rcpt)
                if reason is not None:
                    # Checked right after EHLO, before MAIL FROM: not even the
                    # envelope reaches a peer the policy forbids. Never a silent fallback.
                    raise PermanentDeliveryError(
                        "the peer is a plain SMTP server, not an onionmail box; "
                        f"refused by {reason}"
                    )
        # A sealed envelope is base64 (7-bit). A plain message with 8-bit bytes
        # is declared as such where the peer supports 8BITMIME (RFC 6152);
        # a peer without it gets it as is, as most MTAs accept.
        eight_bit = params is None and not entry.message.isascii()
        options = ("BODY=8BITMIME",) if eight_bit and session.supports("8BITMIME") else ()

        async def payload_for(accepted: tuple[str, ...]) -> bytes:
            if params is None:
                return entry.message
            # crypto_box over up to tens of MB: off the event loop
            return await asyncio.to_thread(self._seal, entry, params, handshake, list(accepted))

        # Sealed for every recipient before the envelope goes, so that the
        # data can follow the pipelined MAIL/RCPT/DATA without a pause; sealed
        # again only if the peer refused some of them.
        prepared = await payload_for(entry.recipients)
        stamps = await self._stamps(entry, params)
        refused = await session.send(
            entry.mail_from,
            entry.recipients,
            payload_for,
            mail_options=options,
            prepared=prepared,
            rcpt_options=stamps,
        )
        if stamps and not any(PAID in r.text for r in session.rcpt_replies):
            # the recipient's box knows this one now (accepted, or written to): no more stamps
            self.stamp_costs.pop(entry.destination, None)
        if params is None:
            return 0, refused
        return (HANDSHAKE_VERSION if handshake is not None else ENVELOPE_VERSION), refused

    def forget_peer(self, destination: str) -> None:
        """Close the sessions kept for ``destination`` and drop its circuit.

        The next delivery there builds a new circuit (``bench/onion.py``'s cold
        case; also what a failed attempt does).
        """
        self._isolation.pop(destination, None)
        self.sessions.forget(destination)

    async def _stamps(self, entry: QueuedMessage, params: str | None) -> dict[str, tuple[str, ...]]:
        """``POW=`` stamps for this session when the destination asked this box for them
        (a ``450 4.7.0`` naming the cost): one per recipient, in a worker thread."""
        cost = self.stamp_costs.get(entry.destination)
        if cost is None or params is None or entry.cover:
            return {}
        challenge = parse_seal_keyword_params(params)
        log.info("queue %s: making %d proof-of-work stamp(s)", entry.id, len(entry.recipients))

        def make_all() -> dict[str, tuple[str, ...]]:
            return {
                rcpt: (
                    f"{RCPT_PARAM}="
                    + make_stamp(cost, recipient=rcpt, sender=entry.mail_from, challenge=challenge),
                )
                for rcpt in entry.recipients
            }

        return await asyncio.to_thread(make_all)

    def _seal(
        self, entry: QueuedMessage, params: str, handshake: str | None, accepted: list[str]
    ) -> bytes:
        """The envelope for this session: the handshake seal when the peer offers it."""
        try:
            challenge = parse_seal_keyword_params(params)
            announcement = (
                None
                if handshake is None
                else parse_announcement(handshake, entry.destination, self.clock())
            )
        except OnionMailError as exc:
            raise DeliveryError(f"peer's seal announcement is unusable: {exc}") from None
        if announcement is not None and self.on_peer_certificate is not None:
            self.on_peer_certificate(entry.destination, announcement.certificate.encode())
        content = SealedContent(
            envelope_id=entry.envelope_id,
            created=sealed_time(entry, self.date_rounding),
            session_challenge=challenge,
            mail_from=entry.mail_from,
            recipients=tuple(accepted),
            message=entry.message,
            cover=entry.cover,
        )
        if announcement is not None and self.mail_keys is not None:
            self.mail_keys.refresh()  # `onionmail keys rotate` ran meanwhile?
            envelope = seal_in_session(
                content,
                keyring=self.mail_keys,
                announcement=announcement,
                sender_onion=self.identity.onion_address,
                recipient_onion=entry.destination,
            )
        else:
            envelope = seal(content, sender=self.identity, recipient_onion=entry.destination)
        return encode_for_smtp(envelope)
