"""Impression Bloom filter: no false negatives, a bounded false-positive rate, a fixed hash scheme."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xserve.mixer.bloom import BloomFilterBuilder, may_contain
from xserve.sharding import splitmix64, splitmix64_array
from xserve.schema import ImpressionBloomFilter

ids = st.integers(min_value=1, max_value=2**63 - 1)


@given(st.lists(ids, min_size=1, max_size=200, unique=True))
def test_every_added_id_is_found(added):
    builder = BloomFilterBuilder(expected_items=len(added), false_positive_rate=0.01)
    for i in added:
        builder.add(i)
    bloom = builder.build()
    assert all(may_contain(bloom, i) for i in added)


def test_false_positive_rate_is_near_the_target():
    builder = BloomFilterBuilder(expected_items=1000, false_positive_rate=0.01)
    for i in range(1, 1001):
        builder.add(i)
    bloom = builder.build()
    false_positives = sum(may_contain(bloom, i) for i in range(10_001, 30_001))
    assert false_positives / 20_000 < 0.02
    assert (len(bloom.bits), bloom.num_hashes) == (1199, 7)  # m = 9586 bits -> 1199 bytes, k = 7


def test_hash_scheme_is_stable():
    # splitmix64 reference values (seed 0 -> first output of the standard generator)
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    import numpy as np

    xs = [0, 1, 2**63 - 1, 2**64 - 1, 123456789]
    assert splitmix64_array(np.array(xs, dtype=np.uint64)).tolist() == [splitmix64(x) for x in xs]  # one hash, two forms
    builder = BloomFilterBuilder(expected_items=1)
    builder.add(42)
    assert builder.build().bits == bytes(builder.build().bits)  # deterministic
    assert may_contain(ImpressionBloomFilter(bits=b"", num_hashes=3), 42) is False


def test_builder_rejects_bad_sizes():
    with pytest.raises(ValueError, match="expected_items"):
        BloomFilterBuilder(expected_items=0)
    with pytest.raises(ValueError, match="false_positive_rate"):
        BloomFilterBuilder(expected_items=5, false_positive_rate=1.5)
