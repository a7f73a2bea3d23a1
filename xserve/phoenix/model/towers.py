"""Phoenix retrieval: a user tower and a candidate tower whose dot product is cosine similarity.

Follows xai-org/x-algorithm ``phoenix/recsys_retrieval_model.py`` (``docs/reference.md``
§7). The user tower is the ranker's token construction and
transformer (imported from ``ranker.py``, its own weights) over ``[user |
history]`` with a plain causal mask, masked mean-pooled over the valid
positions and L2-normalised (no final norm, as in the reference). The candidate
tower concatenates a post's hash embeddings and its author's, then
``Linear(→2D) → SiLU → Linear(→D)`` and L2-normalises; it needs no context,
so the corpus can be embedded offline and searched by a vector index.
"""

from __future__ import annotations

import torch
from torch import nn

from xserve.config import PhoenixConfig
from xserve.phoenix.model.ranker import (
    ContextBatch,
    PhoenixEmbeddings,
    Transformer,
    context_mask,
    context_positions,
    init_linears,
)

__all__ = ["L2_EPS", "PhoenixTowers", "l2_normalize"]

L2_EPS = 1e-12  # reference eps of the L2 normalisation


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(L2_EPS)


class PhoenixTowers(nn.Module):
    """``user_embeddings(ctx) (B, D)`` and ``candidate_embeddings(post, author hashes) (N, D)``, unit norm."""

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        self.config = config
        d = config.emb_dim
        self.embeddings = PhoenixEmbeddings(config, candidate_tokens=False)
        self.transformer = Transformer(config)
        item = (config.num_post_hashes + config.num_author_hashes) * d
        self.candidate_mlp = nn.Sequential(nn.Linear(item, 2 * d, bias=False), nn.SiLU(), nn.Linear(2 * d, d, bias=False))
        init_linears(self, skip=(self.embeddings.user_proj, self.embeddings.history_proj))
        nn.init.normal_(self.candidate_mlp[0].weight, std=item**-0.5)  # unit-scale hidden, like the token projections

    def user_embeddings(self, ctx: ContextBatch) -> torch.Tensor:
        """Context ``(B, 1+S)`` tokens → transformer (causal) → masked mean → L2 ⇒ ``(B, D)``."""
        b, s = ctx.post_hashes.shape[:2]
        tokens = self.embeddings.context_tokens(ctx)  # (B, 1+S, D)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), ctx.history_valid], 1)
        h, _ = self.transformer(tokens, context_positions(s, b, tokens.device), context_mask(valid))
        w = valid.to(h.dtype)[..., None]  # (B, 1+S, 1)
        pooled = (h * w).sum(1) / w.sum(1)  # (B, D)
        return l2_normalize(pooled)

    def candidate_embeddings(self, post_hashes: torch.Tensor, author_hashes: torch.Tensor) -> torch.Tensor:
        """``(..., Hp)``, ``(..., Ha)`` hashes → ``(..., D)`` unit vectors."""
        return l2_normalize(self.candidate_mlp(self.embeddings.item(post_hashes, author_hashes)))

    def forward(self, ctx: ContextBatch, post_hashes: torch.Tensor, author_hashes: torch.Tensor) -> torch.Tensor:
        """Similarities ``(B, N)`` of each user to each candidate."""
        return self.user_embeddings(ctx) @ self.candidate_embeddings(post_hashes, author_hashes).T
