"""Dense indexes of document embeddings: the interface (:mod:`indexers.base`), Faiss and Pyserini."""

from .base import DimensionMismatchError, Indexer, SearchResults

__all__ = ["DimensionMismatchError", "Indexer", "SearchResults"]
