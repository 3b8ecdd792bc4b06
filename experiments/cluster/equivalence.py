"""The cluster path against ``bertapprox index``: the same corpus encoded both ways, compared.

    PYTHONPATH=. python experiments/cluster/equivalence.py --model STUDENT [--teacher TEACHER] \
        --corpus ../shared/data/msmarco-passage-dl19/corpus.jsonl \
        --queries ../shared/data/msmarco-passage-dl19/queries.jsonl --work /tmp/cluster-dl19 --num-cpus 2 \
        --out experiments/results/cluster-dl19/student.json

Runs ``bertapprox index`` (one process), then ``bertapprox cluster encode`` on a new local Ray cluster and
``bertapprox cluster index`` (one index, Faiss shards, and the Pyserini folder), searches the queries on each with
``bertapprox search``, and reports the times and the differences: ids and their order, the largest difference of
an indexed vector, and of the top-k runs (ids, ranks, scores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

import numpy as np


def run(argv: list[str]) -> float:
    """Run a ``bertapprox`` command in this process; its seconds."""
    from bertapprox_hf.cli import main

    start = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"bertapprox {' '.join(argv)}: exit code {code}")
    return round(time.perf_counter() - start, 2)


def compare_indexes(reference: str, other: str) -> dict:
    """Ids (same order?) and the largest absolute difference of the stored vectors."""
    from indexers.faiss_indexer import FaissIndexer

    a, b = FaissIndexer.load(reference, device="cpu"), FaissIndexer.load(other, device="cpu")
    same_ids = a.ids == b.ids
    diff = float(np.abs(a.index.reconstruct_n(0, a.index.ntotal) - b.index.reconstruct_n(0, b.index.ntotal)).max())
    return {"documents": len(a.ids), "same_ids_in_order": same_ids, "max_abs_vector_difference": diff}


def compare_runs(reference: str, other: str) -> dict:
    """Queries whose ranked ids are the same, and the largest score difference at the same rank."""
    from indexers.runs import read_trec

    a, b = read_trec(reference), read_trec(other)
    same = [q for q in a if [d for d, _, _ in a[q]] == [d for d, _, _ in b.get(q, [])]]
    diffs = [abs(x[2] - y[2]) for q in a for x, y in zip(a[q], b.get(q, []), strict=False)]
    return {"queries": len(a), "queries_with_identical_ranking": len(same), "max_abs_score_difference": max(diffs)}


def ndcg_at_10(run_file: str, qrels_file: str) -> float:
    """Mean nDCG@10 of a TREC run against a BEIR-style qrels tsv (``query-id corpus-id score``, a header line)."""
    import pytrec_eval

    from indexers.runs import read_trec

    qrels: dict[str, dict[str, int]] = {}
    with open(qrels_file, encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            query, doc, grade = line.split("\t")
            qrels.setdefault(query, {})[doc] = int(grade)
    run = {q: {doc: score for doc, _, score in hits} for q, hits in read_trec(run_file).items() if q in qrels}
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return round(float(np.mean([s["ndcg_cut_10"] for s in scores.values()])), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--work", required=True, help="scratch folder (emptied)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--qrels", default=None, help="judgments (BEIR tsv): report each run's nDCG@10")
    parser.add_argument("--out", default=None, help="write the report here (JSON)")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    path = lambda name: os.path.join(args.work, name)  # noqa: E731
    teacher = ["--teacher", args.teacher] if args.teacher else []
    seconds = {}
    load_before = os.getloadavg()
    seconds["bertapprox index"] = run(["index", "--model", args.model, *teacher, "--corpus", args.corpus,
                                       "--out", path("reference")])  # fmt: skip
    seconds["cluster encode"] = run(["cluster", "encode", "--model", args.model, *teacher, "--corpus", args.corpus,
                                     "--out", path("embeddings"), "--num-cpus", str(args.num_cpus)])  # fmt: skip
    seconds["cluster index"] = run(["cluster", "index", "--embeddings", path("embeddings"), "--out", path("index")])
    seconds["cluster index --shards"] = run(["cluster", "index", "--embeddings", path("embeddings"),
                                             "--out", path("shards"), "--shards", str(args.shards)])  # fmt: skip
    seconds["cluster index --indexer pyserini"] = run(["cluster", "index", "--embeddings", path("embeddings"),
                                                       "--out", path("pyserini"), "--indexer", "pyserini"])  # fmt: skip
    for name in ("reference", "index", "shards", "pyserini"):
        seconds[f"search {name}"] = run(["search", "--index", path(name), "--queries", args.queries,
                                         "--k", str(args.k), "--output", path(f"{name}.trec")])  # fmt: skip
    manifest = json.load(open(path("embeddings/embeddings.json"), encoding="utf-8"))
    report = {
        "model": args.model,
        "teacher": args.teacher,
        "corpus": args.corpus,
        "queries": args.queries,
        "k": args.k,
        "cluster": {**manifest["cluster"], "partitions": len(manifest["splits"]), "num_cpus": args.num_cpus},
        "seconds": seconds,
        "index_vs_reference": compare_indexes(path("reference"), path("index")),
        "runs_vs_reference": {
            name: compare_runs(path("reference.trec"), path(f"{name}.trec")) for name in ("index", "shards", "pyserini")
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
    }
    if args.qrels:
        report["ndcg@10"] = {
            name: ndcg_at_10(path(f"{name}.trec"), args.qrels) for name in ("reference", "index", "shards", "pyserini")
        }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
