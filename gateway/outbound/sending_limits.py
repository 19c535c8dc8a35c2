"""How much a registered box may send through the gateway: per alias and per box.

An approved alias can send DKIM-signed mail from the gateway's domain, so
the domain's reputation is every box's: one box that sends spam (its owner,
or whoever took its key) would have all of them blocked. Four sliding
windows bound that (``[onion]`` of ``gateway.toml``): messages an hour and
recipients a day, for each alias and for each box (one onion, all its
aliases). A message that would go past any of them gets ``450 4.7.1``
naming the limit, after the seal is opened (a forged sender cannot use up
another box's quota); the box keeps it and retries with backoff, so nothing
is lost, it only waits.

The counters live in memory: a restart forgets them (at worst one more
window of mail). The box's identity is its onion; the alias is the
registration's.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

HOUR, DAY = 3600.0, 86400.0


class SlidingWindow:
    """Amounts added per key in the last ``window`` seconds."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._events: dict[str, collections.deque[tuple[float, int]]] = {}
        self._totals: dict[str, int] = {}

    def total(self, key: str) -> int:
        events = self._events.get(key)
        if not events:
            return 0
        horizon = self.clock() - self.window
        while events and events[0][0] <= horizon:
            self._totals[key] -= events.popleft()[1]
        if not events:
            del self._events[key], self._totals[key]
            return 0
        return self._totals[key]

    def add(self, key: str, amount: int = 1) -> None:
        self._events.setdefault(key, collections.deque()).append((self.clock(), amount))
        self._totals[key] = self._totals.get(key, 0) + amount


@dataclass(frozen=True)
class Limit:
    what: str
    """How the refusal names it: "messages an hour from this alias"."""
    limit: int
    counts_recipients: bool
    per_box: bool
    window: SlidingWindow


class SendingLimits:
    """The four windows; :meth:`take` checks a message against all, then counts it."""

    def __init__(
        self,
        *,
        alias_messages_per_hour: int,
        alias_recipients_per_day: int,
        box_messages_per_hour: int,
        box_recipients_per_day: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = (
            Limit("messages an hour from this alias", alias_messages_per_hour, False, False,
                  SlidingWindow(HOUR, clock)),
            Limit("recipients a day from this alias", alias_recipients_per_day, True, False,
                  SlidingWindow(DAY, clock)),
            Limit("messages an hour from this box", box_messages_per_hour, False, True,
                  SlidingWindow(HOUR, clock)),
            Limit("recipients a day from this box", box_recipients_per_day, True, True,
                  SlidingWindow(DAY, clock)),
        )  # fmt: skip

    def take(self, alias: str, box_onion: str, recipients: int) -> str | None:
        """None, with the message counted, or the ``450`` reply of the first limit that
        the message would pass (nothing counted then)."""
        for limit in self.limits:
            key = box_onion if limit.per_box else alias
            amount = recipients if limit.counts_recipients else 1
            if limit.window.total(key) + amount > limit.limit:
                return (
                    f"450 4.7.1 Sending limit reached: at most {limit.limit} {limit.what}; "
                    "the box keeps the message and tries again later"
                )
        for limit in self.limits:
            key = box_onion if limit.per_box else alias
            limit.window.add(key, recipients if limit.counts_recipients else 1)
        return None
