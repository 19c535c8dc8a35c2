"""The words of the threat model: observers, metadata items, paths, and the leak matrix.

Everything here is plain data: enums whose values are the stable names used
in JSON and on screen, frozen dataclasses for the inputs of
:func:`threat_model.leaks` and for its answer, :class:`LeakMatrix`.

Exceptions::

    ThreatModelError                 base of this package's errors
     +- TraitsError (ValueError)     a MessageTraits field has an impossible value
     +- ModelConfigError (ValueError)
                                     a ModelConfig field has an impossible value
     +- MatrixFormatError (ValueError)
                                     a leak matrix (or its JSON) is incomplete or malformed
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any

JSON_VERSION = 1
"""Version of :meth:`LeakMatrix.to_json`'s layout; :meth:`LeakMatrix.from_json` checks it."""


class ThreatModelError(Exception):
    """Base of every error raised by :mod:`threat_model`."""


class TraitsError(ThreatModelError, ValueError):
    """A :class:`MessageTraits` field has a value the model does not know."""


class ModelConfigError(ThreatModelError, ValueError):
    """A :class:`ModelConfig` field has a value the model does not know."""


class MatrixFormatError(ThreatModelError, ValueError):
    """A leak matrix, or the JSON it was read from, is incomplete or malformed."""


class Observer(StrEnum):
    """Who might learn something about a message (see :data:`OBSERVER_DESCRIPTIONS`)."""

    SENDER_NETWORK = "sender-network"
    SENDER_PROVIDER = "sender-provider"
    TOR_GUARD = "tor-guard"
    TOR_RELAYS = "tor-relays"
    RECIPIENT_BOX = "recipient-box"
    GATEWAY_OPERATOR = "gateway-operator"
    GATEWAY_MX_NETWORK = "gateway-mx-network"
    RECIPIENT_PROVIDER = "recipient-provider"
    GLOBAL_PASSIVE = "global-passive"
    BOX_SEIZURE = "box-seizure"
    BOX_LOGS = "box-logs"


class Item(StrEnum):
    """A piece of metadata or content (see :data:`ITEM_DESCRIPTIONS`)."""

    SENDER_ADDRESS = "sender-address"
    RECIPIENT_ADDRESS = "recipient-address"
    SENDER_IP = "sender-ip"
    RECIPIENT_IP = "recipient-ip"
    SUBJECT = "subject"
    BODY = "body"
    ATTACHMENT_NAMES = "attachment-names"
    SIZE = "size"
    SEND_TIME = "send-time"
    RELATION = "relation"
    CLIENT_FINGERPRINT = "client-fingerprint"
    MESSAGE_ID_HOST = "message-id-host"


class MailPath(StrEnum):
    """The way a message travels (see :data:`PATH_DESCRIPTIONS` and ``paths/<value>.md``)."""

    ONION_SEALED = "onion-sealed"
    ONION_PLAIN = "onion-plain"
    GATEWAY_CLEARNET = "gateway-clearnet"
    GATEWAY_CLEARNET_OPENPGP = "gateway-clearnet-openpgp"
    CLEARNET_INBOUND = "clearnet-inbound"


class Visibility(StrEnum):
    """What one observer can make of one item (see :data:`VISIBILITY_DESCRIPTIONS`)."""

    VISIBLE = "visible"
    ENCRYPTED = "encrypted"
    PADDED = "padded"
    DELAYED = "delayed"
    HIDDEN = "hidden"


class Timing(StrEnum):
    """When the sending box lets a queued message go (``[timing] mode``)."""

    IMMEDIATE = "immediate"
    DELAY = "delay"
    BATCH = "batch"


SENT = "sent"
RECEIVED = "received"
DIRECTIONS = (SENT, RECEIVED)
"""The values of :attr:`MessageTraits.direction`."""


@dataclass(frozen=True)
class Cell:
    """One observer's view of one item, and why."""

    visibility: Visibility
    reason: str
    """One or two sentences a user can check: the mechanism, not a verdict."""


@dataclass(frozen=True)
class MessageTraits:
    """What the model needs to know about the message itself (never its content)."""

    has_attachments: bool = False
    """Whether the message has attachments; without any, every ``attachment-names`` cell
    is hidden ("this message has no attachments")."""
    direction: str = SENT
    """``"sent"`` (by this box) or ``"received"`` (by this box). It decides whose box
    ``box-seizure`` and ``box-logs`` are, and on ``onion-plain`` which end is the plain
    server. Gateway paths are always sent and ``clearnet-inbound`` always received:
    there the path decides and this field is ignored."""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise TraitsError(f"direction must be 'sent' or 'received', not {self.direction!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The settings that change the answer. The defaults are onionmail's defaults.

    ``padding``, ``timing`` and ``scrubbing`` are the *sending* box's settings: yours
    for a sent message; for a message received from another onionmail box they are
    that box's (unknown to you, so assume its defaults). Where no onionmail box
    sends (a plain onion server, a clearnet sender) they do not apply.
    """

    padding: bool = True
    """Sealed envelopes are padded to a Padmé bucket with a 4096-byte floor
    (:mod:`onionmail.seal.padding`). Applies wherever a sealed envelope travels: box to box,
    box to gateway, gateway to box."""
    timing: Timing = Timing.IMMEDIATE
    """``[timing] mode`` of the sending box: ``immediate`` sends at once; ``delay`` holds
    each message for a random (exponential) time; ``batch`` sends at fixed instants."""
    starttls_enforced: bool = True
    """The gateway refuses to deliver without TLS on the clearnet: outbound it requires
    STARTTLS (MTA-STS and DANE enforced, no plaintext fallback). False: opportunistic TLS,
    which an attacker on the path can strip. Inbound it does not apply: the gateway offers
    STARTTLS to sending servers but never requires it, so that leg is always counted as
    strippable."""
    scrubbing: bool = True
    """Submission removes the client fields (``User-Agent``, ``X-Mailer``, ...). False
    models a box that keeps them (``[scrub] keep_headers``). Trace fields are always
    removed and ``Message-ID`` is always regenerated, so those cells do not depend on it."""
    key_passphrase: bool = False
    """The identity key is encrypted with a passphrase (argon2id). The outbound queue is
    encrypted with a key derived from the identity seed, so only with a passphrase is a
    stopped box's queue unreadable to whoever takes its disk."""
    sent_copy: bool = True
    """The box files a copy of every message it sends in the sender's ``.Sent`` Maildir
    folder (``[submission] keep_sent``), in clear like received mail: whoever takes the
    disk reads it there, passphrase or not. False: no copy once delivered."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "timing", Timing(self.timing))
        except ValueError:
            modes = ", ".join(repr(str(m)) for m in Timing)
            raise ModelConfigError(f"timing must be one of {modes}, not {self.timing!r}") from None


def _cell_from_json(where: str, raw: Any) -> Cell:
    if not isinstance(raw, Mapping):
        raise MatrixFormatError(f"{where}: expected an object with visibility and reason")
    try:
        visibility = Visibility(str(raw.get("visibility")))
    except ValueError:
        raise MatrixFormatError(f"{where}: unknown visibility {raw.get('visibility')!r}") from None
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise MatrixFormatError(f"{where}: the reason must be a non-empty string")
    return Cell(visibility, reason)


@dataclass(frozen=True)
class LeakMatrix:
    """For one path: every (observer, item) pair and its :class:`Cell`.

    The matrix is complete: a pair whose observer is not on the path is hidden with
    the reason ``"not on this path"``. ``cells`` is read-only once built.
    """

    path: MailPath
    cells: Mapping[tuple[Observer, Item], Cell]

    def __post_init__(self) -> None:
        try:
            path = MailPath(self.path)
        except ValueError:
            raise MatrixFormatError(f"unknown path {self.path!r}") from None
        cells: dict[tuple[Observer, Item], Cell] = {}
        for key, cell in self.cells.items():
            try:
                raw_observer, raw_item = key
                observer, item = Observer(raw_observer), Item(raw_item)
            except (ValueError, TypeError):
                raise MatrixFormatError(f"not an (observer, item) pair: {key!r}") from None
            if not isinstance(cell, Cell) or not cell.reason.strip():
                raise MatrixFormatError(f"{observer} / {item}: expected a Cell with a reason")
            cells[observer, item] = Cell(Visibility(cell.visibility), cell.reason)
        missing = [f"{o} / {i}" for o in Observer for i in Item if (o, i) not in cells]
        if missing:
            raise MatrixFormatError(
                f"the matrix for {path} lacks {len(missing)} cell(s), first {missing[0]}"
            )
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "cells", MappingProxyType(cells))

    def __hash__(self) -> int:
        return hash((self.path, frozenset(self.cells.items())))

    def cell(self, observer: Observer, item: Item) -> Cell:
        """The cell of ``observer`` and ``item``."""
        return self.cells[observer, item]

    def visible_to(self, observer: Observer) -> frozenset[Item]:
        """The items ``observer`` sees in clear (visibility ``visible``, nothing blurred)."""
        return frozenset(
            item for item in Item if self.cells[observer, item].visibility is Visibility.VISIBLE
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"version", "path", "cells": {observer: {item: cell}}}``."""
        return {
            "version": JSON_VERSION,
            "path": str(self.path),
            "cells": {
                str(o): {
                    str(i): {
                        "visibility": str(self.cells[o, i].visibility),
                        "reason": self.cells[o, i].reason,
                    }
                    for i in Item
                }
                for o in Observer
            },
        }

    @cached_property
    def json_text(self) -> str:
        """:meth:`to_json` as compact JSON text, encoded once per matrix (it is immutable):
        most of the bytes of every ledger entry the box writes."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LeakMatrix:
        """The matrix :meth:`to_json` wrote; :class:`MatrixFormatError` names what is wrong."""
        if not isinstance(data, Mapping):
            raise MatrixFormatError("a leak matrix must be a JSON object")
        version = data.get("version", JSON_VERSION)
        if version != JSON_VERSION:
            raise MatrixFormatError(f"unsupported leak matrix version {version!r}")
        try:
            path = MailPath(str(data.get("path")))
        except ValueError:
            raise MatrixFormatError(f"unknown path {data.get('path')!r}") from None
        rows = data.get("cells")
        if not isinstance(rows, Mapping):
            raise MatrixFormatError("cells: expected an object keyed by observer")
        cells: dict[tuple[Observer, Item], Cell] = {}
        for observer in Observer:
            row = rows.get(str(observer))
            if not isinstance(row, Mapping):
                raise MatrixFormatError(f"cells: observer {observer} is missing")
            for item in Item:
                where = f"cells.{observer}.{item}"
                if item not in row:
                    raise MatrixFormatError(f"{where}: missing")
                cells[observer, item] = _cell_from_json(where, row[str(item)])
        unknown = sorted(set(rows) - set(Observer))
        if unknown:
            raise MatrixFormatError(f"cells: unknown observer {unknown[0]!r}")
        return cls(path, cells)


OBSERVER_DESCRIPTIONS: Mapping[Observer, str] = MappingProxyType(
    {
        Observer.SENDER_NETWORK: "the sender's local network and ISP",
        Observer.SENDER_PROVIDER: (
            "the sender's mail server when it is not an onionmail box: the clearnet sender's "
            "provider, or the plain onion server a message came from"
        ),
        Observer.TOR_GUARD: (
            "the Tor entry guards: the sender's, and the recipient onion's own; each sees "
            "only its own end"
        ),
        Observer.TOR_RELAYS: (
            "the other Tor relays: middle relays, introduction and rendezvous points, "
            "onion service directories"
        ),
        Observer.RECIPIENT_BOX: (
            "the recipient's box or mail server and the recipient reading the message"
        ),
        Observer.GATEWAY_OPERATOR: "whoever runs the clearnet gateway",
        Observer.GATEWAY_MX_NETWORK: (
            "the network between the gateway and the clearnet mail server on the other side"
        ),
        Observer.RECIPIENT_PROVIDER: "the clearnet recipient's mail provider",
        Observer.GLOBAL_PASSIVE: (
            "a global passive adversary who watches every network link at once"
        ),
        Observer.BOX_SEIZURE: (
            "someone who takes your box's disk while the box is stopped (the sender's box "
            "for a sent message, the recipient's for a received one)"
        ),
        Observer.BOX_LOGS: "your box's own log at INFO level and above",
    }
)

ITEM_DESCRIPTIONS: Mapping[Item, str] = MappingProxyType(
    {
        Item.SENDER_ADDRESS: "the sender's mail address",
        Item.RECIPIENT_ADDRESS: "the recipient's mail address",
        Item.SENDER_IP: "the network address of the sender's machine",
        Item.RECIPIENT_IP: "the network address of the recipient's machine",
        Item.SUBJECT: "the Subject",
        Item.BODY: "the body",
        Item.ATTACHMENT_NAMES: "attachment file names and types",
        Item.SIZE: "the message's size",
        Item.SEND_TIME: "when the message was sent",
        Item.RELATION: "the fact that the sender and the recipient correspond",
        Item.CLIENT_FINGERPRINT: (
            "what names the sender's mail client or machine: User-Agent, X-Mailer, the "
            "client's EHLO name and the like"
        ),
        Item.MESSAGE_ID_HOST: (
            "what the Message-ID's host part tells beyond the sender address (a machine's "
            "host name)"
        ),
    }
)

PATH_DESCRIPTIONS: Mapping[MailPath, str] = MappingProxyType(
    {
        MailPath.ONION_SEALED: "box to box over onion services, as a sealed envelope",
        MailPath.ONION_PLAIN: "between a box and a plain SMTP server reachable as an onion",
        MailPath.GATEWAY_CLEARNET: "box to gateway over its onion, then clearnet SMTP",
        MailPath.GATEWAY_CLEARNET_OPENPGP: (
            "box to gateway to clearnet, encrypted end to end with OpenPGP (PGP/MIME, "
            "protected headers)"
        ),
        MailPath.CLEARNET_INBOUND: (
            "clearnet sender to gateway, sealed there to the box and sent over its onion"
        ),
    }
)

VISIBILITY_DESCRIPTIONS: Mapping[Visibility, str] = MappingProxyType(
    {
        Visibility.VISIBLE: "seen in clear",
        Visibility.ENCRYPTED: "passes through the observer's hands, but only as ciphertext",
        Visibility.PADDED: "the size shows only as a padding bucket",
        Visibility.DELAYED: "the time shows only as when the box let the message go",
        Visibility.HIDDEN: "the observer never gets it, in any form",
    }
)
