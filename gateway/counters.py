"""Counts the gateway's servers keep for its metrics (:mod:`gateway.metrics`): fixed words
as keys, never an address."""

from __future__ import annotations

import collections


class Refusals:
    """Replies that refused something, counted by reason; call it with the reply."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def __call__(self, reason: str, reply: str) -> str:
        self.counts[reason] += 1
        return reply
