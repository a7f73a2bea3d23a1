"""Paged KV-cache bookkeeping for the ranker's user context (plain Python, no tensors).

Follows vLLM's v1 block manager (``vllm/v1/core/kv_cache_manager.py``,
``block_pool.py``, ``kv_cache_utils.py``): the manager hands out *block ids*;
the runner owns the tensor pool ``(num_blocks, layers, 2, kv_heads, block_size,
head_dim)`` and writes keys/values into the blocks it is given.

Keying. A context is the token sequence ``[user | history_1 .. history_n]``;
the runner describes each position by a hashable *token key* (the user id for
position 0, the fields that make a history token for the others). Block ``i``
covers positions ``[i*block_size, (i+1)*block_size)`` and is named by a chained
hash ``h_i = hash(h_{i-1}, keys of block i)`` with ``h_{-1}`` a per-model seed,
so a block's hash identifies *every* token up to its end. With the ranker's
left-anchored positions and causal context attention, the keys/values of
position ``p`` depend only on tokens ``0..p`` (and their positions, which never
move), so two contexts that share a block hash share that block's keys/values
exactly: a refresh with the same history is a full hit, and a history that only
grew at the end reuses every unchanged full block (prefix caching). The last,
partial block is cached too, under the hash of the tokens it holds, so an
unchanged context is reused whole; a grown context recomputes from that block.

Lifetime. ``allocate`` pins the cached prefix and new blocks (reference counts);
the runner fills the new blocks and calls ``commit`` so later requests can find
them; ``release`` unpins. A block with a reference count above zero is never
evicted. Free blocks sit in an LRU queue (least recently released first); a
free block that still holds a cached context is reused only when no empty
block is left, and then it is evicted (its hash forgotten) first come first
served. ``release`` queues a context's blocks tail first, so the end of a
context is evicted before its shared prefix, as in vLLM.
"""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BlockHash",
    "BlockPool",
    "CacheFullError",
    "CacheStats",
    "ContextAllocation",
    "KVCacheManager",
    "block_bytes",
    "hash_block_tokens",
    "num_blocks_for_budget",
]

BlockHash = bytes  # 16-byte blake2b digest of (parent hash, token keys of one block)


class CacheFullError(RuntimeError):
    """Not enough free blocks: every block is pinned by a context in use."""


def block_bytes(num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype_bytes: int) -> int:
    """Bytes of one block of the pool tensor (keys and values of every layer)."""
    return num_layers * 2 * num_kv_heads * block_size * head_dim * dtype_bytes


def num_blocks_for_budget(budget_bytes: int, bytes_per_block: int) -> int:
    """How many blocks fit in ``budget_bytes``; at least one block must fit."""
    if bytes_per_block <= 0:
        raise ValueError(f"bytes_per_block must be > 0, got {bytes_per_block}")
    n = budget_bytes // bytes_per_block
    if n < 1:
        raise ValueError(
            f"kv cache budget of {budget_bytes} bytes holds no block of {bytes_per_block} bytes; raise the budget"
        )
    return int(n)


def hash_block_tokens(parent: BlockHash | None, token_keys: Sequence[Hashable]) -> BlockHash:
    """Chained block hash: a stable digest of the parent hash and this block's token keys.

    A cryptographic digest (not Python's ``hash``) so that a collision cannot
    silently serve another user's context, and so that hashes agree across
    processes (``PYTHONHASHSEED``).
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(parent or b"root")
    h.update(pickle.dumps(tuple(token_keys), protocol=5))
    return h.digest()


@dataclass(slots=True)
class CacheStats:
    """Counters since construction (or ``reset``); contexts are counted once per ``allocate``."""

    queries: int = 0  # contexts looked up
    hits: int = 0  # contexts found whole in the cache: nothing to encode
    partial_hits: int = 0  # contexts whose prefix was cached (history grew at the end)
    misses: int = 0  # contexts with no cached block
    hit_tokens: int = 0  # context positions served from the cache
    computed_tokens: int = 0  # context positions the runner had to encode
    evictions: int = 0  # cached blocks whose contents were dropped to make room

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0

    @property
    def partial_hit_rate(self) -> float:
        return self.partial_hits / self.queries if self.queries else 0.0

    def record(self, num_tokens: int, num_cached: int) -> None:
        """Count one context of ``num_tokens`` positions of which the first ``num_cached`` were cached."""
        self.queries += 1
        self.hit_tokens += num_cached
        self.computed_tokens += num_tokens - num_cached
        if num_cached >= num_tokens:
            self.hits += 1
        elif num_cached:
            self.partial_hits += 1
        else:
            self.misses += 1

    def as_dict(self) -> dict[str, float]:
        """The counters and the two rates (what ``Ranker.stats`` and ``GET /v1/admin/stats`` show)."""
        return {name: getattr(self, name) for name in self.__slots__} | {
            "hit_rate": self.hit_rate, "partial_hit_rate": self.partial_hit_rate}

    def reset(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


class BlockPool:
    """Fixed set of block ids with reference counts, an LRU free queue and a hash index."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_cnt = [0] * num_blocks
        self.block_hash: list[BlockHash | None] = [None] * num_blocks
        self.cached: dict[BlockHash, int] = {}  # hash -> block id holding that content
        # Free blocks, least recently released first. Empty blocks are kept apart so that
        # they are used before any block that still holds a reusable context.
        self._free_empty: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._free_cached: OrderedDict[int, None] = OrderedDict()
        self.evictions = 0

    @property
    def num_free(self) -> int:
        return len(self._free_empty) + len(self._free_cached)

    def lookup(self, block_hash: BlockHash) -> int | None:
        return self.cached.get(block_hash)

    def touch(self, block_id: int) -> None:
        """Pin a block (cached hit or fresh allocation); a pinned block is never evicted."""
        if self.ref_cnt[block_id] == 0:
            self._free_empty.pop(block_id, None)
            self._free_cached.pop(block_id, None)
        self.ref_cnt[block_id] += 1

    def take(self, n: int) -> list[int]:
        """``n`` pinned blocks with no content: empty ones first, then the LRU cached ones (evicted)."""
        if n > self.num_free:
            raise CacheFullError(f"need {n} kv blocks, only {self.num_free} of {self.num_blocks} are free")
        out: list[int] = []
        while len(out) < n:
            if self._free_empty:
                block_id, _ = self._free_empty.popitem(last=False)
            else:
                block_id, _ = self._free_cached.popitem(last=False)
                self._evict(block_id)
            self.ref_cnt[block_id] = 1
            out.append(block_id)
        return out

    def register(self, block_id: int, block_hash: BlockHash) -> bool:
        """Make a filled block findable by its hash; False if another block already holds it."""
        if block_hash in self.cached:
            return self.cached[block_hash] == block_id
        self.block_hash[block_id] = block_hash
        self.cached[block_hash] = block_id
        return True

    def release(self, block_id: int) -> None:
        """Unpin once; at zero the block joins the tail (most recent end) of the free queue."""
        if self.ref_cnt[block_id] <= 0:
            raise ValueError(f"block {block_id} released more often than it was pinned")
        self.ref_cnt[block_id] -= 1
        if self.ref_cnt[block_id] == 0:
            if self.block_hash[block_id] is None:
                self._free_empty[block_id] = None
            else:
                self._free_cached[block_id] = None

    def clear(self) -> None:
        """Forget every cached context; fails if any block is pinned."""
        if any(self.ref_cnt):
            raise RuntimeError("cannot clear the kv cache while contexts are in use")
        self.block_hash = [None] * self.num_blocks
        self.cached.clear()
        self._free_empty = OrderedDict.fromkeys(range(self.num_blocks))
        self._free_cached.clear()

    def _evict(self, block_id: int) -> None:
        h = self.block_hash[block_id]
        if h is not None:
            if self.cached.get(h) == block_id:
                del self.cached[h]
            self.block_hash[block_id] = None
            self.evictions += 1


@dataclass(slots=True)
class ContextAllocation:
    """Blocks pinned for one context, in position order.

    ``block_ids[i]`` holds positions ``[i*block_size, (i+1)*block_size)``; the
    first ``num_cached_tokens`` positions were found in the cache, the runner
    must encode positions ``num_cached_tokens .. num_tokens-1`` into the blocks
    from ``first_new_block`` on (always whole blocks, so a block is written
    once) and then call :meth:`KVCacheManager.commit`.
    """

    block_ids: list[int]
    block_hashes: list[BlockHash]
    num_tokens: int
    num_cached_tokens: int
    committed: bool = False
    released: bool = False
    _new: list[int] = field(default_factory=list)  # indices into block_ids written by the runner

    @property
    def first_new_block(self) -> int:
        return len(self.block_ids) - len(self._new)

    @property
    def is_hit(self) -> bool:
        return self.num_cached_tokens == self.num_tokens


class KVCacheManager:
    """Maps contexts (sequences of token keys) to pinned block ids, with prefix reuse and LRU.

    Not thread-safe: one runner owns one manager (a Serve replica runs one
    batch at a time).
    """

    def __init__(self, num_blocks: int, block_size: int, seed: Hashable = "xserve-ranker") -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self.stats = CacheStats()
        # Per-model root of every hash chain: a new model version must never see old blocks.
        self._root = hash_block_tokens(None, (seed,))

    def __repr__(self) -> str:
        return (
            f"KVCacheManager(blocks={self.pool.num_blocks}, block_size={self.block_size}, "
            f"free={self.pool.num_free}, cached={len(self.pool.cached)})"
        )

    def block_hashes(self, token_keys: Sequence[Hashable]) -> list[BlockHash]:
        """The chained hash of every block of a context (the last one may be partial)."""
        out: list[BlockHash] = []
        parent = self._root
        for start in range(0, len(token_keys), self.block_size):
            parent = hash_block_tokens(parent, token_keys[start : start + self.block_size])
            out.append(parent)
        return out

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, token_keys: Sequence[Hashable]) -> ContextAllocation:
        """Pin the longest cached prefix of a context and fresh blocks for the rest.

        Raises :class:`CacheFullError` (with nothing pinned) when the free
        blocks cannot hold the part to encode.
        """
        if not token_keys:
            raise ValueError("a context has at least one token (the user)")
        hashes = self.block_hashes(token_keys)
        cached: list[int] = []
        for h in hashes:
            block_id = self.pool.lookup(h)
            if block_id is None:
                break
            cached.append(block_id)
        # Pin the hits first so that taking new blocks cannot evict them.
        for block_id in cached:
            self.pool.touch(block_id)
        evicted_before = self.pool.evictions
        try:
            new = self.pool.take(len(hashes) - len(cached))
        except CacheFullError:
            for block_id in cached:
                self.pool.release(block_id)
            raise
        n = len(token_keys)
        num_cached = min(len(cached) * self.block_size, n)
        alloc = ContextAllocation(
            block_ids=cached + new,
            block_hashes=hashes,
            num_tokens=n,
            num_cached_tokens=num_cached,
            _new=list(range(len(cached), len(hashes))),
        )
        self.stats.record(n, num_cached)
        self.stats.evictions += self.pool.evictions - evicted_before
        return alloc

    def commit(self, alloc: ContextAllocation) -> None:
        """The runner has written the new blocks: make them findable by later contexts."""
        if alloc.released:
            raise ValueError("commit after release: the blocks may already hold another context")
        for i in alloc._new:
            self.pool.register(alloc.block_ids[i], alloc.block_hashes[i])
        alloc.committed = True

    def release(self, alloc: ContextAllocation) -> None:
        """Unpin a context's blocks, tail first (so its end is evicted before its shared prefix)."""
        if alloc.released:
            return
        for block_id in reversed(alloc.block_ids):
            self.pool.release(block_id)
        alloc.released = True

    def clear(self) -> None:
        """Drop every cached context (e.g. after the model weights change)."""
        self.pool.clear()
