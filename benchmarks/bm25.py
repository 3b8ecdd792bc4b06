"""BM25 with Pyserini: a Lucene index of a corpus (cached), searched with ``LuceneSearcher`` (default k1, b).

The corpus is written as a Pyserini ``JsonCollection`` (``{"id", "contents"}`` per line) and indexed by
``python -m pyserini.index.lucene`` in a subprocess; searching starts a JVM in this process. Both need
Java ≥ 21 (found by :mod:`indexers.java`); without it :func:`java_problem` says why, and the benchmarks
skip BM25 with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .cache import cache_key


def java_problem() -> str | None:
    """Why BM25 cannot run here (no Pyserini, no Java ≥ 21), or None when it can."""
    import importlib.util

    if importlib.util.find_spec("pyserini") is None:
        return "pyserini is not installed (pip install 'bertapprox-hf[pyserini]')"
    from indexers.java import JavaNotFoundError, find_java_home

    try:
        find_java_home()
    except JavaNotFoundError as error:
        return str(error)
    return None


def write_json_collection(corpus: dict[str, str], folder: str | os.PathLike, docs_per_file: int = 500_000) -> int:
    """Write ``{doc id: text}`` as a Pyserini JsonCollection (``docs-00000.jsonl``, ...); returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = None
    files = 0
    try:
        for position, (doc_id, text) in enumerate(corpus.items()):
            if position % docs_per_file == 0:
                if handle is not None:
                    handle.close()
                handle = open(folder / f"docs-{files:05d}.jsonl", "w", encoding="utf-8")
                files += 1
            handle.write(json.dumps({"id": doc_id, "contents": text}, ensure_ascii=False) + "\n")
    finally:
        if handle is not None:
            handle.close()
    return files


def _pyserini_env() -> dict[str, str]:
    from indexers.pyserini_indexer import prepare_pyserini_environment

    prepare_pyserini_environment()  # JAVA_HOME and PATH for Java ≥ 21, a placeholder OPENAI_API_KEY
    return dict(os.environ)


def build_index(corpus: dict[str, str], index_dir: str | os.PathLike, threads: int = 1) -> dict:
    """Index ``corpus`` into ``index_dir`` (replaced atomically); returns the build record."""
    index_dir = Path(index_dir)
    work = index_dir.with_name(index_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    collection, index = work / "collection", work / "index"
    write_json_collection(corpus, collection)
    command = [
        sys.executable, "-m", "pyserini.index.lucene",
        "--collection", "JsonCollection",
        "--input", str(collection),
        "--index", str(index),
        "--generator", "DefaultLuceneDocumentGenerator",
        "--threads", str(threads),
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=_pyserini_env())
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not index.is_dir():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"Pyserini indexing failed (exit {result.returncode}): {' '.join(command)}\n{tail}")
    shutil.rmtree(collection)
    index.rename(work / "lucene")
    record = {"documents": len(corpus), "index_seconds": round(seconds, 3), "threads": threads}
    (work / "record.json").write_text(json.dumps(record), encoding="utf-8")
    shutil.rmtree(index_dir, ignore_errors=True)
    work.rename(index_dir)
    return record


def cached_index(corpus: dict[str, str], identity: dict, cache: str | os.PathLike, threads: int = 1) -> Path:
    """The Lucene index of ``corpus`` in the cache (built first when absent); ``identity`` names the corpus."""
    import importlib.metadata

    key = cache_key("bm25", identity, importlib.metadata.version("pyserini"))
    folder = Path(cache) / "bm25" / key
    if not (folder / "record.json").is_file():
        print(f"BM25: indexing {len(corpus)} documents with Pyserini (Lucene) into {folder}", flush=True)
        build_index(corpus, folder, threads)
    return folder / "lucene"


def search(
    index: str | os.PathLike, queries: dict[str, str], k: int = 1000, timing_k: int = 10, threads: int = 1
) -> tuple[dict[str, dict[str, float]], float]:
    """``({query id: {doc id: score}}, seconds)``: BM25 top-``k`` of every query (default parameters), and the
    time of a second pass over every query for the top ``timing_k`` (after the first has warmed the JVM)."""
    _pyserini_env()
    from pyserini.search.lucene import LuceneSearcher

    searcher = LuceneSearcher(str(index))
    try:
        ids, texts = list(queries), list(queries.values())
        hits = searcher.batch_search(texts, ids, k=k, threads=threads)
        run = {qid: {hit.docid: float(hit.score) for hit in hits.get(qid, [])} for qid in ids}
        start = time.perf_counter()
        searcher.batch_search(texts, ids, k=timing_k, threads=threads)
        seconds = time.perf_counter() - start
    finally:
        searcher.close()
    return run, seconds
