"""MS MARCO passage ranking: TREC DL 2019 (graded judgments) or the full dev set from local files.

    python -m benchmarks.msmarco --dataset dl19 --model RUN/best --out results/msmarco
    python -m benchmarks.msmarco --dataset dev --data /data/msmarco --model RUN/best

``dl19``: the shared ``msmarco-passage-dl19`` folder (BEIR layout; a pool of 33k passages, not the full
collection). Conventions of TREC DL: nDCG@10 on the graded labels, MRR@10 and recall with grade ≥ 2.
``dev``: ``collection.tsv``, ``queries.dev.small.tsv`` and ``qrels.dev.small.tsv`` in ``--data`` (or each
file given); the official measure is MRR@10 (binary labels). Writes ``msmarco.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import retrieval, systems
from .datasets import SHARED_DATASETS, default_data_dir, load_beir_folder, load_msmarco_dev, slice_data

PROG = "python -m benchmarks.msmarco"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["dl19", "dev"], default="dl19")
    parser.add_argument(
        "--data",
        default=None,
        help="dl19: its BEIR folder (default: the shared one); dev: the folder of the three tsv files",
    )
    parser.add_argument("--collection", default=None, help="dev: collection.tsv (pid<TAB>passage)")
    parser.add_argument("--queries", default=None, help="dev: queries.dev.small.tsv (qid<TAB>query)")
    parser.add_argument("--qrels", default=None, help="dev: qrels.dev.small.tsv (qid 0 pid 1)")
    parser.add_argument("--relevance-threshold", type=int, default=None, help="default: 2 for dl19, 1 for dev")
    retrieval.add_arguments(parser)
    systems.add_arguments(parser, retrieval.DEFAULT_SYSTEMS)
    return parser


def load(args: argparse.Namespace):
    """The chosen dataset, sliced as asked."""
    if args.dataset == "dl19":
        folder = Path(args.data) if args.data else default_data_dir() / SHARED_DATASETS["dl19"][0]
        threshold = args.relevance_threshold or SHARED_DATASETS["dl19"][1]
        data = load_beir_folder(folder, "test", "dl19", threshold)
        return slice_data(data, args.max_docs, args.max_queries)
    if not (args.data or (args.collection and args.queries and args.qrels)):
        raise ValueError(
            "--dataset dev needs --data DIR (with collection.tsv, queries.dev.small.tsv, qrels.dev.small.tsv)"
        )
    data = load_msmarco_dev(args.data, args.collection, args.queries, args.qrels, max_docs=args.max_docs)
    if args.relevance_threshold:
        data.relevance_threshold = args.relevance_threshold
    return slice_data(data, None, args.max_queries)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write ``<out>/msmarco.json``, print a table; return the results."""
    args = build_parser().parse_args(argv)
    compared = systems.from_args(args, systems.systems_given(argv))
    data = load(args)
    conventions = "nDCG@10 on graded labels; MRR@10 and recall count grade >= relevance_threshold"
    return retrieval.run_and_report("msmarco", PROG, argv, args, data, compared, conventions=conventions)


if __name__ == "__main__":
    main()
