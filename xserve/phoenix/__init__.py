"""Phoenix: the models (``model``), how they are trained and evaluated (``training``), and how the ranker is served (``serving``).

Torch only; nothing here knows about Ray. Import the submodules directly
(``xserve.phoenix.model.ranker``, ``xserve.phoenix.training.train``, ``xserve.phoenix.serving.runner``).
"""
