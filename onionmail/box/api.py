"""The box's public library API over its directory: the one door for the TUI and other clients.

It works on ``BOXDIR`` whether or not the box runs, and touches nothing
behind the box's back. It reads the Maildir, the queue's clear headers, the
run status, the ledger (with the identity key), the config (``[gateway]``
re-read on every call) and the correspondents' OpenPGP fingerprints. Its
answers are the box's own: the route (:func:`onionmail.box.policy.route`),
the leak forecast and policy gate (:mod:`onionmail.box.forecast`). Its
writes are ones the box supports: "retry now" (as ``queue flush``, then
SIGUSR1), "cancel" (moved to ``queue/cancelled``, kept), the address book
(``contacts.toml``, which only this module touches), and sending through
the submission server with AUTH, like any mail client, so scrubbing, the
policy gate and the durable queue all apply.

Every method blocks (file I/O, SMTP): a UI calls them from a worker thread.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import email.utils
import json
import os
import signal
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onionmail.box.stored_mail import (
    Arrival,
    ArrivalKind,
    Attachment,
    MailFolders,
    MessageSummary,
    MessageView,
    OpenPGPResult,
    openpgp_result,
    text,
)
from onionmail.config.box import CONFIG_NAME, Config, load_config
from onionmail.core.errors import AddressError, ConfigError, OnionMailError, QueueError
from onionmail.core.files import ensure_private_dir, fsync_dir, write_private_file
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.message.header_claims import authserv_id
from onionmail.seal.identity import Identity, is_encrypted_identity, load_identity
from onionmail.store.contacts import AddressBook
from onionmail.store.lock import running_pid
from onionmail.store.maildir import (
    Maildir,
    checked_key,
    move_message,
    set_flags,
)

if TYPE_CHECKING:  # the rest is imported where it is used: a client that only lists mail
    # (the TUI's first screen) does not load OpenPGP, SMTP, the policy or the forecast
    from onionmail.admission.requests import Requests
    from onionmail.box.forecast import PathOption, Prediction
    from onionmail.box.policy_gate import LeakKeeper
    from onionmail.devices.manage import DeviceManager
    from onionmail.message.compose import Draft
    from onionmail.openpgp.autocrypt import PeerKeyStore
    from onionmail.store.ledger import LedgerEntry
    from onionmail.store.queue import QueueState

__all__ = [
    "Arrival",
    "ArrivalKind",
    "Attachment",
    "BoxApi",
    "BoxStatus",
    "Contact",
    "GatewayRegistration",
    "KnownKey",
    "MessageSummary",
    "MessageView",
    "OpenPGPResult",
    "openpgp_result",
]

SUBMISSION_TIMEOUT = 60.0
"""Seconds a send through the submission server may take before it is reported as failed."""


@dataclass(frozen=True)
class Contact:
    petname: str
    address: str
    openpgp_key: str = ""
    """Fingerprint of the OpenPGP key the box holds for ``address``, or ``""``."""


@dataclass(frozen=True)
class KnownKey:
    """A correspondent's OpenPGP key in the box's key store (``keys/openpgp-peers.json``)."""

    address: str
    fingerprint: str
    source: str
    """``autocrypt`` (learned from their mail) or ``manual`` (imported by hand, pinned)."""
    last_seen: int
    """Unix time of the newest message seen from the address (or of the import)."""


@dataclass(frozen=True)
class GatewayRegistration:
    """One ``[gateway]`` entry of ``onionmail.toml``: a gateway and this box's alias there.

    Whether the gateway's operator has approved the alias is not knowable from
    the box: ``onionmail gateway register`` writes the entry on "registered"
    and on "pending" alike, and approval happens on the gateway, which never
    tells the box. Until then the gateway refuses mail for the alias.
    """

    gateway: str
    """The gateway's onion host."""
    alias: str
    """This box's clearnet address at the gateway."""
    sends_clearnet: bool
    """The first entry: the gateway clearnet mail is sent through."""
    restart_needed: bool = False
    """The box runs but ``onionmail.toml`` changed after it started: it does not use this yet."""


@dataclass(frozen=True)
class BoxStatus:
    running: bool
    state: str
    onion: str
    addresses: tuple[str, ...]
    submission: str
    bootstrap_percent: int
    bootstrap_summary: str
    published: bool
    tor_restarts: int
    queue_length: int
    timing: str
    padding: str
    policy_rules: tuple[str, ...]
    gateways: tuple[GatewayRegistration, ...] = ()
    """The ``[gateway]`` registrations, the sending gateway first."""
    devices: tuple[str, ...] = ()
    """The names of the owner's devices (``onionmail device list``)."""
    devices_problem: str = ""
    """Why devices cannot connect to the running box, or empty."""


class BoxApi(MailFolders):
    """One box directory, opened for a client. ``passphrase`` unlocks an encrypted key.

    Its Maildir listings are :class:`~onionmail.box.stored_mail.MailFolders`'.
    """

    def __init__(self, box_dir: Path, *, passphrase: bytes | None = None) -> None:
        config = load_config(box_dir.absolute())
        super().__init__(box_dir, config.box.local_parts)
        self.config: Config = config
        self.local_part = self.config.box.local_parts[0]
        self.key_path = self.box_dir / "keys" / "identity.key"
        self.identity: Identity | None = None
        if passphrase is not None or not is_encrypted_identity(self.key_path):
            self.identity = load_identity(self.key_path, passphrase)

    @cached_property
    def leak_keeper(self) -> LeakKeeper:
        from onionmail.box.policy_gate import LeakKeeper

        seed = self.identity.seed if self.identity else bytes(32)
        encrypted = is_encrypted_identity(self.key_path)
        return LeakKeeper(self.config, seed, key_encrypted=encrypted)

    @cached_property
    def devices(self) -> DeviceManager:
        """The owner's phones and laptops."""
        from onionmail.devices.manage import DeviceManager

        return DeviceManager(self.box_dir, self.local_parts, self.identity)

    @cached_property
    def requests(self) -> Requests:
        """Strangers' mail waiting for the owner's word."""
        from onionmail.admission.requests import Requests

        seed = self.identity.seed if self.identity else None
        return Requests(self.box_dir, self.local_parts, seed)

    # --- identity and status -------------------------------------------------------

    @property
    def onion(self) -> str:
        if self.identity is not None:
            return self.identity.onion_address
        return str(self._status_file().get("onion", ""))

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.onion}"

    def own_addresses(self) -> list[str]:
        """This box's addresses and its gateway aliases (left out of a reply to all)."""
        aliases = [reg.alias for reg in self.gateway_registrations({})]
        return [f"{part}@{self.onion}" for part in self.config.box.local_parts] + aliases

    def _status_file(self) -> dict[str, Any]:
        try:
            data = json.loads((self.box_dir / "run" / "status.json").read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.box_dir}/run/status.json: unreadable: {exc}") from None
        return data if isinstance(data, dict) else {}

    @property
    def running(self) -> bool:
        """Whether ``onionmail run`` holds this box directory now."""
        return running_pid(self.box_dir) is not None

    def status(self) -> BoxStatus:
        data = self._status_file()
        from onionmail.store.queue import count_queue

        running = running_pid(self.box_dir) is not None
        tor = data.get("tor", {}) if running else {}
        timing = self.config.timing
        timing_text = {
            "immediate": "immediate (sent at once)",
            "delay": f"delay (random hold, mean {timing.mean_delay:.0f} s)",
            "batch": f"batch (every {timing.batch_interval:.0f} s)",
        }.get(timing.mode, timing.mode)
        if timing.cover_rate:
            timing_text += f"; cover traffic {timing.cover_rate:g}/h"
        return BoxStatus(
            running=running,
            state=str(data.get("state", "never started")) if running else "not running",
            onion=self.onion,
            addresses=tuple(f"{p}@{self.onion}" for p in self.config.box.local_parts),
            submission=str(data.get("submission", "")) if running else "",
            bootstrap_percent=int(tor.get("bootstrap_percent", 0)),
            bootstrap_summary=str(tor.get("bootstrap_summary", "")),
            published=bool(tor.get("published", False)),
            tor_restarts=int(data.get("tor_restarts", 0)) if running else 0,
            queue_length=count_queue(self.box_dir / "queue"),
            timing=timing_text,
            padding="Padmé buckets, 4096-byte floor (always on for sealed envelopes)",
            policy_rules=self.config.policy.rules,
            gateways=tuple(self.gateway_registrations(data if running else {})),
            devices=tuple(d.name for d in self.devices.devices()),
            devices_problem=str((data.get("devices") or {}).get("problem") or "")
            if running
            else "",
        )

    def gateway_registrations(
        self, status: dict[str, Any] | None = None
    ) -> list[GatewayRegistration]:
        """``[gateway]`` as it is on disk now, the sending gateway first.

        ``status`` is ``run/status.json`` of a running box (read when omitted):
        its ``started_at`` tells whether the box started before the file changed.
        """
        config = load_config(self.box_dir)
        if status is None:
            status = self._status_file() if running_pid(self.box_dir) is not None else {}
        started = float(status.get("started_at") or 0.0)
        changed = False
        if started:
            try:
                changed = (self.box_dir / CONFIG_NAME).stat().st_mtime > started
            except FileNotFoundError:
                changed = False
        sending = config.gateway.sending_gateway
        found = [
            GatewayRegistration(onion, alias, onion == sending, changed)
            for onion, alias in config.gateway.registrations
        ]
        return sorted(found, key=lambda registration: not registration.sends_clearnet)

    # --- Maildir ------------------------------------------------------------------

    def set_flags(self, folder: str, key: str, *, add: str = "", remove: str = "") -> str:
        """Change a message's Maildir flags (``S`` seen, ``F`` flagged, ``R`` replied);
        its new key. neomutt and Dovecot read the same flags."""
        return set_flags(self.folder_path(folder), checked_key(key), add=add, remove=remove)

    def move(self, folder: str, key: str, to: str) -> str:
        """Move a message to another folder of its mailbox (``alice/.Trash``, made if
        missing); its key there."""
        if to.partition("/")[0] != folder.partition("/")[0]:
            raise AddressError("a message moves only between folders of one mailbox")
        return move_message(self.folder_path(folder), checked_key(key), self.folder_path(to))

    def save_draft(self, draft: Draft) -> str:
        """File ``draft`` in ``<local part>/.Drafts`` (flags draft and seen); its folder."""
        from onionmail.message.compose import build_message

        folder = f"{self.local_part}/.Drafts"
        data = build_message(self.address, draft).as_bytes().replace(b"\r\n", b"\n")
        path = Maildir(self.folder_path(folder)).deliver(data)
        set_flags(self.folder_path(folder), f"new/{path.name}", add="DS")
        return folder

    def open_message(self, folder: str, key: str) -> MessageView:
        root = self.folder_path(folder)
        try:
            data = (root / checked_key(key)).read_bytes()
        except FileNotFoundError:
            raise OnionMailError(
                "this message is gone (moved or deleted by another mail client); reload the folder"
            ) from None
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(data)
        assert isinstance(msg, email.message.EmailMessage)
        attachments = tuple(
            Attachment(
                part.get_filename() or "(no name)",
                part.get_content_type(),
                len(part.get_payload(decode=True) or b""),
            )
            for part in msg.iter_attachments()
        )
        from onionmail.message.reading import body_text  # html2text: imported when needed

        body = body_text(msg)  # HTML-only mail as readable text
        headers = tuple(
            (k, text(v))
            for k, v in msg.items()
            # another authserv-id's results are a peer's word (RFC 8601 5): not shown
            if k.lower() != "authentication-results" or authserv_id(text(v)) == self.onion
        )
        return MessageView(self.summary(folder, key, msg), headers, body, attachments)

    # --- queue --------------------------------------------------------------------

    def queue(self) -> list[QueueState]:
        """Queued messages: destination onion, attempts, next try, last error (no subject)."""
        from onionmail.store.queue import list_queue

        return list_queue(self.box_dir / "queue")

    def retry_now(self, queue_id: str | None = None) -> str:
        """Make one entry (or all) due now and wake the running box; returns what happened."""
        count = 0
        for state in self.queue():
            if queue_id is not None and state.id != queue_id:
                continue
            if state.destination == "?":
                continue
            path = self.box_dir / "queue" / "active" / f"{state.id}.state"
            updated = replace(state, next_try=min(state.next_try, time.time()))
            write_private_file(path, json.dumps(updated.__dict__).encode())
            count += 1
        pid = running_pid(self.box_dir)
        if pid is None or pid < 0:
            return f"{count} message(s) due now; the box is not running: they go when it starts"
        os.kill(pid, signal.SIGUSR1)
        return f"{count} message(s) due now; the running box is retrying"

    def cancel(self, queue_id: str) -> Path:
        """Take a waiting entry out of the queue into ``queue/cancelled/`` (kept, encrypted).

        Refused while the entry is probably being delivered (its next try has
        passed and the box runs): the box might already have handed it to the
        peer. An entry mid-delivery that is cancelled anyway only fails to be
        removed by the agent afterwards (``remove`` ignores a missing file), so
        the worst case is a message both delivered and listed as cancelled.
        """
        active = self.box_dir / "queue" / "active"
        states = {s.id: s for s in self.queue()}
        if queue_id not in states:
            raise QueueError(0, "this message is no longer queued (delivered or bounced)")
        if running_pid(self.box_dir) is not None and states[queue_id].next_try <= time.time():
            raise QueueError(
                0, "the box may be delivering this message right now; try again in a minute"
            )
        cancelled = ensure_private_dir(self.box_dir / "queue" / "cancelled")
        for suffix in (".state", ".msg"):
            source = active / f"{queue_id}{suffix}"
            if source.exists():
                os.rename(source, cancelled / source.name)
        fsync_dir(active)
        fsync_dir(cancelled)
        return cancelled / f"{queue_id}.msg"

    # --- ledger and leaks ---------------------------------------------------------

    @property
    def ledger_available(self) -> bool:
        return self.identity is not None

    def ledger_entries(self) -> list[LedgerEntry]:
        if self.identity is None:
            return []
        return self.leak_keeper.ledger.entries()

    def ledger_for(self, message_id: str) -> list[LedgerEntry]:
        if self.identity is None or not message_id:
            return []
        return self.leak_keeper.find(message_id)

    def route(self, recipient: str | MailAddress) -> str | None:
        """The onion a message to ``recipient`` goes to, or None: the box's own rule
        (:func:`~onionmail.box.policy.route`), with ``[gateway]`` read from disk as
        :meth:`gateway_registrations` shows it."""
        from onionmail.box.policy import route

        address = recipient if isinstance(recipient, MailAddress) else parse_mail_address(recipient)
        sending = self.sending_gateway()
        return route(
            address, self.config.onion_mx, sending.gateway if sending else None
        ).destination

    def predict(self, recipient: str, *, has_attachments: bool = False) -> Prediction:
        """Path, leak matrix and the box's verdict for one recipient, before sending."""
        from onionmail.box import forecast

        return forecast.predict(self, recipient, has_attachments=has_attachments)

    def what_if(self, recipient: str, *, has_attachments: bool = False) -> list[PathOption]:
        """The paths a message to ``recipient`` could take, side by side."""
        from onionmail.box import forecast

        return forecast.what_if(self, recipient, has_attachments=has_attachments)

    def sending_gateway(self) -> GatewayRegistration | None:
        """The gateway clearnet mail goes through, as registered on disk, or None."""
        gateways = self.gateway_registrations({})
        return gateways[0] if gateways and gateways[0].sends_clearnet else None

    # --- OpenPGP keys -------------------------------------------------------------

    def _key_store(self) -> PeerKeyStore:
        from onionmail.openpgp.autocrypt import PeerKeyStore
        from onionmail.openpgp.clearnet import peers_path

        return PeerKeyStore(peers_path(self.box_dir))

    def known_keys(self) -> list[KnownKey]:
        """The correspondents' OpenPGP keys the box holds, by address (read only)."""
        return [
            KnownKey(peer.address, peer.fingerprint, peer.source.value, peer.last_seen)
            for peer in self._key_store().peers()
        ]

    def fingerprint_for(self, address: str) -> str:
        peer = self._key_store().get(address)
        return peer.fingerprint if peer is not None else ""

    # --- contacts -----------------------------------------------------------------

    def contacts(self) -> list[Contact]:
        keys = {key.address: key.fingerprint for key in self.known_keys()}
        return [
            Contact(petname, address, keys.get(_normalized(address), ""))
            for petname, address in AddressBook(self.box_dir).entries().items()
        ]

    def add_contact(self, petname: str, address: str, *, replacing: str = "") -> Contact:
        """Add a contact, or change one (``replacing``: its petname until now)."""
        return Contact(*AddressBook(self.box_dir).put(petname, address, replacing=replacing))

    def remove_contact(self, petname: str) -> bool:
        return AddressBook(self.box_dir).remove(petname)

    # --- sending ------------------------------------------------------------------

    def build_message(
        self, to: list[str], cc: list[str], subject: str, body: str, **more: Any
    ) -> email.message.EmailMessage:
        """``more``: a reply's ``in_reply_to`` and ``references``, ``attachments``."""
        from onionmail.message.compose import Draft, build_message

        return build_message(self.address, Draft(tuple(to), tuple(cc), subject, body, **more))

    async def send(
        self,
        to: list[str],
        cc: list[str],
        subject: str,
        body: str,
        *,
        password_file: Path | None = None,
        **more: Any,
    ) -> None:
        """Submit to the running box; refuses first what the policy would refuse."""
        recipients = to + cc
        if not recipients:
            raise AddressError("no recipient: fill in To")
        attached = bool(more.get("attachments"))
        for rcpt in recipients:
            refusal = self.predict(rcpt, has_attachments=attached).refusal
            if refusal is not None:
                raise AddressError(f"not sent to {rcpt}: {refusal}")
        host, port = self._submission_endpoint()
        password = self._password(password_file)
        message = self.build_message(to, cc, subject, body, **more)
        import aiosmtplib

        try:
            await aiosmtplib.send(
                message,
                sender=self.address,
                recipients=recipients,
                hostname=host,
                port=port,
                username=self.local_part,
                password=password,
                local_hostname="localhost",
                start_tls=False,
                timeout=SUBMISSION_TIMEOUT,
            )
        except aiosmtplib.SMTPException as exc:
            raise OnionMailError(f"the box did not take the message: {exc}") from None
        except OSError as exc:
            raise OnionMailError(
                f"cannot reach the box's submission server at {host}:{port} ({exc.strerror}); "
                "is 'onionmail run' still running?"
            ) from None

    def _submission_endpoint(self) -> tuple[str, int]:
        status = self.status()
        if not status.running or not status.submission:
            raise OnionMailError(
                f"the box is not running: start it with 'onionmail run --dir {self.box_dir}'"
            )
        host, _, port = status.submission.rpartition(":")
        return host, int(port)

    def _password(self, password_file: Path | None) -> str:
        path = password_file or self.box_dir / f"submission-password.{self.local_part}"
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read the submission password ({exc.strerror}); "
                "pass --password-file"
            ) from None


def _normalized(address: str) -> str:
    try:
        return str(parse_mail_address(address))
    except AddressError:
        return address
