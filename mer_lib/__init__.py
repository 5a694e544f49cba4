"""mer_lib: the reproducible companion to Hoedt, Flexer & Widmer (SMC 2025).

"Are Inherently Interpretable Models More Robust? A Study in Music Emotion
Recognition". The library does every computation; the numbered notebooks in
``notebooks/`` tell the story and are executed by :mod:`mer_lib.runner`.
"""
from mer_lib.errors import MerError

__all__ = ["MerError"]
__version__ = "0.1.0"
