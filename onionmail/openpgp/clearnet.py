"""OpenPGP on the box's clearnet path: what leaves through a gateway, what comes back.

:mod:`onionmail.openpgp.keys`, :mod:`onionmail.openpgp.autocrypt` and
:mod:`onionmail.openpgp.pgp_mime` are the library side; this module is where
the box uses them: where the recipient's OpenPGP key is known, the box
encrypts before the gateway sees the message (docs/design.md, "OpenPGP").

Sending, for every message queued for a gateway (:meth:`ClearnetOpenPGP.prepare`):

1. From (and a Reply-To or Message-ID naming the box) are rewritten to the
   box's alias at that gateway, as the gateway would (:func:`rewrite_to_alias`),
   so the protected header inside the encryption already names the alias;
2. when every recipient of the queue entry has a stored key, the message
   becomes PGP/MIME with protected headers (outer Subject ``...``), signed by
   the box's key, encrypted to the recipient and to the box;
3. either way the box's own ``Autocrypt:`` header goes with it, so
   correspondents learn the key from plain mail too.

Decisions:

* **Encrypt at delivery time, in the delivery agent, in a worker thread.**
  Not at enqueue: pgpy needs seconds for a large message, and ``250`` waits
  for nothing but the durable queue (decision 4). The queue keeps exactly
  what it kept before, the scrubbed message sealed at rest with the queue
  key; the alias form and the ciphertext exist only in memory for one
  attempt, so the queue never holds more plaintext than before, and a crash
  loses nothing (the entry stays until the gateway's ``250``; the next
  attempt encrypts again). The key used is the newest the box knows when the
  message leaves. The cost is one encryption per attempt; attempts to the
  gateway's onion rarely repeat.
* **A message to several clearnet recipients is split** at enqueue
  (:func:`split_for_gateway`): each recipient with a key gets an entry of its
  own, encrypted to that recipient alone (and the box); the recipients
  without one share a plain entry. Encrypting only when every recipient has
  a key would send a keyed correspondent's copy in clear for the sake of
  someone else; one ciphertext to all keyed recipients would show every
  recipient the key ids of the others, which gives away a ``Bcc``.
* **Never a silent downgrade.** A stored key that no longer works (expired,
  damaged) makes the message bounce with the reason instead of going out in
  clear; a message that was to be encrypted and finds no key any more is
  checked against the policy again for the plain path (:mod:`onionmail.box.daemon`).

Receiving, for mail a gateway relayed (:meth:`ClearnetOpenPGP.incoming`): its
``Autocrypt:`` header feeds :meth:`PeerKeyStore.process_incoming`; PGP/MIME is
decrypted and **stored in the Maildir as plaintext**, with the protected
header restored and ``Onionmail-OpenPGP:`` saying what happened. The box is
the user's trusted store, like a decrypting mail client: every other message
in its Maildir is plaintext already (sealed envelopes are opened before
storing), the decryption key lives in the same box directory, and a mail
client reading the Maildir (neomutt) has no key to open ciphertext with.
Mail that is not encrypted is marked ``none``; mail that does not decrypt is
stored as it came with the reason (``not-decrypted; reason="..."``): never
refused, never lost, never a crash of the inbound handler. An
``Onionmail-OpenPGP`` field that arrived with the message is always removed
first, so a sender cannot forge the box's verdict. This runs in a worker
thread before the box answers the gateway's DATA: the one waiting is the
gateway's delivery agent (a machine with a 120 s reply timeout), not a
person at a mail client, and pgpy needs seconds at the 25 MB size limit;
answering first would need a second durable copy of the ciphertext and a
recovery pass after a crash. Autocrypt is applied to the outer header (where
senders put it), after the box checked that the sender is no onion.

Logs name outcomes only, never addresses, subjects or keys.
"""

from __future__ import annotations

import datetime
import email.errors
import email.header
import email.utils
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onionmail.config.gateway import GatewaySection
from onionmail.core.errors import AddressError, OnionMailError, OpenPGPError
from onionmail.core.mail_address import parse_mail_address
from onionmail.message.rfc5322 import MessageFormatError, parse_message
from onionmail.openpgp import STATUS_FIELD
from onionmail.openpgp.autocrypt import PeerKeyStore, format_autocrypt_header
from onionmail.seal.identity import Identity

if TYPE_CHECKING:  # both load pgpy: imported where mail needs them, not at the box's start
    from onionmail.openpgp.keys import BoxKey, PublicKey

log = logging.getLogger(__name__)

MAX_DECRYPT_BYTES = 32 * 1024 * 1024
"""Larger PGP/MIME mail is stored as it came: pgpy holds it (and what it inflates) in memory."""
MAX_DISPLAY_NAME = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_UNSAFE_REASON = re.compile(r'[^\x20-\x7e]|["\\]')


def box_key_path(box_dir: Path) -> Path:
    """The box's own OpenPGP key (sealed with the identity, see :mod:`onionmail.openpgp.keys`)."""
    return box_dir / "keys" / "openpgp.key"


def peers_path(box_dir: Path) -> Path:
    """The correspondents' keys (:class:`~onionmail.openpgp.autocrypt.PeerKeyStore`)."""
    return box_dir / "keys" / "openpgp-peers.json"


def open_box_key(box_dir: Path, identity: Identity, aliases: Iterable[str]) -> BoxKey:
    """The box's key, created on first use, with a user id for each of ``aliases``."""
    from onionmail.openpgp.keys import ensure_box_key, load_box_key

    path = box_key_path(box_dir)
    key: BoxKey | None = None
    for alias in aliases:
        key = ensure_box_key(path, identity, alias)
    if key is None:
        if not path.exists():
            raise OpenPGPError(
                "the box has no OpenPGP key yet: it is made for the alias of a gateway "
                "(onionmail gateway register)"
            )
        key = load_box_key(path, identity)
    return key


class KnownKeys:
    """Whether an address has a stored key; re-read only when the store file changes.

    Asked at every RCPT (the policy gate's prediction) and at every enqueue (the
    split), so it must not parse the whole store each time. An unreadable store
    counts as "no key": the prediction is then the plain path, the stricter one.
    """

    def __init__(self, store: PeerKeyStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._addresses: frozenset[str] = frozenset()

    def __call__(self, address: str) -> bool:
        try:
            info = os.stat(self.store.path)
        except FileNotFoundError:
            return False
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._addresses = frozenset(self.store.addresses())
                except OpenPGPError as exc:
                    log.warning("the OpenPGP key store is unreadable: %s", type(exc).__name__)
                    self._addresses = frozenset()
                self._stamp = stamp
            known = self._addresses
        try:
            return str(parse_mail_address(address)) in known
        except AddressError:
            return False


def split_for_gateway(
    recipients: Iterable[str], has_key: Callable[[str], bool]
) -> list[tuple[tuple[str, ...], bool]]:
    """Queue entries for one message's clearnet recipients: ``(recipients, encrypted?)``.

    Each recipient with a key alone (encrypted), then all the others together
    (plain); see the module docstring for why.
    """
    keyed: list[tuple[tuple[str, ...], bool]] = []
    plain: list[str] = []
    for rcpt in recipients:
        if has_key(rcpt):
            keyed.append(((rcpt,), True))
        else:
            plain.append(rcpt)
    return keyed + ([(tuple(plain), False)] if plain else [])


def _display_name(value: bytes) -> str:
    """The From display name, cleaned; ``""`` when absent, undecodable or holding ``@``."""
    try:
        pairs = email.utils.getaddresses([value.decode("utf-8", "replace")])
        raw = pairs[0][0] if pairs else ""
        name = str(email.header.make_header(email.header.decode_header(raw)))
    except (email.errors.HeaderParseError, LookupError, ValueError, IndexError):
        return ""
    name = " ".join(_CONTROL.sub(" ", name).split())
    return "" if "@" in name else name[:MAX_DISPLAY_NAME].strip()


def rewrite_to_alias(message: bytes, *, box_address: str, alias: str) -> bytes:
    """``message`` (CRLF) as it must look from the alias: From, Reply-To, Message-ID.

    The gateway does the same to what it relays; the box does it first so
    that an encrypted message's protected header already names the alias
    (the gateway cannot rewrite inside the encryption). ``Sender`` and
    ``Return-Path`` are removed: they would name the onion.
    """
    box = parse_mail_address(box_address)
    alias_address = parse_mail_address(alias)
    parsed = parse_message(message)
    froms = parsed.get_all("From")
    if len(froms) != 1:
        raise MessageFormatError(f"the message has {len(froms)} From fields; one is required")
    new_from = email.utils.formataddr(
        (_display_name(froms[0]), str(alias_address)), charset="utf-8"
    )
    parsed.set("From", new_from.encode("ascii"))
    parsed.remove("Sender")
    parsed.remove("Return-Path")
    if any(str(box).encode("ascii") in value.lower() for value in parsed.get_all("Reply-To")):
        parsed.set("Reply-To", f"<{alias_address}>".encode("ascii"))
    message_id = parsed.get("Message-ID")
    at_box = f"@{box.domain}>".encode("ascii")
    if message_id is not None and message_id.strip().lower().endswith(at_box):
        unique = message_id.strip()[: -len(at_box)]
        parsed.set("Message-ID", unique + f"@{alias_address.domain}>".encode("ascii"))
    return parsed.to_bytes()


def with_status(message: bytes, status: str) -> bytes:
    """``message`` with any ``Onionmail-OpenPGP`` field replaced by ``status`` (first)."""
    parsed = parse_message(message)
    parsed.remove(STATUS_FIELD)
    parsed.prepend(STATUS_FIELD, status.encode("ascii"))
    return parsed.to_bytes()


def _reason(text: str) -> str:
    return 'not-decrypted; reason="' + _UNSAFE_REASON.sub("?", text)[:200] + '"'


@dataclass(frozen=True)
class Outgoing:
    """A queued message in the form it leaves the box for a gateway."""

    message: bytes
    encrypted: bool

    def __repr__(self) -> str:
        return f"Outgoing(<{len(self.message)} bytes>, encrypted={self.encrypted})"


class ClearnetOpenPGP:
    """The box's OpenPGP state for its gateways: its key, its correspondents' keys.

    Every method blocks (pgpy, files): call them through ``asyncio.to_thread``.
    """

    def __init__(self, box_dir: Path, identity: Identity, gateway: GatewaySection) -> None:
        self.box_dir = box_dir
        self.identity = identity
        self.gateway = gateway
        self.peers = PeerKeyStore(peers_path(box_dir))
        self.has_key = KnownKeys(self.peers)
        self._lock = threading.Lock()
        self._box_key: BoxKey | None = None

    def box_key(self) -> BoxKey:
        """The box's own key (created on first use, one user id per alias)."""
        with self._lock:
            if self._box_key is None:
                aliases = [alias for _, alias in self.gateway.registrations]
                self._box_key = open_box_key(self.box_dir, self.identity, aliases)
            return self._box_key

    def prepare(
        self,
        message: bytes,
        *,
        mail_from: str,
        recipients: tuple[str, ...],
        destination: str,
        signed_at: datetime.datetime | None = None,
    ) -> Outgoing:
        """``message`` as it goes to the gateway ``destination`` (module docstring);
        ``signed_at`` is the time its OpenPGP signature shows.

        Encrypted when every recipient has a stored key. Raises
        :class:`OpenPGPError` when a stored key is unusable (never a silent
        downgrade to plaintext) and :class:`MessageFormatError` for a
        message without exactly one From.
        """
        alias = self.gateway.alias_at(destination)
        if not alias:
            raise OpenPGPError("the box has no alias at this gateway")
        rewritten = rewrite_to_alias(message, box_address=mail_from, alias=alias)
        box_key = self.box_key()
        stored = [self.peers.get(rcpt) for rcpt in recipients]
        if recipients and all(stored):
            from onionmail.openpgp.pgp_mime import encrypt_message

            keys = [peer.public_key() for peer in stored if peer is not None]
            encrypted = encrypt_message(
                rewritten, box_key, keys, autocrypt=True, signed_at=signed_at
            )
            log.debug("encrypted a message to %d OpenPGP key(s)", len(keys))
            return Outgoing(encrypted, True)
        parsed = parse_message(rewritten)
        parsed.remove("Autocrypt")
        value = format_autocrypt_header(alias, box_key.public.data, prefer_encrypt_mutual=True)
        parsed.fields.append(("Autocrypt", b" " + value))
        return Outgoing(parsed.to_bytes(), False)

    def incoming(self, message: bytes) -> bytes:
        """Mail a gateway relayed, as it is to be stored (module docstring). Never raises
        for what the message holds: a failure is stored with its reason."""
        try:
            result = self.peers.process_incoming(message)
            log.debug("autocrypt on incoming mail: %s", result.outcome.value)
        except (OpenPGPError, OSError) as exc:
            log.warning("could not update the OpenPGP key store: %s", type(exc).__name__)
        from onionmail.openpgp.pgp_mime import decrypt_message, is_pgp_mime

        try:
            if not is_pgp_mime(message):
                return with_status(message, "none (not encrypted)")
        except MessageFormatError:
            return message  # the caller refuses a malformed message with 554
        if len(message) > MAX_DECRYPT_BYTES:
            status = _reason(f"larger than {MAX_DECRYPT_BYTES} bytes")
            return with_status(message, status)
        try:
            decrypted = decrypt_message(message, self.box_key(), self._sender_key)
        except OnionMailError as exc:
            log.warning("stored a PGP/MIME message undecrypted: %s", type(exc).__name__)
            return with_status(message, _reason(str(exc)))
        except Exception as exc:  # hostile input reaching a parser we do not own
            log.warning("stored a PGP/MIME message undecrypted: %s", type(exc).__name__)
            return with_status(message, _reason("the message could not be decrypted"))
        log.info("decrypted an OpenPGP message (signature %s)", decrypted.signature.value)
        return decrypted.message

    def _sender_key(self, address: str) -> PublicKey | None:
        try:
            return self.peers.public_key(address)
        except OnionMailError as exc:
            log.warning("a stored OpenPGP key is unusable: %s", type(exc).__name__)
            return None
