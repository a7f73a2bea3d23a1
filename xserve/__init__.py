"""xserve: an open, production-grade For You feed recommender.

Importing ``xserve`` is cheap: heavy dependencies (torch, ray, lancedb) are
imported only by the modules that need them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``serve run xserve.app`` resolves the attribute ``app`` of this package (Ray splits at the last dot):
    # hand it the Application from xserve/app.py, built on first access.
    if name == "app":
        import importlib

        return importlib.import_module("xserve.app").app
    raise AttributeError(f"module 'xserve' has no attribute {name!r}")
