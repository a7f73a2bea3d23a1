"""Offline Phoenix: example building from the engagement log, training, evaluation and its metrics."""
