"""The plugins that ship with bertapprox: the Faiss and Pyserini indexers.

Their hooks import only the indexer modules, which import faiss / start Java only when an
index is made or loaded, so listing plugins stays cheap.
"""

from __future__ import annotations

from .hookspecs import hookimpl


class FaissPlugin:
    """``faiss``: Flat, HNSW and IVF-PQ indexes (``pip install 'bertapprox-hf[index]'``)."""

    @hookimpl
    def bertapprox_indexers(self) -> dict[str, type]:
        from indexers.faiss_indexer import FaissIndexer

        return {FaissIndexer.name: FaissIndexer}


class PyseriniPlugin:
    """``pyserini``: dense indexes in Pyserini's format, searched by its FaissSearcher (Java ≥ 21)."""

    @hookimpl
    def bertapprox_indexers(self) -> dict[str, type]:
        from indexers.pyserini_indexer import PyseriniIndexer

        return {PyseriniIndexer.name: PyseriniIndexer}


BUILTIN_PLUGINS = {"faiss": FaissPlugin, "pyserini": PyseriniPlugin}
