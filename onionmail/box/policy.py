"""The policy gate: refuse a send whose path would leak more than the user allows.

Rules are checked against the leak matrix of :mod:`threat_model` for the
path a message would take, per recipient, at submission time (the answer is
a ``550 5.7.1`` naming the rule and the leak) and again at delivery, when the
peer turns out to be a plain SMTP server rather than an onionmail box (the
message then bounces with a DSN naming the rule). A policy never falls back
silently to a leakier path.

Rules:

``never-clearnet``
    no path through a clearnet gateway.
``require-sealed``
    only the sealed box-to-box path (no plain onion peer, no gateway).
``never-plaintext-subject``
    nobody but the recipient's own box (and whoever seizes one's own box)
    may see the subject in clear.
``require-padding``
    no observer on the network may learn the exact message size.
``never-from-strangers``
    the inbound side's rule, not a send's: in ``[policy] rules`` it refuses mail
    from senders the box does not know (``550 5.7.1``), whatever ``[inbound]
    strangers`` says (:mod:`onionmail.admission.gate`). A send never breaks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from onionmail.config.box import POLICY_RULES
from onionmail.config.gateway import OnionMxSection
from onionmail.core.mail_address import MailAddress
from threat_model import Item, LeakMatrix, MailPath, Observer, Visibility

ENDPOINTS = frozenset({Observer.RECIPIENT_BOX, Observer.BOX_SEIZURE})
"""Observers who are the mail's own ends: seeing the content is their purpose."""

GATEWAY_PATHS = frozenset({MailPath.GATEWAY_CLEARNET, MailPath.GATEWAY_CLEARNET_OPENPGP})


@dataclass(frozen=True)
class Violation:
    """One rule a path breaks, and the leak that breaks it."""

    rule: str
    leak: str

    def __str__(self) -> str:
        return f"policy rule {self.rule}: {self.leak}"


def _never_clearnet(matrix: LeakMatrix) -> str | None:
    if matrix.path in GATEWAY_PATHS:
        return f"the {matrix.path} path goes through a clearnet gateway"
    return None


def _require_sealed(matrix: LeakMatrix) -> str | None:
    if matrix.path != MailPath.ONION_SEALED:
        return f"the {matrix.path} path is not a sealed box-to-box envelope"
    return None


def _never_plaintext_subject(matrix: LeakMatrix) -> str | None:
    for observer in Observer:
        if observer in ENDPOINTS:
            continue
        if matrix.cell(observer, Item.SUBJECT).visibility == Visibility.VISIBLE:
            return f"the subject is visible to {observer} on the {matrix.path} path"
    return None


def _require_padding(matrix: LeakMatrix) -> str | None:
    for observer in Observer:
        if observer in ENDPOINTS or observer == Observer.BOX_LOGS:
            continue
        if matrix.cell(observer, Item.SIZE).visibility == Visibility.VISIBLE:
            return f"the exact size is visible to {observer} on the {matrix.path} path"
    return None


def _inbound_only(matrix: LeakMatrix) -> str | None:
    return None


RULES: dict[str, Callable[[LeakMatrix], str | None]] = {
    "never-clearnet": _never_clearnet,
    "require-sealed": _require_sealed,
    "never-plaintext-subject": _never_plaintext_subject,
    "require-padding": _require_padding,
    "never-from-strangers": _inbound_only,
}


assert tuple(RULES) == POLICY_RULES, "config.POLICY_RULES and policy.RULES must agree"


def check(matrix: LeakMatrix, rules: Iterable[str]) -> list[Violation]:
    """The rules ``matrix`` breaks, in the order given (unknown rules are a config error)."""
    found = []
    for rule in rules:
        leak = RULES[rule](matrix)
        if leak is not None:
            found.append(Violation(rule, leak))
    return found


@dataclass(frozen=True)
class Route:
    """Where a message to one recipient goes: the box's one routing rule (:func:`route`)."""

    destination: str | None
    """The onion the message is sent to; None when nothing can take it (no gateway)."""
    via_gateway: bool
    """Relayed to the clearnet by that gateway, rather than delivered to an onion peer."""


def route(recipient: MailAddress, onion_mx: OnionMxSection, gateway: str | None) -> Route:
    """The rule every part of the box asks (delivery, the policy gate, the TUI's forecast).

    An onion address goes to its onion; a domain of ``[onion_mx]`` straight to
    the onion routed there, never through a gateway; any other address to
    ``gateway`` (the first ``[gateway]``), which relays it to the clearnet.
    """
    if recipient.is_onion:
        return Route(recipient.domain, via_gateway=False)
    routed = onion_mx.onion_for(recipient.domain)
    if routed is not None:
        return Route(routed, via_gateway=False)
    return Route(gateway, via_gateway=True)


def predicted_path(recipient_is_onion: bool, *, openpgp_key: bool = False) -> MailPath:
    """The path a new message is expected to take before the peer is known.

    An onion recipient is expected to be an onionmail box (sealed); if its
    server turns out to be plain SMTP, the delivery agent checks again. A
    clearnet recipient whose OpenPGP key the box holds gets the encrypted
    gateway path; should the key be gone when the message leaves, the box
    checks the plain gateway path again (:mod:`onionmail.openpgp.clearnet`).
    """
    if recipient_is_onion:
        return MailPath.ONION_SEALED
    return MailPath.GATEWAY_CLEARNET_OPENPGP if openpgp_key else MailPath.GATEWAY_CLEARNET
