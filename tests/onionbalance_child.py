"""Debian's Onionbalance on the private Tor network, for tests.

Run with the system interpreter that Debian's ``onionbalance`` package is
installed for (``/usr/bin/python3 tests/onionbalance_child.py INTERVAL
[onionbalance arguments]``); it imports nothing of onionmail.

Onionbalance's ``--is-testnet`` mode computes the onion service time period
for chutney, whose authorities vote every 20 s: a period of 24 voting rounds
(8 minutes) starting 12 rounds (4 minutes) after the epoch's minute. tor
derives both from the voting interval of the network it is on
(``hs_get_time_period_num``: with ``TestingTorNetwork``, the period is one
shared-random run, 24 rounds, and the offset one phase, 12 rounds). The
private network here votes every INTERVAL seconds (10), so, unchanged,
Onionbalance would blind the gateway's key for a different period than
tor's clients look up, and publish a descriptor nobody finds. This wrapper
gives Onionbalance the same arithmetic with INTERVAL in place of 20, and
waits 3 s instead of 45 before its first fetch (the network is up already).

One more difference is the network's size: only its two authorities are
HSDirs, and Onionbalance's choice of the directories for a descriptor's
second replica loops forever when every directory already holds the first
(it skips those and never reaches its count). When the ring is no larger
than one replica's spread, every HSDir is responsible, as tor finds too;
the wrapper says so instead of searching. On the real Tor network
Onionbalance runs unchanged.
"""

from __future__ import annotations

import sys

import onionbalance.manager
from onionbalance.hs_v3 import consensus, hashring, params, tor_node
from onionbalance.hs_v3 import onionbalance as ob_main


def for_voting_interval(interval: int) -> None:
    """Onionbalance's testnet time arithmetic for a network voting every ``interval`` s.

    Only public methods are replaced (those that use the period and the offset).
    """
    import stem.util

    c = consensus.Consensus
    length, offset = (24 * interval) // 60, (12 * interval) // 60  # minutes

    def testnet() -> bool:
        return bool(ob_main.my_onionbalance.is_testnet)

    period, period_num, next_start, start_run, previous_run = (
        c.get_time_period_length,
        c.get_time_period_num,
        c.get_start_time_of_next_time_period,
        c.get_start_time_of_current_srv_run,
        c.get_start_time_of_previous_srv_run,
    )

    def period_minutes(self):  # type: ignore[no-untyped-def]
        return length if testnet() else period(self)

    def time_period_num(self, valid_after=None):  # type: ignore[no-untyped-def]
        if not testnet():
            return period_num(self, valid_after)
        if not valid_after:
            valid_after = stem.util.datetime_to_unix(self.consensus.valid_after)
        return int((valid_after // 60 - offset) // length)

    def start_of_next_period(self, valid_after=None):  # type: ignore[no-untyped-def]
        if not testnet():
            return next_start(self, valid_after)
        return (self.get_next_time_period_num(valid_after) * length + offset) * 60

    def start_of_run(self):  # type: ignore[no-untyped-def]
        if not testnet():
            return start_run(self)
        valid_after = stem.util.datetime_to_unix(self.consensus.valid_after)
        elapsed = ((valid_after // interval) % 24) * interval
        return int(valid_after - elapsed)

    def start_of_previous_run(self):  # type: ignore[no-untyped-def]
        if not testnet():
            return previous_run(self)
        return start_of_run(self) - 24 * interval

    c.get_time_period_length = period_minutes
    c.get_time_period_num = time_period_num
    c.get_start_time_of_next_time_period = start_of_next_period
    c.get_start_time_of_current_srv_run = start_of_run
    c.get_start_time_of_previous_srv_run = start_of_previous_run
    params.INITIAL_CALLBACK_DELAY = 3
    search = hashring.get_responsible_hsdirs

    def hsdirs(is_first_descriptor: bool) -> list[str]:
        srv, time_period = hashring.get_srv_and_time_period(is_first_descriptor)
        found = []
        for node in ob_main.my_onionbalance.consensus.nodes:
            try:
                node.get_hsdir_index(srv, time_period)
            except (tor_node.NoEd25519Identity, tor_node.NoHSDir):
                continue
            found.append(node.get_hex_fingerprint())
        return found

    def responsible(blinded_key, is_first_descriptor):  # type: ignore[no-untyped-def]
        every = hsdirs(is_first_descriptor)
        if len(every) <= params.HSDIR_SPREAD_STORE:
            return every
        return search(blinded_key, is_first_descriptor)

    hashring.get_responsible_hsdirs = responsible


if __name__ == "__main__":
    for_voting_interval(int(sys.argv[1]))
    sys.argv = ["onionbalance", *sys.argv[2:]]
    onionbalance.manager.main()
