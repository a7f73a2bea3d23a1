"""Thin Ray actor shells around the pure classes (the only layer besides deployments that imports ray)."""
