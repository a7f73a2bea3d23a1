"""Hash embeddings: several hash functions per id kind into one table per kind.

Follows the reference (``docs/reference.md`` §6.1, May artifacts): hash ``j`` of an
id is ``h_j(id) = ((id·scale_j + bias_j) mod P) mod (vocab−1) + 1`` and id 0
hashes to 0, the padding row. Rows 1..vocab−1 are shared by all ids of a kind,
so a table of fixed size serves any number of users or posts (new ones
included) and two ids collide in every hash only rarely.

``P`` is the Mersenne prime 2³¹−1 and every scale and bias is below it, so the
whole computation stays inside int64 for any non-negative int64 id (the id is
reduced mod ``P`` first, which does not change the result). The constants are
fixed below and written into every checkpoint (``HashConstants``): a model is
only meaningful with the hashes it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from xserve.config import PhoenixConfig

__all__ = ["HASH_MODULUS", "HashConstants", "HashEmbedding", "IdKind", "PhoenixHasher", "hash_ids"]

IdKind = Literal["user", "post", "author", "context", "content"]
# context: the user-context values; content: the tokens of a post's text (one hash each)
KINDS: tuple[IdKind, ...] = ("user", "post", "author", "context", "content")
HASH_MODULUS = 2**31 - 1
MAX_HASHES = 8  # per kind; the config may use fewer

# Drawn once with numpy.random.default_rng(20260120); fixed forever for checkpoint compatibility (every checkpoint
# also carries its own). The slots that spread sequential ids badly (the post table's second hash put the medium
# world's 200,000 consecutive post ids on 30,000 rows, 6 times the collisions of a random hash) were drawn again
# with numpy.random.default_rng(20261202) until they pass tests/phoenix/test_embeddings.py's spread test.
_SCALES: dict[str, tuple[int, ...]] = {
    "user": (874926073, 1611942776, 800993612, 1744035780, 668290756, 272451034, 269928039, 1960627063),
    "post": (1206441766, 1231580101, 949766838, 1247518209, 682141865, 445714208, 2013064853, 1868472094),
    "author": (829994215, 1094673918, 371882626, 348866114, 1926129943, 1832759994, 842250665, 372107943),
    "context": (1782061354,),  # drawn with numpy.random.default_rng(20261017) (checkpoint format 3)
    "content": (2088050151,),  # drawn with numpy.random.default_rng(20261203) (checkpoint format 4)
}
_BIASES: dict[str, tuple[int, ...]] = {
    "user": (864930864, 1122313684, 1226639996, 1452958477, 260655262, 811612006, 94670598, 164152499),
    "post": (589233667, 974901142, 406060346, 376381057, 463123507, 1698401433, 1025040390, 751651865),
    "author": (1038931609, 1751407374, 1868107865, 791589506, 982537750, 1568107517, 307313886, 1025870352),
    "context": (1182486070,),
    "content": (1799160328,),
}


def hash_ids(ids: Any, scales: tuple[int, ...], biases: tuple[int, ...], vocab: int, modulus: int = HASH_MODULUS) -> Any:
    """Hash ids of any shape ``(...)`` to ``(..., len(scales))`` rows in ``[0, vocab)``; id 0 → 0.

    Works on int64 numpy arrays and torch tensors alike (same arithmetic, no
    Python loop). Ids must be non-negative.
    """
    if vocab < 2:
        raise ValueError(f"vocab must be at least 2 (row 0 is padding), got {vocab}")
    if isinstance(ids, torch.Tensor):
        x = ids.to(torch.int64)[..., None] % modulus  # (..., 1)
        s = torch.tensor(scales, dtype=torch.int64, device=x.device)
        b = torch.tensor(biases, dtype=torch.int64, device=x.device)
        h = (x * s + b) % modulus % (vocab - 1) + 1  # (..., H)
        return torch.where(ids[..., None] == 0, torch.zeros_like(h), h)
    x = np.asarray(ids, dtype=np.int64)[..., None] % modulus  # (..., 1)
    h = (x * np.asarray(scales, np.int64) + np.asarray(biases, np.int64)) % modulus % (vocab - 1) + 1  # (..., H)
    return np.where(np.asarray(ids)[..., None] == 0, 0, h)


@dataclass(frozen=True)
class HashConstants:
    """Scales, biases and modulus of every id kind: saved in checkpoints, restored on load."""

    scales: dict[str, tuple[int, ...]]
    biases: dict[str, tuple[int, ...]]
    modulus: int = HASH_MODULUS

    @classmethod
    def default(cls, config: PhoenixConfig) -> HashConstants:
        counts = {"user": config.num_user_hashes, "post": config.num_post_hashes, "author": config.num_author_hashes}
        for kind, n in counts.items():
            if not 1 <= n <= MAX_HASHES:
                raise ValueError(f"phoenix.num_{kind}_hashes must be in 1..{MAX_HASHES}, got {n}")
        counts["context"] = counts["content"] = 1
        return cls(
            scales={k: _SCALES[k][: counts[k]] for k in KINDS},
            biases={k: _BIASES[k][: counts[k]] for k in KINDS},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"scales": {k: list(v) for k, v in self.scales.items()},
                "biases": {k: list(v) for k, v in self.biases.items()}, "modulus": self.modulus}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HashConstants:
        return cls(scales={k: tuple(v) for k, v in d["scales"].items()},
                   biases={k: tuple(v) for k, v in d["biases"].items()}, modulus=int(d["modulus"]))


class PhoenixHasher:
    """Hashes user, post and author ids with fixed constants and the config's table sizes."""

    def __init__(self, config: PhoenixConfig, constants: HashConstants | None = None) -> None:
        self.constants = constants if constants is not None else HashConstants.default(config)
        self.vocab = {"user": config.user_vocab, "post": config.post_vocab, "author": config.author_vocab,
                      "context": config.context_vocab, "content": config.content_vocab}
        for kind in KINDS:
            if len(self.constants.scales[kind]) != len(self.constants.biases[kind]):
                raise ValueError(f"hash constants for {kind}: scales and biases differ in length")

    def num_hashes(self, kind: IdKind) -> int:
        return len(self.constants.scales[kind])

    def __call__(self, kind: IdKind, ids: Any) -> Any:
        """``(...)`` ids → ``(..., num_hashes(kind))`` table rows (numpy in, numpy out; torch in, torch out)."""
        c = self.constants
        return hash_ids(ids, c.scales[kind], c.biases[kind], self.vocab[kind], c.modulus)


class HashEmbedding(nn.Module):
    """One table of ``vocab × dim`` rows, looked up by precomputed hashes; row 0 stays zero (padding).

    The table is sparse-gradient (``nn.Embedding(sparse=True)``): a 1M-row table
    is updated only where a batch touched it (``torch.optim.SparseAdam``), which
    is what makes CPU training of the default config fast.
    """

    def __init__(self, vocab: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, dim, padding_idx=0, sparse=True)
        nn.init.normal_(self.table.weight, std=init_std)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self, hashes: torch.Tensor) -> torch.Tensor:
        return self.table(hashes)  # (..., H) -> (..., H, D)
