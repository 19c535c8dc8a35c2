"""What sending to a recipient would do, before anything leaves: the TUI's forecast.

Every answer comes from the box's own rules: the route
(:func:`onionmail.box.policy.route`), the leak model and the policy gate
(:class:`onionmail.box.policy_gate.LeakKeeper`), with ``[gateway]`` read
from disk as :class:`~onionmail.box.api.BoxApi` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from onionmail.box.policy import Route, route
from onionmail.core.mail_address import MailAddress, parse_mail_address
from threat_model import LeakMatrix, MailPath, MessageTraits, ModelConfig, Timing, leaks

if TYPE_CHECKING:
    from onionmail.box.api import BoxApi, GatewayRegistration

NO_GATEWAY = (
    "no gateway is registered: this box cannot send to clearnet addresses "
    "(register one with 'onionmail gateway register', or write to an onion address)"
)


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


def _route(api: BoxApi, address: MailAddress) -> tuple[Route, GatewayRegistration | None]:
    sending = api.sending_gateway()
    return route(address, api.config.onion_mx, sending.gateway if sending else None), sending


def predict(api: BoxApi, recipient: str, *, has_attachments: bool = False) -> Prediction:
    """Path, leak matrix and the box's verdict for one recipient, before sending.

    The path is the box's own prediction (:meth:`LeakKeeper.predicted`): an
    ``[onion_mx]`` domain is an onion peer, not the gateway path.
    ``has_attachments``: whether the message to send has any.
    """
    address = parse_mail_address(recipient)
    if address.is_onion:
        address.onion_public_key()  # AddressError: a sentence on what is wrong with it
    rcpt = str(address)
    matrix = api.leak_keeper.predicted(rcpt, has_attachments=has_attachments)
    refusal = api.leak_keeper.check_recipient(address)
    way, sending = _route(api, address)
    if refusal is None and way.destination is None:
        refusal = NO_GATEWAY
    key = "" if address.is_onion else api.fingerprint_for(rcpt)
    return Prediction(rcpt, matrix.path, matrix, refusal, _route_words(address, way, sending), key)


def _route_words(address: MailAddress, way: Route, sending: GatewayRegistration | None) -> str:
    if address.is_onion:
        return f"straight to {address.domain}"
    if not way.via_gateway:
        return f"[onion_mx] routes {address.domain} straight to {way.destination} (no gateway)"
    if sending is None:
        return ""
    return f"sealed to the gateway {sending.gateway}, sent on as {sending.alias}"


def what_if(api: BoxApi, recipient: str, *, has_attachments: bool = False) -> list[PathOption]:
    """The paths a message to ``recipient`` could take, side by side.

    Which ones are available follows the route; the gateway is compared with
    and without OpenPGP, the latter available when a key is known.
    """
    address = parse_mail_address(recipient)
    rcpt = str(address)
    keeper = api.leak_keeper
    # [policy] plaintext_allowed: the gateway paths as the ledger would record them.
    relaxed = keeper.plaintext_allowed([rcpt])
    base = keeper.model_config(rcpt, starttls_enforced=not relaxed)
    expected = keeper.predicted(rcpt).path
    way, sending = _route(api, address)
    onion = not way.via_gateway
    gateway = way.via_gateway and sending is not None
    key = "" if address.is_onion else api.fingerprint_for(rcpt)

    def option(label: str, path: MailPath, config: ModelConfig, ok: bool, note: str) -> PathOption:
        matrix = leaks(path, MessageTraits(has_attachments=has_attachments), config)
        is_expected = ok and path == expected and config == base  # never an unavailable path
        return PathOption(label, matrix, ok, note, keeper.refusal(rcpt, path), is_expected)

    if onion and not address.is_onion:
        onion_note = f"[onion_mx] routes {address.domain} to its onion"
        gw_note = f"never: [onion_mx] sends {address.domain} straight to its onion"
    elif address.is_onion:
        onion_note = "the expected path"
        gw_note = "an onion address never goes through a gateway"
    else:
        onion_note = "the recipient has no onion address (and no [onion_mx] route)"
        gw_note = (
            f"via {sending.gateway} as {sending.alias}" if sending else "no gateway registered"
        )
    if key:
        pgp_note = f"{gw_note}; OpenPGP key {key} known"
    else:
        pgp_note = f"{gw_note}; no OpenPGP key known for {rcpt}"
    plain_note = "if the peer is not an onionmail box" if onion else "no onion address"
    return [
        option("onion sealed", MailPath.ONION_SEALED, base, onion, onion_note),
        option("onion plain peer", MailPath.ONION_PLAIN, base, onion, plain_note),
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
            replace(base, timing=Timing.DELAY),
            onion or gateway,
            "the expected path with [timing] mode = delay",
        ),
        option(
            "no padding",
            expected,
            replace(base, padding=False),
            False,
            "the expected path unpadded (padding cannot be turned off in this box)",
        ),
    ]
