"""The Phoenix models, torch only: hash embeddings, the isolated-candidate ranker, the two towers, featurization, checkpoints."""
