import torch

from tests.phoenix.factories import random_batch, tiny_phoenix
from xserve.phoenix.model.towers import PhoenixTowers


def _towers() -> PhoenixTowers:
    torch.manual_seed(0)
    return PhoenixTowers(tiny_phoenix()).double().eval()


def test_embeddings_are_unit_norm_with_the_right_shapes():
    t = _towers()
    ctx, cand = random_batch(b=4, s=6, c=5, hist_lens=[0, 2, 6, 3], seed=2)
    u = t.user_embeddings(ctx)
    c = t.candidate_embeddings(cand.post_hashes, cand.author_hashes)
    assert u.shape == (4, 32) and c.shape == (4, 5, 32)
    assert torch.allclose(u.norm(dim=-1), torch.ones(4, dtype=u.dtype))
    assert torch.allclose(c.norm(dim=-1), torch.ones(4, 5, dtype=c.dtype))
    sims = t(ctx, cand.post_hashes[0], cand.author_hashes[0])
    assert sims.shape == (4, 5) and (sims.abs() <= 1 + 1e-9).all()


def test_user_embedding_ignores_padding_and_candidate_tower_is_per_item():
    t = _towers()
    ctx, cand = random_batch(b=2, s=6, c=3, hist_lens=[3, 6], seed=4)
    u = t.user_embeddings(ctx)
    garbage = ctx.select(slice(None))
    garbage.author_hashes = torch.where(ctx.history_valid[..., None], ctx.author_hashes, 5)
    assert torch.allclose(t.user_embeddings(garbage), u, atol=1e-12)
    trimmed = ctx.select(slice(0, 1))
    trimmed.post_hashes, trimmed.author_hashes = trimmed.post_hashes[:, :3], trimmed.author_hashes[:, :3]
    trimmed.actions, trimmed.surface = trimmed.actions[:, :3], trimmed.surface[:, :3]
    trimmed.content = trimmed.content[:, :3]
    assert torch.allclose(t.user_embeddings(trimmed)[0], u[0], atol=1e-12)
    one = t.candidate_embeddings(cand.post_hashes[0, :1], cand.author_hashes[0, :1])
    assert torch.allclose(one[0], t.candidate_embeddings(cand.post_hashes[0], cand.author_hashes[0])[0])


def test_towers_share_the_ranker_code_not_copies():
    from xserve.phoenix.model import ranker, towers

    assert towers.Transformer is ranker.Transformer and towers.PhoenixEmbeddings is ranker.PhoenixEmbeddings
