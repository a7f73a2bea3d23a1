"""RowMeta: the in-memory author/time/reply columns agree with a dict model under any write sequence."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xserve.storage.lance.row_meta import META_COLUMNS, RowMeta

_ids = st.lists(st.integers(1, 40), max_size=12)
_op = st.one_of(
    st.tuples(st.just("upsert"), _ids, st.integers(0, 1000)),
    st.tuples(st.just("delete"), _ids, st.just(0)),
    st.tuples(st.just("trim"), st.just([]), st.integers(0, 1000)),
)


def _cols(ids: list[int], stamp: int) -> dict[str, np.ndarray]:
    # a repeated id gets distinct values per position, so "last row wins" is observable
    n = np.arange(len(ids), dtype=np.int64)
    return {"author_id": np.asarray(ids, np.int64) * 7 + n, "created_at_ms": stamp + n, "in_reply_to_post_id": n}


@settings(max_examples=60)
@given(st.lists(_op, max_size=15), st.lists(st.integers(0, 45), max_size=20))
def test_row_meta_matches_a_dict_model(ops, probe):
    meta, model = RowMeta.build(np.zeros(0, np.int64), _cols([], 0)), {}
    for kind, ids, value in ops:
        if kind == "upsert":
            cols = _cols(ids, value)
            meta = meta.upsert(np.asarray(ids, np.int64), cols)
            for i, pid in enumerate(ids):
                model[pid] = tuple(int(cols[c][i]) for c in META_COLUMNS)
        elif kind == "delete":
            meta = meta.delete(np.asarray(ids, np.int64))
            model = {p: v for p, v in model.items() if p not in ids}
        else:
            meta = meta.trim(value)
            model = {p: v for p, v in model.items() if v[1] >= value}
    assert list(meta.ids) == sorted(model)
    found, cols = meta.lookup(np.asarray(probe, np.int64))
    assert found.tolist() == [p in model for p in probe]
    held = [p for p in probe if p in model]
    assert [tuple(int(cols[c][i]) for c in META_COLUMNS) for i in range(len(held))] == [model[p] for p in held]
