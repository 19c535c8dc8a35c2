"""The threat model as code: ``leaks(path, message, config)`` -> who sees what, and why.

:func:`leaks` answers, for one message on one path under one
configuration, every pair of :class:`Observer` x :class:`Item` with a
:class:`Visibility` and a reason. The rules live in
:mod:`threat_model.transit` (networks and Tor) and
:mod:`threat_model.holders` (the ends, the servers between them, your box at
rest); the vocabulary in :mod:`threat_model.vocabulary`, re-exported here.

The answer is the worst case the configuration allows, not a good day: a
cell is ``visible`` when the observer can get the item under these
settings (STARTTLS that *can* be stripped counts as stripped); the reason
says when it is usually better. A cell that is ``padded`` or ``delayed``
means the item shows only in blurred form, and the reason says how.
"""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType

from threat_model import holders, transit
from threat_model.situation import Rule, Situation
from threat_model.vocabulary import (
    DIRECTIONS,
    ITEM_DESCRIPTIONS,
    JSON_VERSION,
    OBSERVER_DESCRIPTIONS,
    PATH_DESCRIPTIONS,
    RECEIVED,
    SENT,
    VISIBILITY_DESCRIPTIONS,
    Cell,
    Item,
    LeakMatrix,
    MailPath,
    MatrixFormatError,
    MessageTraits,
    ModelConfig,
    ModelConfigError,
    Observer,
    ThreatModelError,
    Timing,
    TraitsError,
    Visibility,
)

__all__ = [
    "DIRECTIONS",
    "ITEM_DESCRIPTIONS",
    "JSON_VERSION",
    "NOT_ON_PATH",
    "OBSERVER_DESCRIPTIONS",
    "PATH_DESCRIPTIONS",
    "RECEIVED",
    "SENT",
    "VISIBILITY_DESCRIPTIONS",
    "Cell",
    "Item",
    "LeakMatrix",
    "MailPath",
    "MatrixFormatError",
    "MessageTraits",
    "ModelConfig",
    "ModelConfigError",
    "Observer",
    "ThreatModelError",
    "Timing",
    "TraitsError",
    "Visibility",
    "leaks",
    "observers_for",
    "path_prose",
]

NOT_ON_PATH = "not on this path"
"""The reason of every cell whose observer does not exist on the path."""

_ONION = (
    Observer.SENDER_NETWORK,
    Observer.TOR_GUARD,
    Observer.TOR_RELAYS,
    Observer.RECIPIENT_BOX,
    Observer.GLOBAL_PASSIVE,
    Observer.BOX_SEIZURE,
    Observer.BOX_LOGS,
)
_CLEARNET_SIDE = (Observer.GATEWAY_OPERATOR, Observer.GATEWAY_MX_NETWORK)

_ON_PATH: dict[MailPath, frozenset[Observer]] = {
    MailPath.ONION_SEALED: frozenset(_ONION),
    MailPath.ONION_PLAIN: frozenset((*_ONION, Observer.SENDER_PROVIDER)),
    MailPath.GATEWAY_CLEARNET: frozenset((*_ONION, *_CLEARNET_SIDE, Observer.RECIPIENT_PROVIDER)),
    MailPath.GATEWAY_CLEARNET_OPENPGP: frozenset(
        (*_ONION, *_CLEARNET_SIDE, Observer.RECIPIENT_PROVIDER)
    ),
    MailPath.CLEARNET_INBOUND: frozenset((*_ONION, *_CLEARNET_SIDE, Observer.SENDER_PROVIDER)),
}

RULES: MappingProxyType[Observer, Rule] = MappingProxyType(
    {
        Observer.SENDER_NETWORK: transit.sender_network,
        Observer.SENDER_PROVIDER: holders.sender_provider,
        Observer.TOR_GUARD: transit.tor_guard,
        Observer.TOR_RELAYS: transit.tor_relays,
        Observer.RECIPIENT_BOX: holders.recipient_box,
        Observer.GATEWAY_OPERATOR: holders.gateway_operator,
        Observer.GATEWAY_MX_NETWORK: transit.gateway_mx_network,
        Observer.RECIPIENT_PROVIDER: holders.recipient_provider,
        Observer.GLOBAL_PASSIVE: transit.global_passive,
        Observer.BOX_SEIZURE: holders.box_seizure,
        Observer.BOX_LOGS: holders.box_logs,
    }
)


def observers_for(path: MailPath) -> tuple[Observer, ...]:
    """The observers that exist on ``path``, in :class:`Observer` order.

    There is no gateway on the onion paths and no clearnet provider between boxes;
    on ``clearnet-inbound`` the gateway is the recipient's clearnet MX, so there is no
    separate recipient provider. Every other observer's cells are hidden, "not on this
    path".
    """
    present = _ON_PATH[MailPath(path)]
    return tuple(o for o in Observer if o in present)


def leaks(
    path: MailPath,
    message: MessageTraits = MessageTraits(),  # noqa: B008 - frozen, so a shared default is safe
    config: ModelConfig = ModelConfig(),  # noqa: B008
) -> LeakMatrix:
    """Who learns what about ``message`` on ``path`` under ``config``: a complete matrix."""
    situation = Situation(MailPath(path), message, config)
    present = observers_for(situation.path)
    cells: dict[tuple[Observer, Item], Cell] = {}
    absent = Cell(Visibility.HIDDEN, NOT_ON_PATH)
    no_attachments = Cell(Visibility.HIDDEN, "this message has no attachments")
    for observer in Observer:
        row = RULES[observer](situation) if observer in present else {}
        for item in Item:
            if observer not in present:
                cells[observer, item] = absent
            elif item is Item.ATTACHMENT_NAMES and not message.has_attachments:
                cells[observer, item] = no_attachments
            else:
                cells[observer, item] = row[item]
    return LeakMatrix(situation.path, cells)


def path_prose(path: MailPath) -> str:
    """The prose threat model of ``path`` (``threat_model/paths/<path>.md``), as Markdown."""
    document = resources.files("threat_model").joinpath("paths", f"{MailPath(path)}.md")
    return document.read_text(encoding="utf-8")
