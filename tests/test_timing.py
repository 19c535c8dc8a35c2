"""The timing policy (delay, batch, per-contact overrides) and the cover traffic scheduler.

Randomness is a seeded :class:`random.Random`, so every statistical bound here
holds for the same draws on every run.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import pytest

from onionmail.box.cover_traffic import CoverTraffic
from onionmail.box.timing import (
    TimingPolicy,
    cover_recipient,
    exponential_delay,
    first_try_at,
    next_batch,
)
from onionmail.config.box import DELAY_CAP, ContactTiming, TimingSection
from onionmail.core.errors import AddressError, QueueError
from onionmail.core.mail_address import MailAddress
from onionmail.seal.identity import Identity

BOB = Identity.generate().onion_address
CAROL = Identity.generate().onion_address
NOW = 1_700_000_123.25
SAMPLES = 20_000


def policy(section: TimingSection, seed: int = 7) -> TimingPolicy:
    return TimingPolicy(section, clock=lambda: NOW, rng=random.Random(seed))


def test_immediate_is_now() -> None:
    assert policy(TimingSection()).first_try(BOB, [f"bob@{BOB}"]) == NOW


def test_delay_mean_is_the_configured_mean() -> None:
    """Over 20 000 seeded draws the mean is within 3 % (the standard error is 0.7 %)."""
    rng = random.Random(2024)
    draws = [exponential_delay(600.0, rng) for _ in range(SAMPLES)]
    mean = sum(draws) / len(draws)
    assert abs(mean - 600.0) < 0.03 * 600.0, mean
    assert min(draws) >= 0


def test_delay_is_exponential_not_just_the_right_mean() -> None:
    """P(X > m) = e^-1 and P(X > 2m) = e^-2: a uniform or fixed delay would fail this."""
    rng = random.Random(99)
    draws = [exponential_delay(10.0, rng) for _ in range(SAMPLES)]
    above_mean = sum(d > 10.0 for d in draws) / SAMPLES
    above_twice = sum(d > 20.0 for d in draws) / SAMPLES
    assert abs(above_mean - math.exp(-1)) < 0.015, above_mean
    assert abs(above_twice - math.exp(-2)) < 0.01, above_twice


def test_a_delay_is_capped() -> None:
    class Huge:
        def expovariate(self, lambd: float, /) -> float:
            return 1e12

    assert exponential_delay(60.0, Huge()) == DELAY_CAP * 60.0
    rng = random.Random(5)
    assert max(exponential_delay(1.0, rng) for _ in range(SAMPLES)) <= DELAY_CAP


def test_delay_mode_holds_each_message_independently() -> None:
    timing = policy(TimingSection(mode="delay", mean_delay=300.0))
    tries = [timing.first_try(BOB, [f"bob@{BOB}"]) for _ in range(1000)]
    assert all(NOW < t <= NOW + DELAY_CAP * 300.0 for t in tries)
    assert len(set(tries)) == len(tries)
    assert abs(sum(t - NOW for t in tries) / len(tries) - 300.0) < 0.1 * 300.0


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        (1000.5, 60.0, 1020.0),
        (1020.0, 60.0, 1020.0),  # on an instant: that batch
        (1020.000001, 60.0, 1080.0),
        (0.0, 900.0, 0.0),
        (NOW, 900.0, 1_700_000_100.0 + 900.0),
        (7.0, 2.5, 7.5),
    ],
)
def test_batch_instants_are_multiples_of_the_interval_since_the_epoch(
    now: float, interval: float, expected: float
) -> None:
    assert next_batch(now, interval) == expected


def test_batch_mode_aligns_to_the_epoch_not_to_the_box() -> None:
    """Two boxes started at different times send at the same instants."""
    rng = random.Random(1)
    section = TimingSection(mode="batch", batch_interval=900.0)
    for _ in range(1000):
        now = NOW + rng.uniform(0, 10_000)
        first = first_try_at(_default(section), now, rng)
        assert first % 900.0 == 0 and now <= first < now + 900.0


def _default(section: TimingSection) -> ContactTiming:
    return ContactTiming("", section.mode, section.mean_delay, section.batch_interval)


def test_override_precedence_address_then_onion_then_default() -> None:
    section = TimingSection(
        mode="immediate",
        contacts=(
            ContactTiming(BOB, "batch", 600.0, 3600.0),
            ContactTiming(f"bob@{BOB}", "delay", 60.0, 900.0),
            ContactTiming(f"dave@{BOB}", "batch", 600.0, 60.0),
        ),
    )
    timing = policy(section)
    assert timing.timing_for(BOB, [f"bob@{BOB}"]).mode == "delay"  # the address's own
    assert timing.timing_for(BOB, [f"eve@{BOB}"]).batch_interval == 3600.0  # its onion's
    assert timing.timing_for(CAROL, [f"carol@{CAROL}"]).mode == "immediate"  # [timing]
    # several recipients at one onion: the first with its own table, in RCPT order
    assert timing.timing_for(BOB, [f"eve@{BOB}", f"dave@{BOB}", f"bob@{BOB}"]).mode == "batch"
    assert timing.timing_for(BOB.upper(), [f"BOB@{BOB.upper()}"]).mode == "delay"
    assert timing.first_try(CAROL, [f"carol@{CAROL}"]) == NOW
    assert timing.first_try(BOB, [f"eve@{BOB}"]) == next_batch(NOW, 3600.0)


def test_cover_gaps_are_exponential_with_mean_3600_over_rate() -> None:
    timing = policy(TimingSection(cover_rate=12.0, cover_contacts=(BOB,)), seed=3)
    gaps = [timing.cover_gap() for _ in range(SAMPLES)]
    assert abs(sum(gaps) / SAMPLES - 300.0) < 0.03 * 300.0
    assert abs(sum(g > 300.0 for g in gaps) / SAMPLES - math.exp(-1)) < 0.015


def test_cover_contacts_and_their_addresses() -> None:
    assert cover_recipient(BOB) == MailAddress("postmaster", BOB)
    assert cover_recipient(f"bob@{BOB}") == MailAddress("bob", BOB)
    with pytest.raises(AddressError):
        cover_recipient("bob@example.org")
    off = policy(TimingSection(cover_rate=0.0, cover_contacts=(BOB,)))
    assert off.cover_contacts == ()
    on = policy(TimingSection(cover_rate=1.0, cover_contacts=(BOB, f"carol@{CAROL}")))
    assert on.cover_contacts == (MailAddress("postmaster", BOB), MailAddress("carol", CAROL))


async def test_cover_traffic_makes_dummies_for_every_contact_at_drawn_gaps() -> None:
    section = TimingSection(cover_rate=3600.0, cover_contacts=(BOB, f"carol@{CAROL}"))
    timing = policy(section, seed=11)
    slept: list[float] = []
    sent: Counter[str] = Counter()
    failures = iter([QueueError(28, "No space left on device")])

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    async def send(contact: MailAddress) -> None:
        if contact.local_part == "carol":
            failure = next(failures, None)
            if failure is not None:
                raise failure  # a full disk once: the stream goes on
        sent[str(contact)] += 1

    cover = CoverTraffic(contacts=timing.cover_contacts, policy=timing, send=send, sleep=sleep)
    task = asyncio.create_task(cover.run())
    try:
        async with asyncio.timeout(5):
            while min(sent[f"postmaster@{BOB}"], sent[f"carol@{CAROL}"]) < 20:
                await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert cover.made == sum(sent.values())
    assert len(set(slept)) == len(slept) and all(gap > 0 for gap in slept)
