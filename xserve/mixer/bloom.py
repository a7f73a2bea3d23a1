"""Impression Bloom filters: the client's compact record of posts it has already shown.

Hash scheme (clients in any language must build filters the same way):

* the filter is ``m = 8 * len(bits)`` bits; bit ``j`` is bit ``j % 8`` (least
  significant first) of byte ``j // 8``;
* for a post id ``x`` (unsigned 64-bit), ``h1 = splitmix64(x)`` and
  ``h2 = splitmix64(h1) | 1`` (``splitmix64`` as in Steele et al. 2014: add
  ``0x9E3779B97F4A7C15``, then xor-shift-multiply by ``0xBF58476D1CE4E5B9``,
  ``0x94D049BB133111EB`` with shifts 30, 27, 31; all mod 2**64);
* the ``k = num_hashes`` probed bits are ``(h1 + i * h2) mod m`` for
  ``i = 0..k-1`` (Kirsch-Mitzenmacher double hashing).

A filter with no bits contains nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from xserve.schema import ImpressionBloomFilter
from xserve.sharding import splitmix64

__all__ = ["BloomFilterBuilder", "may_contain"]

_MASK = (1 << 64) - 1


def _positions(post_id: int, num_hashes: int, num_bits: int) -> Iterable[int]:
    h1 = splitmix64(post_id & _MASK)
    h2 = splitmix64(h1) | 1
    return ((h1 + i * h2) % num_bits for i in range(num_hashes))


def may_contain(bloom: ImpressionBloomFilter, post_id: int) -> bool:
    """False means certainly not impressed; True means probably impressed."""
    bits, num_bits = bloom.bits, 8 * len(bloom.bits)
    if num_bits == 0:
        return False
    return all(bits[j >> 3] >> (j & 7) & 1 for j in _positions(post_id, bloom.num_hashes, num_bits))


class BloomFilterBuilder:
    """Sized for ``expected_items`` at ``false_positive_rate``; ``add`` ids, then ``build()``."""

    def __init__(self, expected_items: int, false_positive_rate: float = 0.01) -> None:
        if expected_items < 1:
            raise ValueError(f"expected_items must be >= 1, got {expected_items}")
        if not 0.0 < false_positive_rate < 1.0:
            raise ValueError(f"false_positive_rate must be in (0, 1), got {false_positive_rate}")
        # standard optimum: m = -n ln p / (ln 2)^2, k = (m / n) ln 2
        num_bits = max(8, math.ceil(-expected_items * math.log(false_positive_rate) / math.log(2) ** 2))
        self.num_bytes = (num_bits + 7) // 8
        self.num_hashes = max(1, min(32, round(8 * self.num_bytes / expected_items * math.log(2))))
        self._bits = bytearray(self.num_bytes)

    def add(self, post_id: int) -> None:
        for j in _positions(post_id, self.num_hashes, 8 * self.num_bytes):
            self._bits[j >> 3] |= 1 << (j & 7)

    def build(self) -> ImpressionBloomFilter:
        return ImpressionBloomFilter(bits=bytes(self._bits), num_hashes=self.num_hashes)

    def __repr__(self) -> str:
        return f"BloomFilterBuilder(num_bytes={self.num_bytes}, num_hashes={self.num_hashes})"
