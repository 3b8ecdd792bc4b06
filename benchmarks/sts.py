"""Semantic textual similarity: Spearman correlation of cosine similarity with the gold scores.

    python -m benchmarks.sts --model RUN/best --out results/sts                # STS-B test
    python -m benchmarks.sts --file my-sts.csv --model RUN/best --max-pairs 200

Files in the STS Benchmark format: tab-separated, no quoting (a ``"`` is an ordinary character): genre,
file, year, id, score (0–5), sentence 1, sentence 2, and on some rows extra source columns, ignored.
Systems: teacher, student, asymmetric (sentence 1 by the student, sentence 2 by the teacher), model2vec.
BM25 gives no similarity between two texts: it has no STS row. Writes ``sts.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import systems
from .datasets import default_data_dir
from .metrics import pearson, spearman
from .provenance import provenance
from .reporting import markdown_table, number, write_results

PROG = "python -m benchmarks.sts"
DEFAULT_FILE = "sts/stsb/sts-test.csv"
STS_SYSTEMS = ("teacher", "student", "asymmetric", "model2vec")
NOT_APPLICABLE = {"bm25": "not applicable: BM25 scores a query against an index, not the similarity of two sentences"}
SCORE_COLUMN, FIRST_COLUMN, SECOND_COLUMN = 4, 5, 6


@dataclass
class StsPair:
    first: str
    second: str
    score: float
    line: int


def read_sts(path: str | os.PathLike, max_pairs: int | None = None) -> list[StsPair]:
    """The pairs of an STS Benchmark file (``csv.QUOTE_NONE``, tab-separated, at least 7 columns).

    A missing file raises FileNotFoundError; a line with too few columns, an empty sentence or a score that
    is not a number raises ValueError naming the file and line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"STS file not found: {path}")
    pairs: list[StsPair] = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number_, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) <= SECOND_COLUMN:
                raise ValueError(
                    f"{path}:{number_}: expected at least {SECOND_COLUMN + 1} tab-separated columns (genre, file, "
                    f"year, id, score, sentence 1, sentence 2), got {len(fields)}"
                )
            try:
                score = float(fields[SCORE_COLUMN])
            except ValueError as error:
                raise ValueError(f"{path}:{number_}: the score {fields[SCORE_COLUMN]!r} is not a number") from error
            first, second = fields[FIRST_COLUMN].strip(), fields[SECOND_COLUMN].strip()
            if not first or not second:
                raise ValueError(f"{path}:{number_}: an empty sentence")
            pairs.append(StsPair(first, second, score, number_))
            if max_pairs is not None and len(pairs) >= max_pairs:
                break
    if len(pairs) < 3:
        raise ValueError(f"{path}: {len(pairs)} pairs; Spearman correlation needs at least 3")
    return pairs


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def evaluate(pairs: list[StsPair], compared: systems.Systems, dataset: str) -> list[dict]:
    """One row per system: Spearman (and Pearson) of the cosine with the gold score."""
    sentences = list(dict.fromkeys([p.first for p in pairs] + [p.second for p in pairs]))
    position = {sentence: i for i, sentence in enumerate(sentences)}
    first = np.array([position[p.first] for p in pairs])
    second = np.array([position[p.second] for p in pairs])
    gold = [p.score for p in pairs]
    embeddings: dict[str, np.ndarray] = {}
    rows = []
    for name in compared.names:
        if name in NOT_APPLICABLE:
            continue
        kind_first, kind_second = compared.encoders(name)  # (query side, document side)
        for kind in {kind_first, kind_second} - set(embeddings):
            embeddings[kind] = compared.encode(kind, sentences, desc=f"{dataset} sentences")
        cosines = cosine_rows(embeddings[kind_first][first], embeddings[kind_second][second])
        rows.append(
            {
                "dataset": dataset,
                "system": name,
                "spearman": spearman(cosines, gold),
                "pearson": pearson(cosines, gold),
                "pairs": len(pairs),
            }
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default=None, help=f"STS file (default: {DEFAULT_FILE} in the shared data folder)")
    parser.add_argument("--name", default=None, help="dataset name in the results (default: stsb, or the file name)")
    parser.add_argument("--max-pairs", type=int, default=None, help="only the first pairs")
    systems.add_arguments(parser, STS_SYSTEMS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write ``<out>/sts.json``, print a table; return the results."""
    args = build_parser().parse_args(argv)
    compared = systems.from_args(args, systems.systems_given(argv))
    path = Path(args.file) if args.file else default_data_dir() / DEFAULT_FILE
    name = args.name or ("stsb" if args.file is None else path.stem)
    pairs = read_sts(path, args.max_pairs)
    rows = evaluate(pairs, compared, name)
    results = {
        "benchmark": "sts",
        "dataset": {"name": name, "path": str(path.resolve()), "pairs": len(pairs), "max_pairs": args.max_pairs},
        "settings": {
            "score": "cosine similarity",
            "correlation": "Spearman (Pearson also given)",
            **compared.describe(),
        },
        "sts": rows,
        "not_applicable": dict(NOT_APPLICABLE),
        **provenance(PROG, argv),
    }
    out = write_results(args.out, "sts", results)
    table = [[row["system"], number(row["spearman"]), number(row["pearson"])] for row in rows]
    table += [[name, "n/a", "n/a"] for name in NOT_APPLICABLE]
    print(markdown_table(["system", f"{name} Spearman", "Pearson"], table))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
