"""The built-in model: a small ChatML chat model trained by this project and shipped in ``checkpoint/``.

``train.py`` reproduces it from a seed, ``data.py`` generates its corpus and evaluation sets (``data/``),
``evaluate.py`` measures any model on those sets through a ``logits_fn`` callable.
"""
