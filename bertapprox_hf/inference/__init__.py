"""Serving the student: the fast :class:`Encoder`, request batching and the :class:`TextEncoder` protocol."""

from .batching import BatchingEncoder
from .cache import EmbeddingCache
from .encoder import EmbeddedTexts, Encoder
from .protocol import ConfigProperties, TextEncoder

__all__ = ["BatchingEncoder", "ConfigProperties", "EmbeddedTexts", "EmbeddingCache", "Encoder", "TextEncoder"]
