"""Evaluate the compared systems on one retrieval dataset: the engine behind ``benchmarks.beir`` and
``benchmarks.msmarco``.

Dense systems search exactly: a Faiss ``Flat`` inner-product index (:class:`indexers.faiss_indexer.FaissIndexer`;
vectors L2-normalized when the similarity is cosine). BM25 goes through :mod:`benchmarks.bm25`. Each
system's run is scored by :func:`benchmarks.metrics.retrieval_metrics`. ``query_seconds`` is a separate, timed
pass over every query: encode and search the top ``timing_k`` (10, what a search box shows; BM25: search
alone). The top-1000 pass is not timed: materializing 1,000 Pyserini hits per query costs far more than
BM25's search itself. The teacher's document pass (cached) is not part of it either.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from .cache import file_identity, ids_digest
from .datasets import RetrievalData
from .metrics import drop_identical_ids, retrieval_metrics
from .systems import DENSE_SYSTEMS, Systems

METRICS = ("ndcg@10", "mrr@10", "recall@100", "recall@1000")
DEFAULT_SYSTEMS = ("teacher", "student", "asymmetric", "model2vec", "bm25")


def corpus_identity(data: RetrievalData) -> dict:
    """What the corpus is, for cache keys: its file (size, SHA-256) and the ids taken from it, in order."""
    identity = {"ids": ids_digest(list(data.corpus)), "documents": len(data.corpus)}
    if data.corpus_file and os.path.isfile(data.corpus_file):
        identity["file"] = file_identity(data.corpus_file)
    return identity


def dense_run(data: RetrievalData, systems: Systems, name: str, k: int, timing_k: int) -> tuple[dict, dict]:
    """``(run, timings)`` of a dense system: the top ``k`` of each query, then a timed pass (encode every
    query, search the top ``timing_k``)."""
    from indexers.faiss_indexer import FaissIndexer

    query_kind, doc_kind = systems.encoders(name)
    doc_ids, doc_texts = list(data.corpus), list(data.corpus.values())
    identity = corpus_identity(data) if doc_kind == "teacher" else None
    start = time.perf_counter()
    documents = systems.encode(doc_kind, doc_texts, identity, desc=f"{data.name} documents")
    doc_seconds = time.perf_counter() - start
    index = FaissIndexer.create(documents.shape[1], systems.similarity(name), factory="Flat", device="cpu")
    index.add(doc_ids, documents)
    query_ids, query_texts = list(data.queries), list(data.queries.values())
    results = index.search(systems.encode(query_kind, query_texts), k=min(k, len(doc_ids)))
    start = time.perf_counter()  # the encoder and the index are warm now
    index.search(systems.encode(query_kind, query_texts), k=min(timing_k, len(doc_ids)))
    query_seconds = time.perf_counter() - start
    timings = {"document_seconds": round(doc_seconds, 3), "query_seconds": round(query_seconds, 4)}
    return results.as_dict(query_ids), timings


def bm25_run(data: RetrievalData, systems: Systems, k: int, timing_k: int, threads: int = 1) -> tuple[dict, dict]:
    """``(run, timings)`` of BM25 (the index comes from the cache when it is there)."""
    from .bm25 import cached_index, search

    start = time.perf_counter()
    index = cached_index(data.corpus, corpus_identity(data), systems.cache, threads)
    index_seconds = time.perf_counter() - start
    run, seconds = search(index, data.queries, min(k, len(data.corpus)), min(timing_k, len(data.corpus)), threads)
    return run, {"document_seconds": round(index_seconds, 3), "query_seconds": round(seconds, 4)}


def skip_reason(name: str) -> str | None:
    """Why a system cannot run on this machine (BM25 without Java ≥ 21 or Pyserini), else None."""
    if name == "bm25":
        from .bm25 import java_problem

        return java_problem()
    return None


def evaluate(
    data: RetrievalData,
    systems: Systems,
    k: int = 1000,
    ignore_identical_ids: bool = False,
    runs_dir: str | None = None,
    bm25_threads: int = 1,
    timing_k: int = 10,
) -> tuple[list[dict], list[dict]]:
    """``(rows, skipped)``: one row of metrics and timings per system, and the systems that could not run
    (``{"dataset", "system", "reason"}``). ``runs_dir`` also keeps each run as a TREC file."""
    rows: list[dict] = []
    skipped: list[dict] = []
    for name in systems.names:
        reason = skip_reason(name)
        if reason:
            print(f"{data.name}: skipping {name}: {reason}", flush=True)
            skipped.append({"dataset": data.name, "system": name, "reason": reason})
            continue
        if name in DENSE_SYSTEMS:
            run, timings = dense_run(data, systems, name, k, timing_k)
        else:
            run, timings = bm25_run(data, systems, k, timing_k, bm25_threads)
        if ignore_identical_ids:
            run = drop_identical_ids(run)
        if runs_dir:
            save_run(run, os.path.join(runs_dir, f"{data.name}.{name}.trec"), name)
        scores = retrieval_metrics(
            data.qrels, run, relevance_threshold=data.relevance_threshold, num_docs=len(data.corpus)
        )
        queries = len(data.queries)
        rows.append(
            {
                "dataset": data.name,
                "system": name,
                **scores,
                "documents": len(data.corpus),
                "relevance_threshold": data.relevance_threshold,
                **timings,
                "timing_k": timing_k,
                "queries_per_second": round(queries / timings["query_seconds"], 2)
                if timings["query_seconds"]
                else None,
            }
        )
        print(f"{data.name} {name}: nDCG@10 {scores['ndcg@10']:.4f}  MRR@10 {scores['mrr@10']:.4f}", flush=True)
    add_teacher_share(rows)
    return rows, skipped


def add_teacher_share(rows: list[dict]) -> None:
    """``pct_teacher_ndcg@10``: each row's nDCG@10 in % of the teacher's on the same dataset (None without one)."""
    teacher = {row["dataset"]: row["ndcg@10"] for row in rows if row["system"] == "teacher"}
    for row in rows:
        base = teacher.get(row["dataset"])
        row["pct_teacher_ndcg@10"] = round(100 * row["ndcg@10"] / base, 2) if base else None


def save_run(run: dict[str, dict[str, float]], path: str, tag: str) -> None:
    """A TREC run file (:func:`indexers.runs.write_trec`), best first."""
    from indexers.base import SearchResults
    from indexers.runs import write_trec

    ids, scores = [], []
    for docs in run.values():
        ranked = sorted(docs.items(), key=lambda item: item[1], reverse=True)
        ids.append([doc for doc, _ in ranked])
        scores.append([score for _, score in ranked])
    write_trec(path, SearchResults(ids, scores), list(run), tag=tag)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every retrieval benchmark."""
    group = parser.add_argument_group("retrieval")
    group.add_argument("--k", type=int, default=1000, help="documents retrieved per query (default 1000)")
    group.add_argument("--max-docs", type=int, default=None, help="evaluate on a slice of this many documents")
    group.add_argument("--max-queries", type=int, default=None, help="at most this many queries (with the slice)")
    group.add_argument("--save-runs", action="store_true", help="also write each system's TREC run into --out/runs")
    group.add_argument("--bm25-threads", type=int, default=1, help="threads of BM25 indexing and search")
    group.add_argument(
        "--timing-k", type=int, default=10, help="depth of the timed query pass (query_seconds; default 10)"
    )


def table_rows(rows: Sequence[dict]) -> list[list[str]]:
    """Rows of the summary table that retrieval benchmarks print."""
    from .reporting import number, percent

    return [
        [row["dataset"], row["system"], *(number(row[m]) for m in METRICS), percent(row["pct_teacher_ndcg@10"])]
        for row in rows
    ]


TABLE_HEADER = ["dataset", "system", *METRICS, "% teacher nDCG@10"]


def run_and_report(
    benchmark: str,
    prog: str,
    argv: list[str] | None,
    args: argparse.Namespace,
    data: RetrievalData,
    systems: Systems,
    ignore_identical_ids: bool = False,
    **settings,
) -> dict:
    """Evaluate every system on ``data``, write ``<out>/<benchmark>.json``, print the table; return the results.

    ``settings`` are recorded beside the common ones (k, timing_k, search, the compared systems)."""
    from .provenance import provenance
    from .reporting import markdown_table, write_results

    if not data.queries:
        raise ValueError(f"{data.name}: no judged query is left to evaluate")
    runs_dir = f"{args.out}/runs" if args.save_runs else None
    rows, skipped = evaluate(data, systems, args.k, ignore_identical_ids, runs_dir, args.bm25_threads, args.timing_k)
    results = {
        "benchmark": benchmark,
        "dataset": data.describe(),
        "settings": {
            "k": args.k,
            "timing_k": args.timing_k,
            "ignore_identical_ids": ignore_identical_ids,
            **settings,
            "search": "exact (Faiss Flat, inner product; cosine on L2-normalized vectors)",
            **systems.describe(),
        },
        "retrieval": rows,
        "skipped": skipped,
        **provenance(prog, argv),
    }
    path = write_results(args.out, benchmark, results)
    print(markdown_table(TABLE_HEADER, table_rows(rows)))
    print(f"wrote {path}")
    return results
