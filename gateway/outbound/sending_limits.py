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

The counters live in the gateway's database (:mod:`gateway.storage`) when
it is given one: every instance sharing a PostgreSQL counts into the same
windows, so a limit of N holds whichever instance a message reaches, and a
restart forgets nothing. Check and count are one exclusive transaction, in
minute buckets of the wall clock. Without a database (tests of the logic
alone) they live in memory. The box's identity is its onion; the alias is
the registration's.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.storage import Database

HOUR, DAY = 3600.0, 86400.0
BUCKET = 60
"""Seconds of one stored counter bucket: a window ends to within a minute."""


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
        db: Database | None = None,
    ) -> None:
        self.db = db
        """The shared counters; None: in memory, with ``clock``."""
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
        the message would pass (nothing counted then). Blocking with a database."""
        if self.db is not None:
            return self._take_stored(self.db, alias, box_onion, recipients)
        for limit in self.limits:
            key = box_onion if limit.per_box else alias
            amount = recipients if limit.counts_recipients else 1
            if limit.window.total(key) + amount > limit.limit:
                return _refusal(limit)
        for limit in self.limits:
            key = box_onion if limit.per_box else alias
            limit.window.add(key, recipients if limit.counts_recipients else 1)
        return None

    def _take_stored(self, db: Database, alias: str, box_onion: str, recipients: int) -> str | None:
        now = int(time.time())
        with db.transaction(exclusive=True) as cur:
            for limit in self.limits:
                key = box_onion if limit.per_box else alias
                amount = recipients if limit.counts_recipients else 1
                since = (now - int(limit.window.window)) // BUCKET
                ((used,),) = cur.execute(
                    "SELECT COALESCE(SUM(amount), 0) FROM counters "
                    "WHERE name = ? AND key = ? AND bucket > ?",
                    (limit.what, key, since),
                )
                if int(used) + amount > limit.limit:
                    return _refusal(limit)
            for limit in self.limits:
                key = box_onion if limit.per_box else alias
                cur.execute(
                    "INSERT INTO counters (name, key, bucket, amount) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (name, key, bucket) DO UPDATE "
                    "SET amount = counters.amount + excluded.amount",
                    (limit.what, key, now // BUCKET, recipients if limit.counts_recipients else 1),
                )
            cur.execute("DELETE FROM counters WHERE bucket < ?", ((now - int(DAY)) // BUCKET - 1,))
        return None


def _refusal(limit: Limit) -> str:
    return (
        f"450 4.7.1 Sending limit reached: at most {limit.limit} {limit.what}; "
        "the box keeps the message and tries again later"
    )
