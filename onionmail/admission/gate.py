"""Where mail from whom lands, and what a stranger must pay first.

The inbound server asks the :class:`Admission` at each RCPT (from the MAIL
FROM it was given; a sealed envelope proves that sender at DATA, so a
claimed contact that is not one fails there) and again when the message is
stored:

- a **blocked** sender: ``550 5.7.1`` at RCPT;
- a **contact** (in ``contacts.toml``, written to, or accepted): INBOX, no
  stamp, no limit;
- a **stranger**, by ``[inbound] strangers``: ``refuse`` (``550 5.7.1``; also
  when ``[policy] rules`` has ``never-from-strangers``), else a stamp is due
  from an onion sender (``450 4.7.0`` with the cost when it is missing or
  wrong, :mod:`onionmail.admission.stamps`), then the per-sender and
  all-strangers limits (``450 4.7.1``), then ``requests`` puts the mail in the
  ``Requests`` folder and ``inbox`` in INBOX.

Mail a gateway relays is decided at DATA by its clearnet sender the same
way, without a stamp (a clearnet server cannot make one; the gateway has
its own limits). So is mail from a plain onion SMTP server. A null sender
(a bounce) is never a stranger's request: it answers mail the box sent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from onionmail.admission import REQUESTS
from onionmail.admission.senders import STRANGERS, SenderBook, sender_key
from onionmail.admission.stamps import PAID, StampCost, check_stamp
from onionmail.config.box import InboundSection
from onionmail.core.errors import ConfigError
from onionmail.store.contacts import AddressBook

log = logging.getLogger(__name__)


class Admission:
    """The inbound rule of one box; its checks block (SQLite, argon2id): call them from
    worker threads."""

    def __init__(
        self,
        settings: InboundSection,
        box_dir: Path,
        senders: SenderBook,
        *,
        refuse_strangers: bool = False,
    ) -> None:
        self.settings = settings
        self.mode = "refuse" if refuse_strangers else settings.strangers
        self.cost = StampCost(settings.pow_bits, settings.pow_memory_kib, 1)
        self.senders = senders
        self.book = AddressBook(box_dir)
        self._contacts: tuple[float, frozenset[str]] = (-1.0, frozenset())
        self.on_refused: Callable[[str], None] | None = None
        """Called with a refusal's kind ("blocked", "stamp", "limit", "strangers"), for counts."""

    def contacts(self) -> frozenset[str]:
        """The address book's senders (re-read when the file changes)."""
        try:
            mtime = os.stat(self.book.path).st_mtime
        except FileNotFoundError:
            return frozenset()
        if mtime != self._contacts[0]:
            try:
                keys = frozenset(sender_key(a) for a in self.book.entries().values())
            except ConfigError as exc:  # a damaged book: the last good one, and say so
                log.warning("%s", exc)
                return self._contacts[1]
            self._contacts = (mtime, keys)
        return self._contacts[1]

    def is_contact(self, sender: str) -> bool:
        key = sender_key(sender)
        return key in self.contacts() or self.senders.is_known(key)

    def at_rcpt(
        self, sender: str, recipient: str, stamp: str | None, challenge: bytes | None
    ) -> str | None:
        """The reply refusing this RCPT, or None to take it (a ``250`` reply: taken, and the
        sender told that its stamp paid)."""
        if not sender:
            return None
        key = sender_key(sender)
        if self.senders.is_blocked(key):
            return self._refuse("blocked", "550 5.7.1 This box does not accept mail from you")
        if self.is_contact(sender):
            return None
        if self.mode == "refuse":
            return self._refuse("strangers", "550 5.7.1 This box takes mail only from its contacts")
        if key.endswith(".onion") and self.cost.bits > 0:
            why = "no stamp"
            if stamp is not None and challenge is not None:
                why = (
                    check_stamp(
                        stamp, self.cost, recipient=recipient, sender=sender, challenge=challenge
                    )
                    or ""
                )
            if why:
                return self._refuse(
                    "stamp",
                    f"450 4.7.0 Proof of work needed from a sender this box does not know "
                    f"({why}): {self.cost.announcement()}",
                )
            return self.over_limit(key) or f"250 2.1.5 OK, {PAID}"
        return self.over_limit(key)

    def over_limit(self, key: str) -> str | None:
        """``450 4.7.1`` when the stranger ``key`` or all strangers sent their hour's worth."""
        per_sender = self.settings.stranger_messages_per_hour
        if per_sender and self.senders.count(key) >= per_sender:
            return self._refuse(
                "limit",
                f"450 4.7.1 Too much mail from you this hour (at most {per_sender} from a "
                "sender this box does not know); try later",
            )
        total = self.settings.strangers_messages_per_hour
        if total and self.senders.count(STRANGERS) >= total:
            return self._refuse(
                "limit",
                f"450 4.7.1 This box takes at most {total} messages an hour from senders "
                "it does not know; try later",
            )
        return None

    def at_data(self, sender: str) -> tuple[str | None, str]:
        """For mail whose sender is known only now (gateway, plain peer): a refusal, or
        None and the folder (``""`` INBOX, or :data:`REQUESTS`)."""
        if not sender:
            return None, ""
        key = sender_key(sender)
        if self.senders.is_blocked(key):
            return self._refuse("blocked", "550 5.7.1 This box does not accept mail from you"), ""
        if self.is_contact(sender):
            return None, ""
        if self.mode == "refuse":
            refusal = "550 5.7.1 This box takes mail only from its contacts"
            return self._refuse("strangers", refusal), ""
        limit = self.over_limit(key)
        return limit, self.folder_for(sender)

    def folder_for(self, sender: str) -> str:
        """Where a stored message goes: INBOX (``""``) or :data:`REQUESTS`."""
        if not sender or self.mode == "inbox" or self.is_contact(sender):
            return ""
        return REQUESTS

    def stored(self, sender: str) -> None:
        """Count a stored message against its sender's limits (strangers only)."""
        if sender and not self.is_contact(sender):
            self.senders.record([sender_key(sender), STRANGERS])

    def _refuse(self, kind: str, reply: str) -> str:
        if self.on_refused is not None:
            self.on_refused(kind)
        return reply
