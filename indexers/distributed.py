"""Encode a corpus on a Ray cluster: a map over partitions of its jsonl files, one encoder per worker.

    encode_corpus(["corpus.jsonl"], "student/", "embeddings/")                       # a local Ray cluster
    encode_corpus(["/shared/corpus/"], "student/", "/shared/emb/", teacher="teacher/", address="auto")
    build_index("embeddings/").save("index/")        # indexers.embeddings: the ``bertapprox index`` folder

The corpus files are cut into partitions of about ``split_mb`` MB at line boundaries (a partition owns the lines
that start in its byte range). Ray Data maps an actor pool over them: each actor loads the document encoder once
(:func:`indexers.encoders.load_encoder`, the loader of ``bertapprox index``), reads its partitions with the
project's record rules (:func:`bertapprox_hf.pipeline.corpus.row_record`: title before text, ids) and encodes
them with the encoder's own ``encode()``, ``batch_size`` documents at a time, and writes each partition's
``(split, offset, id, embedding)`` rows to a Parquet shard of its own (:mod:`indexers.embeddings`); the driver
writes ``embeddings.json`` when every partition has reported back. No embedding passes through the driver or
Ray's object store, and nothing is sorted: the builders read the documents in ``(split, offset)`` order, the
corpus's own.

Every worker must read the corpus files and the model folders at the paths given (a shared filesystem, or a Hub
id for the teacher), and write ``out``; the package must be importable there (installed on every node, or
shipped with ``ray job submit --working-dir .``). ``pip install 'bertapprox-hf[ray]'``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bertapprox_hf.errors import USER_ERRORS, UserError, describe_error
from bertapprox_hf.pipeline.corpus import Record, RecordTally, expand_paths, row_record

from .base import _describe_corpus, describe_encoder
from .embeddings import MANIFEST_NAME, embeddings_schema, embeddings_table, write_manifest

DEFAULT_SPLIT_MB = 32.0
SPLITS_PER_WORKER = 4  # partitions per worker at least, so that a slow one does not hold up the end


def import_ray():
    """``ray`` with Ray Data, or an ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError("encoding on a cluster needs Ray Data: pip install 'bertapprox-hf[ray]'") from error
    return ray


# --- partitions ---------------------------------------------------------------------------------
def plan_splits(corpus: Any, split_bytes: int, min_splits: int = 1) -> list[dict]:
    """Partitions of the corpus files: ``{"split", "path", "start", "end"}`` byte ranges of at most ``split_bytes``
    (smaller when that gives fewer than ``min_splits``), numbered in corpus order (file, then start)."""
    paths = [os.path.abspath(path) for path in expand_paths(corpus)]
    sizes = [os.path.getsize(path) for path in paths]
    size = max(1, min(int(split_bytes), math.ceil(sum(sizes) / max(min_splits, 1))))
    splits = []
    for path, file_size in zip(paths, sizes, strict=True):
        for start in range(0, file_size, size):
            splits.append({"split": len(splits), "path": path, "start": start, "end": min(start + size, file_size)})
    if not splits:
        raise ValueError(f"the corpus files are empty: {', '.join(paths)}")
    return splits


def read_split(
    path: str, start: int, end: int, text_field: str = "text", title_field: str | None = "title"
) -> Iterator[tuple[int, Record]]:
    """``(byte offset, record)`` of the jsonl lines that start in ``[start, end)`` of ``path``, read as
    :func:`~bertapprox_hf.pipeline.corpus.read_jsonl` reads them (every record must carry its id)."""
    tally = RecordTally(f"{path} (bytes {start}-{end})", "byte")
    with open(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            handle.readline()  # the rest of a line that began before start (nothing if start begins a line)
        offset = handle.tell()
        while offset < end:
            line = handle.readline()
            if not line:
                break
            where = f"{path} (line at byte {offset})"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not valid UTF-8 ({error.reason}); save the file as UTF-8") from error
            if text.strip():
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where}: not valid JSON ({error.msg})") from error
                if not isinstance(row, dict):
                    raise ValueError(f"{where}: expected a JSON object")
                record = row_record(row, where, None, text_field, title_field, None, tally, offset)
                if record is not None:
                    yield offset, record
            offset += len(line)
    tally.report()


# --- the map --------------------------------------------------------------------------------------
def partition_file(split: int) -> str:
    """The name of partition ``split``'s shard in the embeddings folder."""
    return f"part-{split:06d}.parquet"


class EncodePartitions:
    """The map's callable class: one per Ray actor, the encoder loaded once. Each call encodes whole partitions,
    writes each to its own shard (``part-NNNNNN.parquet``, renamed into place when complete: a retried
    partition is written again whole) and returns ``{"split", "documents", "seconds", "error"}`` (the error: bad
    input, as one line, else empty)."""

    def __init__(
        self,
        model: str,
        out: str,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 256,
        text_field: str = "text",
        title_field: str | None = "title",
        threads: int | None = None,
    ) -> None:
        from .encoders import load_encoder

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.encoder = load_encoder(model, device=device, dtype=dtype, cache_size=0)
        self.out, self.batch_size, self.text_field, self.title_field = out, batch_size, text_field, title_field

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        splits = [int(split) for split in batch["split"]]
        counts, seconds, errors = [], [], []
        for split, path, start, end in zip(splits, batch["path"], batch["start"], batch["end"], strict=True):
            began = time.perf_counter()
            try:
                counts.append(self.encode_partition(split, str(path), int(start), int(end)))
                errors.append("")
            except USER_ERRORS as error:  # bad input: reported to the driver as such (Ray would wrap it)
                counts.append(-1)
                errors.append(describe_error(error))
            seconds.append(time.perf_counter() - began)
        return {"split": np.array(splits, np.int64), "documents": np.array(counts, np.int64),
                "seconds": np.array(seconds), "error": np.array(errors, dtype=object)}  # fmt: skip

    def encode_partition(self, split: int, path: str, start: int, end: int) -> int:
        """Encode one partition into its shard; the number of documents."""
        import pyarrow.parquet as pq

        final = os.path.join(self.out, partition_file(split))
        partial = f"{final}.{os.getpid()}.partial"
        documents = 0
        try:
            with pq.ParquetWriter(partial, embeddings_schema(int(self.encoder.dim))) as writer:
                for table in self._tables(split, path, start, end):
                    writer.write_table(table)
                    documents += table.num_rows
            os.replace(partial, final)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        return documents

    def _tables(self, split: int, path: str, start: int, end: int) -> Iterator[Any]:
        offsets: list[int] = []
        ids: list[str] = []
        texts: list[str] = []
        records = read_split(path, start, end, self.text_field, self.title_field)
        for number, (offset, record) in enumerate(records, start=1):
            offsets.append(offset)
            ids.append(record["id"])
            texts.append(record["text"])
            if number % self.batch_size == 0:
                yield self._encode(split, offsets, ids, texts)
                offsets, ids, texts = [], [], []
        if texts:
            yield self._encode(split, offsets, ids, texts)

    def _encode(self, split: int, offsets: list[int], ids: list[str], texts: list[str]):
        return embeddings_table(split, offsets, ids, self.encoder.encode(texts, batch_size=self.batch_size))


def encode_corpus(
    corpus: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    teacher: str | os.PathLike | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_size: int = 256,
    split_mb: float = DEFAULT_SPLIT_MB,
    device: str | None = None,
    dtype: str = "float32",
    text_field: str = "text",
    title_field: str | None = "title",
    runtime_env: dict | None = None,
    overwrite: bool = False,
    show_progress_bar: bool = True,
) -> dict:
    """Encode every document of ``corpus`` (jsonl files or folders) on a Ray cluster into the embeddings folder
    ``out``; returns its manifest. The documents are encoded by ``teacher`` when given (an asymmetric index),
    else by the student ``model``; the model is the index's query encoder either way.

    Args:
        address: the cluster (``"auto"``: the one ``ray start`` runs here; ``"ray://head:10001"``; default: the
            ``RAY_ADDRESS`` one, else a new local cluster of ``num_cpus`` CPUs). An initialised Ray is used as is.
        workers: encoder actors (default: the cluster's CPUs / ``cpus_per_worker``, or its GPUs / ``gpus_per_worker``).
        cpus_per_worker, gpus_per_worker: what each actor reserves (its torch threads follow its CPUs).
        split_mb: partition size; smaller ones when the corpus would give fewer than 4 per worker.
        device, dtype: the encoder's device (default: cuda where the worker has one) and the student's precision.
        runtime_env: Ray's runtime environment for the job (``{"working_dir": ".", "pip": [...]}``).
    """
    from .encoders import load_index_encoders

    start_time = time.perf_counter()
    expand_paths(corpus)  # fail on a missing corpus before starting anything
    out = os.fspath(out)
    _prepare_out(out, overwrite)
    # loaded here too, as bertapprox index does: the size check and the records the index keeps
    queries, documents = load_index_encoders(model, teacher, "cpu", dtype)
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus, runtime_env=runtime_env, log_to_driver=show_progress_bar)
        started = True
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = show_progress_bar
        resources = ray.cluster_resources()
        if workers is None:
            if gpus_per_worker:
                workers = int(resources.get("GPU", 0) // gpus_per_worker)
            else:
                workers = int(resources.get("CPU", 1) // max(cpus_per_worker, 1e-9))
        workers = max(1, int(workers))
        splits = plan_splits(corpus, int(split_mb * 2**20), SPLITS_PER_WORKER * workers)
        dataset = ray.data.from_items(splits, override_num_blocks=len(splits))
        encoded = dataset.map_batches(
            EncodePartitions,
            batch_size=1,
            fn_constructor_kwargs={"model": _worker_path(teacher or model), "out": os.path.abspath(out),
                                   "device": device, "dtype": dtype, "batch_size": batch_size,
                                   "text_field": text_field, "title_field": title_field,
                                   "threads": max(1, int(cpus_per_worker))},
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
        )  # fmt: skip
        counts = []
        for row in encoded.iter_rows():  # one row per partition, once its shard is written
            if row["error"]:
                raise UserError(row["error"])  # stops the job
            counts.append(row)
        cluster = {"engine": "ray", "ray_version": ray.__version__, "workers": workers,
                   "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker,
                   "nodes": len([n for n in ray.nodes() if n.get("Alive")]), "batch_size": batch_size,
                   "partition_seconds": round(sum(float(row["seconds"]) for row in counts), 3)}  # fmt: skip
    finally:
        if started:
            ray.shutdown()
    documents_written = sum(int(row["documents"]) for row in counts)
    if len(counts) != len(splits):
        raise RuntimeError(f"{len(counts)} of {len(splits)} partitions reported back")
    manifest = {
        "dim": int(documents.dim),
        "similarity": documents.similarity,
        "documents": documents_written,
        "document_encoder": describe_encoder(documents),
        "query_encoder": {**describe_encoder(queries), "path": os.path.abspath(os.fspath(model))},
        "corpus": _describe_corpus(corpus),
        "splits": [{key: split[key] for key in ("path", "start", "end")} for split in splits],
        "cluster": cluster,
        "seconds": round(time.perf_counter() - start_time, 3),
    }
    write_manifest(out, manifest)
    return manifest


def _prepare_out(out: str, overwrite: bool) -> None:
    if os.path.isfile(out):
        raise FileExistsError(f"{out} is a file, not a folder for the embeddings")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty: choose a new folder, or overwrite (--overwrite)")
        names = os.listdir(out)
        if MANIFEST_NAME not in names and any(not name.endswith((".parquet", ".partial")) for name in names):
            raise FileExistsError(f"{out} is not an embeddings folder: not overwriting it")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _worker_path(path: str | os.PathLike) -> str:
    """A local folder as an absolute path (workers start elsewhere); a Hub id as it is."""
    path = os.fspath(path)
    return os.path.abspath(path) if os.path.exists(path) else path
