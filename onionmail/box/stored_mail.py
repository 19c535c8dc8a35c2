"""What a stored message says about how it reached the box, as the box wrote it.

The box prepends its own ``Authentication-Results`` (and, for gateway mail
it decrypted, ``Onionmail-OpenPGP``) when it stores a message; these
readers trust only those, never what a sender wrote, and give the types the
TUI shows: :class:`Arrival`, :class:`MessageSummary`, :class:`MessageView`;
:class:`MailFolders` lists a box's folders and their messages with them.
"""

from __future__ import annotations

import email.header
import email.message
import email.parser
import email.policy
import email.utils
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onionmail.core.errors import AddressError
from onionmail.message.header_claims import SENDER_FIELDS, authserv_id, onions_named
from onionmail.message.threads import referenced_ids
from onionmail.openpgp import STATUS_FIELD
from onionmail.store.maildir import SEEN, flags_of

HEADER_READ_LIMIT = 32 * 1024
"""Bytes read from each message to list it (headers only; the body is read on open)."""


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
    sealed_v1: bool = False
    """Sealed by an older box with the static seal (no forward secrecy; whoever held this
    box's onion key could have forged it): the box's result says ``sealed-v1``."""

    @property
    def encryption(self) -> str:
        """``sealed``, ``sealed-v1`` (an older box's seal), ``OpenPGP`` (the box decrypted
        it), ``OpenPGP?`` (it did not), ``none``."""
        if self.kind == ArrivalKind.SEALED:
            return "sealed-v1" if self.sealed_v1 else "sealed"
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
    references: tuple[str, ...] = ()
    """The message ids it names (``References``, then ``In-Reply-To``), oldest first: what
    it answers, for threads."""

    @property
    def flags(self) -> str:
        """Maildir flags: ``S`` seen, ``R`` replied, ``F`` flagged, ``T`` trashed."""
        return flags_of(self.key)

    @property
    def unread(self) -> bool:
        return SEEN not in self.flags


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


def read_arrival(msg: email.message.Message, onion: str) -> Arrival:
    """Read the box's own ``Authentication-Results`` (authserv-id = the box's ``onion``).

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
        field = text(value)
        if authserv_id(field) != onion.lower():
            continue
        rest = field.partition(";")[2]
        result = rest.strip().removeprefix("onionmail=").split(" ", 1)[0]
        if result == "pass":
            v1 = "(sealed-v1:" in rest
            return Arrival(ArrivalKind.SEALED, _names_only(msg, rest), True, sealed_v1=v1)
        if result == "none":
            return Arrival(ArrivalKind.PLAIN, False, encrypted)
        if result == "gateway":
            openpgp = openpgp_result(msg)
            decrypted = openpgp is not None and openpgp.decrypted
            return Arrival(ArrivalKind.GATEWAY, False, encrypted or decrypted, openpgp)
    return Arrival(ArrivalKind.UNKNOWN, False, encrypted)


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
    value = text(fields[where[0]][1])
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


def _names_only(msg: email.message.Message, results: str) -> bool:
    """Whether the sender fields name no onion but the sealer's.

    The sealer is the result's ``smtp.mailfrom=``, else the ``Return-Path``
    (the box writes both and removes any a peer sent).
    """
    sealer = results.partition("smtp.mailfrom=")[2].split(" ", 1)[0]
    if not sealer:
        sealer = text(msg.get("Return-Path")).strip("<>")
    sealer = sealer.rpartition("@")[2]
    named: set[str] = set()
    for field in SENDER_FIELDS:
        for value in msg.get_all(field) or []:
            named |= onions_named(str(value))
    return bool(sealer) and named <= {sealer.lower()}


class PlainTextPolicy(email.policy.EmailPolicy):
    """Header values as decoded text (encoded words decoded, raw UTF-8 read as UTF-8) with
    no structure parsed: what a list of senders and subjects needs.

    :data:`email.policy.default` parses each field it returns (addresses, parameters),
    about half a millisecond a message; a folder of 10,000 pays that for nothing.
    """

    def header_fetch_parse(self, name: str, value: str) -> str:
        if any("\udc80" <= c <= "\udcff" for c in value):  # raw 8-bit, kept as escapes
            value = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
        unfolded = "".join(value.splitlines())
        try:
            return str(email.header.make_header(email.header.decode_header(unfolded)))
        except (ValueError, LookupError, UnicodeError):  # a broken encoded word: as written
            return unfolded


PLAIN_TEXT = PlainTextPolicy()


def text(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split())


def short_date(value: str) -> str:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return value[:16]
    return parsed.strftime("%Y-%m-%d %H:%M")


class MailFolders:
    """A box's Maildirs as a mail client lists them: folders, messages, header summaries.

    The Maildir half of :class:`onionmail.box.api.BoxApi`, which gives it the box's
    :attr:`onion`. It needs the email package and the Maildir store only, none of
    sending, OpenPGP or the policy, so listing mail loads none of them (the TUI's
    first screen).
    """

    def __init__(self, box_dir: Path, local_parts: Sequence[str]) -> None:
        self.box_dir = box_dir.absolute()
        self.local_parts = tuple(local_parts)

    @property
    def onion(self) -> str:
        """The box's onion address: the authserv-id of the results it wrote."""
        raise NotImplementedError

    def folders(self) -> list[str]:
        """Each local part's Maildir, then its Maildir++ subfolders (``alice/.Sent``)."""
        found = []
        for part in self.local_parts:
            root = self.box_dir / "mail" / part
            found.append(part)
            if root.is_dir():
                found.extend(
                    f"{part}/{sub.name}"
                    for sub in sorted(root.iterdir())
                    if sub.name.startswith(".") and (sub / "cur").is_dir()
                )
        return found

    def folder_path(self, folder: str) -> Path:
        """The Maildir of ``folder`` (``alice``, ``alice/.Trash``); :class:`AddressError` if it
        is not one of this box's."""
        part, _, sub = folder.partition("/")
        if part not in self.local_parts or "/" in sub or sub in (".", ".."):
            raise AddressError(f"{folder!r} is not a folder of this box")
        return self.box_dir / "mail" / part / sub if sub else self.box_dir / "mail" / part

    def message_keys(self, folder: str) -> list[str]:
        """The folder's messages, newest first by delivery time (from the Maildir name).

        Only a directory listing: cheap even for tens of thousands of messages.
        """
        root = self.folder_path(folder)
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

    def unread(self, folder: str) -> int:
        """Messages of ``folder`` without the seen flag (names only: no file is opened)."""
        return sum(SEEN not in flags_of(key) for key in self.message_keys(folder))

    def summaries(self, folder: str, keys: list[str]) -> Iterator[MessageSummary]:
        """Header summaries of ``keys``; a message that vanished meanwhile is skipped."""
        root = self.folder_path(folder)
        for key in keys:
            try:
                with open(root / key, "rb") as handle:
                    head = handle.read(HEADER_READ_LIMIT)
            except FileNotFoundError:
                continue
            head = head.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
            yield self.summary(
                folder,
                key,
                email.parser.BytesHeaderParser(policy=PLAIN_TEXT).parsebytes(head),
            )

    def summary(self, folder: str, key: str, msg: email.message.Message) -> MessageSummary:
        return MessageSummary(
            folder=folder,
            key=key,
            sender=text(msg.get("From")),
            subject=text(msg.get("Subject")),
            date=short_date(text(msg.get("Date"))),
            message_id=text(msg.get("Message-ID")).strip().strip("<>"),
            arrival=self.arrival(msg),
            references=referenced_ids(text(msg.get("References")), text(msg.get("In-Reply-To"))),
        )

    def arrival(self, msg: email.message.Message) -> Arrival:
        """How ``msg`` reached this box, from the box's own fields (:func:`read_arrival`)."""
        return read_arrival(msg, self.onion)


def _delivery_time(name: str) -> float:
    head = name.split(".", 1)[0]
    return float(head) if head.isdigit() else 0.0
