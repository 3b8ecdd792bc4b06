"""Search a Pyserini dense index with Pyserini's ``FaissSearcher`` and a bertapprox query encoder.

The counterpart of ``python -m pyserini.search.faiss`` for our students (and teachers)::

    python -m indexers.pyserini_search --index INDEX_DIR --encoder STUDENT_DIR \\
        --topics queries.jsonl --output run.trec --hits 1000

Topics: jsonl (``{"_id" or "id", "text"}``) or tsv (``id<TAB>text``). The run is TREC
(``qid Q0 docid rank score tag``), or MS MARCO (``qid<TAB>docid<TAB>rank``) with
``--output-format msmarco``, or JSON when the output ends in ``.json``. Queries are L2-normalized
when the index records cosine similarity (``meta.json``), or with ``--l2-norm``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexers.pyserini_search", description=__doc__.split("\n")[0])
    parser.add_argument("--index", required=True, help="Pyserini dense index folder (index + docid)")
    parser.add_argument("--encoder", required=True, help="query encoder: student folder, or teacher folder / Hub id")
    parser.add_argument("--topics", required=True, help="queries: jsonl or tsv")
    parser.add_argument("--output", required=True, help="run file")
    parser.add_argument("--hits", "--k", dest="hits", type=int, default=1000, help="hits per query")
    parser.add_argument("--batch-size", type=int, default=256, help="queries encoded and searched at a time")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Faiss search threads")
    parser.add_argument("--output-format", choices=("trec", "msmarco", "json"), default=None)
    parser.add_argument("--run-tag", "--run.tag", dest="run_tag", default="bertapprox")
    parser.add_argument("--l2-norm", action="store_true", help="normalize query embeddings (cosine)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32", help="student precision")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .encoders import load_encoder
    from .java import JavaNotFoundError
    from .pyserini_indexer import PyseriniIndexer, PyseriniQueryEncoder, results_from_hits
    from .runs import read_queries

    try:
        index = PyseriniIndexer.load(args.index, similarity="cosine" if args.l2_norm else None)
        query_ids, texts = read_queries(args.topics)
        encoder = load_encoder(args.encoder, device=args.device, dtype=args.dtype)
        query_encoder = PyseriniQueryEncoder(encoder, normalize=index.similarity == "cosine")
        start = time.perf_counter()
        searcher = index.searcher(query_encoder)
        results = {}
        for first in range(0, len(texts), args.batch_size):
            batch_ids = query_ids[first : first + args.batch_size]
            hits = searcher.batch_search(texts[first : first + args.batch_size], batch_ids, args.hits, args.threads)
            results.update(hits)
        seconds = time.perf_counter() - start
        _write(args, results_from_hits(results, query_ids))
    except (OSError, ValueError, ImportError, JavaNotFoundError) as error:
        print(f"pyserini_search: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"output": args.output, "queries": len(texts), "hits": args.hits, "seconds": round(seconds, 3)}))
    return 0


def _write(args, results) -> None:
    from .runs import write_json, write_trec

    kind = args.output_format or ("json" if args.output.endswith(".json") else "trec")
    if kind == "json":
        write_json(args.output, results)
    elif kind == "trec":
        write_trec(args.output, results, tag=args.run_tag)
    else:  # MS MARCO: qid<TAB>docid<TAB>rank
        parent = os.path.dirname(args.output)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            for query_id, ids in zip(results.query_ids, results.ids, strict=True):
                handle.writelines(f"{query_id}\t{doc}\t{rank}\n" for rank, doc in enumerate(ids, start=1))


if __name__ == "__main__":
    sys.exit(main())
