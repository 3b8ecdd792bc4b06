"""The indexer interface every indexer plugin implements, and the pieces they share.

An indexer stores document embeddings with their ids and answers nearest-neighbour queries by
inner product (cosine when the encoder's similarity is cosine: both sides are L2-normalized)::

    index = FaissIndexer.build("corpus.jsonl", Encoder.from_pretrained("student/"), factory="HNSW32")
    index.save("index/")
    index = FaissIndexer.load("index/")
    results = index.search(["what is the interest rate"], k=10, query_encoder=encoder)
    results.ids[0], results.scores[0]      # best first

``build`` streams the corpus (anything :func:`bertapprox_hf.pipeline.corpus.iter_records` reads: jsonl
files, folders of them, ``datasets`` datasets, lists of strings) through any document encoder with
``encode(texts, batch_size) -> np.ndarray`` (a student :class:`~bertapprox_hf.inference.Encoder`,
or the :class:`~bertapprox_hf.pipeline.teacher.Teacher` for asymmetric retrieval: teacher documents,
student queries, one embedding space).
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bertapprox_hf.inference.protocol import TextEncoder
from bertapprox_hf.pipeline.jsonio import read_json, write_json_atomic

from .ids import DuplicateIds

META_NAME = "meta.json"


class DimensionMismatchError(ValueError):
    """Query embeddings whose size differs from the index's."""


@dataclass
class SearchResults:
    """Hits of a batch of queries, best first: ``ids[i]`` and ``scores[i]`` belong to query ``i``.

    A query can have fewer than ``k`` hits (a small index, or an approximate index that found fewer).
    """

    ids: list[list[str]]
    scores: list[list[float]]
    query_ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[list[str], list[float]]]:
        return iter(zip(self.ids, self.scores, strict=True))

    def as_dict(self, query_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        """``{query_id: {doc_id: score}}`` (the layout pytrec_eval and BEIR evaluate)."""
        names = _query_names(self, query_ids)
        return {
            name: {doc: float(score) for doc, score in zip(ids, scores, strict=True)}
            for name, ids, scores in zip(names, self.ids, self.scores, strict=True)
        }


def _query_names(results: SearchResults, query_ids: Sequence[str] | None) -> list[str]:
    names = list(query_ids) if query_ids is not None else results.query_ids
    if names is None:
        names = [str(i) for i in range(len(results))]
    if len(names) != len(results):
        raise ValueError(f"{len(names)} query ids for {len(results)} result lists")
    return [str(name) for name in names]


# --- encoders -----------------------------------------------------------------------------------
def encoder_similarity(encoder: TextEncoder) -> str:
    """``"cosine"`` or ``"dot"``: the encoder's ``similarity``, checked."""
    similarity = encoder.similarity
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    return similarity


def encoder_dim(encoder: TextEncoder) -> int:
    """The encoder's embedding size."""
    return int(encoder.dim)


def describe_encoder(encoder: TextEncoder) -> dict:
    """A JSON-able record of what made some embeddings (kept in an index's ``meta.json``): the encoder's
    ``description()``; an encoder without one (a plugin's) is named by its class."""
    if isinstance(encoder, TextEncoder):
        return encoder.description()
    return {"kind": type(encoder).__name__, "dim": encoder_dim(encoder), "similarity": encoder_similarity(encoder)}


def check_texts(texts: Any, what: str = "queries") -> list[str]:
    """A non-empty list of strings, else TypeError / ValueError naming the bad item."""
    if isinstance(texts, str):
        return [texts]
    if texts is None or not isinstance(texts, Iterable):
        raise TypeError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{position}] is {type(text).__name__}, not str")
    if not texts:
        raise ValueError(f"no {what} given: the list is empty")
    return texts


def as_matrix(embeddings: Any, dim: int | None = None, what: str = "query embeddings") -> np.ndarray:
    """A C-contiguous float32 ``[n, dim]`` array; a 1-D vector is one row. Checks the size."""
    if isinstance(embeddings, (str, bytes)):
        raise TypeError(f"{what} must be an array, got {type(embeddings).__name__}")
    if hasattr(embeddings, "detach"):  # torch tensor
        embeddings = embeddings.detach().cpu().numpy()
    array = np.asarray(embeddings)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what} must be [n, dim], got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"no {what} given: the array is empty")
    if dim is not None and array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} have {array.shape[1]} dimensions but the index holds {dim}-dimensional vectors "
            "(use a query encoder in the same space as the documents: the same teacher, or a student of it)"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def encode_batches(
    corpus: Any,
    encoder: TextEncoder,
    batch_size: int = 256,
    show_progress_bar: bool = True,
    max_records: int | None = None,
    text_field: str = "text",
    title_field: str | None = "title",
    desc: str = "Indexing",
    duplicates: DuplicateIds | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(ids, embeddings)`` batches of a corpus, encoded ``batch_size`` records at a time. With ``duplicates``, a
    record whose id was seen before is counted there and left out (never encoded)."""
    from tqdm.auto import tqdm

    from bertapprox_hf.pipeline.corpus import iter_records

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    records = iter_records(corpus, text_field=text_field, title_field=title_field, max_records=max_records)
    total = max_records if max_records is not None else _known_length(corpus)
    with tqdm(total=total, desc=desc, unit="doc", disable=not show_progress_bar) as progress:
        ids: list[str] = []
        texts: list[str] = []
        for record in records:
            if duplicates is not None and not duplicates.is_new(record["id"]):
                continue
            ids.append(record["id"])
            texts.append(record["text"])
            if len(texts) == batch_size:
                yield ids, np.asarray(encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
                progress.update(len(texts))
                ids, texts = [], []
        if texts:
            yield ids, np.asarray(encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
            progress.update(len(texts))


def _first_of_each_id(
    ids: Sequence[str], embeddings: np.ndarray, duplicates: DuplicateIds
) -> tuple[Sequence[str], np.ndarray]:
    """The rows whose id ``duplicates`` has not seen before (the repeats are counted there)."""
    keep = [row for row, doc_id in enumerate(ids) if duplicates.is_new(doc_id)]
    if len(keep) == len(ids):
        return ids, embeddings
    return [ids[row] for row in keep], embeddings[keep]


def _known_length(corpus: Any) -> int | None:
    if isinstance(corpus, (str, os.PathLike)):
        return None
    try:
        return len(corpus)
    except TypeError:
        return None


# --- the interface ------------------------------------------------------------------------------
class Indexer(abc.ABC):
    """A dense index of document embeddings with their ids.

    Subclasses implement :meth:`create`, :meth:`add`, :meth:`save`, :meth:`load` and
    :meth:`search_embeddings`; :meth:`build` and :meth:`search` are shared. Scores are inner
    products; with ``similarity="cosine"`` every vector (documents and queries) is L2-normalized
    first, so they are cosines. Register an indexer class with a plugin's ``bertapprox_indexers``
    hook (see :mod:`bertapprox_hf.plugins.hookspecs`).
    """

    #: the name users choose it by (``bertapprox index --indexer NAME``)
    name: ClassVar[str] = ""

    dim: int
    similarity: str
    meta: dict

    # -- construction --
    @classmethod
    @abc.abstractmethod
    def create(cls, dim: int, similarity: str = "dot", **options: Any) -> Indexer:
        """An empty index for ``dim``-dimensional vectors; ``options`` are the indexer's own."""

    @abc.abstractmethod
    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Add documents: one id (string) per row of ``embeddings`` (``[n, dim]``)."""

    def finalize(self) -> None:  # noqa: B027 (optional hook)
        """Finish what :meth:`add` left pending (e.g. train on a buffered sample); called by build and save."""

    @classmethod
    def build(
        cls,
        corpus: Any,
        document_encoder: TextEncoder,
        *,
        batch_size: int = 256,
        show_progress_bar: bool = True,
        max_records: int | None = None,
        similarity: str | None = None,
        text_field: str = "text",
        title_field: str | None = "title",
        dedupe_ids: bool = False,
        **options: Any,
    ) -> Indexer:
        """Encode a corpus with ``document_encoder`` batch by batch and index it.

        Args:
            corpus: anything :func:`bertapprox_hf.pipeline.corpus.iter_records` reads.
            document_encoder: an object with ``encode(texts, batch_size) -> np.ndarray``.
            similarity: ``"cosine"`` or ``"dot"``; default: the encoder's own.
            dedupe_ids: keep the first document of each id; otherwise a repeated id raises ``ValueError`` naming
                the repeated ids (a document indexed twice would appear twice in a run).
            options: passed to :meth:`create` (e.g. the Faiss ``factory`` string).
        """
        duplicates = DuplicateIds("document")
        batches = encode_batches(
            corpus, document_encoder, batch_size, show_progress_bar, max_records, text_field, title_field,
            duplicates=duplicates,
        )  # fmt: skip
        return cls.from_embeddings(
            batches,
            encoder_dim(document_encoder),
            similarity or encoder_similarity(document_encoder),
            describe_encoder(document_encoder),
            _describe_corpus(corpus),
            duplicates=duplicates,
            dedupe_ids=dedupe_ids,
            **options,
        )

    @classmethod
    def from_embeddings(
        cls,
        batches: Iterable[tuple[Sequence[str], np.ndarray]],
        dim: int | None,
        similarity: str,
        document_encoder: dict,
        corpus: Any = None,
        *,
        duplicates: DuplicateIds | None = None,
        dedupe_ids: bool = False,
        seconds_key: str = "encode_seconds",
        build: dict | None = None,
        **options: Any,
    ) -> Indexer:
        """Index ``(ids, embeddings)`` batches in order: :meth:`build`'s second half, also for embeddings made
        elsewhere (a cluster's: :mod:`indexers.embeddings`). ``document_encoder`` is the encoder's description
        and ``corpus`` the corpus's (both kept in ``meta.json``).

        Args:
            duplicates: the tracker the batches were already filtered through (repeated ids left out, counted
                there); without one, repeated ids are counted and dropped here.
            dedupe_ids: keep the first document of each id; otherwise a repeated id raises ``ValueError``.
            seconds_key: the ``meta["build"]`` key of the time spent waiting for the batches.
            build: more ``meta["build"]`` entries.
        """
        filter_here = duplicates is None
        duplicates = duplicates if duplicates is not None else DuplicateIds("document")
        index: Indexer | None = None
        documents, wait_seconds, index_seconds = 0, 0.0, 0.0
        start = time.perf_counter()
        for ids, embeddings in batches:
            wait_seconds += time.perf_counter() - start
            start = time.perf_counter()
            if filter_here:
                ids, embeddings = _first_of_each_id(ids, embeddings, duplicates)
            if len(ids):
                if index is None:
                    dim = embeddings.shape[1] if dim is None else dim
                    index = cls.create(dim, similarity, **options)
                index.add(ids, embeddings)
                documents += len(ids)
            index_seconds += time.perf_counter() - start
            start = time.perf_counter()
        if not dedupe_ids:
            duplicates.check("the corpus", "--dedupe-ids (dedupe_ids=True)")
        if index is None:
            raise ValueError("the corpus holds no documents")
        start = time.perf_counter()
        index.finalize()
        index_seconds += time.perf_counter() - start
        index.meta["document_encoder"] = document_encoder
        index.meta["build"] = {
            "documents": documents,
            seconds_key: round(wait_seconds, 3),
            "index_seconds": round(index_seconds, 3),
            "corpus": corpus,
            "duplicate_ids_dropped": sum(duplicates.repeated.values()),
            **(build or {}),
        }
        return index

    # -- persistence --
    @abc.abstractmethod
    def save(self, path: str | os.PathLike) -> None:
        """Write the index, its document ids and ``meta.json`` into the folder ``path``."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | os.PathLike, **options: Any) -> Indexer:
        """Read an index that :meth:`save` wrote."""

    # -- search --
    @abc.abstractmethod
    def search_embeddings(self, embeddings: np.ndarray, k: int) -> SearchResults:
        """Nearest documents of float32 ``[n, dim]`` query vectors, already normalized if need be."""

    def __len__(self) -> int:
        return int(self.meta.get("documents", 0))

    def search(
        self,
        queries: Any,
        k: int = 10,
        query_encoder: TextEncoder | None = None,
        batch_size: int = 256,
        query_ids: Sequence[str] | None = None,
    ) -> SearchResults:
        """Top-``k`` documents of each query.

        ``queries`` is a list of texts (then ``query_encoder`` embeds them) or query embeddings
        (``[n, dim]`` or one vector). Raises TypeError for non-string items, ValueError for an
        empty list, :class:`DimensionMismatchError` when the embeddings' size is not the index's.
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if isinstance(queries, str) or (isinstance(queries, (list, tuple)) and not _is_numeric_rows(queries)):
            texts = check_texts(queries)
            if query_encoder is None:
                raise ValueError("text queries need a query_encoder (or pass query embeddings)")
            self._check_query_encoder(query_encoder)
            embeddings = np.asarray(query_encoder.encode(texts, batch_size=batch_size), dtype=np.float32)
        else:
            embeddings = queries
        matrix = as_matrix(embeddings, self.dim)
        if self.similarity == "cosine":
            matrix = l2_normalize(matrix)
        results = self.search_embeddings(matrix, k)
        if query_ids is not None:
            results.query_ids = _query_names(results, query_ids)
        return results

    def _check_query_encoder(self, encoder: Any) -> None:
        dim = encoder_dim(encoder)
        if dim is not None and dim != self.dim:
            raise DimensionMismatchError(
                f"the query encoder makes {dim}-dimensional embeddings but the index holds {self.dim}-dimensional "
                f"vectors (documents by {self.meta.get('document_encoder', {}).get('name_or_path') or 'another model'})"
            )

    # -- meta.json --
    def write_meta(self, path: str | os.PathLike) -> None:
        """Write ``meta.json`` (indexer name, dim, similarity, documents and :attr:`meta`) into the folder ``path``;
        ``bertapprox search`` reads the indexer name from it."""
        meta = {"indexer": self.name, "dim": self.dim, "similarity": self.similarity, **self.meta}
        meta["documents"] = len(self)
        write_json_atomic(os.path.join(path, META_NAME), meta)


def _is_numeric_rows(queries: Sequence) -> bool:
    """A list of vectors (numbers or arrays) rather than of texts."""
    if not queries:
        return False
    first = queries[0]
    return isinstance(first, np.ndarray) or (
        isinstance(first, (list, tuple)) and bool(first) and isinstance(first[0], (int, float, np.number))
    )


def read_meta(path: str | os.PathLike) -> dict:
    """An index folder's ``meta.json`` (``{}`` when it has none, e.g. a Pyserini prebuilt index)."""
    file = os.path.join(path, META_NAME)
    return read_json(file, "index record") if os.path.isfile(file) else {}


def _describe_corpus(corpus: Any) -> Any:
    if isinstance(corpus, (str, os.PathLike)):
        return os.fspath(corpus)
    if isinstance(corpus, (list, tuple)) and corpus and all(isinstance(c, (str, os.PathLike)) for c in corpus):
        if all(os.path.exists(os.fspath(c)) for c in corpus):
            return [os.fspath(c) for c in corpus]
        return f"{len(corpus)} texts"
    return type(corpus).__name__
