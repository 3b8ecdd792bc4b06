"""Ranking candidates mined by the teacher: each query-like training text's top-k documents by its embedding.

Training for ranking needs, for each query, the documents the teacher ranks first and their teacher scores.
Both come from precomputed targets (``bertapprox targets build``): no teacher pass is needed here, only a
search (Faiss, exact inner product) of the query embeddings over the document embeddings.

On-disk format (one folder, a `datasets` dataset in parquet shards)::

    manifest.json          {"format_version": 1, "teacher": ..., "k": K, "val_fraction": f, "selection": {...},
                            "sources": {...}, "shard_size": N, "num_documents": D, "num_shards": S (when done)}
    documents.parquet      the document pool: id, text, embedding (the teacher's, float16)
    queries_00000.parquet  queries 0 .. N-1: id, text, embedding, candidates (k int32 rows of the pool,
                           best first), scores (k float32 teacher similarities)

* Queries are the records of at most ``query_max_words`` words; documents are the *training* records (not
  held out by ``val_fraction``, never crops) of at least ``doc_min_words`` words. Held-out queries are mined
  too: training uses only the others, validation ranks the held-out ones (``training/ranking.py``).
* Resumable and data-parallel like ``targets build``: shard ``s`` is searched by process ``s % n``; a shard
  that reads back whole with the ids of its queries is kept on a rerun. ``documents.parquet`` and the manifest
  are written by process 0; :func:`finalize_candidates` completes the manifest once every shard is there.
* Every targets folder read must come from one teacher, and an existing folder from another teacher or with
  other settings is refused: candidates of two teachers are never mixed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from .crops import is_crop
from .jsonio import read_json, write_json_atomic
from .targets import check_teacher_compatible, load_targets, read_manifest, targets_columns

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCUMENTS = "documents.parquet"


@dataclass(frozen=True)
class MiningConfig:
    """Which records are queries and documents, and how many candidates each query keeps."""

    k: int = 32  # candidates kept per query, best first
    query_max_words: int = 12  # a record of at most this many words is a query
    doc_min_words: int = 20  # a training record of at least this many words is a document
    val_fraction: float = 0.03  # the training split's held-out share (must equal the training's data.val_fraction)
    shard_size: int = 4096  # queries a shard

    def check(self) -> None:
        if self.k < 2:
            raise ValueError(f"k must be at least 2, got {self.k}")
        if self.query_max_words < 1 or self.doc_min_words < 1:
            raise ValueError("query_max_words and doc_min_words must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {self.shard_size}")


@dataclass
class Candidates:
    """A loaded candidates folder: the document pool and every query with its top-k."""

    manifest: dict
    doc_ids: list[str]
    doc_texts: list[str]
    doc_embeddings: np.ndarray  # float16 [documents, dim]
    query_ids: list[str]
    query_texts: list[str]
    query_embeddings: np.ndarray  # float16 [queries, dim]
    candidates: np.ndarray  # int32 [queries, k], rows of the pool, best first
    scores: np.ndarray  # float32 [queries, k]


def teacher_similarity(teacher: dict) -> str:
    """The similarity a teacher record scores with: its own, else cosine for a normalizing teacher, else dot."""
    return teacher.get("similarity") or ("cosine" if teacher.get("normalize") else "dot")


def shard_path(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, f"queries_{index:05d}.parquet")


def _word_count(text: str) -> int:
    return len(text.split())


def _teacher_of(folders: Sequence[str]) -> dict:
    """The teacher every targets folder names (the first one's record); refuses a mix of teachers."""
    teachers = [(folder, read_manifest(folder)["teacher"]) for folder in folders]
    first_folder, first = teachers[0]
    for folder, teacher in teachers[1:]:
        check_teacher_compatible(teacher, first, f"teacher targets in {folder} (against {first_folder})")
    return first


def _unique_rows(texts: list[str], rows: np.ndarray) -> np.ndarray:
    """``rows`` without repeated texts (the first occurrence kept)."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        if texts[row] not in seen:
            seen.add(texts[row])
            kept.append(row)
    return np.asarray(kept, dtype=np.int64)


def select_records(ids: list[str], texts: list[str], config: MiningConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(query rows, document rows)`` of one targets table, as :mod:`this module <bertapprox_hf.pipeline.candidates>`
    defines them."""
    from ..training.data import is_training

    words = np.array([_word_count(text) for text in texts], dtype=np.int64)
    crops = np.array([is_crop(record_id) for record_id in ids], dtype=bool)
    training = np.array([is_training(record_id, config.val_fraction) for record_id in ids], dtype=bool)
    queries = np.flatnonzero(~crops & (words >= 1) & (words <= config.query_max_words))
    documents = np.flatnonzero(~crops & training & (words >= config.doc_min_words))
    return _unique_rows(texts, queries), _unique_rows(texts, documents)


def _scoring(embeddings: np.ndarray, similarity: str) -> np.ndarray:
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if similarity == "cosine":
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def _features():
    from datasets import Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "embedding": Sequence(Value("float16")),
            "candidates": Sequence(Value("int32")),
            "scores": Sequence(Value("float32")),
        }
    )


def _write_parquet(path: str, data: dict, features=None) -> None:
    from datasets import Dataset

    from .targets import _quiet_datasets

    tmp = path + ".tmp"
    with _quiet_datasets():
        Dataset.from_dict(data, features=features).to_parquet(tmp)
    os.replace(tmp, path)


def _shard_is_complete(path: str, ids: list[str], k: int) -> bool:
    if not os.path.isfile(path):
        return False
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["id", "candidates", "scores"])
    except Exception:  # truncated or unreadable: search it again
        return False
    if table.column("id").to_pylist() != ids:
        return False
    lengths = pc.list_value_length(table.column("candidates"))
    return bool(pc.all(pc.equal(lengths, k)).as_py()) if len(ids) else True


def _expected_manifest(teacher: dict, config: MiningConfig, query_targets, document_targets) -> dict:
    describe = {
        folder: {key: read_manifest(folder).get(key) for key in ("corpus", "num_records")}
        for folder in dict.fromkeys([*query_targets, *document_targets])
    }
    settings = asdict(config)
    return {
        "format_version": FORMAT_VERSION,
        "teacher": teacher,
        "k": settings.pop("k"),
        "val_fraction": settings.pop("val_fraction"),
        "shard_size": settings.pop("shard_size"),
        "selection": settings,
        "sources": {"queries": list(query_targets), "documents": list(document_targets), "targets": describe},
    }


def _check_existing(out_dir: str, expected: dict) -> None:
    """Refuse to extend a folder made from another teacher, other targets or other settings."""
    existing = read_json(os.path.join(out_dir, MANIFEST), f"{MANIFEST} of a candidates folder")
    check_teacher_compatible(existing.get("teacher", {}), expected["teacher"], f"the candidates in {out_dir}")
    for key in ("k", "val_fraction", "shard_size", "selection", "sources"):
        if existing.get(key) != expected.get(key):
            raise ValueError(
                f"{out_dir} holds candidates mined with another {key} ({existing.get(key)!r}, now "
                f"{expected.get(key)!r}); use another output folder"
            )


def build_candidates(
    query_targets: Sequence[str],
    document_targets: Sequence[str],
    out_dir: str,
    config: MiningConfig = MiningConfig(),
    process_index: int = 0,
    num_processes: int = 1,
    show_progress_bar: bool = True,
) -> dict:
    """Mine each query's top-k documents into ``out_dir``; returns the manifest (complete with one process).

    With several processes, call :func:`finalize_candidates` on one of them once all have finished.
    """
    import faiss

    config.check()
    query_targets, document_targets = list(query_targets), list(document_targets)
    if not query_targets or not document_targets:
        raise ValueError("candidates need at least one targets folder of queries and one of documents")
    teacher = _teacher_of([*query_targets, *document_targets])
    expected = _expected_manifest(teacher, config, query_targets, document_targets)
    if os.path.isfile(os.path.join(out_dir, MANIFEST)):
        _check_existing(out_dir, expected)
    os.makedirs(out_dir, exist_ok=True)

    doc_ids, doc_texts, doc_embeddings = targets_columns(load_targets(document_targets))
    query_ids, query_texts, query_embeddings = targets_columns(load_targets(query_targets))
    query_rows, _ = select_records(query_ids, query_texts, config)
    _, doc_rows = select_records(doc_ids, doc_texts, config)
    if len(doc_rows) < config.k:
        raise ValueError(f"{len(doc_rows)} documents of {config.doc_min_words}+ words, fewer than k={config.k}")
    if len(query_rows) == 0:
        raise ValueError(f"no query of at most {config.query_max_words} words in {query_targets}")
    similarity = teacher_similarity(teacher)
    index = faiss.IndexFlatIP(doc_embeddings.shape[1])
    index.add(_scoring(doc_embeddings[doc_rows], similarity))

    num_shards = -(-len(query_rows) // config.shard_size)
    manifest = {**expected, "num_documents": int(len(doc_rows)), "expected_num_shards": num_shards}
    if process_index == 0:
        if not os.path.isfile(os.path.join(out_dir, DOCUMENTS)):
            _write_parquet(
                os.path.join(out_dir, DOCUMENTS),
                {
                    "id": [doc_ids[r] for r in doc_rows],
                    "text": [doc_texts[r] for r in doc_rows],
                    "embedding": doc_embeddings[doc_rows],
                },
            )
        write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)
    mine = [s for s in range(num_shards) if s % num_processes == process_index]
    for shard in tqdm(mine, desc="Mining candidates", unit=" shards", disable=not show_progress_bar):
        rows = query_rows[shard * config.shard_size : (shard + 1) * config.shard_size]
        ids = [query_ids[r] for r in rows]
        path = shard_path(out_dir, shard)
        if _shard_is_complete(path, ids, config.k):
            continue
        scores, found = index.search(_scoring(query_embeddings[rows], similarity), config.k)
        data = {
            "id": ids,
            "text": [query_texts[r] for r in rows],
            "embedding": query_embeddings[rows],
            "candidates": found.astype(np.int32),
            "scores": scores.astype(np.float32),
        }
        _write_parquet(path, data, _features())
    if num_processes == 1:
        return finalize_candidates(out_dir)
    return manifest


def finalize_candidates(out_dir: str) -> dict:
    """Check every shard is there and complete the manifest with the counts; returns it."""
    import pyarrow.parquet as pq

    manifest = read_json(os.path.join(out_dir, MANIFEST), f"{MANIFEST} of a candidates folder")
    expected = manifest.get("expected_num_shards", manifest.get("num_shards"))
    missing = [s for s in range(expected or 0) if not os.path.isfile(shard_path(out_dir, s))]
    if expected is None or missing or not os.path.isfile(os.path.join(out_dir, DOCUMENTS)):
        raise ValueError(f"{out_dir}: the mining did not finish (missing shards {missing[:10]}); run it again")
    manifest.pop("expected_num_shards", None)
    counts = [pq.read_metadata(shard_path(out_dir, s)).num_rows for s in range(expected)]
    manifest.update(num_shards=expected, num_queries=int(sum(counts)))
    write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)
    return manifest


def load_candidates(out_dir: str) -> Candidates:
    """A finished candidates folder in memory; an unfinished or damaged one raises ``ValueError``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_json(os.path.join(out_dir, MANIFEST), f"{MANIFEST} of a candidates folder")
    if manifest.get("format_version") != FORMAT_VERSION or "num_queries" not in manifest:
        raise ValueError(f"{out_dir}: the mining did not finish (run `bertapprox candidates build` again)")
    documents = pq.read_table(os.path.join(out_dir, DOCUMENTS))
    queries = pa.concat_tables([pq.read_table(shard_path(out_dir, s)) for s in range(manifest["num_shards"])])
    k = manifest["k"]

    def matrix(table, name: str, dtype) -> np.ndarray:
        values = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return values.astype(dtype, copy=False).reshape(table.num_rows, -1)

    result = Candidates(
        manifest=manifest,
        doc_ids=documents.column("id").to_pylist(),
        doc_texts=documents.column("text").to_pylist(),
        doc_embeddings=matrix(documents, "embedding", np.float16),
        query_ids=queries.column("id").to_pylist(),
        query_texts=queries.column("text").to_pylist(),
        query_embeddings=matrix(queries, "embedding", np.float16),
        candidates=matrix(queries, "candidates", np.int32),
        scores=matrix(queries, "scores", np.float32),
    )
    if result.candidates.shape != (manifest["num_queries"], k) or len(result.doc_ids) != manifest["num_documents"]:
        raise ValueError(f"{out_dir}: shards do not hold what {MANIFEST} says; run the mining again")
    if result.candidates.size and (result.candidates.min() < 0 or result.candidates.max() >= len(result.doc_ids)):
        raise ValueError(f"{out_dir}: candidate rows outside the document pool; run the mining again")
    return result
