"""xserve: an open, production-grade For You feed recommender.

Importing ``xserve`` is cheap: heavy dependencies (torch, ray, lancedb) are
imported only by the modules that need them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
