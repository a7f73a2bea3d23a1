"""Checkpoints: one ``torch.save`` file per model with everything needed to use it.

A checkpoint holds the format number, the kind (``ranker`` / ``towers``), a
version string (kind + a digest of the weights), the ``PhoenixConfig`` it was
built with, the hash constants, the training metrics and the state dict. Files
are written to a temporary name, fsynced and renamed, so a crash never leaves
half a checkpoint under the real name. Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
import torch
from torch import nn

from xserve.config import PhoenixConfig
from xserve.phoenix.model.embeddings import HashConstants, PhoenixHasher
from xserve.phoenix.model.features import Featurizer
from xserve.phoenix.model.ranker import PhoenixRanker
from xserve.phoenix.model.towers import PhoenixTowers

__all__ = ["CHECKPOINT_FORMAT", "Loaded", "load_ranker", "load_towers", "save_checkpoint", "weights_digest"]

# 2: the FFN's GELU is the tanh approximation; format-1 models were trained with exact GELU.
# 3: 20 actions (video_open, link_open), the duration head, history ages and the user-context table (issue 17).
# 4: the post-content table: the tokens of each history entry's and candidate's text (issue 15).
CHECKPOINT_FORMAT = 4
_FORMAT_HINTS = {1: " (trained with exact GELU)", 2: " (18 actions, no duration head, history ages or user context)",
                 3: " (no post-content input)"}
M = TypeVar("M", bound=nn.Module)


@dataclass
class Loaded(Generic[M]):
    """A model restored from a checkpoint (in eval mode) with what came with it."""

    model: M
    hasher: PhoenixHasher
    config: PhoenixConfig
    version: str
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # what training recorded beside the model (its data split)

    @property
    def featurizer(self) -> Featurizer:
        return Featurizer(self.config, self.hasher)


def weights_digest(model: nn.Module) -> str:
    """A short digest of the dense weights (hash tables skipped: they are large and move with the rest)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if t.numel() < 1_000_000:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_checkpoint(path: str | Path, kind: str, model: nn.Module, hasher: PhoenixHasher,
                    metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """Write ``model`` atomically to ``path``; returns its version string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    version = f"{kind}-{weights_digest(model)}"
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "version": version,
        "phoenix_config": msgspec.to_builtins(model.config),
        "hash_constants": hasher.constants.to_dict(),
        "metrics": metrics,
        "extra": extra or {},
        "state_dict": model.state_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return version


def _load(path: str | Path, kind: str, cls: type[M]) -> Loaded[M]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} checkpoint at {path}; run `xserve train` first")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("kind") != kind:
        raise ValueError(f"{path} is not a {kind} checkpoint")
    if payload.get("format") != CHECKPOINT_FORMAT:
        hint = _FORMAT_HINTS.get(payload.get("format"), "")
        raise ValueError(f"{path} is a format-{payload.get('format')} {kind} checkpoint{hint}, not format "
                         f"{CHECKPOINT_FORMAT}: train it again (`xserve train`)")
    config = msgspec.convert(payload["phoenix_config"], PhoenixConfig)
    model = cls(config)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    hasher = PhoenixHasher(config, HashConstants.from_dict(payload["hash_constants"]))
    return Loaded(model=model, hasher=hasher, config=config, version=payload["version"], metrics=payload["metrics"],
                  extra=payload.get("extra", {}))


def load_ranker(path: str | Path) -> Loaded[PhoenixRanker]:
    return _load(path, "ranker", PhoenixRanker)


def load_towers(path: str | Path) -> Loaded[PhoenixTowers]:
    return _load(path, "towers", PhoenixTowers)
