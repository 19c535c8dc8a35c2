"""The box daemon: one identity, its tor, two SMTP servers and the delivery agent.

Start-up order matters for "nothing acknowledged is lost": the queue is
recovered first, the inbound server listens before the onion is published
(so the first peer finds it), and the submission server opens last, when
the box can take responsibility for mail. ``BOXDIR/run/status.json`` tells
``onionmail status`` what the running box is doing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onionmail.admission.gate import Admission
from onionmail.admission.senders import SenderBook, sender_key, senders_key
from onionmail.box.cover_traffic import CoverTraffic
from onionmail.box.delivery import DeliveryAgent, sealed_time
from onionmail.box.inbound import InboundHandler
from onionmail.box.policy import route
from onionmail.box.policy_gate import LeakKeeper, ledger_facts
from onionmail.box.submission import Stored, SubmissionHandler
from onionmail.box.timing import TimingPolicy
from onionmail.config.box import Config, load_config
from onionmail.core.errors import OnionMailError, PermanentDeliveryError
from onionmail.core.files import ensure_private_dir, use_storage_threads, write_private_file
from onionmail.core.mail_address import MailAddress
from onionmail.devices.access import DeviceAccess
from onionmail.gateway_link.protocol import mark_gateway_tls
from onionmail.message.rfc5322 import MessageFormatError
from onionmail.message.scrub import message_id_key
from onionmail.openpgp.clearnet import ClearnetOpenPGP, split_for_gateway
from onionmail.seal.identity import Identity, is_encrypted_identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.smtp.server import ConnectionLimit, server_port, start_smtp_server
from onionmail.store.credentials import Credentials
from onionmail.store.lock import BoxLock
from onionmail.store.maildir import Maildir
from onionmail.store.queue import OutboundQueue, QueuedMessage, count_queue, queue_key
from onionmail.store.replay_cache import ReplayCache
from onionmail.tor.control import BoxTor

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

TOR_CHECK_INTERVAL = 1.0
MAIL_KEY_UPKEEP_INTERVAL = 3600.0
"""Seconds between checks that the box's tor is alive."""
TOR_RETRY_MIN, TOR_RETRY_MAX = 2.0, 60.0
"""Backoff (seconds) between attempts to bring a dead tor back."""


class BoxPaths:
    """Where a box keeps what (all 0700 directories, 0600 files)."""

    def __init__(self, box_dir: Path) -> None:
        self.root = box_dir
        self.identity = box_dir / "keys" / "identity.key"
        self.credentials = box_dir / "keys" / "submission.json"
        self.mail_keys = box_dir / "keys" / "mail-keys"
        self.queue = box_dir / "queue"
        self.mail = box_dir / "mail"
        self.tor = box_dir / "tor"
        self.state = box_dir / "state"
        self.status = box_dir / "run" / "status.json"

    def maildir(self, local_part: str) -> Path:
        return self.mail / local_part


class Box:
    """A running box. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        config: Config,
        identity: Identity,
        *,
        testnet_options: dict[str, Any] | None = None,
        progress: Progress | None = None,
        key_encrypted: bool | None = None,
    ) -> None:
        """``key_encrypted``: whether the identity key is passphrase-protected, which the
        ledger records for someone who seizes the disk; None reads it from the key file."""
        if key_encrypted is None:
            key_file = config.box_dir / "keys" / "identity.key"
            key_encrypted = key_file.exists() and is_encrypted_identity(key_file)
        self.config = config
        self.openpgp = ClearnetOpenPGP(config.box_dir, identity, config.gateway)
        self.leaks = LeakKeeper(
            config,
            identity.seed,
            key_encrypted=key_encrypted,
            has_openpgp_key=self.openpgp.has_key,
        )
        self._encrypted: set[str] = set()
        """Queue ids whose last prepared form was PGP/MIME (the ledger's path on delivery)."""
        self.identity = identity
        self.paths = BoxPaths(config.box_dir)
        self.progress = progress or (lambda _msg: None)
        self.tor = BoxTor(config.tor, self.paths.tor, testnet_options or {})
        self.queue = OutboundQueue(self.paths.queue, queue_key(identity.seed))
        ensure_private_dir(self.paths.mail_keys.parent)
        self.mail_keys = MailKeyring.open(self.paths.mail_keys, identity)
        """The key that opens mail (version 2 seal), certified by the onion key; a box
        made before it gets one here."""
        self.replay_cache: ReplayCache | None = None
        self.senders: SenderBook | None = None
        self._written_to: set[str] = set()
        """Contacts written to or accepted, blocked senders, strangers' counts."""
        self._sent: dict[str, Maildir] = {}
        """Each local part's .Sent folder, made once per run."""
        self.inbound_server: asyncio.Server | None = None
        self.submission_server: asyncio.Server | None = None
        self.agent: DeliveryAgent | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self.submission_port = 0
        self.inbound_port = 0
        self.inbound_handler: InboundHandler | None = None
        self.submission_handler: SubmissionHandler | None = None
        self.started_at = 0.0
        self.state = "stopped"
        self.tor_restarts = 0
        self._lock = BoxLock(config.box_dir)
        self._supervisor: asyncio.Task[None] | None = None
        self.timing = TimingPolicy(config.timing)
        self.cover: CoverTraffic | None = None
        self._cover_task: asyncio.Task[None] | None = None
        self._key_task: asyncio.Task[None] | None = None
        self.devices = DeviceAccess(config.box_dir, identity.seed, config.devices, self.tor)
        """The owner's devices: Dovecot and the device onion (onionmail.devices)."""

    @property
    def onion(self) -> str:
        return self.identity.onion_address

    def address(self, local_part: str) -> str:
        return f"{local_part}@{self.onion}"

    def maildir(self, local_part: str) -> Maildir:
        return Maildir(self.paths.maildir(local_part))

    async def start(self) -> None:
        self._lock.acquire()
        use_storage_threads(asyncio.get_running_loop())
        self.started_at = time.time()
        await self._write_status("starting")
        recovered = await asyncio.to_thread(self.queue.recover)
        if recovered:
            log.info("removed %d half-written queue file(s) left by a crash", recovered)
        for part in self.config.box.local_parts:
            await asyncio.to_thread(self.maildir(part).clean_tmp, 0)
        ensure_private_dir(self.paths.state)
        self.replay_cache = ReplayCache(self.paths.state / "replay.sqlite")
        await asyncio.to_thread(self._upkeep_mail_keys)
        await self._start_inbound()
        await self.tor.start(self._tor_progress)
        await self._write_status("publishing")
        await self.tor.publish(self.identity, self.inbound_port, self.progress)
        if self.config.gateway.registrations:
            try:  # made once, for the aliases; slow only the first time (key generation)
                await asyncio.to_thread(self.openpgp.box_key)
            except OnionMailError as exc:
                # Onion mail still works; clearnet mail bounces with this reason.
                log.warning("the box's OpenPGP key is unusable: %s", exc)
                self.progress(f"warning: the box's OpenPGP key is unusable: {exc}")
        self._start_agent()
        self._start_cover()
        await self._start_submission()
        await self.devices.start(self.submission_port)
        await self._write_status("running")
        self._supervisor = asyncio.create_task(self._supervise_tor())
        self._key_task = asyncio.create_task(self._mail_key_upkeep())
        self.progress(f"box running: {self.onion}")

    def _upkeep_mail_keys(self) -> None:
        """Renew the mail key's certificate when due; erase retired keys whose time is up."""
        now = time.time()
        if self.mail_keys.renew_if_due(now=now):
            log.info("renewed the mail key's certificate")
        erased = self.mail_keys.erase_due(now=now)
        if erased:
            log.info("erased %d retired mail key(s)", erased)

    async def _mail_key_upkeep(self) -> None:
        while True:
            await asyncio.sleep(MAIL_KEY_UPKEEP_INTERVAL)
            try:
                await asyncio.to_thread(self._upkeep_mail_keys)
            except (OSError, OnionMailError) as exc:
                log.error("mail key upkeep failed: %s", exc)

    async def flush(self) -> int:
        """Retry every queued message now; returns how many were waiting."""
        return await self.agent.flush() if self.agent is not None else 0

    async def _supervise_tor(self) -> None:
        """Notice when tor dies or restarts under the box; bring it back and republish.

        Mail keeps being accepted and queued meanwhile (deliveries fail and are
        retried); once the onion is back, the whole queue is retried at once.
        """
        delay = TOR_RETRY_MIN
        while True:
            await asyncio.sleep(TOR_CHECK_INTERVAL)
            if self.tor.alive():
                continue
            log.warning("tor is gone; restarting it and republishing the onion")
            self.progress("tor is gone; restarting it")
            await self._write_status("tor restarting")
            try:
                await self.tor.restart(self.identity, self.inbound_port, self.progress)
            except OnionMailError as exc:
                log.warning("tor is not back yet (%s); next try in %.0f s", exc, delay)
                await self._write_status("tor down")
                await asyncio.sleep(delay)
                delay = min(TOR_RETRY_MAX, delay * 2)
                continue
            delay = TOR_RETRY_MIN
            self.tor_restarts += 1
            await self.devices.refresh()
            await self._write_status("running")
            self.progress("tor is back; retrying the queue")
            await self.flush()

    async def reload_devices(self) -> None:
        """On SIGHUP (``onionmail device add/revoke``): apply the device list, then say so
        in the status, which the command waits for."""
        await self.devices.refresh()
        await self._write_status(self.state)

    def _tor_progress(self, message: str) -> None:
        self.progress(message)

    async def _start_inbound(self) -> None:
        settings = self.config.inbound
        self.inbound_handler = InboundHandler(
            identity=self.identity,
            local_parts=self.config.box.local_parts,
            mail_root=self.paths.mail,
            replay_cache=self._replay(),
            max_recipients=settings.max_recipients,
            require_seal_for_onion_senders=settings.require_seal_for_onion_senders,
            gateways=self.config.gateway.onions,
            max_message_size=settings.max_message_size,
            mail_keys=self.mail_keys,
            accept_v1=settings.accept_seal_v1,
        )
        self.inbound_handler.on_stored = self.leaks.received
        self.inbound_handler.on_gateway_stored = self.leaks.received_via_gateway
        self.inbound_handler.gateway_mail_filter = self.openpgp.incoming
        box_dir = self.config.box_dir
        self.inbound_handler.refresh_gateways = lambda: load_config(box_dir).gateway.onions
        self.senders = SenderBook(
            self.paths.state / "senders.sqlite", senders_key(self.identity.seed)
        )
        self.inbound_handler.admission = Admission(
            settings,
            box_dir,
            self.senders,
            refuse_strangers="never-from-strangers" in self.config.policy.rules,
        )
        # Shared by both servers; inbound starts first (see start()).
        self.connections_total = ConnectionLimit(
            "all SMTP servers", self.config.box.max_connections_total
        )
        self.inbound_server = await start_smtp_server(
            self.inbound_handler,
            "127.0.0.1",
            0,
            name="inbound",
            chunking=True,  # BDAT: the express path of onionmail senders
            connections_total=self.connections_total,
            hostname=self.onion,
            data_size_limit=_encoded_size(settings.max_message_size),
            **settings.listener_options(),
        )
        self.inbound_port = server_port(self.inbound_server)

    def _replay(self) -> ReplayCache:
        if self.replay_cache is None:
            raise OnionMailError("replay cache not open")
        return self.replay_cache

    def _start_agent(self) -> None:
        self.agent = DeliveryAgent(
            queue=self.queue,
            identity=self.identity,
            settings=self.config.delivery,
            socks_address=lambda: self.tor.socks_address,
            socks_timeout=self.config.tor.socks_timeout,
            sender_maildir=self.maildir,
            date_rounding=self.config.scrub.date_rounding,
            mail_keys=self.mail_keys,
        )
        self.agent.plain_refusal = self.leaks.refuse_plain
        self.agent.on_path = self._delivered
        self.agent.prepare = self._prepare_outgoing
        self._agent_task = asyncio.create_task(self.agent.run())

    async def _start_submission(self) -> None:
        settings = self.config.submission
        handler = SubmissionHandler(
            onion=self.onion,
            local_parts=self.config.box.local_parts,
            credentials=Credentials(self.paths.credentials),
            device_passwords=self.devices.check_password,
            store=self.store_submission,
            max_recipients=settings.max_recipients,
            check_recipient=self.leaks.check_recipient,
            route=self.route,
            scrub=self.config.scrub,
            message_id_key=message_id_key(self.identity.seed),
        )
        self.submission_handler = handler
        self.submission_server = await start_smtp_server(
            handler,
            settings.host,
            settings.port,
            name="submission",
            connections_total=self.connections_total,
            hostname="localhost",
            data_size_limit=settings.max_message_size,
            auth_required=True,
            auth_require_tls=False,
            authenticator=handler.authenticator,
            **settings.listener_options(),
        )
        self.submission_port = server_port(self.submission_server)

    async def submit(
        self, sender: MailAddress, recipients: list[MailAddress], message: bytes
    ) -> list[str]:
        """Queue ``message`` durably, one entry per destination onion; returns queue ids.

        :meth:`store_submission` in a worker thread, then its bookkeeping: what
        the submission server does after scrubbing, for callers on the loop.
        """
        stored = await asyncio.to_thread(self.store_submission, sender, recipients, message)
        if stored.then is not None:
            await stored.then()
        return stored.ids

    def store_submission(
        self, sender: MailAddress, recipients: list[MailAddress], message: bytes
    ) -> Stored:
        """Queue a scrubbed message; blocking (the submission server's worker thread).

        One entry per destination onion (and, through a gateway, per recipient
        whose OpenPGP key the box holds: :meth:`_entries`). If one cannot be
        stored, those already stored are withdrawn before the error goes on:
        the client is told that nothing was accepted. The ledger and the
        delivery agent hear of the entries on the event loop (``then``).
        """
        by_onion: dict[str, list[str]] = {}
        for rcpt in recipients:
            onion = self.route(rcpt)
            if onion is None:  # submission refused it at RCPT; never reached
                raise OnionMailError("a recipient has no route (no gateway configured)")
            by_onion.setdefault(onion, []).append(str(rcpt))
        queued: list[tuple[QueuedMessage, bool]] = []
        try:
            for onion, rcpts in by_onion.items():
                for group, openpgp in self._entries(onion, rcpts):
                    first_try = self.timing.first_try(onion, list(group))
                    entry = self.queue.enqueue(
                        onion, str(sender), group, message, next_try=first_try
                    )
                    queued.append((entry, openpgp))
        except OnionMailError:
            for entry, _ in queued:
                try:
                    self.queue.remove(entry.id)
                except OSError as exc:
                    log.error("could not withdraw a queue entry: %s", exc.strerror)
            raise
        message_id, traits = ledger_facts(message, "sent")
        for rcpt in recipients:  # written to: a contact, whose mail goes to INBOX
            key = sender_key(rcpt)
            if self.senders is not None and key not in self._written_to:
                self.senders.know(key, "wrote-to")  # once per run: it is a disk write
                self._written_to.add(key)

        async def then() -> None:
            await asyncio.to_thread(self._file_sent, sender, message)
            for entry, openpgp in queued:
                await self.leaks.queued(
                    message_id,
                    entry.destination,
                    openpgp=openpgp,
                    recipients=entry.recipients,
                    traits=traits,
                )
            if self.agent is not None:
                for entry, _ in queued:
                    self.agent.offer(entry.first_state())

        return Stored([entry.id for entry, _ in queued], then)

    def _file_sent(self, sender: MailAddress, message: bytes) -> None:
        """The copy in the sender's ``.Sent``, read (``[submission] keep_sent``), after the
        ``250``: the queue holds the durable copy. A failure is logged; the mail still goes."""
        if not self.config.submission.keep_sent:
            return
        if sender.local_part not in self.config.box.local_parts:
            return
        data = message.replace(b"\r\n", b"\n")
        try:
            folder = self._sent.get(sender.local_part)
            if folder is None:  # made (or checked) once per run, not at every message
                folder = Maildir(self.paths.maildir(sender.local_part) / ".Sent")
                self._sent[sender.local_part] = folder
            try:
                folder.deliver(data, seen=True)
            except FileNotFoundError:  # the folder was removed while the box ran
                self._sent[sender.local_part] = folder = Maildir(folder.path)
                folder.deliver(data, seen=True)
        except OSError as exc:
            log.error("could not file the copy in .Sent: %s", exc.strerror)

    def _entries(self, onion: str, rcpts: list[str]) -> list[tuple[tuple[str, ...], bool]]:
        """Queue entries for one destination: ``(recipients, to be encrypted?)``.

        Through a gateway, each recipient whose OpenPGP key the box holds gets
        an entry of its own (:func:`~onionmail.openpgp.clearnet.split_for_gateway`);
        the message is encrypted when it leaves, not here (:meth:`_prepare_outgoing`).
        """
        if onion not in self.config.gateway.onions:
            return [(tuple(rcpts), False)]
        return split_for_gateway(rcpts, self.openpgp.has_key)

    async def _prepare_outgoing(self, entry: QueuedMessage) -> QueuedMessage:
        """The delivery agent's last step for clearnet mail: alias, Autocrypt, OpenPGP.

        Done here, at each attempt and in a worker thread, rather than before
        ``250`` (see :mod:`onionmail.openpgp.clearnet`). Plain mail to a
        recipient whose policy needs the encrypted path (its key was removed
        since submission) bounces, never leaves in clear.
        """
        if entry.destination not in self.config.gateway.onions:
            return entry
        try:
            out = await asyncio.to_thread(
                self.openpgp.prepare,
                entry.message,
                mail_from=entry.mail_from,
                recipients=entry.recipients,
                destination=entry.destination,
                signed_at=datetime.fromtimestamp(
                    sealed_time(entry, self.config.scrub.date_rounding), UTC
                ),
            )
        except OnionMailError as exc:  # an unusable key, a malformed message
            raise PermanentDeliveryError(
                f"cannot prepare the message for the gateway: {exc}"
            ) from None
        except Exception as exc:  # pgpy on input it does not handle: bounce, never loop
            log.error("could not encrypt a queued message: %s", type(exc).__name__)
            raise PermanentDeliveryError(
                f"cannot encrypt the message for the gateway ({type(exc).__name__})"
            ) from exc
        if out.encrypted:
            self._encrypted.add(entry.id)
        else:
            self._encrypted.discard(entry.id)
            for rcpt in entry.recipients:
                reason = self.leaks.refuse_unencrypted(rcpt)
                if reason is not None:
                    raise PermanentDeliveryError(
                        f"no usable OpenPGP key for a recipient; refused by {reason}"
                    )
        # The user's [policy] plaintext_allowed, for every recipient of the entry: the
        # gateway may then send it without TLS (the ledger records that path).
        allowed = self.leaks.plaintext_allowed(entry.recipients)
        try:
            message = mark_gateway_tls(out.message, plaintext_allowed=allowed)
        except MessageFormatError as exc:
            raise PermanentDeliveryError(
                f"cannot prepare the message for the gateway: {exc}"
            ) from None
        return dataclasses.replace(entry, message=message)

    async def _delivered(self, entry: QueuedMessage, seal_version: int) -> None:
        openpgp = entry.id in self._encrypted
        self._encrypted.discard(entry.id)
        await self.leaks.delivered(entry, seal_version, openpgp=openpgp)

    def route(self, rcpt: MailAddress) -> str | None:
        """The onion a message to ``rcpt`` goes to, or None (:func:`onionmail.box.policy.route`)."""
        config = self.config
        return route(rcpt, config.onion_mx, config.gateway.sending_gateway).destination

    def _start_cover(self) -> None:
        contacts = self.timing.cover_contacts
        if not contacts:
            return
        self.cover = CoverTraffic(contacts=contacts, policy=self.timing, send=self.send_cover)
        self._cover_task = asyncio.create_task(self.cover.run())

    async def send_cover(self, contact: MailAddress) -> str | None:
        """Queue one dummy envelope to ``contact``; its queue id, or None when skipped.

        Skipped while an earlier dummy to the same onion waits for a retry (the
        contact is unreachable): dummies must not pile up in the queue.
        """
        states = await asyncio.to_thread(self.queue.states)
        if any(s.cover and s.attempts and s.destination == contact.domain for s in states):
            return None
        rcpts = (str(contact),)
        entry = await asyncio.to_thread(
            self.queue.enqueue,
            contact.domain,
            self.address(self.config.box.local_parts[0]),
            rcpts,
            b"",
            next_try=self.timing.first_try(contact.domain, rcpts),
            cover=True,
        )
        if self.agent is not None:
            self.agent.wake()
        return entry.id

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "onion": self.onion,
            "addresses": [self.address(p) for p in self.config.box.local_parts],
            "submission": f"{self.config.submission.host}:{self.submission_port}",
            "tor": self.tor.status(),
            "queue_length": count_queue(self.paths.queue),
            "started_at": self.started_at,
            "tor_restarts": self.tor_restarts,
            "devices": self.devices.status(),
        }

    async def _write_status(self, state: str) -> None:
        self.state = state
        await asyncio.to_thread(self._write_status_file, state)

    def _write_status_file(self, state: str) -> None:
        # In a worker thread: status() counts the queue on disk.
        ensure_private_dir(self.paths.status.parent)
        data = {"state": state, "updated_at": time.time(), **self.status()}
        write_private_file(self.paths.status, json.dumps(data, indent=1).encode(), durable=False)

    async def stop(self) -> None:
        if not self._lock.held:
            return  # never started (another run holds the box): touch nothing
        for task in (self._supervisor, self._key_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._cover_task is not None:
            self._cover_task.cancel()
            await asyncio.gather(self._cover_task, return_exceptions=True)
        if self.submission_server is not None:
            self.submission_server.close()
        if self.submission_handler is not None:
            await self.submission_handler.drain()  # a hung-up client's message, still queueing
        if self.agent is not None:
            await self.agent.stop()
        if self._agent_task is not None:
            self._agent_task.cancel()
            await asyncio.gather(self._agent_task, return_exceptions=True)
        if self.inbound_server is not None:
            self.inbound_server.close()
        if self.inbound_handler is not None:
            await self.inbound_handler.drain()  # stored and recorded before the cache closes
        await self.devices.stop()
        await self.tor.stop()
        if self.replay_cache is not None:
            self.replay_cache.close()
        if self.senders is not None:
            self.senders.close()
        await self._write_status("stopped")
        self._lock.release()


def _encoded_size(limit: int) -> int:
    """DATA limit for sealed mail: base64 (4/3) with CRLF every 76 chars, plus padding slack."""
    return int(limit * 1.45) + 65536
