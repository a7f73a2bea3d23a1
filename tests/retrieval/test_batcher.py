"""UpsertBatcher: flush on size or age, shard grouping, deleted-while-buffered posts dropped."""

from __future__ import annotations

import numpy as np

from tests.retrieval.factories import NOW_MS, encoder
from xserve.retrieval.batcher import UpsertBatcher
from xserve.sharding import shard_array
from xserve.schema import Post


def _posts(ids):
    return [Post(post_id=i, author_id=i % 5 + 1, created_at_ms=NOW_MS - i, in_reply_to_post_id=i + 1000 if i % 2 else None) for i in ids]


def _batcher(**kw):
    args = dict(encoder=encoder(), num_shards=3, flush_size=4, flush_age_s=1.0, model_version="m")
    args.update(kw)
    return UpsertBatcher(**args)


def test_due_on_size_or_age():
    b = _batcher()
    assert not b.due(0.0)
    b.add(_posts([1, 2, 3]), now_s=10.0)
    assert not b.due(10.5)
    assert b.due(11.0), "the oldest post waited flush_age_s"
    b.add(_posts([4]), now_s=10.1)
    assert b.due(10.2), "flush_size reached"


def test_drain_embeds_and_groups_by_shard():
    b = _batcher()
    ids = list(range(1, 21))
    b.add(_posts(ids), now_s=0.0)
    b.add(_posts([3]), now_s=0.0)  # a repeat is one row
    out = b.drain()
    assert len(b) == 0 and not b.due(100.0)
    got = np.concatenate([rows.post_ids for rows in out.values()])
    assert sorted(got.tolist()) == ids
    for s, rows in out.items():
        assert (shard_array(rows.post_ids, 3) == s).all()
        np.testing.assert_allclose(rows.vectors, encoder().encode_posts(rows.post_ids, rows.author_ids))
        assert rows.model_version == "m" and (rows.created_at_ms == NOW_MS - rows.post_ids).all()
        assert (rows.in_reply_to_post_ids == np.where(rows.post_ids % 2 == 1, rows.post_ids + 1000, 0)).all()


def test_discard_drops_deleted_posts():
    b = _batcher()
    b.add(_posts([1, 2]), now_s=0.0)
    b.discard([1, 2, 99])
    assert len(b) == 0 and b.drain() == {}


def test_put_back_after_a_failed_flush():
    b = _batcher()
    b.add(_posts([1, 2]), now_s=0.0)
    taken = b.take()
    b.add([Post(post_id=2, author_id=4, created_at_ms=NOW_MS)], now_s=1.0)  # arrived during the flush
    b.put_back(taken, now_s=2.0)
    post_ids, author_ids, _, _ = b.take()
    assert dict(zip(post_ids.tolist(), author_ids.tolist())) == {1: 2, 2: 4}


def test_the_buffer_is_bounded_while_flushes_fail_and_drops_the_oldest():
    b = _batcher(flush_size=4, max_buffered=6)
    b.add(_posts([1, 2, 3, 4]), now_s=0.0)
    taken = b.take()  # a flush that will fail
    b.add(_posts([5, 6, 7, 8]), now_s=1.0)
    b.put_back(taken, now_s=2.0)
    assert len(b) == 6 and b.dropped == 2
    assert sorted(b.take()[0].tolist()) == [3, 4, 5, 6, 7, 8]  # posts 1 and 2 were the oldest
    b.add(_posts(range(10, 30)), now_s=3.0)
    assert len(b) == 6 and b.dropped == 16
    assert b.take()[0].tolist() == list(range(24, 30))


def test_max_buffered_below_flush_size_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="max_buffered"):
        _batcher(flush_size=4, max_buffered=3)


def test_model_version_of_the_tower_that_embedded_the_batch():
    """A callable version is asked after the tower call: the live indexer's tower loads on first use."""
    from xserve.retrieval.encoders import TowerOnFirstUse

    loads = []
    tower = TowerOnFirstUse(lambda: (loads.append(1), (encoder(), "towers-abc"))[1])
    b = _batcher(encoder=tower, model_version=lambda: tower.version)
    b.add(_posts([1, 2, 3]), now_s=0.0)
    assert not tower.loaded and loads == [], "buffering posts loads no tower"
    out = b.drain()
    assert tower.loaded and loads == [1]
    assert {rows.model_version for rows in out.values()} == {"towers-abc"}
    b.add(_posts([4]), now_s=0.0)
    b.drain()
    assert loads == [1], "loaded once"


def test_a_tower_that_fails_to_load_is_tried_again_on_the_next_use():
    from xserve.retrieval.encoders import TowerOnFirstUse

    attempts = []

    def load():
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("checkpoint not readable yet")
        return encoder(), "towers-abc"

    tower = TowerOnFirstUse(load)
    b = _batcher(encoder=tower, model_version=lambda: tower.version)
    b.add(_posts([1, 2]), now_s=0.0)
    taken = b.take()
    try:
        b.encode(taken)
    except OSError:
        b.put_back(taken, now_s=0.0)  # as the live indexer does after a failed flush
    else:
        raise AssertionError("the first load was meant to fail")
    assert not tower.loaded and len(b) == 2
    assert sorted(np.concatenate([r.post_ids for r in b.drain().values()]).tolist()) == [1, 2]
    assert tower.loaded and len(attempts) == 2
