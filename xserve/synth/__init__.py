"""Synthetic worlds with a known ground truth (``xserve seed``).

``world`` is pure NumPy (schema only); ``seed`` is the offline glue that writes a world into a
``xserve.storage.DataDir``. Nothing here is imported by the serving path.
"""
