import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.phoenix.factories import random_batch, tiny_phoenix
from xserve.config import PhoenixConfig
from xserve.phoenix.model.ranker import CandidateBatch, FeedForward, PhoenixRanker, ffn_hidden_size, isolation_mask

TOL = 1e-10  # float64 throughout: "unchanged" means equal to rounding


def _model(**kw) -> PhoenixRanker:
    torch.manual_seed(0)
    model = PhoenixRanker(tiny_phoenix(**kw)).double().eval()
    torch.nn.init.normal_(model.match.head.weight)  # a fresh model's is zero: every check here covers the term too
    return model


@pytest.fixture(scope="module")
def model() -> PhoenixRanker:
    return _model()


def _slots(cand: CandidateBatch, idx) -> CandidateBatch:
    return CandidateBatch(*(getattr(cand, f.name)[:, idx] for f in dataclasses.fields(cand)))


def test_mask_matches_the_reference_six_token_example():
    # user, two history tokens, three candidates, nothing padded
    mask = isolation_mask(torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))[0, 0]
    rows = ["".join(str(int(v)) for v in row) for row in mask]
    assert rows == ["100000", "110000", "111000", "111100", "111010", "111001"]


def test_mask_hides_padding_keys_but_never_empties_a_row():
    ctx_valid = torch.tensor([[True, True, False]])
    mask = isolation_mask(ctx_valid, torch.tensor([[True, False]]))[0, 0]
    assert not mask[:, 2][[0, 1, 3, 4]].any()  # nobody else reads the padded history slot
    assert mask.any(-1).all()


def test_ffn_hidden_size_follows_the_reference():
    assert ffn_hidden_size(PhoenixConfig()) == 176


def test_ffn_activation_is_the_tanh_gelu_of_the_reference():
    """The reference's ``jax.nn.gelu`` defaults to ``approximate=True``: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    torch.manual_seed(0)
    ffn = FeedForward(tiny_phoenix()).double()
    x = 3 * torch.randn(4, 8, ffn.w_1.in_features, dtype=torch.float64)  # (B, T, D), wide enough to tell the two apart
    a, v = ffn.w_1(x), ffn.w_v(x)
    tanh_gelu = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
    exact_gelu = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    assert torch.allclose(ffn(x), ffn.w_out(tanh_gelu * v), atol=TOL)
    assert (ffn(x) - ffn.w_out(exact_gelu * v)).abs().max() > 1e-6


@settings(max_examples=15)
@given(perm_seed=st.integers(0, 1000), victim=st.integers(0, 5), extra=st.integers(0, 3))
def test_candidate_isolation(model, perm_seed, victim, extra):
    """Permuting, perturbing or adding candidates leaves every other candidate's outputs unchanged."""
    ctx, cand = random_batch(b=2, s=5, c=6, seed=perm_seed)
    base = model(ctx, cand)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(perm_seed))
    permuted = model(ctx, _slots(cand, perm))
    assert torch.allclose(permuted.logits, base.logits[:, perm], atol=TOL)
    assert torch.allclose(permuted.dwell_s, base.dwell_s[:, perm], atol=TOL)
    # perturb one candidate: only its own outputs may move
    changed = dataclasses.replace(cand, post_hashes=cand.post_hashes.clone(), age_bucket=cand.age_bucket.clone())
    changed.post_hashes[:, victim] = changed.post_hashes[:, victim] % 97 + 3
    changed.age_bucket[:, victim] = (changed.age_bucket[:, victim] + 7) % 82
    out = model(ctx, changed)
    others = [i for i in range(6) if i != victim]
    assert torch.allclose(out.logits[:, others], base.logits[:, others], atol=TOL)
    assert not torch.allclose(out.logits[:, victim], base.logits[:, victim], atol=1e-6)
    # fewer and more slots
    fewer = model(ctx, _slots(cand, torch.tensor(others)))
    assert torch.allclose(fewer.logits, base.logits[:, others], atol=TOL)
    if extra:
        _, more = random_batch(b=2, s=5, c=extra, seed=perm_seed + 1)
        grown = CandidateBatch(*(torch.cat([getattr(cand, f.name), getattr(more, f.name)], 1)
                                 for f in dataclasses.fields(cand)))
        assert torch.allclose(model(ctx, grown).logits[:, :6], base.logits, atol=TOL)


def test_each_candidate_scores_as_if_alone(model):
    ctx, cand = random_batch(b=2, s=5, c=4, seed=3)
    base = model(ctx, cand)
    for i in range(4):
        alone = model(ctx, _slots(cand, [i]))
        assert torch.allclose(alone.logits[:, 0], base.logits[:, i], atol=TOL)


def test_padding_invariance(model):
    """Extra padded history slots and padded candidate slots change nothing."""
    ctx, cand = random_batch(b=3, s=5, c=4, hist_lens=[2, 5, 0], seed=5)
    base = model(ctx, cand)
    pad = 4
    wider = dataclasses.replace(
        ctx,
        post_hashes=torch.cat([ctx.post_hashes, torch.zeros(3, pad, 2, dtype=torch.long)], 1),
        author_hashes=torch.cat([ctx.author_hashes, torch.randint(1, 9, (3, pad, 2))], 1),
        actions=torch.cat([ctx.actions, torch.ones(3, pad, ctx.actions.shape[-1], dtype=ctx.actions.dtype)], 1),
        surface=torch.cat([ctx.surface, torch.ones(3, pad, dtype=torch.long)], 1),
        content=torch.cat([ctx.content, torch.randint(1, 9, (3, pad, ctx.content.shape[-1]))], 1),
    )
    # garbage beyond each row's valid history must not matter either
    garbage = dataclasses.replace(ctx, author_hashes=torch.where(ctx.history_valid[..., None], ctx.author_hashes, 7))
    padded_cand = CandidateBatch(*(torch.cat([getattr(cand, f.name), torch.zeros_like(getattr(cand, f.name)[:, :2])], 1)
                                   for f in dataclasses.fields(cand)))
    for c, k in ((wider, cand), (garbage, cand), (ctx, padded_cand)):
        out = model(c, k)
        assert torch.allclose(out.logits[:, :4], base.logits, atol=TOL)


def test_history_row_length_matters(model):
    """A sanity check that the context is used at all (guards the invariance tests against a dead model)."""
    ctx, cand = random_batch(b=1, s=5, c=2, hist_lens=[4], seed=9)
    shorter = dataclasses.replace(ctx, post_hashes=ctx.post_hashes.clone())
    shorter.post_hashes[0, 3] = 0
    assert not torch.allclose(model(ctx, cand).logits, model(shorter, cand).logits, atol=1e-6)


@pytest.mark.parametrize("lens", [[0, 3, 5], [5, 5, 5]])
def test_encode_context_then_score_candidates_equals_full_forward(model, lens):
    ctx, cand = random_batch(b=3, s=5, c=6, hist_lens=lens, seed=11)
    full = model(ctx, cand)
    kv = model.encode_context(ctx)
    assert len(kv.layers) == model.config.num_layers and kv.layers[0][0].shape == (3, 2, 6, 8)
    split = model.score_candidates(kv, cand)
    assert torch.allclose(split.logits, full.logits, atol=TOL) and torch.allclose(split.dwell_s, full.dwell_s, atol=TOL)
    # chunks of candidates against the same encoded context
    chunks = torch.cat([model.score_candidates(kv, _slots(cand, slice(i, i + 2))).logits for i in range(0, 6, 2)], 1)
    assert torch.allclose(chunks, full.logits, atol=TOL)


def test_left_anchored_positions_equal_right_anchored_offsets(model):
    """Same relative offsets as the May right-anchored scheme: shifting every position by a constant
    (what right-anchoring does for a shorter history) changes nothing."""
    ctx, cand = random_batch(b=1, s=6, c=3, hist_lens=[4], seed=13)
    a = model(ctx, cand).logits
    from xserve.phoenix.model import ranker as r

    orig = r.context_positions
    try:
        r.context_positions = lambda s, b, device: orig(s, b, device) + 2
        kv = model.encode_context(ctx)
        kv.lengths = kv.lengths + 2
        b = model.score_candidates(kv, cand).logits
    finally:
        r.context_positions = orig
    assert torch.allclose(a, b, atol=1e-9)


def test_sdpa_path_matches_explicit_attention_without_soft_cap():
    explicit = _model(attn_logit_cap=1e9)  # tanh(x/1e9)·1e9 == x to rounding: an uncapped explicit path
    sdpa = _model(attn_logit_cap=0.0)
    sdpa.load_state_dict(explicit.state_dict())
    ctx, cand = random_batch(b=2, s=5, c=3, seed=17)
    assert torch.allclose(explicit(ctx, cand).logits, sdpa(ctx, cand).logits, atol=1e-7)


def test_outputs_have_the_documented_shapes(model):
    ctx, cand = random_batch(b=2, s=5, c=3, seed=1)
    out = model(ctx, cand)
    assert out.logits.shape == (2, 3, 20) and out.dwell_s.shape == (2, 3) and (out.dwell_s >= 0).all()
    assert out.durations_s.shape == (2, 3, 3) and (out.durations_s >= 0).all()


def test_extend_context_equals_encoding_the_whole_history(model):
    """Prefix reuse: encode the first entries, append the rest, score == full forward."""
    ctx, cand = random_batch(b=3, s=7, c=4, hist_lens=[7, 5, 2], seed=21)
    full = model(ctx, cand)
    prefix = ctx.slots(0, 3)  # rows hold 3, 3, 2 valid entries
    newer = ctx.slots(3, 7)
    # row 2 has nothing beyond its 2 entries; row 1 has 2 newer entries, row 0 four
    kv = model.extend_context(model.encode_context(prefix), newer)
    assert kv.lengths.tolist() == [7, 5, 2]
    assert torch.allclose(model.score_candidates(kv, cand).logits, full.logits, atol=TOL)
