"""Length padding: Padmé buckets above a fixed floor.

A ciphertext's length is metadata every hop sees. Padding rounds a length up
to one of a small set of buckets so the length says little more than the
order of magnitude.

Padmé (Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
Communication with PURBs", PETS 2019) keeps only the top ``S`` bits of a
length ``L`` free, where ``E = floor(log2 L)`` and ``S = floor(log2 E) + 1``;
the ``E - S`` low bits are rounded up to zero. A padded length then reveals
``O(log log L)`` bits (the exponent and a few mantissa bits) and costs at most
about 12 % overhead (at most 6.25 % from 4096 bytes up), less as ``L`` grows.

Small messages all share one bucket: nothing below :data:`PADDING_FLOOR`
bytes is distinguishable by length at all.
"""

from __future__ import annotations

PADDING_FLOOR = 4096
"""Every padded length is at least this many bytes (one bucket for all short mail)."""


def padme_length(n: int) -> int:
    """Round ``n`` up to its Padmé bucket (``padme_length(n) >= n``).

    Lengths below 2 have no exponent to speak of and are returned unchanged.
    Raises :class:`ValueError` for a negative length.
    """
    if n < 0:
        raise ValueError(f"a length cannot be negative: {n}")
    if n < 2:
        return n
    exponent = n.bit_length() - 1  # floor(log2 n)
    mantissa_bits = exponent.bit_length()  # floor(log2 exponent) + 1
    low_bits = exponent - mantissa_bits
    mask = (1 << low_bits) - 1
    return (n + mask) & ~mask


def padded_length(n: int, floor: int = PADDING_FLOOR) -> int:
    """The length ``n`` bytes are padded to: ``max(floor, padme_length(n))``."""
    return max(floor, padme_length(n))


def pad(data: bytes, floor: int = PADDING_FLOOR) -> bytes:
    """Append zero bytes to ``data`` up to :func:`padded_length` of its length.

    The caller's encoding must carry the real length: zeros are not stripped
    by any rule here.
    """
    return data + bytes(padded_length(len(data), floor) - len(data))
