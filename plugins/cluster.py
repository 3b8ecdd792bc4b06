"""``bertapprox cluster``: encode a corpus on a Ray cluster (``encode``), then build from its embeddings a
``bertapprox index`` folder, a sharded Faiss index (``index``) or Pyserini's vector files (``vectors``).

``pip install 'bertapprox-hf[ray]'`` for ``encode``; the other two need only pyarrow and Faiss.
"""

from __future__ import annotations

import json
import os
import time


def add_commands(commands) -> None:
    """Add ``cluster encode``, ``cluster index`` and ``cluster vectors`` to the ``bertapprox`` parser."""
    from .commands import _optional

    cluster = commands.add_parser("cluster", help="encode a corpus on a Ray cluster; index its embeddings")
    actions = cluster.add_subparsers(dest="action", required=True)

    encode = actions.add_parser("encode", help="encode a corpus on a Ray cluster into Parquet shards of embeddings")
    encode.add_argument("--model", required=True, help="student folder: query encoder, and document encoder too")
    encode.add_argument("--teacher", default=None, help="encode the documents with this teacher (asymmetric index)")
    encode.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders (read by every node)")
    encode.add_argument("--out", required=True, help="embeddings folder (every node writes it: a shared filesystem)")
    encode.add_argument("--address", default=None,
                        help="Ray cluster: auto (the one 'ray start' runs), ray://head:10001; default: RAY_ADDRESS, "
                             "else a new local cluster")  # fmt: skip
    encode.add_argument("--num-cpus", type=int, default=None, help="CPUs of a new local cluster (default: all)")
    encode.add_argument("--workers", type=int, default=None, help="encoder actors (default: CPUs / --cpus-per-worker)")
    encode.add_argument("--cpus-per-worker", type=float, default=1.0)
    encode.add_argument("--gpus-per-worker", type=float, default=0.0)
    encode.add_argument("--batch-size", type=int, default=256)
    encode.add_argument("--split-mb", type=float, default=32.0, help="corpus partition size in MB")
    encode.add_argument("--device", default=None, help="encoder device on the workers (default: cuda where there)")
    encode.add_argument("--dtype", default="float32", help="student precision: float32, float16, bfloat16, int8")
    encode.add_argument("--runtime-env", default=None, help='Ray runtime environment, JSON: {"working_dir": "."}')
    encode.add_argument("--overwrite", action="store_true", help="replace an existing embeddings folder")
    encode.add_argument("--no-progress", action="store_true", help="no progress bars or worker logs")
    encode.set_defaults(handler=_optional(_encode))

    index = actions.add_parser("index", help="build an index folder (or Faiss shards) from a cluster's embeddings")
    index.add_argument("--embeddings", required=True, help="embeddings folder (cluster encode --out)")
    index.add_argument("--out", required=True, help="index folder")
    index.add_argument("--indexer", default="faiss", help="indexer plugin: faiss, pyserini, ...")
    index.add_argument("--shards", type=int, default=None, help="Faiss shards (contiguous runs of the corpus)")
    index.add_argument("--factory", default=None, help="Faiss factory string: Flat (default), HNSW32, IVF4096,PQ64")
    index.add_argument("--train-size", type=int, default=None, help="vectors to train IVF/PQ indexes on")
    index.add_argument("--dedupe-ids", action="store_true", help="keep the first document of a repeated id")
    index.set_defaults(handler=_optional(_index))

    vectors = actions.add_parser("vectors", help="write a cluster's embeddings as Pyserini's JSON vector collection")
    vectors.add_argument("--embeddings", required=True, help="embeddings folder (cluster encode --out)")
    vectors.add_argument("--out", required=True, help="folder of embeddings-NNNNN.jsonl files")
    vectors.set_defaults(handler=_optional(_vectors))


def _encode(args) -> int:
    from indexers.distributed import encode_corpus

    runtime_env = json.loads(args.runtime_env) if args.runtime_env else None
    manifest = encode_corpus(
        args.corpus, args.model, args.out, teacher=args.teacher, address=args.address, num_cpus=args.num_cpus,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        batch_size=args.batch_size, split_mb=args.split_mb, device=args.device, dtype=args.dtype,
        runtime_env=runtime_env, overwrite=args.overwrite, show_progress_bar=not args.no_progress,
    )  # fmt: skip
    print(json.dumps({"out": args.out, "documents": manifest["documents"], "dim": manifest["dim"],
                      "partitions": len(manifest["splits"]), "workers": manifest["cluster"]["workers"],
                      "asymmetric": bool(args.teacher), "seconds": manifest["seconds"]}))  # fmt: skip
    return 0


def _index(args) -> int:
    from indexers.embeddings import build_index, build_sharded_index

    from .commands import _plugin_manager

    start = time.perf_counter()
    options = {key: value for key, value in (("factory", args.factory), ("train_size", args.train_size)) if value}
    if args.shards:
        if args.indexer != "faiss":
            raise ValueError("--shards makes Faiss shards: use it with --indexer faiss")
        meta = build_sharded_index(args.embeddings, args.out, args.shards, dedupe_ids=args.dedupe_ids, **options)
        summary = {"indexer": meta["indexer"], "documents": meta["documents"], "shards": meta["shards"]}
    else:
        indexer = _plugin_manager().get_indexer(args.indexer)
        index = build_index(args.embeddings, indexer, dedupe_ids=args.dedupe_ids, **options)
        index.save(args.out)
        summary = {"indexer": args.indexer, "documents": len(index), "dim": index.dim}
    print(json.dumps({"out": args.out, **summary, "seconds": round(time.perf_counter() - start, 2)}))
    return 0


def _vectors(args) -> int:
    from indexers.embeddings import write_pyserini_vectors

    files = write_pyserini_vectors(args.embeddings, args.out)
    print(json.dumps({"out": args.out, "files": [os.path.basename(file) for file in files]}))
    return 0
