"""Thin Ray actor shells around the pure classes (the only package besides deployments/app that imports ray)."""
