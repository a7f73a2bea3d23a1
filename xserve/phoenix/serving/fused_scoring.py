"""Fast context encoding and candidate scoring with the ranker's own weights.

``PhoenixRanker.encode_context`` / ``score_candidates`` are the readable
reference; this module computes the same functions with fewer passes over
memory, which is what bounds a small model on a CPU. It reads the weights of a
``PhoenixRanker`` (fused into a few matrices once) and never changes the model.
Equal to the reference to float tolerance; tests check it against
``PhoenixRanker.forward`` (the oracle).

What it exploits, all exact identities of the reference's math:

* every candidate of a row sits at the *same* position ``n+1``, so RoPE on the
  candidates' queries and own keys is one linear map per row, folded (with the
  query scale) into that row's q/k projection weights: no rotation pass at all;
* the soft cap bounds every logit to ``[-cap, cap]``, so ``exp`` cannot
  overflow in fp32 and the softmax needs no max subtraction: the weights are
  ``exp(cap·tanh(s·q·k/cap))`` normalised by their sum, the candidate's own
  term added to the context's (no concatenation, no mask tensor when the
  context rows are unpadded); the scale is folded into the queries, and
  ``cap·tanh(z) = 2·cap·σ(2z) − cap`` whose constant cancels in the softmax
  (``tanh`` measured ~30 ns/element on this CPU, ``sigmoid`` ~0.4), and the
  exponential is taken as ``exp2`` with ``log2 e`` folded into the scale
  (``exp`` ~0.7 ns/element, ``exp2`` ~0.2);
* grouped-query attention reads each kv head once: the ``groups`` query heads
  that share it are stacked along the query axis of one matmul instead of
  repeating the context keys per query head;
* q/k/v projections and the two FFN input projections are fused into one
  matmul each.

Shapes: R = rows (a row is one user's chunk of candidates), c = candidates per
row, T = context tokens, D = ``emb_dim``, G = kv heads, g = query heads per kv
head, H = G·g, K = ``key_size``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xserve.phoenix.model.ranker import (
    GELU_APPROXIMATE,
    CandidateBatch,
    ContextBatch,
    PhoenixRanker,
    RankerOutput,
    context_positions,
    isolation_mask,
    rope_cos_sin,
)

__all__ = ["FusedCandidateScorer", "rope_matrices"]

LOG2E = math.log2(math.e)


class _Layer:
    """One decoder block's weights, fused and laid out for the candidate path."""

    def __init__(self, block, dtype: torch.dtype) -> None:
        a, f = block.attn, block.ffn
        d = a.q_proj.in_features
        self.w_qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).to(dtype)  # (H·K+2·G·K, D)
        self.w_q_t = a.q_proj.weight.T.to(dtype).reshape(d, a.num_q_heads, a.key_size)  # (D, H, K)
        self.w_k_t = a.k_proj.weight.T.to(dtype).reshape(d, a.num_kv_heads, a.key_size)  # (D, G, K)
        self.w_v_t = a.v_proj.weight.T.to(dtype).contiguous()  # (D, G·K)
        self.w_o_t = a.o_proj.weight.T.to(dtype).contiguous()  # (H·K, D)
        self.w_in = torch.stack([f.w_1.weight.T, f.w_v.weight.T]).to(dtype)  # (2, D, F): one bmm, contiguous halves
        self.w_out_t = f.w_out.weight.T.to(dtype).contiguous()  # (F, D)
        self.norms = [
            (n.weight.to(dtype), n.eps)
            for n in (block.pre_attn_norm, block.post_attn_norm, block.pre_ffn_norm, block.post_ffn_norm)
        ]

    def rotated_qkv(self, rot: torch.Tensor, q_scale: float) -> torch.Tensor:
        """q/k/v projection with RoPE at one position per row folded in: ``rot (R, K, K)`` → ``(R, D, H·K+2·G·K)``.

        ``rope(x) = x @ rot`` is linear, so ``rope(W x) = (Wᵀ rot)ᵀ x`` per head; the query scale goes in too.
        """
        q = torch.einsum("dhk,rkj->rdhj", self.w_q_t, rot).flatten(2) * q_scale  # (R, D, H·K)
        k = torch.einsum("dgk,rkj->rdgj", self.w_k_t, rot).flatten(2)  # (R, D, G·K)
        return torch.cat([q, k, self.w_v_t.expand(rot.shape[0], -1, -1)], dim=-1)


def rope_matrices(positions: torch.Tensor, key_size: int, base: float, dtype: torch.dtype) -> torch.Tensor:
    """``rope(x) = x·cos + rotate_half(x)·sin`` as ``x @ M``: ``positions (R,)`` → ``M (R, K, K)``."""
    cos, sin = rope_cos_sin(positions[:, None], key_size, base)  # (R, 1, 1, K)
    cos, sin = cos.view(-1, key_size), sin.view(-1, key_size)  # (R, K)
    half = key_size // 2
    j = torch.zeros(key_size, key_size, device=positions.device)  # x @ j = rotate_half(x) = [-x2, x1]
    j[torch.arange(half) + half, torch.arange(half)] = -1.0
    j[torch.arange(half), torch.arange(half) + half] = 1.0
    return (torch.diag_embed(cos) + j * sin[:, None, :]).to(dtype)  # (R, K, K)


class FusedCandidateScorer:
    """``encode`` a context (or extend a cached prefix) and ``score`` candidates against it.

    Build once per model (weights are copied into fused matrices: rebuild after
    loading new weights). Stateless between calls; safe to ``torch.compile``.
    """

    def __init__(self, model: PhoenixRanker, dtype: torch.dtype | None = None) -> None:
        cfg = model.config
        attn = model.transformer.blocks[0].attn
        self.model = model
        self.dtype = dtype or next(model.parameters()).dtype
        self.num_q_heads, self.num_kv_heads, self.key_size = attn.num_q_heads, attn.num_kv_heads, attn.key_size
        self.groups = attn.groups
        self.cap = attn.cap
        self.multiplier = attn.multiplier
        self.rope_base = cfg.rope_base
        # cap·tanh(z) = 2·cap·σ(2z) − cap, and the constant −cap cancels in the softmax, so the
        # weights are exp(2·cap·σ(2z)) with z = s·q·k/cap: σ is ~80× cheaper than tanh on CPU.
        # And exp(x) = 2^(x·log2 e): exp2 measured ~3x cheaper than exp here.
        self._q_scale = 2 * self.multiplier / self.cap if self.cap > 0 else self.multiplier * LOG2E
        self._exp2_scale = 2 * self.cap * LOG2E
        self.layers = [_Layer(b, self.dtype) for b in model.transformer.blocks]
        self.final_norm = (model.final_norm.weight.to(self.dtype), model.final_norm.eps)
        # Every head as one matmul: the action logits, the dwell and the three duration pre-activations.
        heads = (model.action_head, model.dwell_head, model.duration_head)
        self.w_head = torch.cat([h.weight for h in heads]).to(self.dtype)  # (A+1+3, D)
        self.b_head = torch.cat([h.bias for h in heads]).to(self.dtype)  # (A+1+3,)

    def candidate_tokens(self, cand: CandidateBatch) -> torch.Tensor:
        """``(R, c)`` candidate ids → tokens ``(R, c, D)`` (the model's own embedding code)."""
        return self.model.embeddings.candidate_tokens(cand).to(self.dtype)

    def _attention(self, x: torch.Tensor, w_qkv: torch.Tensor, layer: _Layer, ctx_k: torch.Tensor,
                   ctx_v: torch.Tensor, ctx_bias: torch.Tensor | None) -> torch.Tensor:
        r, c, _ = x.shape
        g_kv, g, k = self.num_kv_heads, self.groups, self.key_size
        hk, gk = self.num_q_heads * k, g_kv * k
        # Queries and keys come out rotated to the row's position n+1 and the queries scaled (folded weights).
        qkv = x @ w_qkv[0] if r == 1 else torch.bmm(x, w_qkv)  # (R, c, H·K + 2·G·K)
        q = qkv[..., :hk].view(r, c, g_kv, g, k)  # head h = kv_head·g + j, as the reference's repeat_interleave
        k_self = qkv[..., hk : hk + gk].view(r, c, g_kv, 1, k)
        v_self = qkv[..., hk + gk :].view(r, c, g_kv, 1, k)
        self_logit = (q * k_self).sum(-1)  # (R, c, G, g): own key, same position
        q = q.permute(0, 2, 3, 1, 4).reshape(r, g_kv, g * c, k)  # (R, G, g·c, K): g heads stacked per kv head
        logits = q @ ctx_k.transpose(-1, -2)  # (R, G, g·c, T)
        if self.cap > 0:
            weights = logits.sigmoid_().mul_(self._exp2_scale)  # in [0, 2·cap·log2 e]: no fp32 overflow
            self_w = self_logit.sigmoid().mul_(self._exp2_scale)
        else:
            weights, self_w = logits, self_logit
        if ctx_bias is not None:
            weights = weights.add_(ctx_bias)  # -inf at padding keys: exp gives exactly 0
        if self.cap <= 0:  # unbounded logits: subtract the row max before exp
            m = torch.maximum(weights.amax(-1), self_w.permute(0, 2, 3, 1).reshape(r, g_kv, g * c))
            weights = weights.sub_(m[..., None])
            self_w = self_w - m.view(r, g_kv, g, c).permute(0, 3, 1, 2)
        weights = weights.exp2_()  # (R, G, g·c, T)
        self_w = self_w.exp2()  # (R, c, G, g)
        denom = weights.sum(-1).view(r, g_kv, g, c).permute(0, 3, 1, 2) + self_w  # (R, c, G, g)
        out = (weights @ ctx_v).view(r, g_kv, g, c, k).permute(0, 3, 1, 2, 4)  # (R, c, G, g, K)
        out = (out + self_w[..., None] * v_self) / denom[..., None]
        return out.reshape(r, c, hk) @ layer.w_o_t  # (R, c, D)

    def score(self, tokens: torch.Tensor, positions: torch.Tensor, ctx_k: list[torch.Tensor],
              ctx_v: list[torch.Tensor], ctx_bias: torch.Tensor | None) -> torch.Tensor:
        """Run the candidate tokens through every layer and the heads.

        ``tokens (R, c, D)``; ``positions (R,)`` = n+1 of each row's context;
        ``ctx_k[l], ctx_v[l] (R, G, T, K)`` (keys already rotated);
        ``ctx_bias (R, 1, 1, T)`` with 0 at valid keys and -inf at padding, or
        None when no row has padding. Returns ``(R, c, A+1)``: action logits then
        the dwell pre-activation (``softplus`` gives seconds).
        """
        rot = rope_matrices(positions, self.key_size, self.rope_base, self.dtype)  # (R, K, K)
        h = tokens
        for layer, kl, vl in zip(self.layers, ctx_k, ctx_v, strict=True):
            (w0, e0), (w1, e1), (w2, e2), (w3, e3) = layer.norms
            d = w0.shape[0]
            w_qkv = layer.rotated_qkv(rot, self._q_scale)
            attn = self._attention(F.rms_norm(h, (d,), w0, e0), w_qkv, layer, kl, vl, ctx_bias)
            h = h + F.rms_norm(attn, (d,), w1, e1)
            a, b = F.rms_norm(h, (d,), w2, e2).flatten(0, 1) @ layer.w_in  # (2, R·c, F)
            ffn = (F.gelu(a, approximate=GELU_APPROXIMATE).mul_(b) @ layer.w_out_t).view_as(h)  # (R, c, D)
            h = h + F.rms_norm(ffn, (d,), w3, e3)
        w, eps = self.final_norm
        return torch.addmm(self.b_head, F.rms_norm(h, (w.shape[0],), w, eps).flatten(0, 1), self.w_head.T).view(
            h.shape[0], h.shape[1], -1
        )

    def encode(self, tokens: torch.Tensor, start: int, past_k: list[torch.Tensor] | None,
               past_v: list[torch.Tensor] | None, valid: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encode context tokens at positions ``start .. start+Tn-1`` given the cached prefix.

        ``tokens (B, Tn, D)`` (the model's context tokens from ``start`` on);
        ``past_k[l], past_v[l] (B, G, start, K)`` the cached keys/values of
        positions ``0 .. start-1`` (all valid), or None when ``start == 0``;
        ``valid (B, Tn)`` False at padding slots (after the valid ones). Causal
        attention over past + new, as ``PhoenixRanker.encode_context``: returns
        each layer's new keys (rotated) and values ``(B, G, Tn, K)``. With
        ``start == 0`` this *is* ``encode_context``; with ``start > 0`` it
        extends a cached prefix (a history that grew at the end).
        """
        b, tn, _ = tokens.shape
        pos = torch.arange(start, start + tn, device=tokens.device)[None]  # (1, Tn)
        # Keys visible to query t: cached ones, then new ones up to t that are valid (a token sees itself).
        causal = torch.ones(tn, tn, dtype=torch.bool, device=tokens.device).tril()  # (Tn, Tn)
        allowed = causal & (valid[:, None, :] | torch.eye(tn, dtype=torch.bool, device=tokens.device))  # (B, Tn, Tn)
        allowed = torch.cat([allowed.new_ones(b, tn, start), allowed], dim=-1)  # (B, Tn, start+Tn)
        _, new_k, new_v = self._layers_over(tokens, pos, allowed, past_k, past_v)
        return new_k, new_v

    def forward_masked(self, tokens: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """A whole sequence in one pass with the fused kernels: ``tokens (B, T, D)`` at ``positions (1 or B, T)``,
        ``allowed (B, T, T)`` (query t may attend key u) → the heads' output ``(B, T, A+1)``.

        With the isolation mask over ``[user | history | candidates]`` this is the model's ``forward`` (the
        one-pass baseline of ``benchmarks/bench_ranker.py``, on the same kernels as the cached path).
        """
        h, _, _ = self._layers_over(tokens, positions, allowed, None, None)
        w, eps = self.final_norm
        return torch.addmm(self.b_head, F.rms_norm(h, (w.shape[0],), w, eps).flatten(0, 1), self.w_head.T).view(
            h.shape[0], h.shape[1], -1
        )

    def onepass(self, ctx: ContextBatch, cand: CandidateBatch) -> RankerOutput:
        """``PhoenixRanker.forward`` on the fused kernels: ``[user | history | candidates]`` in one sequence under
        the isolation mask, no cached context (the one-pass baseline, separating the kernels' gain from reuse's)."""
        emb = self.model.embeddings
        b, s, c = ctx.post_hashes.shape[0], ctx.post_hashes.shape[1], cand.post_hashes.shape[1]
        tokens = torch.cat([emb.context_tokens(ctx), emb.candidate_tokens(cand)], 1).to(self.dtype)  # (B, T, D)
        ctx_valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), ctx.history_valid], 1)
        allowed = isolation_mask(ctx_valid, cand.valid)[:, 0]  # (B, T, T)
        cand_pos = (ctx.lengths + 1)[:, None].expand(b, c)  # (B, C): every candidate at n+1
        positions = torch.cat([context_positions(s, b, tokens.device), cand_pos], dim=1)  # (B, T)
        return self.split_heads(self.forward_masked(tokens, positions, allowed)[:, 1 + s :])

    def _layers_over(self, tokens: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor,
                     past_k: list[torch.Tensor] | None, past_v: list[torch.Tensor] | None,
                     ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Every layer over ``tokens (B, Tn, D)`` at ``positions (1 or B, Tn)``, attending to the cached
        ``past`` keys and the new ones where ``allowed (B, Tn, P+Tn)``: the last hidden states and each
        layer's new keys (rotated) and values ``(B, G, Tn, K)``."""
        b, tn, _ = tokens.shape
        g_kv, g, k = self.num_kv_heads, self.groups, self.key_size
        hk, gk = self.num_q_heads * k, g_kv * k
        cos, sin = rope_cos_sin(positions, k, self.rope_base)  # (1 or B, 1, Tn, K)
        cos, sin = cos.to(self.dtype)[:, :, None], sin.to(self.dtype)[:, :, None]  # (1 or B, 1, 1, Tn, K)
        bias = torch.zeros(allowed.shape, dtype=self.dtype, device=tokens.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[:, None, None]  # (B, 1, 1, Tn, P+Tn)
        scale = self._q_scale
        h, new_k, new_v = tokens, [], []
        for i, layer in enumerate(self.layers):
            (w0, e0), (w1, e1), (w2, e2), (w3, e3) = layer.norms
            d = w0.shape[0]
            qkv = F.rms_norm(h, (d,), w0, e0) @ layer.w_qkv.T  # (B, Tn, H·K+2·G·K)
            q = qkv[..., :hk].view(b, tn, g_kv, g, k).permute(0, 2, 3, 1, 4) * scale  # (B, G, g, Tn, K)
            kk = qkv[..., hk : hk + gk].view(b, tn, g_kv, k).transpose(1, 2)  # (B, G, Tn, K)
            v = qkv[..., hk + gk :].view(b, tn, g_kv, k).transpose(1, 2).contiguous()  # (B, G, Tn, K)
            q = q * cos + torch.cat([-q[..., k // 2 :], q[..., : k // 2]], dim=-1) * sin
            kk = kk * cos[:, :, 0] + torch.cat([-kk[..., k // 2 :], kk[..., : k // 2]], dim=-1) * sin[:, :, 0]
            new_k.append(kk)
            new_v.append(v)
            keys = kk if past_k is None else torch.cat([past_k[i], kk], dim=2)  # (B, G, P+Tn, K)
            values = v if past_v is None else torch.cat([past_v[i], v], dim=2)
            logits = (q.reshape(b, g_kv, g * tn, k) @ keys.transpose(-1, -2)).view(b, g_kv, g, tn, -1)
            if self.cap > 0:
                weights = logits.sigmoid_().mul_(self._exp2_scale).add_(bias).exp2_()  # as in _attention
            else:
                weights = logits.add_(bias)
                weights = weights.sub_(weights.amax(-1, keepdim=True)).exp2_()
            weights = weights / weights.sum(-1, keepdim=True)  # (B, G, g, Tn, P+Tn)
            out = (weights.view(b, g_kv, g * tn, -1) @ values).view(b, g_kv, g, tn, k)  # (B, G, g, Tn, K)
            attn = out.permute(0, 3, 1, 2, 4).reshape(b, tn, hk) @ layer.w_o_t  # (B, Tn, D)
            h = h + F.rms_norm(attn, (d,), w1, e1)
            a, bb = F.rms_norm(h, (d,), w2, e2).flatten(0, 1) @ layer.w_in  # (2, B·Tn, F)
            h = h + F.rms_norm((F.gelu(a, approximate=GELU_APPROXIMATE).mul_(bb) @ layer.w_out_t).view_as(h), (d,), w3, e3)
        return h, new_k, new_v

    @staticmethod
    def split_heads(out: torch.Tensor) -> RankerOutput:
        """``(..., A+1+3)`` → the model's ``RankerOutput`` (logits, dwell seconds, duration seconds)."""
        return RankerOutput(out[..., :-4], F.softplus(out[..., -4]), F.softplus(out[..., -3:]))
