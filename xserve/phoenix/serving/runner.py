"""RankerRunner: score any number of candidates for one or several users, reusing user-context K/V.

Pure (no Ray). One call takes a batch of ``RankRequest`` and:

1. featurizes every context (user + history) and describes each position by a
   token key; the :class:`~xserve.phoenix.serving.kv_cache.KVCacheManager` pins the
   longest cached prefix of each context and fresh blocks for the rest;
2. encodes only what is missing — nothing on a hit, the grown tail on a partial
   hit (attending to the cached prefix), everything on a miss (all missing
   contexts of the batch in one forward) — and writes the new keys/values into
   the paged pool ``(num_blocks, layers, 2, kv_heads, block_size, key_size)``;
3. gathers each context's keys/values from the pool into one padded batch and
   scores candidates in rows of ``chunk_size`` (rows of different users share a
   forward): each candidate attends to its user's context and to itself only;
4. maps the action logits (sigmoid), the dwell head and the duration head to ``ActionScores``.

Results equal ``PhoenixRanker.forward`` with the isolation mask to float
tolerance (tests: cached == full, chunked == unchunked, batched == alone,
prefix reuse == fresh encode). Positions are left-anchored (see ``ranker.py``),
so a context position's keys/values never change when history is appended and
cached blocks stay valid; a history window that slid (oldest entries dropped at
``history_len``) shares no prefix and is re-encoded.

With ``fused`` (default) the fast paths of ``fused_scoring.py`` run; otherwise
the model's own ``encode_context`` / ``extend_context`` / ``score_candidates``
(the readable reference). Not thread-safe: a Serve replica runs one batch at a
time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xserve.config import RankerServingConfig, XServeConfig
from xserve.phoenix.model.features import Featurizer, age_buckets
from xserve.phoenix.serving.fused_scoring import FusedCandidateScorer
from xserve.phoenix.serving.kv_cache import (
    CacheFullError,
    ContextAllocation,
    KVCacheManager,
    block_bytes,
    num_blocks_for_budget,
)
from xserve.phoenix.model.ranker import CandidateBatch, ContextBatch, ContextKV, PhoenixRanker, RankerOutput
from xserve.schema import ActionScores, RankRequest, RankResponse

__all__ = ["RankResult", "RankerRunner", "resolve_device", "resolve_dtype", "validate_rank_request"]


def resolve_device(device: str, cuda_available: bool) -> str:
    """The torch device ``ranker_serving.device`` means: ``auto`` = ``cuda`` when CUDA is available, else ``cpu``;
    any other value as given. Ray sets ``CUDA_VISIBLE_DEVICES`` per replica (the GPUs it was given, none for
    ``num_gpus: 0``), so ``cuda_available`` (``torch.cuda.is_available()`` in the replica) follows ``num_gpus``."""
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device.startswith("cuda") and not cuda_available:
        raise ValueError(f"ranker_serving.device is {device!r} but CUDA is not available here (use \"auto\" or \"cpu\")")
    return device


def resolve_dtype(dtype: str, device: str | torch.device) -> torch.dtype:
    """``auto`` = bfloat16 on a (resolved) CUDA device, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def zeroed_pool(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero-filled tensor of ``shape``. On the CPU in float32 it is NumPy's calloc'd memory: zero by contract, and
    its pages become resident only when a block is first written, so a replica's 256 MiB pool costs memory as
    contexts fill it rather than all at start (``torch.zeros`` writes every page at once)."""
    if device.type == "cpu" and dtype == torch.float32:
        return torch.from_numpy(np.zeros(shape, dtype=np.float32))
    return torch.zeros(shape, dtype=dtype, device=device)


@dataclass
class RankResult:
    """Scores of one request, as arrays (what ``rank`` turns into ``ActionScores``)."""

    probs: np.ndarray  # (C, A) float32 sigmoid of the action logits, ACTIONS order
    dwell_s: np.ndarray  # (C,) float32 expected dwell time in seconds
    durations_s: np.ndarray | None = None  # (C, 3) float32 watch, profile visit, click dwell seconds
    context_tokens: int = 0  # positions of the user context (user + history)
    cached_context_tokens: int = 0  # of them, read from the KV cache (the rest were encoded)


@dataclass
class _Context:
    """One request's context during a batch."""

    keys: list[tuple]  # token key per position: the user, then each history entry
    alloc: ContextAllocation | None  # None: the cache was full, encoded without caching
    start: int  # first position to encode (cached before it)

    @property
    def num_tokens(self) -> int:
        return len(self.keys)


class RankerRunner:
    """Scores ``RankRequest`` batches with one ranker, a paged context cache and fixed-size candidate chunks."""

    def __init__(self, model: PhoenixRanker, featurizer: Featurizer, serving: RankerServingConfig,
                 version: str = "") -> None:
        for name in ("block_size", "chunk_size", "rows_per_forward", "num_threads", "max_candidates"):
            if getattr(serving, name) < 1:
                raise ValueError(f"ranker_serving.{name} must be >= 1, got {getattr(serving, name)}")
        torch.set_num_threads(serving.num_threads)
        self.serving = serving
        self.version = version
        self.device = torch.device(resolve_device(serving.device, torch.cuda.is_available()))
        self.dtype = resolve_dtype(serving.dtype, self.device)
        self.model = model.eval().to(device=self.device, dtype=self.dtype)
        self.featurizer = featurizer
        cfg = model.config
        self.num_layers, self.num_kv_heads, self.key_size = cfg.num_layers, cfg.num_kv_heads, cfg.key_size
        self.block_size = serving.block_size
        per_block = block_bytes(cfg.num_layers, cfg.num_kv_heads, cfg.key_size, serving.block_size,
                                torch.finfo(self.dtype).bits // 8)
        num_blocks = num_blocks_for_budget(serving.kv_cache_bytes, per_block)
        self.cache = KVCacheManager(num_blocks, serving.block_size, seed=version)
        # The tensor side of the cache, preallocated once: (N, L, 2, G, block, K).
        self.pool = zeroed_pool((num_blocks, cfg.num_layers, 2, cfg.num_kv_heads, serving.block_size, cfg.key_size),
                                self.dtype, self.device)
        self.fast = FusedCandidateScorer(self.model, self.dtype) if serving.fused else None
        self._score_rows = self.fast.score if self.fast is not None else None
        if self.fast is not None and serving.compile:
            self._score_rows = torch.compile(self.fast.score, dynamic=True)

    @classmethod
    def from_config(cls, config: XServeConfig) -> RankerRunner:
        """The ranker in ``ranker_serving.checkpoint``, or seeded random weights when it is empty."""
        from xserve.phoenix.model.embeddings import PhoenixHasher

        serving = config.ranker_serving
        if serving.checkpoint:
            from xserve.phoenix.model.checkpoint import load_ranker

            loaded = load_ranker(serving.checkpoint)
            return cls(loaded.model, loaded.featurizer, serving, version=loaded.version)
        torch.manual_seed(serving.seed)
        model = PhoenixRanker(config.phoenix)
        return cls(model, Featurizer(config.phoenix, PhoenixHasher(config.phoenix)), serving,
                   version=f"random-seed{serving.seed}")

    def __repr__(self) -> str:
        s = self.serving
        return (f"RankerRunner(version={self.version!r}, device={self.device}, dtype={self.dtype}, "
                f"chunk={s.chunk_size}x{s.rows_per_forward}, fused={s.fused}, {self.cache!r})")

    # ------------------------------------------------------------------ public API

    def rank(self, requests: Sequence[RankRequest]) -> list[RankResponse]:
        """Score a batch of requests (any users, any candidate counts); one response per request."""
        out = []
        for res in self.score(requests):
            # One row of floats per candidate in ActionScores' field order (ACTIONS, dwell, the three durations),
            # built positionally: ~3x faster than from_sequence per candidate (2,000 candidates: 6 ms -> 2 ms).
            rows = np.concatenate([res.probs, res.dwell_s[:, None], res.durations_s], axis=1).tolist()
            out.append(RankResponse(
                scores=tuple(ActionScores(*row) for row in rows),
                model_version=self.version,
                context_tokens=res.context_tokens,
                cached_context_tokens=res.cached_context_tokens,
            ))
        return out

    @torch.inference_mode()
    def score(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        """Like :meth:`rank` but returns arrays (``probs (C, A)``, ``dwell_s (C,)``) per request."""
        for r in requests:
            self.validate(r)
        if not requests:
            return []
        ctx_batch, history, user_context = self._context_batch(requests)
        contexts: list[_Context] = []
        try:
            for i, r in enumerate(requests):
                contexts.append(self._allocate(_token_keys(r.user_id, history, i, user_context[i])))
            kv = self._context_kv(ctx_batch, contexts)
            out = self._score_candidates(requests, kv)
            for res, c in zip(out, contexts, strict=True):
                res.context_tokens, res.cached_context_tokens = c.num_tokens, c.start
        finally:
            for c in contexts:
                if c.alloc is not None:
                    self.cache.release(c.alloc)
        return out

    # ------------------------------------------------------------------ contexts

    def validate(self, r: RankRequest) -> None:
        """Raise ``ValueError`` naming the field and the rule if ``r`` cannot be scored."""
        validate_rank_request(r, self.serving.max_candidates)

    def _context_batch(self, requests: Sequence[RankRequest]) -> tuple[ContextBatch, tuple[np.ndarray, ...], np.ndarray]:
        """The batch's contexts, their history arrays (post, author, action bits, surface, age bucket, each
        ``(B, S)``, and content ids ``(B, S, M)``), and their user-context ids ``(B, 3+T)``."""
        f = self.featurizer
        history = f.history_arrays([r.history for r in requests], [r.now_ms for r in requests])
        user_context = f.user_contexts([r.context for r in requests])
        ctx = f.context(np.array([r.user_id for r in requests], np.int64), *history, user_context=user_context)
        return ctx, history, user_context

    def _allocate(self, keys: list[tuple]) -> _Context:
        try:
            alloc = self.cache.allocate(keys)
        except CacheFullError:
            return _Context(keys, None, 0)  # degrade: encode without caching, never fail the request
        start = alloc.first_new_block * self.block_size
        return _Context(keys, alloc, min(start, len(keys)))

    def _context_kv(self, ctx: ContextBatch, contexts: list[_Context]) -> ContextKV:
        """Every request's context keys/values ``(B, G, T, K)`` per layer, T = the longest context."""
        b = len(contexts)
        t = max(c.num_tokens for c in contexts)
        lengths = torch.tensor([c.num_tokens - 1 for c in contexts], device=self.device)
        valid = torch.arange(t, device=self.device)[None, :] < (lengths + 1)[:, None]  # (B, T)
        # (L, 2, B, G, T, K): the batch's contexts, gathered from the pool or freshly encoded.
        dense = torch.zeros(self.num_layers, 2, b, self.num_kv_heads, t, self.key_size,
                            dtype=self.dtype, device=self.device)
        for i, c in enumerate(contexts):
            if c.start:
                dense[:, :, i, :, : c.start] = self._gather(c.alloc.block_ids, c.start)
        fresh = [i for i, c in enumerate(contexts) if c.start == 0]
        if fresh:
            self._encode(ctx, fresh, 0, dense, t)
        for i, c in enumerate(contexts):
            if 0 < c.start < c.num_tokens:
                self._encode(ctx, [i], c.start, dense, c.num_tokens)
        for i, c in enumerate(contexts):
            if c.alloc is not None and c.start < c.num_tokens:
                self._store(c, dense[:, :, i, :, : c.num_tokens])
                self.cache.commit(c.alloc)
        # the history's text taste is a sum over the entries (cheap): computed afresh, not cached
        return ContextKV(layers=[(dense[l, 0], dense[l, 1]) for l in range(self.num_layers)], valid=valid,
                         lengths=lengths, taste=self.model.taste(_to_device(ctx, self.device)))

    def _gather(self, block_ids: list[int], n: int) -> torch.Tensor:
        """Positions ``0..n-1`` of a cached context → ``(L, 2, G, n, K)``."""
        ids = torch.tensor(block_ids[: -(-n // self.block_size)], device=self.device)
        blocks = self.pool[ids]  # (nb, L, 2, G, block, K)
        return blocks.permute(1, 2, 3, 0, 4, 5).flatten(3, 4)[:, :, :, :n]

    def _store(self, c: _Context, kv: torch.Tensor) -> None:
        """Write a context's new blocks (``kv (L, 2, G, n, K)``, padded to whole blocks) into the pool."""
        bs, first = self.block_size, c.alloc.first_new_block
        nb = len(c.alloc.block_ids)
        tail = kv[:, :, :, first * bs :]
        pad = nb * bs - c.num_tokens
        if pad:
            tail = torch.nn.functional.pad(tail, (0, 0, 0, pad))
        blocks = tail.unflatten(3, (nb - first, bs)).permute(3, 0, 1, 2, 4, 5)  # (new, L, 2, G, block, K)
        self.pool[torch.tensor(c.alloc.block_ids[first:], device=self.device)] = blocks

    def _encode(self, ctx: ContextBatch, rows: list[int], start: int, dense: torch.Tensor, t: int) -> None:
        """Encode context positions ``start .. t-1`` of ``rows`` into ``dense``."""
        sub = _to_device(ctx.select(torch.tensor(rows)), self.device)
        s = t - 1  # history slots needed: contexts of these rows are at most t long
        sub = sub.slots(0, s)
        sub.actions = sub.actions.to(self.dtype)
        idx = torch.tensor(rows, device=self.device)
        if self.fast is None:  # reference: the model's own encode_context / extend_context
            if start == 0:
                layers = self.model.encode_context(sub).layers
            else:  # history slot j is position j+1: the cached prefix holds slots 0..start-2
                past = ContextKV(layers=[(dense[l, 0, idx, :, :start], dense[l, 1, idx, :, :start])
                                         for l in range(self.num_layers)],
                                 valid=torch.ones(len(rows), start, dtype=torch.bool, device=self.device),
                                 lengths=torch.full((len(rows),), start - 1, device=self.device))
                newer = sub.slots(start - 1)
                layers = self.model.extend_context(past, newer).layers
            for l, (k, v) in enumerate(layers):
                dense[l, 0, idx, :, start:t] = k[:, :, start:t]
                dense[l, 1, idx, :, start:t] = v[:, :, start:t]
            return
        tokens = self.model.embeddings.context_tokens(sub)[:, start:t]  # (b, t-start, D)
        valid = torch.cat([torch.ones(len(rows), 1, dtype=torch.bool, device=self.device), sub.history_valid], 1)
        past_k = [dense[l, 0, idx, :, :start] for l in range(self.num_layers)] if start else None
        past_v = [dense[l, 1, idx, :, :start] for l in range(self.num_layers)] if start else None
        new_k, new_v = self.fast.encode(tokens.to(self.dtype), start, past_k, past_v, valid[:, start:t])
        for l in range(self.num_layers):
            dense[l, 0, idx, :, start:t] = new_k[l]
            dense[l, 1, idx, :, start:t] = new_v[l]

    # ------------------------------------------------------------------ candidates

    def _candidate_rows(self, requests: Sequence[RankRequest]) -> tuple[CandidateBatch, np.ndarray, np.ndarray]:
        """All candidates of the batch in rows of ``chunk_size`` (or, uncompiled, of the largest request's count
        rounded up to ``_CHUNK_GRANULE`` when that is smaller: a 256-candidate request scored in a 512 row did
        twice the work): ids ``(R, chunk)``, the request of each row, and for each request's candidates their
        flat slot in ``(R·chunk)``."""
        chunk = self.serving.chunk_size
        counts = np.array([len(r.candidates) for r in requests], np.int64)
        if not self.serving.compile:  # no fixed shape needed: a batch of small requests is not padded to a full chunk
            chunk = min(chunk, -(-max(int(counts.max(initial=1)), 1) // _CHUNK_GRANULE) * _CHUNK_GRANULE)
        rows_per_req = np.maximum(-(-counts // chunk), 1)
        row_req = np.repeat(np.arange(len(requests)), rows_per_req)
        row_start = np.concatenate([[0], np.cumsum(rows_per_req)[:-1]]) * chunk
        n = int(counts.sum())
        cols = np.zeros((4, n), np.int64)  # post, author, surface, created_at
        now = np.repeat(np.array([r.now_ms for r in requests], np.int64), counts)
        flat = [(c.post_id, c.author_id, int(c.product_surface), c.created_at_ms or 0)
                for r in requests for c in r.candidates]
        if flat:
            cols[:] = np.array(flat, np.int64).T
        created = np.where(now > 0, cols[3], 0)
        buckets = age_buckets(created, now, self.featurizer.config.age_buckets)
        slot = np.repeat(row_start, counts) + (np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts))
        grid = np.zeros((4, len(row_req) * chunk), np.int64)
        grid[:3, slot] = cols[:3]
        grid[3, slot] = buckets
        grid = grid.reshape(4, len(row_req), chunk)
        content = np.zeros((len(row_req) * chunk, self.featurizer.config.max_content_tokens), np.int64)
        content[slot] = self.featurizer.text_content([c.text for r in requests for c in r.candidates])
        content = content.reshape(len(row_req), chunk, -1)
        return self.featurizer.candidates(grid[0], grid[1], grid[2], grid[3], content), row_req, slot

    def _score_candidates(self, requests: Sequence[RankRequest], kv: ContextKV) -> list[RankResult]:
        cand, row_req, slot = self._candidate_rows(requests)
        cand = _to_device(cand, self.device)
        rows = torch.from_numpy(row_req).to(self.device)
        step = self.serving.rows_per_forward
        parts = [self._score_rows_of(kv, rows[r0 : r0 + step], cand.select(slice(r0, r0 + step)))
                 for r0 in range(0, len(row_req), step)]
        idx = torch.from_numpy(slot).to(self.device)
        logits = torch.cat([p.logits for p in parts]).flatten(0, 1)[idx]  # (n, A) in request order
        probs = torch.sigmoid(logits.float()).cpu().numpy()
        dwell = torch.cat([p.dwell_s for p in parts]).flatten()[idx].float().cpu().numpy()
        durations = torch.cat([p.durations_s for p in parts]).flatten(0, 1)[idx].float().cpu().numpy()  # (n, 3)
        counts = np.cumsum([0] + [len(r.candidates) for r in requests])
        return [RankResult(probs[a:b], dwell[a:b], durations[a:b]) for a, b in zip(counts[:-1], counts[1:], strict=True)]

    def _score_rows_of(self, kv: ContextKV, sel: torch.Tensor, cand: CandidateBatch) -> RankerOutput:
        """Candidate rows ``(r, chunk)`` of requests ``sel (r,)`` → logits ``(r, chunk, A)``, dwell ``(r, chunk)``."""
        r, c = cand.post_hashes.shape[:2]
        if bool((sel == sel[0]).all()):  # one user's rows: one long row against its context, not r copies of it
            sel = sel[:1]
            cand = CandidateBatch(*(t.reshape(1, r * c, *t.shape[2:]) for t in vars(cand).values()))
        n_max = int(kv.lengths[sel].max()) + 1
        ks = [k[sel, :, :n_max] for k, _ in kv.layers]  # (rows, G, T, K)
        vs = [v[sel, :, :n_max] for _, v in kv.layers]
        valid, lengths = kv.valid[sel, :n_max], kv.lengths[sel]
        taste = None if kv.taste is None else kv.taste[sel]
        if self.fast is None:
            out = self.model.score_candidates(ContextKV(list(zip(ks, vs, strict=True)), valid, lengths, taste), cand)
        else:
            bias = None  # only rows shorter than the longest context need their padding keys masked
            if not bool(valid.all()):
                bias = torch.zeros(valid.shape, dtype=self.dtype, device=self.device).masked_fill_(
                    ~valid, float("-inf"))[:, None, None, :]  # (rows, 1, 1, T)
            out = self.fast.split_heads(self._score_rows(self.fast.candidate_tokens(cand), lengths + 1, ks, vs, bias))
            out = self.model.matched(out, taste, cand)
        return RankerOutput(out.logits.reshape(r, c, -1), out.dwell_s.reshape(r, c), out.durations_s.reshape(r, c, -1))


_CHUNK_GRANULE = 64  # a chunk shrunk to a batch's largest request is a multiple of this: few distinct shapes


def validate_rank_request(r: RankRequest, max_candidates: int) -> None:
    """Raise ``ValueError`` naming the field and the rule if ``r`` cannot be scored (ids are hashed: 0 = padding)."""
    if len(r.candidates) > max_candidates:
        raise ValueError(f"RankRequest.candidates: {len(r.candidates)} candidates, more than "
                         f"ranker_serving.max_candidates = {max_candidates}")
    if r.user_id <= 0:
        raise ValueError(f"RankRequest.user_id must be > 0, got {r.user_id}")
    for field, items in (("history", r.history), ("candidates", r.candidates)):
        for it in items:
            if it.post_id <= 0 or it.author_id < 0:
                raise ValueError(f"RankRequest.{field}: post_id must be > 0 and author_id >= 0, "
                                 f"got post {it.post_id} by {it.author_id}")


def _token_keys(user_id: int, history: tuple[np.ndarray, ...], row: int,
                user_context: np.ndarray | None = None) -> list[tuple]:
    """What makes each context position's token: the user and its context ids (when any is known), then (post,
    author, action bits, surface, age bucket, content ids). A new country or a negative entry crossing an age bucket
    changes a key, so the cache re-encodes from there instead of reusing keys/values made from other tokens."""
    n = int((history[0][row] != 0).sum())
    known = () if user_context is None or not user_context.any() else tuple(user_context.tolist())
    columns = [a[row, :n].tolist() for a in history[:5]] + [list(map(tuple, history[5][row, :n].tolist()))]
    return [("user", user_id, *known)] + list(zip(*columns, strict=True))


def _to_device(batch, device: torch.device):
    if device.type == "cpu":
        return batch
    return type(batch)(**{k: v.to(device) for k, v in vars(batch).items()})
