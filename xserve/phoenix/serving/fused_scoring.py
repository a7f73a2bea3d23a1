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
* the q/k/v projections are one matmul, and each pre-norm's weight is folded
  into the matmul after it (the norm then only scales rows);
* attention runs in blocks of query rows whose logits (``BLOCK_LOGITS``, 1 MiB)
  stay in L2, one kv head of one row at a time, and causal attention reads only
  the keys a block can see (a whole ``(g·c, T)`` logits tensor was 17 MB a layer
  at 2,000 candidates: six passes over DRAM and fresh pages each call);
* on a CPU every matmul goes through oneDNN's fp32 kernels (``linear``):
  torch's ``@`` calls MKL, which runs AVX2 code on AMD CPUs.

Measured effect and what did not help: ``docs/ranker_serving.md``, "Kernels".

Shapes: R = rows (a row is one user's chunk of candidates), c = candidates per
row, T = context tokens, D = ``emb_dim``, G = kv heads, g = query heads per kv
head, H = G·g, K = ``key_size``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from xserve.phoenix.model.ranker import (
    CandidateBatch,
    ContextBatch,
    PhoenixRanker,
    RankerOutput,
    apply_rope,
    context_positions,
    isolation_mask,
    rope_cos_sin,
)

__all__ = ["FusedCandidateScorer", "linear", "onednn_linear_available", "rope_matrices"]

LOG2E = math.log2(math.e)
# Attention logits per block of query rows on the CPU: 256 Ki fp32 = 1 MiB, half of this CPU's 2 MiB L2 per core.
BLOCK_LOGITS = 1 << 18


class _Layer:
    """One decoder block's weights, fused and laid out for the candidate path.

    Each pre-norm's weight is folded into the matmul it feeds (``(x̂·w) @ W = x̂ @ (diag(w) W)``), so those
    norms only scale rows (``_rms``); the post-norms keep their weights (the norm reads the unweighted sum).
    """

    def __init__(self, block, dtype: torch.dtype) -> None:
        a, f = block.attn, block.ffn
        d = a.q_proj.in_features
        w_attn, w_ffn = block.pre_attn_norm.weight, block.pre_ffn_norm.weight  # (D,)
        # Linear weights in nn.Linear's (out, in) layout: ``linear`` computes x @ Wᵀ.
        self.w_qkv = (torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]) * w_attn).to(dtype)  # (H·K+2·G·K, D)
        self.w_q_t = (a.q_proj.weight.T * w_attn[:, None]).to(dtype).reshape(d * a.num_q_heads, a.key_size)  # (D·H, K)
        self.w_k_t = (a.k_proj.weight.T * w_attn[:, None]).to(dtype).reshape(d * a.num_kv_heads, a.key_size)  # (D·G, K)
        self.w_v = (a.v_proj.weight * w_attn).to(dtype)  # (G·K, D)
        self.w_o = a.o_proj.weight.to(dtype)  # (D, H·K)
        self.w_1, self.w_v_ffn = (f.w_1.weight * w_ffn).to(dtype), (f.w_v.weight * w_ffn).to(dtype)  # (F, D) each
        self.w_out = f.w_out.weight.to(dtype)  # (D, F)
        self.eps = (block.pre_attn_norm.eps, block.pre_ffn_norm.eps)
        self.post = [(n.weight.to(dtype), n.eps) for n in (block.post_attn_norm, block.post_ffn_norm)]

    def rotated_qkv(self, rot: torch.Tensor, q_scale: float) -> torch.Tensor:
        """q/k/v projection with RoPE at one position per row folded in: ``rot (R, K, K)`` → ``(R, H·K+2·G·K, D)``
        ((out, in) per row).

        ``rope(x) = x @ rot`` is linear, so ``rope(W x) = (Wᵀ rot)ᵀ x`` per head; the query scale goes in too.
        """
        r, d = rot.shape[0], self.w_v.shape[1]
        q = torch.matmul(self.w_q_t, rot).view(r, d, -1) * q_scale  # (R, D, H·K)
        k = torch.matmul(self.w_k_t, rot).view(r, d, -1)  # (R, D, G·K)
        return torch.cat([q.transpose(1, 2), k.transpose(1, 2), self.w_v.expand(r, -1, -1)], dim=1)


def onednn_linear_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``linear`` can use oneDNN here: a CPU fp32 build of torch with it (x86 wheels have it)."""
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, onednn: bool = False) -> torch.Tensor:
    """``x @ wᵀ (+ bias)`` for ``w (out, in)``; with ``onednn`` through oneDNN's fp32 matmul.

    Why: torch's CPU matmul calls MKL, which on this AMD CPU runs its AVX2 kernels (~90 GFLOP/s on one
    thread); oneDNN's fp32 kernels use AVX-512 (~200 GFLOP/s on the projections, ~120 on the attention's
    K = 32 blocks), strict fp32 arithmetic either way. ``torch.ops.mkldnn._linear_pointwise`` is the op
    torch's own compiler emits for a CPU linear; it takes any strides.
    """
    if onednn:
        return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")
    return F.linear(x, w, bias)


def _inv_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / rms(x)`` over the last axis, ``(..., 1)``: one reduction (the scale of every RMSNorm here)."""
    ss = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_()
    return ss.div_(x.shape[-1]).add_(eps).rsqrt_().to(x.dtype)


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / rms(x)`` over the last axis (an RMSNorm whose weight is folded elsewhere): one reduction, one scale."""
    return x * _inv_rms(x, eps)


def _add_post_norm(h: torch.Tensor, x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
    """``h + RMSNorm(x)`` (the post-norms); ``x`` is a temporary and is overwritten."""
    w, eps = norm
    return h + x.mul_(_inv_rms(x, eps)).mul_(w)


_GELU_C = 2 * math.sqrt(2 / math.pi)


def _gelu_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``gelu_tanh(a) · b`` with ``a`` overwritten: ``0.5·a·(1 + tanh(u)) = a·σ(2u)``, u = √(2/π)(a + 0.044715·a³)
    (``F.gelu``'s tanh form measured 1.3 ns an element here, this one 0.6)."""
    return (a * a).mul_(0.044715 * _GELU_C).add_(_GELU_C).mul_(a).sigmoid_().mul_(a).mul_(b)


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

    @torch.no_grad()
    def __init__(self, model: PhoenixRanker, dtype: torch.dtype | None = None,
                 block_logits: int | None = BLOCK_LOGITS) -> None:
        cfg = model.config
        attn = model.transformer.blocks[0].attn
        self.model = model
        self.dtype = dtype or next(model.parameters()).dtype
        self.num_q_heads, self.num_kv_heads, self.key_size = attn.num_q_heads, attn.num_kv_heads, attn.key_size
        self.groups = attn.groups
        self.cap = attn.cap
        self.multiplier = attn.multiplier
        self.rope_base = cfg.rope_base
        # Logits per attention block (see _attend); on a GPU one block (memory is not the limit there).
        self.block_logits = None if next(model.parameters()).device.type == "cuda" else block_logits
        # cap·tanh(z) = 2·cap·σ(2z) − cap, and the constant −cap cancels in the softmax, so the
        # weights are exp(2·cap·σ(2z)) with z = s·q·k/cap: σ is ~80× cheaper than tanh on CPU.
        # And exp(x) = 2^(x·log2 e): exp2 measured ~3x cheaper than exp here.
        self._q_scale = 2 * self.multiplier / self.cap if self.cap > 0 else self.multiplier * LOG2E
        self._exp2_scale = 2 * self.cap * LOG2E
        self.layers = [_Layer(b, self.dtype) for b in model.transformer.blocks]
        self.onednn = onednn_linear_available(next(model.parameters()).device, self.dtype)
        self.final_eps = model.final_norm.eps
        # Every head as one matmul: the action logits, the dwell and the three duration pre-activations; the
        # final norm's weight folded in.
        heads = (model.action_head, model.dwell_head, model.duration_head)
        self.w_head = (torch.cat([h.weight for h in heads]) * model.final_norm.weight).to(self.dtype)  # (A+1+3, D)
        self.b_head = torch.cat([h.bias for h in heads]).to(self.dtype)  # (A+1+3,)
        self.w_candidate = model.embeddings.candidate_proj.weight.to(self.dtype)  # (D, (Hp+Ha+3)·D)

    def candidate_tokens(self, cand: CandidateBatch) -> torch.Tensor:
        """``(R, c)`` candidate ids → tokens ``(R, c, D)`` (the model's own embedding code, its projection on
        ``linear``)."""
        emb = self.model.embeddings
        return linear(emb.candidate_features(cand).to(self.dtype), self.w_candidate, onednn=self.onednn)

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                causal_past: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Soft-capped attention of ``q (B, n, G, g, K)`` (scaled; any strides) over ``keys``, ``values (B, G, T, K)``,
        in blocks of query rows whose logits stay in the L2 cache.

        ``bias`` is None or additive (0 / -inf) ``(B, 1, 1, 1 or n, T)``. ``causal_past = P``: row t sees at most
        keys ``0 .. P+t``, so a block of rows ``[i, j)`` reads only the first ``P+j`` keys (the others are masked
        by ``bias``: they add exactly 0). Returns the unnormalised ``Σ w·v`` ``(B, n, G, g, K)``, ``Σ w``
        ``(B, n, G, g)`` and, without a cap, the row max (log2 domain) both are relative to (else None).

        Why blocks: one ``(g·n, T)`` logits tensor per kv head was tens of MB (s512_c2000: 17 MB a layer), so each
        of its passes (QK matmul, sigmoid, scale, exp2, sum, PV matmul) went to DRAM and every call faulted in
        fresh pages; a block of ``BLOCK_LOGITS`` stays in L2.
        """
        b, n, g_kv, g, k = q.shape
        t_all = keys.shape[2]
        rows = n if self.block_logits is None else max(1, self.block_logits // (g * t_all))
        num = q.new_empty(b, n, g_kv, g, k)
        den = q.new_empty(b, n, g_kv, g)
        row_max = q.new_empty(b, n, g_kv, g) if self.cap <= 0 else None
        for bi in range(b):
            for gi in range(g_kv):  # one (row, kv head) at a time: 2-D matmuls, the g query heads stacked
                q_bg, k_bg, v_bg = q[bi, :, gi], keys[bi, gi], values[bi, gi]  # (n, g, K), (T, K), (T, K)
                bias_b = None if bias is None else bias[bi, 0, 0]  # (1 or n, T)
                for i in range(0, n, rows):
                    j = min(n, i + rows)
                    m, t = j - i, t_all if causal_past is None else min(t_all, causal_past + j)
                    qb = q_bg[i:j].transpose(0, 1).reshape(g * m, k)  # (g·m, K)
                    w = linear(qb, k_bg[:t], onednn=self.onednn)  # (g·m, t) logits
                    if self.cap > 0:
                        w = w.sigmoid_().mul_(self._exp2_scale)  # in [0, 2·cap·log2 e]: no fp32 overflow, no max needed
                    if bias_b is not None:  # -inf at masked keys: exp2 gives exactly 0
                        w = w.view(g, m, t).add_(bias_b[i:j, :t] if bias_b.shape[0] > 1 else bias_b[:, :t]).view(g * m, t)
                    if row_max is not None:  # unbounded logits: subtract the row max before exp2
                        mx = w.amax(-1, keepdim=True)
                        w = w.sub_(mx)
                        row_max[bi, i:j, gi] = mx.view(g, m).T
                    w = w.exp2_()
                    den[bi, i:j, gi] = w.sum(-1).view(g, m).T
                    num[bi, i:j, gi] = linear(w, v_bg[:t].T, onednn=self.onednn).view(g, m, k).transpose(0, 1)
        return num, den, row_max

    def _attention(self, x: torch.Tensor, w_qkv: torch.Tensor, layer: _Layer, ctx_k: torch.Tensor,
                   ctx_v: torch.Tensor, ctx_bias: torch.Tensor | None) -> torch.Tensor:
        r, c, _ = x.shape
        g_kv, g, k = self.num_kv_heads, self.groups, self.key_size
        hk, gk = self.num_q_heads * k, g_kv * k
        # Queries and keys come out rotated to the row's position n+1 and the queries scaled (folded weights).
        qkv = torch.stack([linear(x[i], w_qkv[i], onednn=self.onednn) for i in range(r)]) if r > 1 else \
            linear(x, w_qkv[0], onednn=self.onednn)  # (R, c, H·K + 2·G·K)
        q = qkv[..., :hk].view(r, c, g_kv, g, k)  # head h = kv_head·g + j, as the reference's repeat_interleave
        k_self = qkv[..., hk : hk + gk].view(r, c, g_kv, 1, k)
        v_self = qkv[..., hk + gk :].view(r, c, g_kv, 1, k)
        self_w = (q * k_self).sum(-1)  # (R, c, G, g): own key, same position
        if self.cap > 0:
            self_w = self_w.sigmoid_().mul_(self._exp2_scale)
        num, den, row_max = self._attend(q, ctx_k, ctx_v, None if ctx_bias is None else ctx_bias[:, :, :, None])
        if row_max is not None:  # merge the own key's logit into the context's row max (log-sum-exp)
            m = torch.maximum(row_max, self_w)
            rescale = (row_max - m).exp2_()
            num, den, self_w = num * rescale[..., None], den * rescale, self_w - m
        self_w = self_w.exp2_()  # (R, c, G, g)
        out = num.add_(self_w[..., None] * v_self).div_((den + self_w)[..., None])  # (R, c, G, g, K)
        return linear(out.view(r, c, hk), layer.w_o, onednn=self.onednn)  # (R, c, D)

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
            w_qkv = layer.rotated_qkv(rot, self._q_scale)
            attn = self._attention(_rms(h, layer.eps[0]), w_qkv, layer, kl, vl, ctx_bias)
            h = _add_post_norm(h, attn, layer.post[0])
            h = _add_post_norm(h, self._ffn(_rms(h, layer.eps[1]), layer), layer.post[1])
        return self._heads(h)

    def _ffn(self, x: torch.Tensor, layer: _Layer) -> torch.Tensor:
        a = linear(x, layer.w_1, onednn=self.onednn)
        return linear(_gelu_mul(a, linear(x, layer.w_v_ffn, onednn=self.onednn)), layer.w_out, onednn=self.onednn)

    def _heads(self, h: torch.Tensor) -> torch.Tensor:
        """The final norm (its weight folded into the heads) and every head: ``(B, T, D)`` → ``(B, T, A+1+3)``."""
        return linear(_rms(h, self.final_eps), self.w_head, self.b_head, onednn=self.onednn)

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
        return self._heads(h)

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
        out = self.split_heads(self.forward_masked(tokens, positions, allowed)[:, 1 + s :])
        return self.model.matched(out, self.model.taste(ctx), cand)  # the content-match term, outside the layers

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
        cos, sin = cos.to(self.dtype)[:, 0, :, None], sin.to(self.dtype)[:, 0, :, None]  # (1 or B, Tn, 1, K)
        bias = torch.zeros(allowed.shape, dtype=self.dtype, device=tokens.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[:, None, None]  # (B, 1, 1, Tn, P+Tn)
        past = 0 if past_k is None else past_k[0].shape[2]
        # Causal (every allowed key of token t is at or before P+t) unless a token may see later ones.
        causal = None if bool(allowed[:, :, past + 1 :].triu().any()) else past
        h, new_k, new_v = tokens, [], []
        for i, layer in enumerate(self.layers):
            qkv = linear(_rms(h, layer.eps[0]), layer.w_qkv, onednn=self.onednn)  # (B, Tn, H·K+2·G·K)
            q = qkv[..., :hk].view(b, tn, g_kv * g, k) * self._q_scale  # (B, Tn, H, K)
            kk = qkv[..., hk : hk + gk].view(b, tn, g_kv, k)  # (B, Tn, G, K)
            q = apply_rope(q, cos, sin).view(b, tn, g_kv, g, k)
            kk = apply_rope(kk, cos, sin).transpose(1, 2).contiguous()
            v = qkv[..., hk + gk :].view(b, tn, g_kv, k).transpose(1, 2).contiguous()  # (B, G, Tn, K)
            new_k.append(kk)  # (B, G, Tn, K)
            new_v.append(v)
            keys = kk if past_k is None else torch.cat([past_k[i], kk], dim=2)  # (B, G, P+Tn, K)
            values = v if past_v is None else torch.cat([past_v[i], v], dim=2)
            num, den, _ = self._attend(q, keys, values, bias, causal_past=causal)  # (B, Tn, G, g, K), (B, Tn, G, g)
            h = _add_post_norm(h, linear(num.div_(den[..., None]).view(b, tn, hk), layer.w_o, onednn=self.onednn),
                               layer.post[0])
            h = _add_post_norm(h, self._ffn(_rms(h, layer.eps[1]), layer), layer.post[1])
        return h, new_k, new_v

    @staticmethod
    def split_heads(out: torch.Tensor) -> RankerOutput:
        """``(..., A+1+3)`` → the model's ``RankerOutput`` (logits, dwell seconds, duration seconds)."""
        return RankerOutput(out[..., :-4], F.softplus(out[..., -4]), F.softplus(out[..., -3:]))
