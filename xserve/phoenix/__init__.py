"""Phoenix: hash embeddings, the isolated-candidate ranker, the two retrieval towers, training and evaluation.

Torch only; nothing here knows about Ray. Import the submodules directly
(``xserve.phoenix.ranker``, ``.towers``, ``.train``, ``.evaluate``).
"""
