"""Thin Ray Serve deployments, and the handle adapters that satisfy the mixer's Protocols (``clients.py``)."""
