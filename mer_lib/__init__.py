"""mer_lib: the reproducible companion to Hoedt, Flexer & Widmer, SMC 2025 (protocol §1).

The library does every computation; the numbered notebooks tell the story and are run by :mod:`mer_lib.runner`.
"""
from mer_lib.errors import MerError

__all__ = ["MerError"]
__version__ = "0.1.0"
