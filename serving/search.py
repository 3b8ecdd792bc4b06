"""Search over a ``bertapprox index`` folder (Faiss, Pyserini or a plugin's indexer), with the hits' texts
when the server is given the corpus."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Hit:
    id: str
    score: float
    text: str | None = None


class SearchService:
    """An index loaded for serving; :meth:`search` takes query embeddings from the query encoder's space."""

    def __init__(self, index: Any, path: str, indexer: str, texts: dict[str, str] | None = None) -> None:
        self.index = index
        self.path = path
        self.indexer = indexer
        self.texts = texts

    @classmethod
    def load(cls, path: str, corpus: str | None = None) -> SearchService:
        """Load the index folder ``path`` (its indexer as recorded in ``meta.json``) and, from ``corpus``
        (files :func:`bertapprox_hf.pipeline.corpus.iter_records` reads), the texts of its documents."""
        from bertapprox_hf.plugins import PluginManager
        from indexers.base import read_meta
        from indexers.pyserini_indexer import is_pyserini_index

        if not os.path.isdir(path):
            raise FileNotFoundError(f"index folder not found: {path}")
        meta = read_meta(path)
        name = meta.get("indexer") or ("pyserini" if is_pyserini_index(path) else "faiss")
        index = PluginManager().get_indexer(name).load(path)
        return cls(index, os.path.abspath(path), name, read_texts(corpus) if corpus else None)

    @property
    def dim(self) -> int:
        return int(self.index.dim)

    @property
    def size(self) -> int:
        return len(self.index)

    @property
    def asymmetric(self) -> bool:
        """Documents embedded by the teacher (queries by the student)."""
        return self.index.meta.get("document_encoder", {}).get("kind") == "teacher"

    def describe(self) -> dict[str, Any]:
        meta = self.index.meta
        return {
            "path": self.path,
            "indexer": self.indexer,
            "documents": self.size,
            "dim": self.dim,
            "similarity": self.index.similarity,
            "asymmetric": self.asymmetric,
            "document_encoder": meta.get("document_encoder", {}).get("name_or_path"),
            "texts": self.texts is not None,
        }

    def search(self, embeddings: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` hits of each query embedding, best first (thread-safe for Faiss's read-only search)."""
        results = self.index.search(np.asarray(embeddings, dtype=np.float32), k=min(k, max(1, self.size)))
        texts = self.texts or {}
        return [
            [Hit(doc, float(score), texts.get(doc)) for doc, score in zip(ids, scores, strict=True)]
            for ids, scores in results
        ]


def read_texts(corpus: str) -> dict[str, str]:
    """Document id → text of a corpus (title and text joined as the indexer joined them)."""
    from bertapprox_hf.pipeline.corpus import iter_records

    return {record["id"]: record["text"] for record in iter_records(corpus)}


def overlap(first: list[Hit], second: list[Hit], k: int) -> float:
    """Share of the top ``k`` ids two rankings have in common (1: the same documents)."""
    a = {hit.id for hit in first[:k]}
    b = {hit.id for hit in second[:k]}
    size = min(k, max(len(a), len(b)))
    return len(a & b) / size if size else 1.0
