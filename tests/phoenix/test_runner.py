"""RankerRunner oracles: cached == full forward, chunked == unchunked, batched == alone, permutation,
prefix reuse == fresh encode, cache full degrades, budget, schema mapping. Needs the phoenix ranker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from msgspec.structs import replace

from tests.phoenix.rank_factories import history, make_request, make_runner, tiny_model
from xserve.phoenix.serving.runner import _token_keys
from xserve.schema import ACTIONS, ActionScores, RankRequest

ATOL = 2e-5  # float32 probabilities; the two paths order their sums differently


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def full_forward(runner, req: RankRequest) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: the model's forward over [user | history | candidates] with the isolation mask."""
    ctx, cand = runner.featurizer.from_requests([req])
    with torch.inference_mode():
        out = runner.model(ctx, cand)
    return torch.sigmoid(out.logits[0]).numpy(), out.dwell_s[0].numpy()


def assert_close(res, expected):
    np.testing.assert_allclose(res.probs, expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(res.dwell_s, expected[1], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_miss_then_hit_equal_full_forward(model, fused):
    runner = make_runner(model, fused=fused)
    req = make_request(n_history=13, n_candidates=21)
    expected = full_forward(runner, req)
    (miss,) = runner.score([req])
    (hit,) = runner.score([req])
    assert_close(miss, expected)
    assert_close(hit, expected)
    s = runner.cache.stats
    assert (s.misses, s.hits, s.hit_tokens) == (1, 1, 14)


def test_uncapped_attention_equals_full_forward():
    """With the soft cap off the fused path subtracts the row max before exp (no bound on logits)."""
    runner = make_runner(tiny_model(attn_logit_cap=0.0))
    reqs = [make_request(user=1, n_history=11, n_candidates=9), make_request(user=2, n_history=3, n_candidates=4)]
    for req, res in zip(reqs, runner.score(reqs), strict=True):
        assert_close(res, full_forward(runner, req))


def test_chunked_equals_unchunked(model):
    req = make_request(n_history=9, n_candidates=37)
    small = make_runner(model, chunk_size=5, rows_per_forward=3).score([req])[0]
    whole = make_runner(model, chunk_size=64, rows_per_forward=1).score([req])[0]
    np.testing.assert_allclose(small.probs, whole.probs, atol=ATOL, rtol=0)
    np.testing.assert_allclose(small.dwell_s, whole.dwell_s, atol=ATOL, rtol=0)


def test_batched_users_equal_each_alone(model):
    reqs = [make_request(user=u, n_history=h, n_candidates=c, seed=u)
            for u, h, c in [(1, 0, 3), (2, 17, 30), (3, 5, 1), (4, 9, 0), (5, 40, 12)]]
    runner = make_runner(model)
    runner.score([reqs[1]])  # one of them already cached: hits and misses in the same batch
    together = runner.score(reqs)
    for req, res in zip(reqs, together, strict=True):
        alone = make_runner(model).score([req])[0]
        assert res.probs.shape == (len(req.candidates), len(ACTIONS))
        np.testing.assert_allclose(res.probs, alone.probs, atol=ATOL, rtol=0)
        np.testing.assert_allclose(res.dwell_s, alone.dwell_s, atol=ATOL, rtol=0)
        if req.candidates:
            assert_close(res, full_forward(runner, req))


def test_permuting_candidates_permutes_scores(model):
    req = make_request(n_history=8, n_candidates=25)
    perm = np.random.default_rng(0).permutation(25)
    shuffled = replace(req, candidates=tuple(req.candidates[i] for i in perm))
    runner = make_runner(model)
    a, b = runner.score([req])[0], runner.score([shuffled])[0]
    np.testing.assert_allclose(b.probs, a.probs[perm], atol=ATOL, rtol=0)
    np.testing.assert_allclose(b.dwell_s, a.dwell_s[perm], atol=ATOL, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_prefix_reuse_equals_fresh_encode(model, fused):
    hist = history(22, seed=3)
    runner = make_runner(model, fused=fused)
    runner.score([make_request(hist=hist[:14])])  # 15 tokens: 3 full blocks of 4 + a partial one
    grown = make_request(hist=hist)
    res = runner.score([grown])[0]
    s = runner.cache.stats
    assert s.partial_hits == 1 and s.hit_tokens == 12 and s.computed_tokens == 15 + 11
    fresh_runner = make_runner(model, fused=fused)
    fresh = fresh_runner.score([grown])[0]
    np.testing.assert_allclose(res.probs, fresh.probs, atol=ATOL, rtol=0)
    assert_close(res, full_forward(runner, grown))
    # The stored blocks themselves equal a fresh encode's.
    ids_a = _block_ids(runner, grown)
    ids_b = _block_ids(fresh_runner, grown)
    torch.testing.assert_close(runner.pool[ids_a], fresh_runner.pool[ids_b], atol=2e-5, rtol=1e-4)


def _block_ids(runner, req):
    hist = runner.featurizer.history_arrays([req.history], [req.now_ms])
    hashes = runner.cache.block_hashes(_token_keys(req.user_id, hist, 0))
    ids = [runner.cache.pool.lookup(h) for h in hashes]
    assert None not in ids
    return torch.tensor(ids)


def test_cache_full_degrades_to_uncached_and_budget_holds(model):
    one_block = 2 * 2 * 2 * 4 * 8 * 4  # layers · (k, v) · kv heads · block · key size · fp32
    runner = make_runner(model, kv_cache_bytes=3 * one_block + 5)
    assert runner.pool.numel() * runner.pool.element_size() <= 3 * one_block + 5
    assert runner.cache.pool.num_blocks == 3
    req = make_request(n_history=20, n_candidates=9)  # 21 tokens: 6 blocks, more than the pool
    res = runner.score([req])[0]
    assert_close(res, full_forward(runner, req))
    assert runner.cache.stats.queries == 0 and runner.cache.pool.num_free == 3


def test_rank_maps_to_action_scores(model):
    runner = make_runner(model)
    req = make_request(n_history=4, n_candidates=3)
    (resp,) = runner.rank([req])
    res = runner.score([req])[0]
    assert resp.model_version == "test" and len(resp.scores) == 3
    s = resp.scores[1]
    assert isinstance(s, ActionScores)
    assert [s.get(a) for a in ACTIONS] == pytest.approx(res.probs[1].tolist(), abs=1e-6)
    assert s.dwell_time == pytest.approx(float(res.dwell_s[1]), abs=1e-6)
    assert runner.rank([]) == []


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(user_id=0), "user_id must be > 0"),
        (dict(candidates=make_request(n_candidates=30).candidates), "max_candidates"),
    ],
)
def test_bad_requests_name_the_field(model, change, needle):
    runner = make_runner(model, max_candidates=25)
    with pytest.raises(ValueError, match=needle):
        runner.score([replace(make_request(), **change)])


def test_zero_post_id_is_rejected(model):
    req = make_request(n_history=2)
    bad = replace(req.history[0], post_id=0)
    with pytest.raises(ValueError, match="RankRequest.history: post_id must be > 0"):
        make_runner(model).score([replace(req, history=(bad,) + req.history[1:])])


# --------------------------------------------------------------------------- device


def test_the_serve_config_ranker_runs_on_the_gpu_its_replica_is_given():
    """serve_config.yaml gives each Ranker replica a GPU (``num_gpus: 1``), and the app's config under the file's
    runtime_env resolves to CUDA exactly where CUDA is available (Ray makes it so in a replica given a GPU, and
    hides the GPUs from one given none), in bfloat16; elsewhere to the CPU, in float32."""
    import yaml

    from xserve.config import load_config
    from xserve.phoenix.serving.runner import resolve_device, resolve_dtype

    (app,) = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve_config.yaml").read_text())["applications"]
    ranker = next(d for d in app["deployments"] if d["name"] == "Ranker")
    assert ranker["ray_actor_options"]["num_gpus"] == 1
    serving = load_config(environ=app["runtime_env"]["env_vars"]).ranker_serving
    assert resolve_device(serving.device, cuda_available=True) == "cuda"
    assert resolve_device(serving.device, cuda_available=False) == "cpu"
    assert resolve_dtype(serving.dtype, "cuda") == torch.bfloat16 and resolve_dtype(serving.dtype, "cpu") == torch.float32
    # the runner resolves the same config on this machine: the CPU unless it has CUDA
    runner = make_runner(device=serving.device, dtype=serving.dtype)
    assert runner.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_device_setting_other_than_auto_is_taken_as_given():
    from xserve.phoenix.serving.runner import resolve_device

    assert resolve_device("cpu", cuda_available=True) == "cpu"
    assert resolve_device("cuda:1", cuda_available=True) == "cuda:1"
    with pytest.raises(ValueError, match="ranker_serving.device is 'cuda' but CUDA is not available"):
        resolve_device("cuda", cuda_available=False)


def test_fused_onepass_equals_the_models_forward(model):
    # The one-pass baseline of bench_ranker on the fused kernels is the model's own forward (the oracle).
    from xserve.phoenix.serving.fused_scoring import FusedCandidateScorer

    runner = make_runner(model)
    reqs = [make_request(user=1, n_history=12, n_candidates=9, seed=3), make_request(user=2, n_history=5, n_candidates=9, seed=4)]
    ctx, cand = runner.featurizer.from_requests(reqs)
    with torch.inference_mode():
        want = model(ctx, cand)
        got = FusedCandidateScorer(model).onepass(ctx, cand)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.dwell_s, want.dwell_s, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("block_logits, onednn, cap", [(1, True, 30.0), (1, False, 0.0), (None, False, 30.0)])
def test_fused_kernel_variants_equal_full_forward(block_logits, onednn, cap):
    """The fused attention in blocks of one query row (how a long request is scored; causal keys cut per block),
    with torch's own matmuls instead of oneDNN (CUDA, or a CPU build without it), capped or not, still gives the
    model's scores: two users of different lengths in one batch (masked padding keys), one's grown history (a
    partial hit), and the one-pass baseline."""
    model = tiny_model(attn_logit_cap=cap)
    runner = make_runner(model)
    runner.fast.block_logits = block_logits
    runner.fast.onednn = onednn and runner.fast.onednn
    hist = history(22, seed=5)
    reqs = [make_request(user=1, hist=hist[:13], n_candidates=11), make_request(user=2, n_history=4, n_candidates=7, seed=2)]
    for req, res in zip(reqs, runner.score(reqs), strict=True):
        assert_close(res, full_forward(runner, req))
    grown = make_request(user=1, hist=hist, n_candidates=11)
    assert_close(runner.score([grown])[0], full_forward(runner, grown))
    assert runner.cache.stats.partial_hits == 1
    ctx, cand = runner.featurizer.from_requests(reqs)
    with torch.inference_mode():
        want, got = model(ctx, cand), runner.fast.onepass(ctx, cand)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fused", [True, False])
def test_context_ages_and_durations_equal_full_forward_and_key_the_cache(model, fused):
    """Issue 17: a request's user context and its negative entries' ages change the scores, the cached and fused
    paths still equal the full forward (durations included), and a new context is a new cache key."""
    from xserve.schema import Action, HistoryItem, UserContext

    runner = make_runner(model, fused=fused)
    day = 86_400_000
    base = make_request(n_history=6, n_candidates=9)
    old_negative = HistoryItem(7, 70, frozenset({Action.NOT_INTERESTED}), base.now_ms - 60 * day)
    req = replace(base, history=(old_negative, *base.history),
                  context=UserContext(country_code="jp", language_code="ja", client_app_id=2, topics=("music",)))
    ctx, cand = runner.featurizer.from_requests([req])
    with torch.inference_mode():
        out = runner.model(ctx, cand)
    (res,) = runner.score([req])
    assert_close(res, (torch.sigmoid(out.logits[0]).numpy(), out.dwell_s[0].numpy()))
    np.testing.assert_allclose(res.durations_s, out.durations_s[0].numpy(), atol=ATOL, rtol=1e-5)
    (plain,) = runner.score([replace(req, context=None)])
    assert np.abs(plain.probs - res.probs).max() > 1e-4  # the context is an input, not ignored
    (fresh,) = runner.score([replace(req, history=(replace(old_negative, timestamp_ms=req.now_ms - day // 2),
                                                   *base.history))])
    assert np.abs(fresh.probs - res.probs).max() > 1e-4  # a day-old and a 60-day-old not-interested differ
    scores = runner.rank([req])[0].scores
    assert scores[0].watch_time == pytest.approx(float(res.durations_s[0, 0]), rel=1e-5)
