"""A Faiss index of document embeddings, with the document ids and a record of what built it.

On disk, a folder: ``index.faiss`` (the Faiss index, inner-product metric), ``ids.json`` (the
document id of each row, in order) and ``meta.json`` (dim, similarity, factory string, the
document encoder's description, build figures). ``faiss`` is imported only when an index is
made or read (``pip install 'bertapprox-hf[index]'``).

Index types are Faiss factory strings: ``Flat`` (exact), ``HNSW32`` (graph), ``IVF{nlist},PQ{m}``
(inverted lists + product quantization; trained on a sample of the first documents). With
``similarity="cosine"`` documents and queries are L2-normalized, so inner product is cosine.
GPUs are used when the installed Faiss has them (``faiss.get_num_gpus() > 0``); ``device="cpu"``
keeps the index on the CPU.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bertapprox_hf.pipeline.jsonio import read_json, write_json_atomic

from .base import META_NAME, Indexer, SearchResults, as_matrix, l2_normalize, read_meta

logger = logging.getLogger(__name__)

INDEX_NAME = "index.faiss"
IDS_NAME = "ids.json"
DEFAULT_TRAIN_SIZE = 65536  # vectors buffered to train an index that needs training
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 128


def import_faiss():
    """The ``faiss`` module, or an ImportError saying how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "the Faiss indexer needs faiss: pip install 'bertapprox-hf[index]' (or faiss-cpu / faiss-gpu)"
        ) from error
    return faiss


def _skip_polysemous_training(faiss, index) -> None:
    """PQ indexes from the factory also train polysemous codes (a Hamming pre-filter that plain search
    does not use); that costs seconds to minutes. Skip it, as the factory's ``np`` suffix does."""
    try:
        inner = faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index
        inner = index
    inner = faiss.downcast_index(inner)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False


def num_gpus() -> int:
    """GPUs the installed Faiss can use (0 for faiss-cpu)."""
    faiss = import_faiss()
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:
        return 0


class FaissIndexer(Indexer):
    """Document embeddings in a Faiss index (inner product), with their ids.

    Make one with :meth:`build` (corpus + document encoder) or :meth:`create` + :meth:`add`;
    :meth:`save` / :meth:`load` a folder; :meth:`search` texts (with a query encoder) or vectors.
    """

    name = "faiss"
    requires = ("faiss",)

    def __init__(
        self,
        index: Any,
        ids: list[str],
        similarity: str = "dot",
        factory: str = "Flat",
        meta: dict | None = None,
        train_size: int = DEFAULT_TRAIN_SIZE,
        device: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> None:
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        self.faiss = import_faiss()
        if index.metric_type != self.faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the Faiss index must use the inner-product metric")
        self.dim = int(index.d)
        self.similarity = similarity
        self.factory = factory
        self.ids = list(ids)
        self.meta = dict(meta or {})
        self.train_size = int(train_size)
        self.nprobe = nprobe if nprobe is not None else self.meta.get("nprobe", DEFAULT_NPROBE)
        self.ef_search = ef_search if ef_search is not None else self.meta.get("ef_search", DEFAULT_EF_SEARCH)
        self._pending_ids: list[str] = []
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self.index = index
        self.on_gpu = False
        self._apply_search_parameters()
        self._move_to_device(device)

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        dim: int,
        similarity: str = "dot",
        factory: str = "Flat",
        train_size: int = DEFAULT_TRAIN_SIZE,
        device: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> FaissIndexer:
        """An empty index for ``dim``-dimensional vectors of type ``factory`` (a Faiss factory string).

        Args:
            train_size: for indexes that need training (IVF, PQ): vectors buffered from the first
                documents added, then trained on (all of them when the corpus is smaller).
            device: ``"cpu"`` keeps the index on the CPU; ``None``/``"auto"``/``"gpu"`` use the GPUs
                when Faiss has some.
            nprobe: inverted lists visited per query (IVF indexes).
            ef_search: HNSW search breadth.
        """
        faiss = import_faiss()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(factory, str) or not factory.strip():
            raise ValueError(f"factory must be a Faiss factory string such as 'Flat', got {factory!r}")
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise ValueError(f"Faiss cannot make a {dim}-d index from factory string {factory!r}: {error}") from error
        if train_size < 1:
            raise ValueError(f"train_size must be ≥ 1, got {train_size}")
        _skip_polysemous_training(faiss, index)
        meta = {"factory": factory, "metric": "inner_product", "normalized": similarity == "cosine"}
        return cls(
            index,
            [],
            similarity,
            factory,
            meta,
            train_size=train_size,
            device=device,
            nprobe=nprobe,
            ef_search=ef_search,
        )

    def _move_to_device(self, device: str | None) -> None:
        if device not in (None, "auto", "cpu", "gpu", "cuda") and not str(device).startswith("cuda"):
            raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
        if device == "cpu" or num_gpus() == 0:
            if device in ("gpu", "cuda"):
                logger.warning("Faiss has no GPU here (faiss-cpu, or no device): the index stays on the CPU")
            return
        try:
            self.index = self.faiss.index_cpu_to_all_gpus(self.index)
            self.on_gpu = True
        except (RuntimeError, AttributeError) as error:  # e.g. HNSW has no GPU version
            logger.warning("index %r stays on the CPU: %s", self.factory, error)

    def _cpu_index(self):
        return self.faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index

    def _apply_search_parameters(self) -> None:
        """nprobe for IVF indexes, efSearch for HNSW ones (ignored by other types)."""
        space = self.faiss.ParameterSpace()
        for name, value in (("nprobe", self.nprobe), ("efSearch", self.ef_search)):
            if value is None:
                continue
            try:
                space.set_index_parameter(self.index, name, int(value))
            except RuntimeError:
                pass  # this index type has no such parameter

    # --- adding -----------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Add documents (one string id per row). Rows are normalized when the similarity is cosine;
        an index that needs training buffers them until ``train_size`` rows, then trains."""
        if isinstance(ids, str):
            raise TypeError("ids must be a list of strings, not one string")
        ids = list(ids)
        for position, doc_id in enumerate(ids):
            if not isinstance(doc_id, str):
                raise TypeError(f"ids[{position}] is {type(doc_id).__name__}, not str")
        matrix = as_matrix(embeddings, self.dim, what="document embeddings")
        if len(ids) != matrix.shape[0]:
            raise ValueError(f"{len(ids)} ids for {matrix.shape[0]} embeddings")
        if self.similarity == "cosine":
            matrix = l2_normalize(matrix)
        if self.index.is_trained:
            self.index.add(matrix)
            self.ids.extend(ids)
            return
        self._pending_ids.extend(ids)
        self._pending.append(matrix)
        self._pending_rows += matrix.shape[0]
        if self._pending_rows >= self.train_size:
            self.finalize()

    def finalize(self) -> None:
        """Train on the buffered rows (when the index needs it) and add them."""
        if not self._pending:
            return
        matrix = np.concatenate(self._pending)
        if not self.index.is_trained:
            sample = matrix[: self.train_size]
            start = time.perf_counter()
            try:
                self.index.train(sample)
            except RuntimeError as error:
                raise ValueError(
                    f"could not train the {self.factory!r} index on {sample.shape[0]} vectors: {error}. "
                    "Give it more documents, or fewer lists / smaller codes (e.g. IVF16,PQ8 for a few hundred "
                    "documents), or 'Flat'."
                ) from error
            self.meta["trained_on"] = int(sample.shape[0])
            self.meta["train_seconds"] = round(time.perf_counter() - start, 3)
            self._apply_search_parameters()
        self.index.add(matrix)
        self.ids.extend(self._pending_ids)
        self._pending, self._pending_ids, self._pending_rows = [], [], 0

    def __len__(self) -> int:
        return len(self.ids) + self._pending_rows

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``index.faiss``, ``ids.json`` and ``meta.json`` into the folder ``path``."""
        self.finalize()
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.faiss.write_index(self._cpu_index(), os.path.join(path, INDEX_NAME))
        write_json_atomic(os.path.join(path, IDS_NAME), self.ids, indent=None)
        self.meta.update({"factory": self.factory, "nprobe": self.nprobe, "ef_search": self.ef_search})
        self.write_meta(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        mmap: bool = False,
    ) -> FaissIndexer:
        """Read a folder written by :meth:`save` (``mmap=True`` maps the index file instead of reading it)."""
        faiss = import_faiss()
        path = os.fspath(path)
        index_file, ids_file = os.path.join(path, INDEX_NAME), os.path.join(path, IDS_NAME)
        for file in (index_file, ids_file, os.path.join(path, META_NAME)):
            if not os.path.isfile(file):
                raise FileNotFoundError(f"not a Faiss index folder ({os.path.basename(file)} missing): {path}")
        meta = read_meta(path)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index = faiss.read_index(index_file, flags)
        ids = read_json(ids_file, "document ids")
        if len(ids) != index.ntotal:
            raise ValueError(f"{path}: {IDS_NAME} has {len(ids)} ids but the index holds {index.ntotal} vectors")
        if int(meta.get("dim", index.d)) != index.d:
            raise ValueError(f"{path}: {META_NAME} says dim {meta['dim']} but the index is {index.d}-dimensional")
        extra = {k: v for k, v in meta.items() if k not in ("indexer", "dim", "similarity", "documents")}
        return cls(
            index,
            ids,
            meta.get("similarity", "dot"),
            meta.get("factory", "Flat"),
            extra,
            device=device,
            nprobe=nprobe,
            ef_search=ef_search,
        )

    # --- search -----------------------------------------------------------------------------------
    def search_embeddings(self, embeddings: np.ndarray, k: int) -> SearchResults:
        self.finalize()
        if self.index.ntotal == 0:
            raise ValueError("the index is empty")
        distances, labels = self.index.search(embeddings, min(k, int(self.index.ntotal)))
        ids, scores = [], []
        for row_labels, row_scores in zip(labels, distances, strict=True):
            keep = row_labels >= 0
            ids.append([self.ids[i] for i in row_labels[keep]])
            scores.append(row_scores[keep].astype(float).tolist())
        return SearchResults(ids, scores)

    def __repr__(self) -> str:
        where = "gpu" if self.on_gpu else "cpu"
        return (
            f"FaissIndexer({self.factory!r}, dim={self.dim}, similarity={self.similarity}, docs={len(self)}, {where})"
        )
