"""Phoenix ranker: a Grok-style transformer that scores isolated candidates.

Follows xai-org/x-algorithm ``phoenix/recsys_model.py`` and ``phoenix/grok.py``
(``docs/reference.md`` §6), written in the layout of karpathy/nanoGPT
``model.py`` and HF ``modeling_llama.py``: blocks in dependency order, shapes
in comments. B = batch, S = history slots, C = candidate slots, T = 1+S(+C)
tokens, D = ``emb_dim``, H = query heads, G = kv heads, K = ``key_size``,
A = 18 actions (``xserve.schema.ACTIONS`` order).

Tokens are ``[user | history | candidates]`` (§6.2): the user token is the
concatenated user-hash embeddings projected to D; a history token concatenates
post-hash and author-hash embeddings, the mean embedding of its post text's
tokens (issue 15, zeros without text), a signed multi-hot action embedding
(``(2a−1) @ action_projection``, zeroed when the entry has no action) and a
product-surface embedding, projected to D; a candidate token concatenates
post-hash and author-hash embeddings, its text's mean token embedding, product
surface and a post-age bucket (§6.7: ``floor(age_min/60)+1``, overflow bucket,
0 = unknown), projected to D.
Embeddings are looked up from hashes (``embeddings.py``); hash 0 is padding and
the first hash column decides validity.

Blocks (§6.3): ``h += RMSNorm(Attn(RMSNorm(h)))``, ``h += RMSNorm(FFN(RMSNorm(h)))``;
grouped-query attention with RoPE, logits × ``attn_output_multiplier`` then
soft-capped ``cap·tanh(x/cap)``; gated-GELU FFN, with the tanh-approximated GELU
the reference gets from ``jax.nn.gelu``'s default (``GELU_APPROXIMATE``). A
final RMSNorm, one logit per action (independent sigmoids), a softplus
dwell-time head (seconds) and a softplus duration head of three conditional
durations (seconds of video watched given an open, of profile visit given a
profile click, on the post given a click: ``DURATION_ACTIONS``), the regressions
the value model multiplies by their action's probability. Beside the layers,
``ContentMatch`` adds to each action logit how the candidate's text matches the
history's (issue 15; its class docstring says why).

**Additive inputs** (issue 17, each zero for "unknown", so a context without them
gives the tokens it gave before): the user token adds ``context_proj`` of the
user's context (country, language, client app and the mean of the declared
topics, hashed into one ``context`` table); a history token adds an age
embedding, non-zero only for entries holding a negative action
(``features.history_age_buckets``), so the model can learn how negative
feedback fades.

**Candidate isolation** (§6.4): context tokens (user + history) attend
causally; each candidate attends to every valid context token and to itself,
never to another candidate, so a candidate's score is a function of the context
and that candidate alone.

**Positions: left-anchored.** User at 0, history at 1..n (valid tokens first,
padding after, masked), and *every* candidate at n+1, where n is that row's
number of valid history tokens. The January code ran positions across the
candidate block, so slot order changed scores; the May code right-anchors the
history so candidates share one position. RoPE only sees relative offsets, so
our scheme gives each candidate exactly the offsets to each context token that
right-anchoring gives (candidate − newest history = 1, and so on), hence the
same scores — but here a context token's position never changes when newer
history is appended at the end. That is what lets a serving cache keep a
user's per-layer K/V for a history prefix and extend it, instead of
re-encoding (right-anchoring shifts every cached position on each append).

**Context/candidate split.** Because the context never attends to candidates,
its per-layer K/V is a function of the context alone: ``encode_context`` computes
it once and ``score_candidates`` scores any number of candidate chunks against
it (each candidate attends to the cached context plus its own key), with the same
result as ``forward`` on the full sequence, which stays the oracle;
``extend_context`` appends newer history entries to an encoded context (a KV
cache's prefix reuse). The model holds no state between calls.

**Attention is explicit**, not ``scaled_dot_product_attention``: SDPA cannot apply
the tanh soft cap between the QK product and the softmax. With the cap disabled
(``attn_logit_cap <= 0``) the full forward uses SDPA with a boolean mask.

**Init**: the reference zero-initialises every linear weight and norm scale (its
demo therefore prints 0.5 for everything). We use a trainable init instead:
hash tables N(0, 1), token projections N(0, 1/fan_in) so tokens start at unit
scale, other linears N(0, 0.02²), norm scales 1, action-head bias 0 (training
sets it to the label rates' log-odds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xserve.config import PhoenixConfig
from xserve.phoenix.model.embeddings import HashEmbedding
from xserve.schema import ACTIONS, NEGATIVE_ACTIONS

__all__ = [
    "NUM_ACTIONS",
    "Attention",
    "CandidateBatch",
    "ContextBatch",
    "ContextKV",
    "DecoderBlock",
    "FeedForward",
    "GELU_APPROXIMATE",
    "PhoenixEmbeddings",
    "PhoenixRanker",
    "RMSNorm",
    "RankerOutput",
    "Transformer",
    "apply_rope",
    "context_mask",
    "context_positions",
    "ffn_hidden_size",
    "init_linears",
    "isolation_mask",
    "rope_cos_sin",
]

NUM_ACTIONS = len(ACTIONS)
GELU_APPROXIMATE = "tanh"  # the reference's jax.nn.gelu default; the fused kernels and the vLLM model use it too
MASKED_LOGIT = -1e30  # the reference's fill for masked attention logits (never -inf: no NaN rows)


# --------------------------------------------------------------------------- batches


@dataclass
class ContextBatch:
    """The user and the history: valid history entries first, padding (hash 0) after."""

    user_hashes: torch.Tensor  # (B, Hu) int64
    post_hashes: torch.Tensor  # (B, S, Hp) int64
    author_hashes: torch.Tensor  # (B, S, Ha) int64
    actions: torch.Tensor  # (B, S, A) float multi-hot
    surface: torch.Tensor  # (B, S) int64 product surface
    history_age: torch.Tensor | None = None  # (B, S) int64 age bucket of negative-feedback entries, 0 = none
    context: torch.Tensor | None = None  # (B, 3+T) int64 context-table rows: country, language, app, T topics; 0 = unknown
    content: torch.Tensor | None = None  # (B, S, M) int64 content-table rows of each entry's post text, 0 = none

    @property
    def history_valid(self) -> torch.Tensor:
        return self.post_hashes[..., 0] != 0  # (B, S)

    @property
    def lengths(self) -> torch.Tensor:
        return self.history_valid.sum(-1)  # (B,) valid history tokens n

    def select(self, rows: torch.Tensor | slice) -> ContextBatch:
        return ContextBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                               for f in fields(self)})

    def slots(self, start: int, stop: int | None = None) -> ContextBatch:
        """History slots ``[start, stop)`` of every row, every per-slot input cut alike; the user's inputs kept."""
        per_user = ("user_hashes", "context")
        return ContextBatch(**{f.name: v if v is None or f.name in per_user else v[:, start:stop]
                               for f in fields(self) for v in (getattr(self, f.name),)})


@dataclass
class CandidateBatch:
    """Candidates to score; a slot whose first post hash is 0 is padding."""

    post_hashes: torch.Tensor  # (B, C, Hp) int64
    author_hashes: torch.Tensor  # (B, C, Ha) int64
    surface: torch.Tensor  # (B, C) int64
    age_bucket: torch.Tensor  # (B, C) int64, 0 = unknown
    content: torch.Tensor | None = None  # (B, C, M) int64 content-table rows of each post's text, 0 = none

    @property
    def valid(self) -> torch.Tensor:
        return self.post_hashes[..., 0] != 0  # (B, C)

    def select(self, rows: torch.Tensor | slice) -> CandidateBatch:
        return CandidateBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[rows]
                                 for f in fields(self)})


class RankerOutput(NamedTuple):
    logits: torch.Tensor  # (B, C, A): sigmoid gives P(action)
    dwell_s: torch.Tensor  # (B, C): expected dwell time in seconds (softplus)
    durations_s: torch.Tensor | None = None  # (B, C, 3): watch, profile visit, click dwell seconds (softplus)


@dataclass
class ContextKV:
    """Per-layer keys/values of an encoded context (RoPE already applied to keys)."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (k, v), each (B, G, 1+S, K)
    valid: torch.Tensor  # (B, 1+S) bool: user token and valid history tokens
    lengths: torch.Tensor  # (B,) valid history tokens n; candidates sit at position n+1
    taste: torch.Tensor | None = None  # (B, D) the history's text taste (PhoenixRanker.taste); None = no text


# --------------------------------------------------------------------------- masks and positions


def context_mask(valid: torch.Tensor) -> torch.Tensor:
    """Causal mask over context tokens ``valid (B, Tc)`` → ``(B, 1, Tc, Tc)`` bool (True = may attend).

    A token always sees itself, so a padding query never has an empty row.
    """
    t = valid.shape[1]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool, device=valid.device))  # (Tc, Tc)
    eye = torch.eye(t, dtype=torch.bool, device=valid.device)
    return (causal & (valid[:, None, :] | eye))[:, None]  # (B, 1, Tc, Tc)


def isolation_mask(context_valid: torch.Tensor, candidate_valid: torch.Tensor) -> torch.Tensor:
    """The reference's recsys mask for ``[context | candidates]`` → ``(B, 1, T, T)`` bool.

    ``tril(ones)``, then the candidate×candidate block zeroed, then each candidate's
    diagonal set; keys restricted to valid tokens (a token always sees itself).
    """
    tc, c = context_valid.shape[1], candidate_valid.shape[1]
    t = tc + c
    allowed = torch.tril(torch.ones(t, t, dtype=torch.bool, device=context_valid.device))  # (T, T)
    allowed[tc:, tc:] = False
    eye = torch.eye(t, dtype=torch.bool, device=context_valid.device)
    allowed |= eye
    valid = torch.cat([context_valid, candidate_valid], dim=1)  # (B, T)
    return (allowed & (valid[:, None, :] | eye))[:, None]  # (B, 1, T, T)


def context_positions(num_slots: int, batch: int, device: torch.device) -> torch.Tensor:
    """User at 0, history slot j at j+1 (left-anchored, independent of the row's length)."""
    return torch.arange(num_slots + 1, device=device).expand(batch, -1)  # (B, 1+S)


def rope_cos_sin(positions: torch.Tensor, key_size: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for ``positions (B, T)`` → cos, sin ``(B, 1, T, K)`` (rotate-half layout)."""
    inv_freq = base ** (-torch.arange(0, key_size, 2, dtype=torch.float32, device=positions.device) / key_size)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, K/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, K)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE of ``x (..., K)`` given ``cos``/``sin`` broadcastable to it (``rope_cos_sin``); the fused kernels use it too."""
    return x * cos + _rotate_half(x) * sin  # (B, heads, T, K)


# --------------------------------------------------------------------------- layers


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask → additive bias: 0 where allowed, MASKED_LOGIT where not."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, MASKED_LOGIT)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, G, T, K)`` → ``(B, G·groups, T, K)``: query head h reads kv head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE and a soft-capped logit (no biases)."""

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        if config.num_q_heads % config.num_kv_heads:
            raise ValueError("phoenix.num_q_heads must be a multiple of phoenix.num_kv_heads")
        d, k = config.emb_dim, config.key_size
        self.num_q_heads, self.num_kv_heads, self.key_size = config.num_q_heads, config.num_kv_heads, k
        self.groups = config.num_q_heads // config.num_kv_heads
        self.multiplier = config.attn_output_multiplier
        self.cap = config.attn_logit_cap
        self.q_proj = nn.Linear(d, config.num_q_heads * k, bias=False)
        self.k_proj = nn.Linear(d, config.num_kv_heads * k, bias=False)
        self.v_proj = nn.Linear(d, config.num_kv_heads * k, bias=False)
        self.o_proj = nn.Linear(config.num_q_heads * k, d, bias=False)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_q_heads, self.key_size).transpose(1, 2)  # (B, H, T, K)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.key_size).transpose(1, 2)  # (B, G, T, K)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.key_size).transpose(1, 2)  # (B, G, T, K)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Soft-capped ``cap·tanh(q·k·m/cap)``; the scale goes on q (T·K values), not on the T·T logits."""
        if self.cap > 0:
            return self.cap * torch.tanh((q * (self.multiplier / self.cap)) @ k.transpose(-1, -2))  # (B, H, Tq, Tk)
        return (q * self.multiplier) @ k.transpose(-1, -2)  # (B, H, Tq, Tk)

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_q_heads * self.key_size))  # (B, T, D)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``x (B, T, D)``, additive mask ``bias (B, 1, T, P+T)`` (0 or MASKED_LOGIT) over ``past`` keys
        ``(B, G, P, K)`` (none: P = 0) then x's own → ``(B, T, D)`` and (k, v) of past + x ``(B, G, P+T, K)``."""
        q, k, v = self._qkv(x, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, G, P+T, K)
        kr, vr = _repeat_kv(k, self.groups), _repeat_kv(v, self.groups)  # (B, H, T, K)
        if self.cap > 0:
            weights = torch.softmax(self._logits(q, kr) + bias, dim=-1)  # (B, H, T, T)
            out = weights @ vr  # (B, H, T, K)
        else:
            out = F.scaled_dot_product_attention(q, kr, vr, attn_mask=bias, scale=self.multiplier)
        return self._merge(out), (k, v)

    def forward_candidates(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                           ctx_k: torch.Tensor, ctx_v: torch.Tensor, ctx_bias: torch.Tensor) -> torch.Tensor:
        """Candidates ``x (B, C, D)`` attend to the cached context ``(B, G, Tc, K)`` (additive
        ``ctx_bias (B, 1, 1, Tc)``) and each to itself."""
        q, k, v = self._qkv(x, cos, sin)  # q (B, H, C, K); k, v (B, G, C, K)
        kc, vc = _repeat_kv(ctx_k, self.groups), _repeat_kv(ctx_v, self.groups)  # (B, H, Tc, K)
        ks, vs = _repeat_kv(k, self.groups), _repeat_kv(v, self.groups)  # (B, H, C, K)
        ctx_logits = self._logits(q, kc) + ctx_bias  # (B, H, C, Tc)
        qs = q * (self.multiplier / self.cap if self.cap > 0 else self.multiplier)
        self_logits = (qs * ks).sum(-1, keepdim=True)  # (B, H, C, 1)
        if self.cap > 0:
            self_logits = self.cap * torch.tanh(self_logits)
        weights = torch.softmax(torch.cat([ctx_logits, self_logits], dim=-1), dim=-1)  # (B, H, C, Tc+1)
        out = weights[..., :-1] @ vc + weights[..., -1:] * vs  # (B, H, C, K)
        return self._merge(out)


def ffn_hidden_size(config: PhoenixConfig) -> int:
    """The reference's ``int(wf·D)·2//3`` rounded up to a multiple of 8 (D=128, wf=2 ⇒ 176)."""
    hidden = int(config.widening_factor * config.emb_dim) * 2 // 3
    return hidden + (-hidden) % 8


class FeedForward(nn.Module):
    """Gated GELU: ``W_out(gelu(W_1 x) ⊙ W_v x)``, the tanh approximation (``GELU_APPROXIMATE``)."""

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        hidden = ffn_hidden_size(config)
        self.w_1 = nn.Linear(config.emb_dim, hidden, bias=False)
        self.w_v = nn.Linear(config.emb_dim, hidden, bias=False)
        self.w_out = nn.Linear(hidden, config.emb_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(F.gelu(self.w_1(x), approximate=GELU_APPROXIMATE) * self.w_v(x))


class DecoderBlock(nn.Module):
    """RMSNorm before and after each sublayer (Grok): ``h += post(sub(pre(h)))``."""

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        d = config.emb_dim
        self.pre_attn_norm, self.post_attn_norm = RMSNorm(d), RMSNorm(d)
        self.pre_ffn_norm, self.post_ffn_norm = RMSNorm(d), RMSNorm(d)
        self.attn = Attention(config)
        self.ffn = FeedForward(config)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None = None):
        attn_out, kv = self.attn(self.pre_attn_norm(h), cos, sin, bias, past)
        h = h + self.post_attn_norm(attn_out)
        h = h + self.post_ffn_norm(self.ffn(self.pre_ffn_norm(h)))
        return h, kv

    def forward_candidates(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                           kv: tuple[torch.Tensor, torch.Tensor], ctx_bias: torch.Tensor) -> torch.Tensor:
        attn_out = self.attn.forward_candidates(self.pre_attn_norm(h), cos, sin, kv[0], kv[1], ctx_bias)
        h = h + self.post_attn_norm(attn_out)
        return h + self.post_ffn_norm(self.ffn(self.pre_ffn_norm(h)))


class Transformer(nn.Module):
    """The stack of decoder blocks (no final norm: the ranker adds one, the user tower does not)."""

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        self.key_size, self.rope_base = config.key_size, config.rope_base
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.num_layers))

    def forward(self, h: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                past: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        """``h (B, T, D)``, ``positions (B, T)``, boolean ``mask (B, 1, T, P+T)`` → ``h (B, T, D)`` and
        per-layer (k, v) ``(B, G, P+T, K)``; ``past`` holds P earlier tokens' per-layer (k, v)."""
        cos, sin = rope_cos_sin(positions, self.key_size, self.rope_base)
        bias = _additive(mask, h.dtype)  # once for all layers
        kvs = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, cos, sin, bias, None if past is None else past[i])
            kvs.append(kv)
        return h, kvs

    def forward_candidates(self, h: torch.Tensor, positions: torch.Tensor, context: ContextKV) -> torch.Tensor:
        """Candidate tokens ``h (B, C, D)`` at ``positions (B, C)`` against an encoded context."""
        cos, sin = rope_cos_sin(positions, self.key_size, self.rope_base)
        ctx_bias = _additive(context.valid[:, None, None, :], h.dtype)  # (B, 1, 1, Tc)
        for block, kv in zip(self.blocks, context.layers, strict=True):
            h = block.forward_candidates(h, cos, sin, kv, ctx_bias)
        return h


# --------------------------------------------------------------------------- tokens


class PhoenixEmbeddings(nn.Module):
    """Hash tables and the reduce projections that turn ids into user, history and candidate tokens."""

    def __init__(self, config: PhoenixConfig, candidate_tokens: bool = True) -> None:
        super().__init__()
        d = config.emb_dim
        self.user = HashEmbedding(config.user_vocab, d, init_std=1.0)
        self.post = HashEmbedding(config.post_vocab, d, init_std=1.0)
        self.author = HashEmbedding(config.author_vocab, d, init_std=1.0)
        self.surface = nn.Embedding(config.product_surface_vocab, d)
        self.action_projection = nn.Parameter(torch.randn(NUM_ACTIONS, d) / math.sqrt(NUM_ACTIONS))
        item = (config.num_post_hashes + config.num_author_hashes) * d
        self.user_proj = nn.Linear(config.num_user_hashes * d, d, bias=False)
        self.history_proj = nn.Linear(item + 3 * d, d, bias=False)
        self.candidate_proj = nn.Linear(item + 3 * d, d, bias=False) if candidate_tokens else None
        self.age = nn.Embedding(config.age_buckets, d) if candidate_tokens else None
        # The two additive inputs start small (N(0, 0.02²) here, and context_proj by init_linears), so a fresh
        # model's tokens are close to those without them and training grows what helps.
        self.history_age = nn.Embedding(config.history_age_buckets, d, padding_idx=0)  # row 0 stays zero: no age
        nn.init.normal_(self.history_age.weight, std=0.02)
        with torch.no_grad():
            self.history_age.weight[0].zero_()
        self.context = HashEmbedding(config.context_vocab, d, init_std=1.0)
        self.context_proj = nn.Linear(4 * d, d, bias=False)
        for proj in (self.user_proj, self.history_proj, self.candidate_proj):
            if proj is not None:
                nn.init.normal_(proj.weight, std=proj.in_features**-0.5)
        self.content = HashEmbedding(config.content_vocab, d, init_std=1.0)  # drawn last: the others keep their draws

    def item(self, post_hashes: torch.Tensor, author_hashes: torch.Tensor) -> torch.Tensor:
        """``(..., Hp)``, ``(..., Ha)`` hashes → concatenated embeddings ``(..., (Hp+Ha)·D)``."""
        p = self.post(post_hashes).flatten(-2)  # (..., Hp, D) -> (..., Hp·D)
        a = self.author(author_hashes).flatten(-2)  # (..., Ha, D) -> (..., Ha·D)
        return torch.cat([p, a], dim=-1)

    def context_tokens(self, ctx: ContextBatch) -> torch.Tensor:
        """``[user | history]`` tokens ``(B, 1+S, D)``."""
        user = self.user_proj(self.user(ctx.user_hashes).flatten(-2))[:, None]  # (B, Hu, D) -> (B, 1, D)
        if ctx.context is not None:
            user = user + self.context_proj(self.user_context(ctx.context))[:, None]  # (B, 1, D)
        has_action = (ctx.actions.sum(-1, keepdim=True) > 0).to(ctx.actions.dtype)  # (B, S, 1)
        actions = ((2 * ctx.actions - 1) @ self.action_projection) * has_action  # (B, S, D)
        history = torch.cat([self.item(ctx.post_hashes, ctx.author_hashes), self.text(ctx.content, actions),
                             actions, self.surface(ctx.surface)], -1)
        history = self.history_proj(history)  # (B, S, D)
        if ctx.history_age is not None:
            history = history + self.history_age(ctx.history_age)  # bucket 0 (no negative action) adds 0
        return torch.cat([user, history], dim=1)  # (B, 1+S, D)

    def text(self, rows: torch.Tensor | None, like: torch.Tensor | None = None) -> torch.Tensor:
        """Content-table rows ``(..., M)`` → the mean of the valid tokens' embeddings ``(..., D)`` (zeros for a
        post without text); a batch without content (``rows`` None) gives zeros shaped ``like``."""
        if rows is None:
            return torch.zeros_like(like)
        e = self.content(rows)  # (..., M, D)
        return e.sum(-2) / (rows != 0).sum(-1, keepdim=True).clamp(min=1).to(e.dtype)  # (..., D)

    def user_context(self, rows: torch.Tensor) -> torch.Tensor:
        """Context-table rows ``(B, 3+T)`` → ``(B, 4·D)``: country, language, app, then the mean of the valid
        topics (row 0 embeds to zero, so an unknown field adds nothing)."""
        e = self.context(rows)  # (B, 3+T, D)
        topics = e[:, 3:]  # (B, T, D)
        n = (rows[:, 3:] != 0).sum(-1, keepdim=True).clamp(min=1).to(e.dtype)  # (B, 1)
        return torch.cat([e[:, :3].flatten(-2), topics.sum(1) / n], dim=-1)  # (B, 4·D)

    def candidate_tokens(self, cand: CandidateBatch) -> torch.Tensor:
        """Candidate tokens ``(B, C, D)``."""
        return self.candidate_proj(self.candidate_features(cand))

    def candidate_features(self, cand: CandidateBatch) -> torch.Tensor:
        """What ``candidate_proj`` projects to a candidate token: ``(B, C, (Hp+Ha+3)·D)``."""
        if self.candidate_proj is None or self.age is None:
            raise RuntimeError("these embeddings were built without candidate tokens")
        surface = self.surface(cand.surface)
        return torch.cat([self.item(cand.post_hashes, cand.author_hashes), self.text(cand.content, surface), surface,
                          self.age(cand.age_bucket)], dim=-1)


def init_linears(module: nn.Module, skip: tuple[nn.Module, ...] = ()) -> None:
    """N(0, 0.02²) for every linear not in ``skip`` (token projections keep their own init)."""
    skipped = {id(m) for m in skip if m is not None}
    for m in module.modules():
        if isinstance(m, nn.Linear) and id(m) not in skipped:
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- the ranker


_NEGATIVE_COLUMNS = [i for i, a in enumerate(ACTIONS) if a in NEGATIVE_ACTIONS]


class ContentMatch(nn.Module):
    """Action logits from how a candidate's text matches the history's: ``Σ_k w_ak (U t̂)_k (V ĉ)_k``, a
    rank-``match_rank`` bilinear form of the history's text taste ``t`` and the candidate's text ``c`` (both
    scaled to norm √D).

    Why beside the transformer: what a user reads about is the strongest signal a feed has, and the
    attention layers learn a product of context and candidate slowly (a fresh model's attention is near
    uniform); a factorisation term, as in DLRM's and DCN's feature interactions, learns it in a few hundred
    steps. The weights ``w`` start at zero, so a fresh model scores as one without it.
    """

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        d, r = config.emb_dim, config.match_rank
        self.taste_proj = nn.Linear(d, r, bias=False)
        self.text_proj = nn.Linear(d, r, bias=False)
        self.head = nn.Linear(r, NUM_ACTIONS, bias=False)
        for proj in (self.taste_proj, self.text_proj):
            nn.init.normal_(proj.weight, std=d**-0.5)
        nn.init.zeros_(self.head.weight)

    def forward(self, taste: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """``taste (B, D)``, candidate texts ``(B, C, D)`` → logits ``(B, C, A)``."""
        scale = math.sqrt(taste.shape[-1])
        t = self.taste_proj(F.normalize(taste, dim=-1) * scale)[:, None]  # (B, 1, r)
        c = self.text_proj(F.normalize(text, dim=-1) * scale)  # (B, C, r)
        return self.head(t * c)


class PhoenixRanker(nn.Module):
    """Scores candidates for a user context: ``forward`` (full sequence, the oracle) or
    ``encode_context`` once + ``score_candidates`` per chunk (same numbers)."""

    def __init__(self, config: PhoenixConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = PhoenixEmbeddings(config)
        self.transformer = Transformer(config)
        self.final_norm = RMSNorm(config.emb_dim)
        self.action_head = nn.Linear(config.emb_dim, NUM_ACTIONS)
        self.dwell_head = nn.Linear(config.emb_dim, 1)
        self.duration_head = nn.Linear(config.emb_dim, 3)  # DURATION_ACTIONS order
        e = self.embeddings
        init_linears(self, skip=(e.user_proj, e.history_proj, e.candidate_proj))
        self.match = ContentMatch(config)  # built last: the layers above keep their initial draws

    def taste(self, ctx: ContextBatch) -> torch.Tensor | None:
        """``(B, D)`` the sum of the history entries' text embeddings, an entry holding a negative action counted
        negatively (what the user said it does not want); None for a batch without text."""
        if ctx.content is None:
            return None
        text = self.embeddings.text(ctx.content).to(ctx.actions.dtype)  # (B, S, D)
        negative = ctx.actions[..., _NEGATIVE_COLUMNS].sum(-1, keepdim=True) > 0  # (B, S, 1)
        sign = torch.where(negative, -1.0, 1.0).to(text.dtype) * ctx.history_valid[..., None].to(text.dtype)
        return (text * sign).sum(1)  # (B, D)

    def content_logits(self, taste: torch.Tensor | None, cand: CandidateBatch) -> torch.Tensor | None:
        """``(B, C, A)`` the content-match term of each candidate's action logits; None without text."""
        if taste is None or cand.content is None:
            return None
        return self.match(taste, self.embeddings.text(cand.content).to(taste.dtype))

    def matched(self, out: RankerOutput, taste: torch.Tensor | None, cand: CandidateBatch) -> RankerOutput:
        """``out`` with the content-match term added to its action logits (none without text)."""
        match = self.content_logits(taste, cand)
        return out if match is None else out._replace(logits=out.logits + match.to(out.logits.dtype))

    def _heads(self, h: torch.Tensor) -> RankerOutput:
        h = self.final_norm(h)  # (B, C, D)
        return RankerOutput(self.action_head(h), F.softplus(self.dwell_head(h).squeeze(-1)),
                            F.softplus(self.duration_head(h)))

    def forward(self, ctx: ContextBatch, cand: CandidateBatch) -> RankerOutput:
        """The full ``[user | history | candidates]`` sequence under the isolation mask."""
        b, s, c = ctx.post_hashes.shape[0], ctx.post_hashes.shape[1], cand.post_hashes.shape[1]
        tokens = torch.cat([self.embeddings.context_tokens(ctx), self.embeddings.candidate_tokens(cand)], 1)  # (B, T, D)
        ctx_valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), ctx.history_valid], 1)
        mask = isolation_mask(ctx_valid, cand.valid)  # (B, 1, T, T)
        cand_pos = (ctx.lengths + 1)[:, None].expand(b, c)  # (B, C): every candidate at n+1
        positions = torch.cat([context_positions(s, b, tokens.device), cand_pos], dim=1)  # (B, T)
        h, _ = self.transformer(tokens, positions, mask)
        return self.matched(self._heads(h[:, 1 + s :]), self.taste(ctx), cand)  # (B, C, D) -> heads

    def encode_context(self, ctx: ContextBatch) -> ContextKV:
        """Run the context alone (causal) and keep every layer's (k, v) for ``score_candidates``."""
        b, s = ctx.post_hashes.shape[:2]
        tokens = self.embeddings.context_tokens(ctx)  # (B, 1+S, D)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), ctx.history_valid], 1)
        _, kvs = self.transformer(tokens, context_positions(s, b, tokens.device), context_mask(valid))
        return ContextKV(layers=kvs, valid=valid, lengths=ctx.lengths, taste=self.taste(ctx))

    def extend_context(self, context: ContextKV, newer: ContextBatch) -> ContextKV:
        """Append newer history entries to an encoded context without re-encoding it.

        ``newer``'s history (valid entries first; its user hashes are ignored) continues each row's
        history: entry j sits at position n+1+j (n = the row's valid history so far), attends to the
        row's valid context and causally to the new entries. Because positions are left-anchored the
        cached keys stay valid; the result equals ``encode_context`` of the concatenated history (up
        to padding slots, which stay masked).
        """
        b, s = newer.post_hashes.shape[:2]
        tokens = self.embeddings.context_tokens(newer)[:, 1:]  # history tokens only (B, S, D)
        new_valid = newer.history_valid  # (B, S)
        positions = context.lengths[:, None] + 1 + torch.arange(s, device=tokens.device)  # (B, S)
        own = context_mask(new_valid)[:, 0]  # (B, S, S) causal among the new entries
        old = context.valid[:, None, :].expand(b, s, -1)  # (B, S, Tc) every valid cached token
        mask = torch.cat([old, own], dim=-1)[:, None]  # (B, 1, S, Tc+S)
        _, kvs = self.transformer(tokens, positions, mask, past=context.layers)
        taste = self.taste(newer)
        if context.taste is not None and taste is not None:
            taste = context.taste + taste
        return ContextKV(layers=kvs, valid=torch.cat([context.valid, new_valid], 1),
                         lengths=context.lengths + new_valid.sum(-1), taste=taste)

    def score_candidates(self, context: ContextKV, cand: CandidateBatch) -> RankerOutput:
        """Score candidates ``(B, C, ...)`` against an encoded context of the same batch rows."""
        b, c = cand.post_hashes.shape[:2]
        positions = (context.lengths + 1)[:, None].expand(b, c)  # (B, C)
        h = self.transformer.forward_candidates(self.embeddings.candidate_tokens(cand), positions, context)
        return self.matched(self._heads(h), context.taste, cand)
