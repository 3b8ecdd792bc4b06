"""Paired bootstrap over queries: each run's nDCG@10 in % of the teacher's, and differences between runs, with 95%
intervals.

    python -m benchmarks.bootstrap --qrels QRELS.tsv --teacher teacher.trec \\
        --runs base=a.trec listwise=b.trec --baseline base --out results/arms/dl19

Queries are resampled with replacement (the same resample for every run, so runs are compared on the same
queries); a statistic is the ratio of mean nDCG@10s (``pct_teacher``) or its difference from the baseline's.
A difference is called real when its interval excludes 0. With 43 queries (TREC DL 2019), intervals of
several points are normal. Writes ``bootstrap.json`` and ``bootstrap.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import numpy as np

from .metrics import Qrels, Run, per_query_ndcg

PROG = "python -m benchmarks.bootstrap"


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [round(float(low), 2), round(float(high), 2)]


def paired_bootstrap(
    qrels: Qrels,
    teacher: Run,
    runs: dict[str, Run],
    baseline: str | None = None,
    samples: int = 10000,
    seed: int = 0,
) -> dict:
    """``{"queries", "samples", "rows": [...]}``: per run, nDCG@10, % of the teacher's with its interval and, against
    ``baseline``, the difference in points of % with its interval and whether it is real."""
    if baseline is not None and baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not among the runs {sorted(runs)}")
    queries, teacher_scores = per_query_ndcg(qrels, teacher)
    scores = {name: per_query_ndcg(qrels, run, queries)[1] for name, run in runs.items()}
    rng = np.random.default_rng(seed)
    resample = rng.integers(0, len(queries), size=(samples, len(queries)))
    teacher_means = teacher_scores[resample].mean(axis=1)
    if np.any(teacher_means <= 0):
        raise ValueError("the teacher scores nDCG@10 0 on some resample: too few judged queries")
    shares = {name: 100 * values[resample].mean(axis=1) / teacher_means for name, values in scores.items()}
    rows = []
    for name, values in scores.items():
        row = {
            "run": name,
            "ndcg@10": round(float(values.mean()), 4),
            "pct_teacher": round(float(100 * values.mean() / teacher_scores.mean()), 2),
            "pct_teacher_95ci": _interval(shares[name]),
        }
        if baseline is not None and name != baseline:
            difference = shares[name] - shares[baseline]
            row["vs_baseline"] = round(row["pct_teacher"] - 100 * scores[baseline].mean() / teacher_scores.mean(), 2)
            row["vs_baseline_95ci"] = _interval(difference)
            row["real"] = bool(row["vs_baseline_95ci"][0] > 0 or row["vs_baseline_95ci"][1] < 0)
        rows.append(row)
    return {
        "queries": len(queries),
        "samples": samples,
        "teacher_ndcg@10": round(float(teacher_scores.mean()), 4),
        "baseline": baseline,
        "rows": rows,
    }


def to_markdown(result: dict, title: str = "") -> str:
    from .reporting import markdown_table

    header = ["run", "nDCG@10", "% teacher [95% CI]", "vs baseline (points) [95% CI]", "real?"]
    body = []
    for row in result["rows"]:
        low, high = row["pct_teacher_95ci"]
        versus = ""
        if "vs_baseline" in row:
            a, b = row["vs_baseline_95ci"]
            versus = f"{row['vs_baseline']:+.2f} [{a:+.2f}, {b:+.2f}]"
        real = "" if "real" not in row else ("yes" if row["real"] else "no")
        body.append(
            [row["run"], f"{row['ndcg@10']:.4f}", f"{row['pct_teacher']:.1f} [{low:.1f}, {high:.1f}]", versus, real]
        )
    lines = [f"{title}: " if title else ""]
    lines[0] += (
        f"{result['queries']} queries, teacher nDCG@10 {result['teacher_ndcg@10']:.4f}, {result['samples']} resamples"
    )
    return "\n".join([lines[0], "", markdown_table(header, body)])


def _read_run(path: str) -> Run:
    from indexers.runs import read_trec

    return {qid: {doc: score for doc, _, score in hits} for qid, hits in read_trec(path).items()}


def _named_paths(items: Sequence[str]) -> dict[str, str]:
    named = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--runs takes NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        named[name] = path
    return named


def main(argv: list[str] | None = None) -> dict:
    from .datasets import read_qrels_tsv

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--qrels", required=True, help="qrels tsv (query-id, corpus-id, score; a header line)")
    parser.add_argument("--teacher", required=True, help="the teacher's TREC run")
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=PATH", help="TREC runs to compare")
    parser.add_argument("--baseline", default=None, help="the run the others are compared with")
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--title", default="")
    parser.add_argument("--out", default=None, help="folder for bootstrap.json and bootstrap.md")
    args = parser.parse_args(argv)
    runs = {name: _read_run(path) for name, path in _named_paths(args.runs).items()}
    result = paired_bootstrap(
        read_qrels_tsv(args.qrels), _read_run(args.teacher), runs, args.baseline, args.samples, args.seed
    )
    text = to_markdown(result, args.title)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bootstrap.json"), "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        with open(os.path.join(args.out, "bootstrap.md"), "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
