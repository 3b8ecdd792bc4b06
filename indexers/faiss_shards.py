"""A Faiss index in shards: ``shard-00000/``, ``shard-00001/``, ... (each a ``bertapprox index`` Faiss folder of a
contiguous run of the corpus) and ``meta.json`` (indexer ``faiss-shards``).

Made from a cluster's embeddings by :func:`indexers.embeddings.build_sharded_index` (``bertapprox cluster index
--shards N``). Loaded, the shards are searched together through ``faiss.IndexShards`` (one thread per shard,
their results merged): the same hits as one index of all the documents (for Flat and for IVF indexes, whose shards
share one trained quantizer). ``bertapprox search`` and ``bertapprox serve`` read it like any index folder; each
shard folder also loads alone (``FaissIndexer.load``), e.g. to serve one shard per machine and merge their top-k.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import META_NAME, read_meta
from .faiss_indexer import FaissIndexer, import_faiss

SHARD_PREFIX = "shard-"


def shard_folder(path: str | os.PathLike, number: int) -> str:
    """The folder of shard ``number``."""
    return os.path.join(os.fspath(path), f"{SHARD_PREFIX}{number:05d}")


class ShardedFaissIndexer(FaissIndexer):
    """Faiss shards searched as one index (read-only; build one with ``bertapprox cluster index --shards N``)."""

    name = "faiss-shards"
    requires = ("faiss",)

    def __init__(self, parts: Sequence[FaissIndexer], meta: dict | None = None) -> None:
        if not parts:
            raise ValueError("a sharded index needs at least one shard")
        faiss = import_faiss()
        first = parts[0]
        combined = faiss.IndexShards(first.dim, True, True)  # threaded, successive ids: shard order = id order
        for part in parts:
            if part.dim != first.dim or part.similarity != first.similarity:
                raise ValueError("the shards differ in dimension or similarity")
            combined.add_shard(part.index)
        self.parts = list(parts)  # the shards' indexes live as long as this object
        ids = [doc_id for part in parts for doc_id in part.ids]
        super().__init__(combined, ids, first.similarity, first.factory, meta, device="cpu",
                         nprobe=first.nprobe, ef_search=first.ef_search)  # fmt: skip

    @classmethod
    def create(cls, dim: int, similarity: str = "dot", **options: Any) -> ShardedFaissIndexer:
        raise ValueError(
            "a faiss-shards index is built from a cluster's embeddings: bertapprox cluster index --shards N"
        )

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        raise ValueError("a faiss-shards index is read-only: build it again from the embeddings")

    def save(self, path: str | os.PathLike) -> None:
        """Write every shard (``shard-NNNNN/``) and ``meta.json`` into the folder ``path``."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        for number, part in enumerate(self.parts):
            part.save(shard_folder(path, number))
        self.meta["shards"] = [len(part) for part in self.parts]
        self.write_meta(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        mmap: bool = False,
    ) -> ShardedFaissIndexer:
        """Read a folder written by :func:`indexers.embeddings.build_sharded_index` (or :meth:`save`)."""
        path = os.fspath(path)
        if not os.path.isfile(os.path.join(path, META_NAME)):
            raise FileNotFoundError(f"not a sharded Faiss index folder ({META_NAME} missing): {path}")
        meta = read_meta(path)
        sizes = meta.get("shards")
        if not isinstance(sizes, list) or not sizes:
            raise ValueError(f"{path}: {META_NAME} lists no shards")
        parts = [
            FaissIndexer.load(shard_folder(path, number), device=device, nprobe=nprobe, ef_search=ef_search, mmap=mmap)
            for number in range(len(sizes))
        ]
        for number, (part, size) in enumerate(zip(parts, sizes, strict=True)):
            if len(part) != size:
                raise ValueError(f"{shard_folder(path, number)} holds {len(part)} documents, {META_NAME} says {size}")
        extra = {k: v for k, v in meta.items() if k not in ("indexer", "dim", "similarity", "documents")}
        return cls(parts, extra)

    def __repr__(self) -> str:
        return f"ShardedFaissIndexer({self.factory!r}, dim={self.dim}, shards={len(self.parts)}, docs={len(self)})"
