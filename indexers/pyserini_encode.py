"""Encode a corpus into a Pyserini dense index with a bertapprox student or teacher.

The counterpart of ``python -m pyserini.encode ... --to-faiss`` for models Pyserini cannot load
(a student needs our tokenizer and remote code)::

    python -m indexers.pyserini_encode --corpus corpus.jsonl --encoder STUDENT_DIR --index OUT_DIR
    python -m indexers.pyserini_encode --corpus corpus.jsonl --encoder TEACHER_DIR --index OUT_DIR  # asymmetric

``OUT_DIR`` then holds ``index`` (Faiss ``IndexFlatIP`` by default) and ``docid``, which Pyserini's
``FaissSearcher`` and ``python -m indexers.pyserini_search`` read. Corpus records are
``{"id" or "_id", "text", "title"?}`` jsonl lines (title and text are joined), as Pyserini's
JsonlCollection, or BEIR's layout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexers.pyserini_encode", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders of them")
    parser.add_argument("--encoder", required=True, help="student folder, or teacher folder / Hub id")
    parser.add_argument("--index", "--embeddings", dest="index", required=True, help="output index folder")
    parser.add_argument("--factory", default="Flat", help="Faiss factory string (Pyserini's own indexes are Flat)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-docs", type=int, default=None, help="encode at most this many documents")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--dtype", default="float32", help="student precision")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .encoders import load_encoder
    from .pyserini_indexer import PyseriniIndexer

    try:
        encoder = load_encoder(args.encoder, device=args.device, dtype=args.dtype)
        start = time.perf_counter()
        index = PyseriniIndexer.build(
            args.corpus,
            encoder,
            batch_size=args.batch_size,
            show_progress_bar=not args.no_progress,
            max_records=args.max_docs,
            factory=args.factory,
        )
        index.save(args.index)
    except (OSError, ValueError, ImportError) as error:
        print(f"pyserini_encode: error: {error}", file=sys.stderr)
        return 2
    summary = {"index": args.index, "documents": len(index), "dim": index.dim, "similarity": index.similarity}
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - start, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
