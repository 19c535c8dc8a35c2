"""The timing policy: when a queued message is first tried, and how often cover is made.

Tor hides *who* talks to *whom*; it does not hide *when*. An observer of the
traffic near the sending box (its guard relay, its local network) sees an
onion connection start the moment the user presses "send", and one who also
watches the recipient's side can match the two by time. The policy blurs
the moment a message leaves (``[timing]``, per contact ``[timing.contacts]``):

* ``immediate`` (the default): tried as soon as it is queued; no added latency.
* ``delay``: each message is held for a random time drawn independently from
  an exponential distribution with mean ``mean_delay``. The exponential is
  memoryless: however long a message has waited, the rest of its wait has
  the same distribution, so the sending time says as little as possible about
  the submission time for a given mean. A draw is capped at
  :data:`~onionmail.config.box.DELAY_CAP` times the mean (0.03 % of draws are
  cut), so a hold is bounded.
* ``batch``: messages wait for the next multiple of ``batch_interval``
  seconds since the Unix epoch. Aligned to the epoch, not to the box's start,
  so every box using the same interval sends at the same instants and an
  instant says nothing about the box.

Cover traffic (:mod:`onionmail.box.cover_traffic`) makes a dummy for each cover
contact at Poisson times (independent exponential gaps with mean
``3600 / cover_rate`` seconds) and gives it the same policy as real mail to
that contact: delayed by an independent exponential draw (a Poisson process
shifted by independent delays is again Poisson), or released at the batch
instants like real mail.

Retries are not the policy's business: a failed attempt is retried with the
delivery agent's backoff. Randomness comes from :class:`random.SystemRandom`
(the operating system's CSPRNG), since an observer who could predict the
draws could undo the delay; tests inject a seeded :class:`random.Random`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from onionmail.config.box import DELAY_CAP, ContactTiming, TimingSection
from onionmail.core.mail_address import MailAddress, parse_onion_mail_address

COVER_LOCAL_PART = "postmaster"
"""The local part a dummy goes to when a cover contact is a bare onion (RFC 5321 4.5.1)."""


class RandomSource(Protocol):
    """What the policy needs from a random number generator."""

    def expovariate(self, lambd: float, /) -> float: ...


def exponential_delay(mean: float, rng: RandomSource) -> float:
    """A hold in seconds: Exp(mean), capped at ``DELAY_CAP * mean``."""
    return min(rng.expovariate(1.0 / mean), DELAY_CAP * mean)


def next_batch(now: float, interval: float) -> float:
    """The first multiple of ``interval`` seconds since the epoch at or after ``now``."""
    return math.ceil(now / interval) * interval


def first_try_at(timing: ContactTiming, now: float, rng: RandomSource) -> float:
    """When a message queued at ``now`` under ``timing`` is first tried."""
    if timing.mode == "delay":
        return now + exponential_delay(timing.mean_delay, rng)
    if timing.mode == "batch":
        return next_batch(now, timing.batch_interval)
    return now


def cover_recipient(contact: str) -> MailAddress:
    """The address a dummy for ``contact`` (``name@<onion>`` or ``<onion>``) goes to."""
    return parse_onion_mail_address(contact if "@" in contact else f"{COVER_LOCAL_PART}@{contact}")


class TimingPolicy:
    """The ``[timing]`` section applied: first try times and gaps between dummies.

    ``clock`` and ``rng`` are injectable for tests.
    """

    def __init__(
        self,
        section: TimingSection,
        *,
        clock: Callable[[], float] = time.time,
        rng: RandomSource | None = None,
    ) -> None:
        self.section = section
        self.clock = clock
        self.rng: RandomSource = rng if rng is not None else random.SystemRandom()
        self._default = ContactTiming("", section.mode, section.mean_delay, section.batch_interval)
        self._overrides = {c.contact: c for c in section.contacts}

    def timing_for(self, destination: str, recipients: Sequence[str]) -> ContactTiming:
        """The policy for one queue entry: all ``recipients`` are at onion ``destination``.

        An address's own table wins (the first recipient in RCPT order that has
        one), then the onion's table, then ``[timing]``.
        """
        for rcpt in recipients:
            if rcpt.lower() in self._overrides:
                return self._overrides[rcpt.lower()]
        return self._overrides.get(destination.lower(), self._default)

    def first_try(self, destination: str, recipients: Sequence[str]) -> float:
        """When a message queued now for ``recipients`` at ``destination`` is first tried."""
        return first_try_at(self.timing_for(destination, recipients), self.clock(), self.rng)

    @property
    def cover_contacts(self) -> tuple[MailAddress, ...]:
        """Where dummies go; empty when cover traffic is off."""
        if self.section.cover_rate <= 0:
            return ()
        return tuple(cover_recipient(c) for c in self.section.cover_contacts)

    def cover_gap(self) -> float:
        """Seconds from one dummy to the next for one contact: Exp(3600 / cover_rate)."""
        return self.rng.expovariate(self.section.cover_rate / 3600.0)
