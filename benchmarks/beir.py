"""BEIR benchmark: nDCG@10, MRR@10, Recall@100 and @1000 of every compared system on a BEIR-format dataset.

    python -m benchmarks.beir --dataset scifact --model RUN/best --out results/beir
    python -m benchmarks.beir --dataset path/to/beir-folder --model RUN/best --ignore-identical-ids

``--dataset`` is a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), a name of the
shared data folder (``scifact``), or a BEIR dataset name, downloaded into the cache when online. Systems:
teacher, student, asymmetric (teacher documents, student queries), model2vec, BM25. Writes ``beir.json``.
"""

from __future__ import annotations

import argparse

from . import retrieval, systems
from .datasets import load_beir_folder, relevance_threshold_of, resolve_beir, slice_data

PROG = "python -m benchmarks.beir"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="BEIR folder, shared dataset name, or BEIR dataset name")
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument("--name", default=None, help="dataset name in the results (default: the folder's name)")
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: $BERTAPPROX_SHARED/data)")
    parser.add_argument(
        "--ignore-identical-ids", action="store_true", help="drop retrieved documents whose id equals the query's"
    )
    parser.add_argument(
        "--relevance-threshold", type=int, default=None, help="lowest grade counted relevant by MRR and recall"
    )
    retrieval.add_arguments(parser)
    systems.add_arguments(parser, retrieval.DEFAULT_SYSTEMS)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write ``<out>/beir.json``, print a table; return the results."""
    args = build_parser().parse_args(argv)
    compared = systems.from_args(args, systems.systems_given(argv))
    folder = resolve_beir(args.dataset, args.data_dir, compared.cache / "beir-datasets")
    name = args.name or folder.name
    threshold = args.relevance_threshold or relevance_threshold_of(name)
    data = slice_data(load_beir_folder(folder, args.split, name, threshold), args.max_docs, args.max_queries)
    return retrieval.run_and_report("beir", PROG, argv, args, data, compared, args.ignore_identical_ids)


if __name__ == "__main__":
    main()
