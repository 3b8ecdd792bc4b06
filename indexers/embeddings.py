"""A corpus's embeddings as Parquet shards, made anywhere (a Ray or Spark cluster), and what is built from them.

A folder of embeddings holds ``*.parquet`` shards, each row one document, and ``embeddings.json`` (the manifest,
written last: a folder without it is incomplete)::

    split      int64                 the corpus partition the document came from (partitions are numbered in corpus
                                     order: by file, then by byte range)
    offset     int64                 the byte offset of the document's line in its file (its order in the partition)
    id         string                the document id
    embedding  fixed_size_list<float32>[dim]   the document encoder's output, as ``encode()`` returns it
                                     (a plain ``list<float>`` column, Spark's ``array<float>``, reads too)

Any engine that writes these columns (and the manifest: :func:`write_manifest`) feeds the builders here, which
need only pyarrow and Faiss:

* :func:`build_index`: a ``bertapprox index`` folder (any indexer: ``faiss``, ``pyserini``), the documents in
  corpus order, identical to what ``bertapprox index`` makes from the same corpus and encoder;
* :func:`build_sharded_index`: a ``faiss-shards`` folder (:mod:`indexers.faiss_shards`): contiguous runs of
  partitions, one Faiss index each, that share one trained quantizer; searched as one index;
* :func:`write_pyserini_vectors`: Pyserini's JSON vector collection (``{"id", "contents", "vector"}`` lines), what
  ``python -m pyserini.index.faiss --input`` turns into a Pyserini index.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bertapprox_hf.pipeline.jsonio import read_json, write_json_atomic

from .base import Indexer
from .ids import DuplicateIds

MANIFEST_NAME = "embeddings.json"
FORMAT = "bertapprox-embeddings"
COLUMNS = ("split", "offset", "id", "embedding")
DEFAULT_CHUNK_ROWS = 65536  # documents read and indexed at a time


def import_pyarrow():
    """``pyarrow`` and ``pyarrow.parquet``, or an ImportError saying how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise ImportError("embeddings folders need pyarrow: pip install 'bertapprox-hf[ray]' (or pyarrow)") from error
    return pyarrow, pyarrow.parquet


def embeddings_schema(dim: int):
    """The Arrow schema of a shard of ``dim``-dimensional embeddings."""
    pa, _ = import_pyarrow()
    return pa.schema([("split", pa.int64()), ("offset", pa.int64()), ("id", pa.string()),
                      ("embedding", pa.list_(pa.float32(), dim))])  # fmt: skip


def embeddings_table(split: int, offsets: Sequence[int], ids: Sequence[str], matrix: np.ndarray):
    """One partition's ``(split, offset, id, embedding)`` rows as an Arrow table (float32 vectors)."""
    pa, _ = import_pyarrow()
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    columns = [pa.array([split] * len(ids), pa.int64()), pa.array(offsets, pa.int64()), pa.array(ids, pa.string()),
               vectors]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=embeddings_schema(matrix.shape[1]))


# --- the manifest -------------------------------------------------------------------------------
def write_manifest(path: str | os.PathLike, manifest: dict) -> None:
    """Write ``embeddings.json`` into the folder ``path`` (call it once every shard is written)."""
    for key in ("dim", "similarity", "document_encoder", "splits"):
        if key not in manifest:
            raise ValueError(f"an embeddings manifest needs {key!r}")
    write_json_atomic(os.path.join(os.fspath(path), MANIFEST_NAME), {"format": FORMAT, "version": 1, **manifest})


def read_manifest(path: str | os.PathLike) -> dict:
    """The ``embeddings.json`` of a finished embeddings folder."""
    path = os.fspath(path)
    file = os.path.join(path, MANIFEST_NAME)
    if not os.path.isfile(file):
        raise FileNotFoundError(
            f"not a finished embeddings folder ({MANIFEST_NAME} missing): {path} (the encoding did not finish?)"
        )
    manifest = read_json(file, "embeddings manifest")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{file}: not a {FORMAT} manifest")
    return manifest


def shard_files(path: str | os.PathLike) -> list[str]:
    """The folder's Parquet shards, sorted by name."""
    files = sorted(glob.glob(os.path.join(os.fspath(path), "**", "*.parquet"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no *.parquet shards in {path}")
    return files


# --- reading, in corpus order -------------------------------------------------------------------
def as_matrix_column(column: Any, dim: int) -> np.ndarray:
    """An Arrow column of vectors (fixed-size or plain lists of floats, Ray's tensor type) as float32 ``[n, dim]``."""
    pa, _ = import_pyarrow()
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column, pa.ExtensionArray):  # Ray's tensor extension: its storage is a list array
        column = column.storage
    if column.null_count:
        raise ValueError("an embedding is missing (null)")
    values = pc.list_flatten(column) if isinstance(column, (pa.ListArray, pa.LargeListArray)) else column.flatten()
    matrix = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if matrix.size != len(column) * dim:
        raise ValueError(f"embeddings of {matrix.size / max(len(column), 1):g} values where {dim} were expected")
    return matrix.reshape(len(column), dim)


def split_counts(path: str | os.PathLike) -> dict[int, dict[str, int]]:
    """``{split: {file: documents}}``: where each partition's documents lie (reads only the ``split`` column)."""
    _, pq = import_pyarrow()
    where: dict[int, dict[str, int]] = {}
    for file in shard_files(path):
        splits = pq.read_table(file, columns=["split"]).column("split").to_numpy()
        numbers, counts = np.unique(splits, return_counts=True)
        for number, count in zip(numbers.tolist(), counts.tolist(), strict=True):
            where.setdefault(int(number), {})[file] = int(count)
    return where


def iter_embeddings(
    path: str | os.PathLike,
    splits: Sequence[int] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    where: dict[int, dict[str, int]] | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(ids, embeddings)`` chunks of a folder's documents in corpus order (by partition, then offset): the order
    ``bertapprox index`` reads the corpus in. ``splits``: only these partitions (in increasing order)."""
    _, pq = import_pyarrow()
    dim = int(read_manifest(path)["dim"])
    where = where if where is not None else split_counts(path)
    numbers = sorted(where) if splits is None else list(splits)
    chunk: list[int] = []
    rows = 0
    for position, number in enumerate(numbers):
        chunk.append(number)
        rows += sum(where.get(number, {}).values())
        if rows >= chunk_rows or position == len(numbers) - 1:
            yield _read_splits(pq, where, chunk, dim)
            chunk, rows = [], 0


def _read_splits(pq, where: dict[int, dict[str, int]], numbers: list[int], dim: int) -> tuple[list[str], np.ndarray]:
    import pyarrow as pa

    wanted = set(numbers)
    files = sorted({file for number in numbers for file in where.get(number, {})})
    first, last = min(numbers), max(numbers)
    tables = []
    for file in files:
        table = pq.read_table(file, columns=list(COLUMNS), filters=[("split", ">=", first), ("split", "<=", last)])
        tables.append(table.select(list(COLUMNS)))
    if not tables:
        return [], np.zeros((0, dim), np.float32)
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.sort_by([("split", "ascending"), ("offset", "ascending")])
    if len(wanted) < last - first + 1:  # a gap in the range: other partitions' rows were read too
        import pyarrow.compute as pc

        table = table.filter(pc.is_in(table.column("split"), pa.array(sorted(wanted), pa.int64())))
    return table.column("id").to_pylist(), as_matrix_column(table.column("embedding"), dim)


# --- building -----------------------------------------------------------------------------------
def build_index(
    path: str | os.PathLike,
    indexer: type[Indexer] | None = None,
    *,
    dedupe_ids: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    **options: Any,
) -> Indexer:
    """One index (``indexer``: default Faiss) of every document of an embeddings folder, in corpus order, with the
    ``meta.json`` records ``bertapprox index`` writes (document and query encoders, corpus); ``options`` go to the
    indexer's ``create`` (``factory``, ``train_size``, ...). Save it with ``.save(folder)``."""
    if indexer is None:
        from .faiss_indexer import FaissIndexer

        indexer = FaissIndexer
    manifest = read_manifest(path)
    index = indexer.from_embeddings(
        iter_embeddings(path, chunk_rows=chunk_rows),
        int(manifest["dim"]),
        manifest["similarity"],
        manifest["document_encoder"],
        manifest.get("corpus"),
        dedupe_ids=dedupe_ids,
        seconds_key="read_seconds",
        build=_cluster_record(path, manifest),
        **options,
    )
    if manifest.get("query_encoder"):
        index.meta["query_encoder"] = manifest["query_encoder"]
    return index


def _cluster_record(path: str | os.PathLike, manifest: dict) -> dict:
    return {"embeddings": os.path.abspath(os.fspath(path)), "encode_seconds": manifest.get("seconds"),
            "cluster": manifest.get("cluster", {})}  # fmt: skip


def shard_ranges(where: dict[int, dict[str, int]], shards: int) -> list[list[int]]:
    """The partitions of each of ``shards`` shards: contiguous runs in corpus order, about equal in documents."""
    if shards < 1:
        raise ValueError(f"shards must be ≥ 1, got {shards}")
    numbers = sorted(where)
    if shards > len(numbers):
        raise ValueError(
            f"{shards} shards but the embeddings have {len(numbers)} partitions: encode with smaller partitions "
            "(--split-mb) or ask for fewer shards"
        )
    counts = np.array([sum(where[number].values()) for number in numbers])
    ends = np.cumsum(counts)
    starts = np.concatenate([[0], ends])  # starts[i]: documents before partition i
    cuts = [int(np.abs(starts - ends[-1] * k / shards).argmin()) for k in range(1, shards)]  # the nearest boundary
    bounds = [0]
    for cut in cuts:  # at least one partition a shard
        bounds.append(min(max(cut, bounds[-1] + 1), len(numbers) - (shards - len(bounds))))
    bounds.append(len(numbers))
    return [numbers[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def build_sharded_index(
    path: str | os.PathLike,
    out: str | os.PathLike,
    shards: int,
    *,
    factory: str = "Flat",
    train_size: int | None = None,
    dedupe_ids: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict:
    """A ``faiss-shards`` folder from an embeddings folder: ``shards`` Faiss indexes (``shard-00000/``, ...), each
    a ``bertapprox index`` folder of a contiguous run of the corpus, plus ``meta.json``. Indexes that need
    training (IVF, PQ) are trained once, on the first ``train_size`` documents, and every shard starts from that
    trained empty index, so the shards share their quantizer (``faiss.merge_from`` can join them, and an
    IVF search visits the same lists as on one index). Returns the folder's ``meta.json``.

    Each shard reads only its own partitions: on a cluster, :func:`build_shard` runs per shard, anywhere.
    """
    from .faiss_indexer import DEFAULT_TRAIN_SIZE, FaissIndexer
    from .faiss_shards import ShardedFaissIndexer, shard_folder

    manifest = read_manifest(path)
    where = split_counts(path)
    ranges = shard_ranges(where, shards)
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    sample_size = train_size or DEFAULT_TRAIN_SIZE
    trained = FaissIndexer.create(int(manifest["dim"]), manifest["similarity"], factory, sample_size, device="cpu")
    if not trained.index.is_trained:  # trained as one index would be: on the first documents, in corpus order
        seen = DuplicateIds("document")
        for ids, matrix in iter_embeddings(path, chunk_rows=min(chunk_rows, sample_size), where=where):
            keep = [row for row, doc_id in enumerate(ids) if seen.is_new(doc_id)]
            if keep:  # trained once sample_size rows are buffered
                trained.add([ids[row] for row in keep], matrix[keep])
            if trained.index.is_trained:
                break
        trained.finalize()  # a corpus smaller than the sample: trains on all of it
        trained.index.reset()  # keep what training made (quantizer, codebooks), drop the vectors
        trained.ids = []
    duplicates = DuplicateIds("document")
    sizes = []
    for number, partitions in enumerate(ranges):
        shard = build_shard(path, partitions, trained, duplicates, chunk_rows, where)
        shard.meta["document_encoder"] = manifest["document_encoder"]
        shard.save(shard_folder(out, number))
        sizes.append(len(shard))
    if not dedupe_ids:
        duplicates.check("the embeddings", "--dedupe-ids (dedupe_ids=True)")
    meta = {
        "indexer": ShardedFaissIndexer.name,
        "dim": int(manifest["dim"]),
        "similarity": manifest["similarity"],
        "factory": factory,
        "shards": sizes,
        "documents": int(sum(sizes)),
        "document_encoder": manifest["document_encoder"],
        "build": {
            "documents": int(sum(sizes)),
            "index_seconds": round(time.perf_counter() - start, 3),
            "corpus": manifest.get("corpus"),
            "duplicate_ids_dropped": sum(duplicates.repeated.values()),
            **_cluster_record(path, manifest),
        },
    }
    if trained.meta.get("trained_on"):
        meta["trained_on"] = trained.meta["trained_on"]
    if manifest.get("query_encoder"):
        meta["query_encoder"] = manifest["query_encoder"]
    write_json_atomic(os.path.join(out, "meta.json"), meta)
    return meta


def build_shard(
    path: str | os.PathLike,
    partitions: Sequence[int],
    empty: Any,
    duplicates: DuplicateIds | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    where: dict[int, dict[str, int]] | None = None,
) -> Any:
    """A :class:`~indexers.faiss_indexer.FaissIndexer` of the documents of ``partitions``, starting from a copy of
    the (trained, empty) index ``empty``; ids already seen by ``duplicates`` are left out."""
    from .faiss_indexer import FaissIndexer

    faiss = empty.faiss
    shard = FaissIndexer(faiss.clone_index(empty.index), [], empty.similarity, empty.factory, dict(empty.meta),
                         device="cpu", nprobe=empty.nprobe, ef_search=empty.ef_search)  # fmt: skip
    duplicates = duplicates if duplicates is not None else DuplicateIds("document")
    for ids, matrix in iter_embeddings(path, partitions, chunk_rows, where):
        keep = [row for row, doc_id in enumerate(ids) if duplicates.is_new(doc_id)]
        if keep:
            shard.add([ids[row] for row in keep], matrix[keep])
    shard.finalize()
    return shard


def write_pyserini_vectors(path: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Pyserini's JSON vector collection of an embeddings folder: one ``{"id", "contents", "vector"}`` line per
    document (``contents`` empty), a file per chunk, in corpus order; vectors as an index holds them
    (L2-normalized when the similarity is cosine). ``python -m pyserini.index.faiss --input OUT --output INDEX
    --dim D`` makes a Pyserini index of them. Returns the files written."""
    from .base import l2_normalize

    cosine = read_manifest(path)["similarity"] == "cosine"
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    files = []
    for number, (ids, matrix) in enumerate(iter_embeddings(path)):
        file = os.path.join(out, f"embeddings-{number:05d}.jsonl")
        rows = (l2_normalize(matrix) if cosine else matrix).tolist()
        with open(file, "w", encoding="utf-8") as handle:
            for doc_id, vector in zip(ids, rows, strict=True):
                handle.write(json.dumps({"id": doc_id, "contents": "", "vector": vector}) + "\n")
        files.append(file)
    return files
