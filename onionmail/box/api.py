"""The box's public library API over its directory: what a mail client or the TUI may use.

This is the one door through which ``tui/`` (and any other front end) talks
to a box. It works on ``BOXDIR`` the way the box documents it, whether or
not the box runs, and it touches nothing behind the box's back:

- reads: the Maildir (``BOXDIR/mail/<local>``; standard layout, readable by
  neomutt too), the queue's clear headers and state files (:func:`list_queue`,
  never a subject or a recipient), ``run/status.json``, the ledger (needs the
  identity key, because ledger Message-IDs are keyed hashes), the config
  (``[gateway]`` is re-read on every call, so a registration made while a
  client is open shows up), and the correspondents' OpenPGP keys
  (``keys/openpgp-peers.json``, read only: fingerprints, never key material);
- routing: :meth:`BoxApi.route` is the box's own rule (``Box.route``): an
  onion goes to its onion, an ``[onion_mx]`` domain straight to the onion
  routed there, anything else to the first ``[gateway]``;
- leak prediction and the policy gate: the box's own :class:`LeakKeeper`
  with the box's configuration, so the answer is the one the box will give;
- writes, each one the box already supports: "retry now" moves a queue
  entry's next try forward (as ``onionmail queue flush`` does) and sends
  SIGUSR1 to the running box; "cancel" moves a waiting entry from
  ``queue/active`` to ``queue/cancelled`` (kept, not deleted; see
  :meth:`BoxApi.cancel`); the address book is ``BOXDIR/contacts.toml``,
  which only this module reads or writes; sending goes through the box's
  submission server over SMTP with AUTH, exactly like a mail client, so
  scrubbing, the policy gate and the durable queue all apply.

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
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiosmtplib

from onionmail.box.policy import route
from onionmail.box.policy_gate import LeakKeeper
from onionmail.config.box import CONFIG_NAME, Config, load_config
from onionmail.core.errors import AddressError, ConfigError, OnionMailError, QueueError
from onionmail.core.files import ensure_private_dir, fsync_dir, write_private_file
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.message.header_claims import SENDER_FIELDS, authserv_id, onions_named
from onionmail.openpgp.autocrypt import PeerKeyStore
from onionmail.openpgp.clearnet import peers_path
from onionmail.openpgp.pgp_mime import STATUS_FIELD
from onionmail.seal.identity import Identity, is_encrypted_identity, load_identity
from onionmail.store.ledger import LedgerEntry
from onionmail.store.lock import running_pid
from onionmail.store.queue import QueueState, list_queue
from threat_model import LeakMatrix, MailPath, MessageTraits, ModelConfig, Timing, leaks

HEADER_READ_LIMIT = 32 * 1024
"""Bytes read from each message to list it (headers only; the body is read on open)."""
SUBMISSION_TIMEOUT = 60.0
"""Seconds a send through the submission server may take before it is reported as failed."""
CONTACTS_NAME = "contacts.toml"


class ArrivalKind:
    """How a message reached this box, from the ``Authentication-Results`` the box wrote."""

    SEALED = "sealed onion"
    PLAIN = "plain onion peer"
    GATEWAY = "via gateway"
    UNKNOWN = "unknown"


#: The fields the box prepends when it stores a message (:mod:`onionmail.box.inbound`):
#: only these may stand above the box's ``Onionmail-OpenPGP`` field.
_PREPENDED_BY_THE_BOX = frozenset(("return-path", "authentication-results"))


@dataclass(frozen=True)
class OpenPGPResult:
    """What the box's ``Onionmail-OpenPGP:`` field says (see :mod:`onionmail.openpgp.pgp_mime`)."""

    decrypted: bool
    """The box decrypted a PGP/MIME message (the field's first word is ``decrypted``)."""
    signature: str
    """``verified``, ``unsigned``, ``unknown-signer`` or ``bad``; ``""`` when absent."""
    signer: str = ""
    """Fingerprint of the key that made a verified signature, else ``""``."""
    reason: str = ""
    """Why the box could not decrypt it (``not-decrypted; reason="..."``), else ``""``."""

    @property
    def signed_by_sender(self) -> bool:
        return self.signature == "verified"


@dataclass(frozen=True)
class Arrival:
    kind: str
    verified: bool
    """The box checked the sender's address (``onionmail=pass``)."""
    encrypted: bool
    """End-to-end encrypted: a sealed envelope, or OpenPGP (decrypted by the box or not).

    Mail relayed by a gateway counts as encrypted only with OpenPGP: the gateway
    seals it to the box, but it read the message in clear first.
    """
    openpgp: OpenPGPResult | None = None
    """The box's ``Onionmail-OpenPGP`` verdict, when the box decrypted the message."""

    @property
    def encryption(self) -> str:
        """``sealed``, ``OpenPGP`` (the box decrypted it), ``OpenPGP?`` (it did not), ``none``."""
        if self.kind == ArrivalKind.SEALED:
            return "sealed"
        if self.openpgp is not None and self.openpgp.decrypted:
            return "OpenPGP"
        return "OpenPGP?" if self.encrypted else "none"


@dataclass(frozen=True)
class MessageSummary:
    folder: str
    key: str
    """The message's path relative to the folder (``new/...`` or ``cur/...``)."""
    sender: str
    subject: str
    date: str
    message_id: str
    arrival: Arrival


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    summary: MessageSummary
    headers: tuple[tuple[str, str], ...]
    body: str
    attachments: tuple[Attachment, ...]


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


@dataclass(frozen=True)
class PathOption:
    """One way a message to a recipient could travel, for the what-if comparison."""

    label: str
    matrix: LeakMatrix
    available: bool
    note: str
    refusal: str | None
    expected: bool = False
    """The path the box will take (the leak card's path)."""


@dataclass(frozen=True)
class Prediction:
    """What sending to one recipient would do, before anything leaves."""

    recipient: str
    path: MailPath
    matrix: LeakMatrix
    refusal: str | None
    """Why the box would refuse this recipient (a policy rule, or no usable path), or None."""
    route: str = ""
    """How the box routes it, in words (which onion, which gateway and alias), or ``""``."""
    openpgp_key: str = ""
    """Fingerprint of the recipient's known OpenPGP key (clearnet recipients), or ``""``."""


class BoxApi:
    """One box directory, opened for a client. ``passphrase`` unlocks an encrypted key."""

    def __init__(self, box_dir: Path, *, passphrase: bytes | None = None) -> None:
        self.box_dir = box_dir.absolute()
        self.config: Config = load_config(self.box_dir)
        self.local_part = self.config.box.local_parts[0]
        key_path = self.box_dir / "keys" / "identity.key"
        self.identity: Identity | None = None
        if passphrase is not None or not is_encrypted_identity(key_path):
            self.identity = load_identity(key_path, passphrase)
        seed = self.identity.seed if self.identity else bytes(32)
        self.leak_keeper = LeakKeeper(
            self.config, seed, key_encrypted=is_encrypted_identity(key_path)
        )

    # --- identity and status -------------------------------------------------------

    @property
    def onion(self) -> str:
        if self.identity is not None:
            return self.identity.onion_address
        return str(self._status_file().get("onion", ""))

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.onion}"

    def _status_file(self) -> dict[str, Any]:
        try:
            data = json.loads((self.box_dir / "run" / "status.json").read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.box_dir}/run/status.json: unreadable: {exc}") from None
        return data if isinstance(data, dict) else {}

    def status(self) -> BoxStatus:
        data = self._status_file()
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
            queue_length=len(list_queue(self.box_dir / "queue")),
            timing=timing_text,
            padding="Padmé buckets, 4096-byte floor (always on for sealed envelopes)",
            policy_rules=self.config.policy.rules,
            gateways=tuple(self.gateway_registrations(data if running else {})),
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
        return [
            GatewayRegistration(onion, alias, n == 0, changed)
            for n, (onion, alias) in enumerate(config.gateway.registrations)
        ]

    # --- Maildir ------------------------------------------------------------------

    def folders(self) -> list[str]:
        """Each local part's Maildir, then its Maildir++ subfolders (``alice/.Sent``)."""
        found = []
        for part in self.config.box.local_parts:
            root = self.box_dir / "mail" / part
            found.append(part)
            if root.is_dir():
                found.extend(
                    f"{part}/{sub.name}"
                    for sub in sorted(root.iterdir())
                    if sub.name.startswith(".") and (sub / "cur").is_dir()
                )
        return found

    def _folder_path(self, folder: str) -> Path:
        part, _, sub = folder.partition("/")
        if part not in self.config.box.local_parts or "/" in sub or sub in (".", ".."):
            raise AddressError(f"{folder!r} is not a folder of this box")
        return self.box_dir / "mail" / part / sub if sub else self.box_dir / "mail" / part

    def message_keys(self, folder: str) -> list[str]:
        """The folder's messages, newest first by delivery time (from the Maildir name).

        Only a directory listing: cheap even for tens of thousands of messages.
        """
        root = self._folder_path(folder)
        keys: list[tuple[float, str]] = []
        for sub in ("new", "cur"):
            try:
                with os.scandir(root / sub) as entries:
                    for entry in entries:
                        if not entry.name.startswith("."):
                            keys.append((_delivery_time(entry.name), f"{sub}/{entry.name}"))
            except FileNotFoundError:
                continue
        keys.sort(reverse=True)
        return [key for _, key in keys]

    def summaries(self, folder: str, keys: list[str]) -> Iterator[MessageSummary]:
        """Header summaries of ``keys``; a message that vanished meanwhile is skipped."""
        root = self._folder_path(folder)
        for key in keys:
            try:
                with open(root / key, "rb") as handle:
                    head = handle.read(HEADER_READ_LIMIT)
            except FileNotFoundError:
                continue
            head = head.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
            yield self._summary(
                folder,
                key,
                email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head),
            )

    def _summary(self, folder: str, key: str, msg: email.message.Message) -> MessageSummary:
        return MessageSummary(
            folder=folder,
            key=key,
            sender=_text(msg.get("From")),
            subject=_text(msg.get("Subject")),
            date=_short_date(_text(msg.get("Date"))),
            message_id=_text(msg.get("Message-ID")).strip().strip("<>"),
            arrival=self.arrival(msg),
        )

    def arrival(self, msg: email.message.Message) -> Arrival:
        """Read the box's own ``Authentication-Results`` (authserv-id = this box's onion).

        Fields claiming another authserv-id are a peer's word and are ignored.
        ``gateway``: clearnet mail a configured gateway relayed (the sender is not
        verified; it is encrypted end to end only if it came with OpenPGP). Only
        on that path does the box write ``Onionmail-OpenPGP`` (and remove any copy
        that came with the message, :mod:`onionmail.openpgp.clearnet`), so only
        there is the field read (:func:`openpgp_result`); elsewhere it would be
        the sender's word. PGP/MIME the box did not decrypt counts as encrypted.
        A sealed message whose ``From`` or ``Sender`` shows an onion other than
        the one that sealed it is not verified: the box refuses such mail on
        arrival, but a Maildir can hold mail stored before it did.
        """
        encrypted = msg.get_content_type() == "multipart/encrypted"
        for value in msg.get_all("Authentication-Results") or []:
            text = _text(value)
            if authserv_id(text) != self.onion.lower():
                continue
            rest = text.partition(";")[2]
            result = rest.strip().removeprefix("onionmail=").split(" ", 1)[0]
            if result == "pass":
                return Arrival(ArrivalKind.SEALED, _names_only(msg, rest), True)
            if result == "none":
                return Arrival(ArrivalKind.PLAIN, False, encrypted)
            if result == "gateway":
                openpgp = openpgp_result(msg)
                decrypted = openpgp is not None and openpgp.decrypted
                return Arrival(ArrivalKind.GATEWAY, False, encrypted or decrypted, openpgp)
        return Arrival(ArrivalKind.UNKNOWN, False, encrypted)

    def open_message(self, folder: str, key: str) -> MessageView:
        root = self._folder_path(folder)
        if ".." in Path(key).parts:
            raise AddressError(f"{key!r} is not a message of {folder}")
        try:
            data = (root / key).read_bytes()
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
        body_part = msg.get_body(preferencelist=("plain", "html"))
        body = ""
        if body_part is not None:
            try:
                body = str(body_part.get_content())
            except (LookupError, ValueError):
                body = "(the body's charset or encoding cannot be decoded)"
        headers = tuple(
            (k, _text(v))
            for k, v in msg.items()
            # another authserv-id's results are a peer's word (RFC 8601 5): not shown
            if k.lower() != "authentication-results" or authserv_id(_text(v)) == self.onion
        )
        return MessageView(self._summary(folder, key, msg), headers, body, attachments)

    # --- queue --------------------------------------------------------------------

    def queue(self) -> list[QueueState]:
        """Queued messages: destination onion, attempts, next try, last error (no subject)."""
        return list_queue(self.box_dir / "queue")

    def retry_now(self, queue_id: str | None = None) -> str:
        """Make one entry (or all) due now and wake the running box; returns what happened."""
        count = 0
        for state in list_queue(self.box_dir / "queue"):
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
        states = {s.id: s for s in list_queue(self.box_dir / "queue")}
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
        address = recipient if isinstance(recipient, MailAddress) else parse_mail_address(recipient)
        gateways = self.gateway_registrations({})
        sending = gateways[0].gateway if gateways else None
        return route(address, self.config.onion_mx, sending).destination

    def predict(self, recipient: str) -> Prediction:
        """Path, leak matrix and the box's verdict for one recipient, before sending.

        The path is the box's own prediction (:meth:`LeakKeeper.predicted`): an
        ``[onion_mx]`` domain is an onion peer, not the gateway path.
        """
        address = parse_mail_address(recipient)
        rcpt = str(address)
        matrix = self.leak_keeper.predicted(rcpt)
        refusal = self.leak_keeper.check_recipient(address)
        route = self.route(address)
        if refusal is None and route is None:
            refusal = (
                "no gateway is registered: this box cannot send to clearnet addresses "
                "(register one with 'onionmail gateway register', or write to an onion address)"
            )
        key = "" if address.is_onion else self._fingerprint_for(rcpt)
        return Prediction(rcpt, matrix.path, matrix, refusal, self._route_words(address), key)

    def _route_words(self, address: MailAddress) -> str:
        if address.is_onion:
            return f"straight to {address.domain}"
        routed = self.config.onion_mx.onion_for(address.domain)
        if routed is not None:
            return f"[onion_mx] routes {address.domain} straight to {routed} (no gateway)"
        gateways = self.gateway_registrations({})
        if not gateways:
            return ""
        return f"sealed to the gateway {gateways[0].gateway}, sent on as {gateways[0].alias}"

    def what_if(self, recipient: str) -> list[PathOption]:
        """The paths a message to ``recipient`` could take, side by side.

        Which ones are available follows :meth:`route`; the gateway is compared
        with and without OpenPGP, the latter available when a key is known.
        """
        address = parse_mail_address(recipient)
        rcpt = str(address)
        # [policy] plaintext_allowed: the gateway paths as the ledger would record them.
        relaxed = self.leak_keeper.plaintext_allowed([rcpt])
        base = self.leak_keeper.model_config(rcpt, starttls_enforced=not relaxed)
        expected = self.leak_keeper.predicted(rcpt).path
        onion_mx = None if address.is_onion else self.config.onion_mx.onion_for(address.domain)
        onion = address.is_onion or onion_mx is not None
        gateways = self.gateway_registrations({})
        gateway = bool(gateways) and not onion
        key = "" if address.is_onion else self._fingerprint_for(rcpt)

        def option(label: str, path: MailPath, config: ModelConfig, ok: bool, note: str) -> Any:
            matrix = leaks(path, MessageTraits(), config)
            refusal = self.leak_keeper.refusal(rcpt, path)
            is_expected = path == expected and config == base
            return PathOption(label, matrix, ok, note, refusal, is_expected)

        if onion_mx is not None:
            onion_note = f"[onion_mx] routes {address.domain} to its onion"
            gw_note = f"never: [onion_mx] sends {address.domain} straight to its onion"
        elif address.is_onion:
            onion_note = "the expected path"
            gw_note = "an onion address never goes through a gateway"
        else:
            onion_note = "the recipient has no onion address (and no [onion_mx] route)"
            gw_note = (
                f"via {gateways[0].gateway} as {gateways[0].alias}"
                if gateways
                else "no gateway registered"
            )
        if key:
            pgp_note = f"{gw_note}; OpenPGP key {key} known"
        else:
            pgp_note = f"{gw_note}; no OpenPGP key known for {rcpt}"
        delayed = replace(base, timing=Timing.DELAY)
        unpadded = replace(base, padding=False)
        return [
            option("onion sealed", MailPath.ONION_SEALED, base, onion, onion_note),
            option(
                "onion plain peer",
                MailPath.ONION_PLAIN,
                base,
                onion,
                "if the peer is not an onionmail box" if onion else "no onion address",
            ),
            option("gateway", MailPath.GATEWAY_CLEARNET, base, gateway, gw_note),
            option(
                "gateway+OpenPGP",
                MailPath.GATEWAY_CLEARNET_OPENPGP,
                base,
                gateway and bool(key),
                pgp_note,
            ),
            option(
                "+ delay",
                expected,
                delayed,
                onion or gateway,
                "the expected path with [timing] mode = delay",
            ),
            option(
                "no padding",
                expected,
                unpadded,
                False,
                "the expected path unpadded (padding cannot be turned off in this box)",
            ),
        ]

    # --- OpenPGP keys -------------------------------------------------------------

    def _key_store(self) -> PeerKeyStore:
        return PeerKeyStore(peers_path(self.box_dir))

    def known_keys(self) -> list[KnownKey]:
        """The correspondents' OpenPGP keys the box holds, by address (read only)."""
        return [
            KnownKey(peer.address, peer.fingerprint, peer.source.value, peer.last_seen)
            for peer in self._key_store().peers()
        ]

    def _fingerprint_for(self, address: str) -> str:
        peer = self._key_store().get(address)
        return peer.fingerprint if peer is not None else ""

    # --- contacts -----------------------------------------------------------------

    def contacts(self) -> list[Contact]:
        path = self.box_dir / CONTACTS_NAME
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable address book: {exc}") from None
        table = raw.get("contacts", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [contacts] must be a table of petname = address")
        keys = {key.address: key.fingerprint for key in self.known_keys()}
        found = []
        for petname, address in sorted(table.items()):
            if not isinstance(address, str):
                raise ConfigError(f"{path}: contacts.{petname}: expected an address string")
            found.append(Contact(petname, address, keys.get(_normalized(address), "")))
        return found

    def add_contact(self, petname: str, address: str) -> Contact:
        petname = petname.strip()
        if not petname or any(c in petname for c in '"\\\n'):
            raise ConfigError("a petname needs at least one character and no quotes")
        parsed = str(parse_mail_address(address))
        known = {c.petname: c.address for c in self.contacts()}
        known[petname] = parsed
        lines = ["# onionmail address book: petname = address", "[contacts]"]
        lines += [f'"{name}" = "{addr}"' for name, addr in sorted(known.items())]
        write_private_file(self.box_dir / CONTACTS_NAME, ("\n".join(lines) + "\n").encode())
        return Contact(petname, parsed)

    # --- sending ------------------------------------------------------------------

    def build_message(
        self, to: list[str], cc: list[str], subject: str, body: str
    ) -> email.message.EmailMessage:
        msg = email.message.EmailMessage()
        msg["From"] = self.address
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg.set_content(body)
        return msg

    async def send(
        self,
        to: list[str],
        cc: list[str],
        subject: str,
        body: str,
        *,
        password_file: Path | None = None,
    ) -> None:
        """Submit to the running box; refuses first what the policy would refuse."""
        recipients = to + cc
        if not recipients:
            raise AddressError("no recipient: fill in To")
        for rcpt in recipients:
            refusal = self.predict(rcpt).refusal
            if refusal is not None:
                raise AddressError(f"not sent to {rcpt}: {refusal}")
        host, port = self._submission_endpoint()
        password = self._password(password_file)
        message = self.build_message(to, cc, subject, body)
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


def openpgp_result(msg: email.message.Message) -> OpenPGPResult | None:
    """The box's ``Onionmail-OpenPGP`` verdict on ``msg``, or None when there is none.

    The box writes the field first, having removed any copy that came with
    the message (:mod:`onionmail.openpgp.clearnet`), then prepends only
    ``Return-Path`` and ``Authentication-Results``. So the field counts only
    when it is the one such field and nothing else stands above it; a field
    further down, or a second one, is ignored. Values: ``decrypted;
    signature=...[; signer=FPR]``, ``none (not encrypted)``, ``not-decrypted;
    reason="..."``.
    """
    fields = msg.items()
    where = [n for n, (name, _) in enumerate(fields) if name.lower() == STATUS_FIELD.lower()]
    if len(where) != 1:
        return None
    if any(name.lower() not in _PREPENDED_BY_THE_BOX for name, _ in fields[: where[0]]):
        return None
    value = _text(fields[where[0]][1])
    state, _, rest = value.partition(";")
    reason = ""
    if 'reason="' in rest:
        reason = rest.split('reason="', 1)[1].rsplit('"', 1)[0]
        rest = rest.split("reason=", 1)[0]
    attributes = {}
    for param in rest.split(";"):
        name, _, attribute = param.partition("=")
        attributes[name.strip().lower()] = attribute.strip()
    return OpenPGPResult(
        decrypted=state.strip().lower() == "decrypted",
        signature=attributes.get("signature", ""),
        signer=attributes.get("signer", ""),
        reason=reason,
    )


def _normalized(address: str) -> str:
    try:
        return str(parse_mail_address(address))
    except AddressError:
        return address


def _delivery_time(name: str) -> float:
    head = name.split(".", 1)[0]
    return float(head) if head.isdigit() else 0.0


def _names_only(msg: email.message.Message, results: str) -> bool:
    """Whether the sender fields name no onion but the sealer's.

    The sealer is the result's ``smtp.mailfrom=``, else the ``Return-Path``
    (the box writes both and removes any a peer sent).
    """
    sealer = results.partition("smtp.mailfrom=")[2].split(" ", 1)[0]
    if not sealer:
        sealer = _text(msg.get("Return-Path")).strip("<>")
    sealer = sealer.rpartition("@")[2]
    named: set[str] = set()
    for field in SENDER_FIELDS:
        for value in msg.get_all(field) or []:
            named |= onions_named(str(value))
    return bool(sealer) and named <= {sealer.lower()}


def _text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())


def _short_date(value: str) -> str:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return value[:16]
    return parsed.strftime("%Y-%m-%d %H:%M")
