"""Padmé padding: values from the paper's definition, bounds, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onionmail.seal.padding import PADDING_FLOOR, pad, padded_length, padme_length

# Worked by hand from the definition: E = floor(log2 L), S = floor(log2 E) + 1,
# the E - S low bits of L are rounded up to zero.
KNOWN = [
    (0, 0),  # below 2: unchanged
    (1, 1),
    (2, 2),  # E=1, S=1: no low bits
    (3, 3),
    (9, 10),  # E=3, S=2: 1 low bit
    (15, 16),
    (17, 18),  # E=4, S=3: 1 low bit
    (100, 104),  # E=6, S=3: 3 low bits -> multiple of 8
    (1000, 1024),  # E=9, S=4: 5 low bits -> multiple of 32
    (4096, 4096),  # E=12, S=4: 8 low bits -> multiple of 256
    (4097, 4352),
    (5000, 5120),
    (102_400, 102_400),  # E=16, S=5: 11 low bits -> multiple of 2048 (50 * 2048)
    (102_401, 104_448),
    (10_000_000, 10_223_616),  # E=23, S=5: 18 low bits -> 39 * 262144
]

sizes = st.integers(min_value=0, max_value=2**40)


@pytest.mark.parametrize(("n", "expected"), KNOWN)
def test_known_values(n: int, expected: int) -> None:
    assert padme_length(n) == expected


def test_negative_length_is_refused() -> None:
    with pytest.raises(ValueError):
        padme_length(-1)


def test_floor_applies_to_small_lengths() -> None:
    assert padded_length(0) == PADDING_FLOOR
    assert padded_length(1) == PADDING_FLOOR
    assert padded_length(PADDING_FLOOR) == PADDING_FLOOR
    assert padded_length(PADDING_FLOOR + 1) == 4352
    assert padded_length(10, floor=64) == 64
    assert padded_length(100, floor=0) == 104


def test_overhead_at_the_worst_point_of_each_octave() -> None:
    """Just above a power of two the rounding costs most; still under 12 %."""
    for exponent in range(4, 40):
        n = 2**exponent + 1
        assert padme_length(n) - n <= 0.12 * n


def test_pad_appends_zeros_to_the_bucket() -> None:
    data = b"x" * 5000
    padded = pad(data)
    assert len(padded) == 5120
    assert padded[:5000] == data
    assert padded[5000:] == bytes(120)
    assert pad(b"") == bytes(PADDING_FLOOR)


@given(sizes)
def test_never_shorter(n: int) -> None:
    assert padme_length(n) >= n
    assert padded_length(n) >= max(n, PADDING_FLOOR)


@given(sizes, sizes)
def test_monotonic(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert padme_length(low) <= padme_length(high)
    assert padded_length(low) <= padded_length(high)


@given(sizes)
def test_buckets_are_fixed_points(n: int) -> None:
    assert padme_length(padme_length(n)) == padme_length(n)
    assert padded_length(padded_length(n)) == padded_length(n)


@given(st.integers(min_value=PADDING_FLOOR, max_value=2**40))
def test_overhead_at_most_12_percent_above_the_floor(n: int) -> None:
    assert padded_length(n) - n <= 0.12 * n
    # In fact at most 1/16 from the floor up (E >= 12 leaves S = 4 significant bits).
    assert padded_length(n) - n < n / 16


@given(st.integers(min_value=2, max_value=2**40))
def test_only_log_log_bits_survive(n: int) -> None:
    """A bucket keeps at most floor(log2 E) + 1 significant bits after the leading one."""
    bucket = padme_length(n)
    exponent = n.bit_length() - 1
    significant = exponent.bit_length()
    low_bits = exponent - significant
    assert bucket % (1 << low_bits) == 0


@given(st.binary(max_size=20_000))
def test_pad_keeps_the_data_as_prefix(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) == padded_length(len(data))
    assert padded.startswith(data)
    assert not any(padded[len(data) :])
