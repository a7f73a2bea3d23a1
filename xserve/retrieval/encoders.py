"""Pick the towers retrieval uses: the Phoenix checkpoint, or the synthetic clustered encoder.

``RetrievalConfig.towers_checkpoint`` names a Phoenix towers checkpoint; empty
means :class:`~xserve.synth.encoder.ClusteredEncoder` (demo worlds and
tests, no torch needed). The Phoenix adapter is imported only when a
checkpoint is named, so retrieval does not pull in torch otherwise.
"""

from __future__ import annotations

from xserve.config import RetrievalConfig
from xserve.retrieval.protocols import PostEncoder, UserEncoder
from xserve.synth.encoder import ClusteredEncoder

__all__ = ["load_encoders"]


def load_encoders(config: RetrievalConfig) -> tuple[UserEncoder, PostEncoder, str]:
    """(user tower, candidate tower, model version string) for ``config``."""
    if not config.towers_checkpoint:
        enc = ClusteredEncoder(dim=config.embedding_dim)
        return enc, enc, f"synthetic-d{config.embedding_dim}-s{enc.seed}"
    from xserve.retrieval.towers import load_tower_encoders  # torch only when a checkpoint is named

    return load_tower_encoders(config.towers_checkpoint, config.embedding_dim)
