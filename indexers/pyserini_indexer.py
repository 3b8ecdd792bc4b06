"""Dense indexes in Pyserini's on-disk format, searched with Pyserini's ``FaissSearcher``.

The format: a folder with ``index`` (a Faiss index, by default ``IndexFlatIP``) and ``docid``
(one document id per line, in row order), what ``python -m pyserini.encode ... --to-faiss``
writes; this indexer adds a ``meta.json`` that Pyserini ignores. Documents are encoded with a
student or a teacher; queries go through :class:`PyseriniQueryEncoder`, the interface
``FaissSearcher`` calls (``encode(query) -> 1-D float32``, ``encode_batch(queries)``).

Pyserini starts a JVM when its search modules are imported: :func:`import_pyserini` first points
``JAVA_HOME`` at a Java ≥ 21 (:mod:`indexers.java`) and sets a placeholder ``OPENAI_API_KEY`` when
none is set (Pyserini makes an OpenAI client at import time; nothing is contacted).

    index = PyseriniIndexer.build("corpus.jsonl", Encoder.from_pretrained("student/"))
    index.save("pyserini-index/")
    searcher = FaissSearcher("pyserini-index/", PyseriniQueryEncoder(encoder, normalize=True))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import SearchResults, as_matrix, check_texts, l2_normalize, read_meta
from .faiss_indexer import DEFAULT_TRAIN_SIZE, FaissIndexer, import_faiss

INDEX_NAME = "index"
DOCID_NAME = "docid"
OPENAI_PLACEHOLDER = "unused-by-bertapprox"


def prepare_pyserini_environment() -> str | None:
    """Set ``OPENAI_API_KEY`` (only if unset) and ``JAVA_HOME``/``PATH`` (Java ≥ 21) for Pyserini.

    Returns the Java folder, or None when a JVM already runs in this process (it cannot change).
    """
    os.environ.setdefault("OPENAI_API_KEY", OPENAI_PLACEHOLDER)
    if "jnius" in sys.modules:  # the JVM started with whatever Java it found
        return None
    from .java import configure_java

    return configure_java()


def import_pyserini():
    """``pyserini.search.faiss`` after :func:`prepare_pyserini_environment`; clear errors otherwise."""
    try:
        import pyserini  # noqa: F401 (cheap: no JVM yet)
    except ImportError as error:
        raise ImportError("the Pyserini indexer needs pyserini: pip install 'bertapprox-hf[pyserini]'") from error
    prepare_pyserini_environment()
    import pyserini.search.faiss as module

    return module


class PyseriniQueryEncoder:
    """Our encoder (student :class:`~bertapprox_hf.inference.Encoder` or teacher) as a Pyserini query encoder."""

    def __init__(self, encoder: Any, normalize: bool = False, batch_size: int = 256) -> None:
        if not callable(getattr(encoder, "encode", None)):
            raise TypeError(f"{type(encoder).__name__} has no encode(texts) method")
        self.encoder = encoder
        self.normalize = normalize
        self.batch_size = batch_size

    def encode_batch(self, queries: Sequence[str], **kwargs: Any) -> np.ndarray:
        """``[len(queries), dim]`` float32 (L2-normalized when ``normalize``)."""
        texts = check_texts(list(queries))
        matrix = as_matrix(self.encoder.encode(texts, batch_size=self.batch_size))
        return l2_normalize(matrix) if self.normalize else matrix

    def encode(self, query: str, **kwargs: Any) -> np.ndarray:
        """One query's embedding, 1-D float32."""
        if not isinstance(query, str):
            raise TypeError(f"query must be str, got {type(query).__name__}")
        return self.encode_batch([query])[0]


class PyseriniDocumentEncoder:
    """Our encoder as a Pyserini document encoder: ``encode(texts, titles=None) -> [n, dim]`` float32."""

    def __init__(self, encoder: Any, normalize: bool = False, batch_size: int = 256) -> None:
        self.query_side = PyseriniQueryEncoder(encoder, normalize, batch_size)

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None, **kwargs: Any) -> np.ndarray:
        if titles is not None:
            texts = [f"{title} {text}".strip() for title, text in zip(titles, texts, strict=True)]
        return self.query_side.encode_batch(texts)


class PyseriniIndexer(FaissIndexer):
    """A Faiss index saved in Pyserini's format (``index`` + ``docid``) and searched by ``FaissSearcher``.

    Everything else (build, add, similarity, factories) is :class:`FaissIndexer`'s; the default
    ``Flat`` factory gives the ``IndexFlatIP`` of Pyserini's own dense indexes.
    """

    name = "pyserini"
    requires = ("pyserini", "faiss")

    def __init__(self, *args: Any, path: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path = path
        self._searcher = None

    @classmethod
    def create(
        cls,
        dim: int,
        similarity: str = "dot",
        factory: str = "Flat",
        train_size: int = DEFAULT_TRAIN_SIZE,
        device: str | None = "cpu",
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> PyseriniIndexer:
        return super().create(dim, similarity, factory, train_size, device, nprobe, ef_search)

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        super().add(ids, embeddings)
        self.path, self._searcher = None, None  # the saved folder no longer holds everything

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write ``index``, ``docid`` (one id per line) and ``meta.json`` into the folder ``path``."""
        self.finalize()
        bad = next((i for i in self.ids if not i or any(c in i for c in "\n\r")), None)
        if bad is not None:
            raise ValueError(f"document id {bad!r} cannot be written one per line in Pyserini's docid file")
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.faiss.write_index(self._cpu_index(), os.path.join(path, INDEX_NAME))
        with open(os.path.join(path, DOCID_NAME), "w", encoding="utf-8") as handle:
            handle.writelines(f"{doc_id}\n" for doc_id in self.ids)
        self.meta.update({"factory": self.factory, "format": "pyserini"})
        self.write_meta(path)
        self.path, self._searcher = path, None

    @classmethod
    def load(
        cls, path: str | os.PathLike, similarity: str | None = None, nprobe: int | None = None, **ignored: Any
    ) -> PyseriniIndexer:
        """Read a Pyserini dense index folder (ours or Pyserini's own; ``similarity`` defaults to what
        ``meta.json`` says, else ``"dot"`` — pass ``"cosine"`` for an index of normalized vectors)."""
        faiss = import_faiss()
        path = os.fspath(path)
        index_file, docid_file = os.path.join(path, INDEX_NAME), os.path.join(path, DOCID_NAME)
        for file in (index_file, docid_file):
            if not os.path.isfile(file):
                raise FileNotFoundError(f"not a Pyserini dense index ({os.path.basename(file)} missing): {path}")
        meta = read_meta(path)
        index = faiss.read_index(index_file)
        with open(docid_file, encoding="utf-8") as handle:
            ids = [line.rstrip("\n") for line in handle]
        if len(ids) != index.ntotal:
            raise ValueError(f"{path}: {DOCID_NAME} has {len(ids)} ids but the index holds {index.ntotal} vectors")
        extra = {k: v for k, v in meta.items() if k not in ("indexer", "dim", "similarity", "documents")}
        return cls(
            index,
            ids,
            similarity or meta.get("similarity", "dot"),
            meta.get("factory", type(index).__name__),
            extra,
            device="cpu",  # FaissSearcher keeps its own copy of the index (on the CPU)
            nprobe=nprobe,
            path=path,
        )

    # --- search through Pyserini --------------------------------------------------------------------
    def searcher(self, query_encoder: Any = None):
        """Pyserini's ``FaissSearcher`` on the saved folder, with ``query_encoder`` wrapped for it."""
        if self.path is None:
            raise ValueError("save the index first: Pyserini's FaissSearcher reads it from its folder")
        if self._searcher is None:
            module = import_pyserini()
            self._searcher = module.FaissSearcher(self.path, None)
        if query_encoder is not None:
            if not isinstance(query_encoder, PyseriniQueryEncoder):
                query_encoder = PyseriniQueryEncoder(query_encoder, normalize=self.similarity == "cosine")
            self._searcher.query_encoder = query_encoder
        return self._searcher

    def search(
        self,
        queries: Any,
        k: int = 10,
        query_encoder: Any = None,
        batch_size: int = 256,
        query_ids: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> SearchResults:
        """Like :meth:`Indexer.search`; texts are embedded by ``query_encoder`` inside ``FaissSearcher``."""
        if self.path is None or not _are_texts(queries):
            return super().search(queries, k, query_encoder, batch_size, query_ids)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        texts = check_texts(queries)
        if query_encoder is None:
            raise ValueError("text queries need a query_encoder (or pass query embeddings)")
        self._check_query_encoder(query_encoder)
        adapter = PyseriniQueryEncoder(query_encoder, normalize=self.similarity == "cosine", batch_size=batch_size)
        searcher = self.searcher(adapter)
        names = [str(q) for q in query_ids] if query_ids is not None else [str(i) for i in range(len(texts))]
        if len(names) != len(texts):
            raise ValueError(f"{len(names)} query ids for {len(texts)} queries")
        hits = searcher.batch_search(texts, names, k=k, threads=threads or os.cpu_count() or 1)
        return results_from_hits(hits, names, query_ids is not None)

    def search_embeddings(self, embeddings: np.ndarray, k: int) -> SearchResults:
        if self.path is None:
            return super().search_embeddings(embeddings, k)
        names = [str(i) for i in range(embeddings.shape[0])]
        hits = self.searcher().batch_search(embeddings, names, k=k, threads=os.cpu_count() or 1)
        return results_from_hits(hits, names, False)


def _are_texts(queries: Any) -> bool:
    return isinstance(queries, str) or (
        isinstance(queries, (list, tuple)) and not any(isinstance(q, (np.ndarray, list, tuple)) for q in queries[:1])
    )


def results_from_hits(hits: dict, names: list[str], keep_names: bool = True) -> SearchResults:
    """FaissSearcher's ``{query id: [DenseSearchResult]}`` as :class:`SearchResults` in ``names`` order."""
    ids = [[hit.docid for hit in hits[name]] for name in names]
    scores = [[float(hit.score) for hit in hits[name]] for name in names]
    return SearchResults(ids, scores, names if keep_names else None)


def is_pyserini_index(path: str | os.PathLike) -> bool:
    """A folder with Pyserini's ``index`` and ``docid`` files."""
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, INDEX_NAME)) and os.path.isfile(os.path.join(path, DOCID_NAME))
