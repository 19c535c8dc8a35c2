"""One message on one path under one configuration, and the reasoning shared by all observers.

:class:`Situation` answers the questions every observer's rule asks (is a
sealed envelope on the Tor leg? is it padded? did an onionmail box scrub
it? when did it leave?), so that each rule in :mod:`threat_model.transit`
and :mod:`threat_model.holders` reads as a list of claims.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from threat_model.vocabulary import (
    RECEIVED,
    SENT,
    Cell,
    Item,
    MailPath,
    MessageTraits,
    ModelConfig,
    Timing,
    Visibility,
)

Row = Mapping[Item, Cell]
Rule = Callable[["Situation"], Row]

GATEWAY_PATHS = frozenset({MailPath.GATEWAY_CLEARNET, MailPath.GATEWAY_CLEARNET_OPENPGP})

PADME = (
    "padded to a Padmé bucket with a 4096-byte floor: every message under about 4 KiB "
    "looks alike, a larger one shows only its order of magnitude and a few bits "
    "(at most 6.25 % padding)"
)
TOR_CELL = "to within a Tor cell (about 500 bytes)"
SCRUBBED_FINGERPRINT = (
    "scrubbing removed User-Agent, X-Mailer and the other client fields at submission, "
    "and the client's EHLO name never leaves the box (it greets peers as 'localhost')"
)
RESIDUAL_FINGERPRINT = (
    "reduced, not gone: field order and MIME boundary style may still hint at the client "
    "family (not its version or machine)"
)
OPENPGP_ARMOR = (
    "the box's OpenPGP armor carries no 'Version:' line (PGPy writes 'Version: PGPy v...' "
    "unless told not to)"
)
BOX_MESSAGE_ID = (
    "the box regenerates every Message-ID as <random>@<sender onion>: its host names "
    "nothing the sender address does not"
)
DATE_FIELD = (
    "the Date field tells when the message was submitted (UTC, rounded down to "
    "[scrub] date_rounding, a minute by default), whatever delay the sending box added"
)
OUTER_DATE_FIELD = DATE_FIELD.replace("the Date field", "the outer Date field")
GATEWAY_MESSAGE_ID = (
    "before the message leaves for the gateway the box moves its Message-ID "
    "(<random>@<box onion>) to the alias's domain, keeping only the random part (the gateway "
    "does the same to one that still names the onion): its host names nothing the sender "
    "address does not"
)


def visible(reason: str) -> Cell:
    return Cell(Visibility.VISIBLE, reason)


def encrypted(reason: str) -> Cell:
    return Cell(Visibility.ENCRYPTED, reason)


def padded(reason: str) -> Cell:
    return Cell(Visibility.PADDED, reason)


def delayed(reason: str) -> Cell:
    return Cell(Visibility.DELAYED, reason)


def hidden(reason: str) -> Cell:
    return Cell(Visibility.HIDDEN, reason)


def content(cell: Cell) -> dict[Item, Cell]:
    """The same cell for subject, body and attachment names."""
    return {Item.SUBJECT: cell, Item.BODY: cell, Item.ATTACHMENT_NAMES: cell}


@dataclass(frozen=True)
class Situation:
    path: MailPath
    message: MessageTraits
    config: ModelConfig

    @property
    def direction(self) -> str:
        """Sent or received by your box; fixed by the path where the path allows one only."""
        if self.path in GATEWAY_PATHS:
            return SENT
        if self.path is MailPath.CLEARNET_INBOUND:
            return RECEIVED
        return self.message.direction

    @property
    def sent(self) -> bool:
        return self.direction == SENT

    @property
    def onion(self) -> bool:
        """Both ends are onions (box to box, or box and plain onion server)."""
        return self.path in (MailPath.ONION_SEALED, MailPath.ONION_PLAIN)

    @property
    def gateway(self) -> bool:
        """Box to gateway to clearnet (with or without OpenPGP)."""
        return self.path in GATEWAY_PATHS

    @property
    def inbound(self) -> bool:
        """Clearnet to gateway to box."""
        return self.path is MailPath.CLEARNET_INBOUND

    @property
    def openpgp(self) -> bool:
        return self.path is MailPath.GATEWAY_CLEARNET_OPENPGP

    @property
    def plain_peer(self) -> bool:
        """The other end is a plain SMTP server reachable as an onion."""
        return self.path is MailPath.ONION_PLAIN

    @property
    def box_sends(self) -> bool:
        """An onionmail box submitted and sent the message (so it scrubbed and timed it)."""
        if self.plain_peer:
            return self.sent
        return not self.inbound

    @property
    def sealed_leg(self) -> bool:
        """The Tor leg carries a sealed envelope (box to box, box to gateway, gateway to box)."""
        return not self.plain_peer

    @property
    def padded(self) -> bool:
        return self.sealed_leg and self.config.padding

    @property
    def scrubbed(self) -> bool:
        return self.box_sends and self.config.scrubbing

    @property
    def timing(self) -> Timing:
        return self.config.timing if self.box_sends else Timing.IMMEDIATE

    @property
    def tls(self) -> bool:
        return self.config.starttls_enforced

    @property
    def seal(self) -> str:
        """Said after "Tor's encryption" when a sealed envelope adds its own."""
        return " and the sealed envelope's" if self.sealed_leg else ""

    def tor_size(self, where: str) -> Cell:
        """Size as seen from the volume of Tor cells on ``where``."""
        if self.padded:
            return padded(f"the sealed envelope on {where} is {PADME}")
        if self.sealed_leg:
            return visible(
                f"padding is off, so the sealed envelope is as long as the message: the "
                f"Tor cells on {where} give its size {TOR_CELL}"
            )
        return visible(
            f"plain SMTP is not padded: the Tor cells on {where} give the message's size {TOR_CELL}"
        )

    def leaving_time(self, seen: str) -> Cell:
        """Send time for an observer who sees only when the message travels (``seen``)."""
        if self.timing is Timing.DELAY:
            return delayed(
                f"{seen}; the box held it for a random (exponential) delay first, so that "
                f"is when it left, not when it was written"
            )
        if self.timing is Timing.BATCH:
            return delayed(
                f"{seen}; the box lets mail go only at batch instants (multiples of "
                f"[timing] batch_interval, the same for every box), so that is the batch, "
                f"not when it was written"
            )
        if self.box_sends:
            return visible(f"{seen}, and with no delay policy that is seconds after submission")
        if self.inbound:
            return visible(f"{seen}; the sender's provider and the gateway pass mail on at once")
        return visible(f"{seen}; a plain SMTP server sends at once")

    def fingerprint(self, unscrubbed: Cell, *, sees_openpgp: bool = False) -> Cell:
        """Client fingerprint: removed by scrubbing, else as ``unscrubbed`` says.

        ``sees_openpgp``: the observer gets the box's OpenPGP output (clearnet side).
        """
        if self.scrubbed:
            reason = SCRUBBED_FINGERPRINT
            if unscrubbed.visibility is Visibility.VISIBLE:
                reason += f"; {RESIDUAL_FINGERPRINT}"
            if self.openpgp and sees_openpgp:
                reason += f"; {OPENPGP_ARMOR}"
            return hidden(reason)
        if self.box_sends:
            return Cell(
                unscrubbed.visibility,
                f"scrubbing is off: the client fields stay in the message, and {unscrubbed.reason}",
            )
        return unscrubbed
