"""The ``index``, ``search``, ``plugins`` and ``benchmark`` commands, added to ``bertapprox`` by the built-in
``commands`` plugin (``pip install 'bertapprox-hf[index]'`` for Faiss, ``'[pyserini]'`` for Pyserini)."""

from __future__ import annotations

import json
import os
import sys
import time

from bertapprox_hf.plugins import PluginManager


def add_commands(commands) -> None:
    """Add the index, search, plugins and benchmark commands to the ``bertapprox`` parser."""
    plugins = commands.add_parser("plugins", help="indexer and benchmark plugins").add_subparsers(
        dest="action", required=True
    )
    listing = plugins.add_parser("list", help="print the plugins, their indexers and benchmarks, and failures")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_optional(_plugins_list))

    index = commands.add_parser("index", help="encode a corpus and build a dense index (Faiss, Pyserini, plugins)")
    index.add_argument("--indexer", default="faiss", help="indexer plugin name (see 'bertapprox plugins list')")
    index.add_argument("--model", required=True, help="student folder: query encoder, and document encoder too")
    index.add_argument("--teacher", default=None, help="encode the documents with this teacher (asymmetric index)")
    index.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders of them")
    index.add_argument("--out", required=True, help="index folder")
    index.add_argument("--factory", default=None, help="Faiss factory string: Flat (default), HNSW32, IVF4096,PQ64")
    index.add_argument("--batch-size", type=int, default=256)
    index.add_argument("--max-docs", type=int, default=None, help="index at most this many documents")
    index.add_argument("--train-size", type=int, default=None, help="vectors to train IVF/PQ indexes on")
    index.add_argument("--device", default=None, help="encoder device: cpu, cuda, ... (default: cuda when available)")
    index.add_argument("--dtype", default="float32", help="student precision: float32, float16, bfloat16, int8")
    index.add_argument("--dedupe-ids", action="store_true", help="keep the first document of a repeated id")
    index.set_defaults(handler=_optional(_index))

    search = commands.add_parser("search", help="search an index with queries; write a TREC or JSON run")
    search.add_argument("--index", required=True, help="index folder")
    search.add_argument("--model", default=None, help="query encoder folder (default: the one the index records)")
    search.add_argument("--queries", required=True, help="queries: jsonl ({_id, text}) or tsv (id<TAB>text)")
    search.add_argument("--output", required=True, help="run file: *.json → JSON, otherwise TREC")
    search.add_argument("--k", type=int, default=100, help="hits per query")
    search.add_argument("--indexer", default=None, help="indexer plugin (default: the one the index records)")
    search.add_argument("--batch-size", type=int, default=256)
    search.add_argument("--run-tag", default="bertapprox", help="the TREC run's last column")
    search.add_argument("--device", default=None)
    search.add_argument("--dtype", default="float32")
    search.add_argument("--dedupe-ids", action="store_true", help="keep the first query of a repeated id")
    search.set_defaults(handler=_optional(_search))

    benchmark = commands.add_parser("benchmark", help="benchmarks provided by plugins").add_subparsers(
        dest="action", required=True
    )
    benchmark.add_parser("list", help="print the benchmarks the plugins provide").set_defaults(
        handler=_optional(_benchmark_list)
    )
    run = benchmark.add_parser("run", help="run a plugin's benchmark on a model")
    run.add_argument("name")
    run.add_argument("--model", required=True, help="model folder (student or teacher)")
    run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="options handed to the benchmark")
    run.add_argument("--out", default=None, help="also write the results to this JSON file")
    run.set_defaults(handler=_optional(_benchmark_run))


def _plugin_manager() -> PluginManager:
    return PluginManager()


def _plugins_list(args) -> int:
    manager = _plugin_manager()
    print(json.dumps(manager.report(), indent=1) if args.json else manager.format_report())
    return 0


def _index(args) -> int:
    from bertapprox_hf.pipeline.corpus import expand_paths
    from indexers.base import describe_encoder
    from indexers.encoders import load_index_encoders

    indexer = _plugin_manager().get_indexer(args.indexer)
    expand_paths(args.corpus)  # fail on a missing corpus before loading models
    queries, documents = load_index_encoders(args.model, args.teacher, args.device, args.dtype)
    options = {key: value for key, value in (("factory", args.factory), ("train_size", args.train_size)) if value}
    options["dedupe_ids"] = args.dedupe_ids
    start = time.perf_counter()
    index = indexer.build(args.corpus, documents, batch_size=args.batch_size, max_records=args.max_docs, **options)
    index.meta["query_encoder"] = {**describe_encoder(queries), "path": os.path.abspath(args.model)}
    index.save(args.out)
    summary = {"out": args.out, "indexer": args.indexer, "documents": len(index), "dim": index.dim}
    summary.update(similarity=index.similarity, asymmetric=bool(args.teacher))
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - start, 2)}))
    return 0


def _search(args) -> int:
    from indexers.base import read_meta
    from indexers.encoders import load_encoder
    from indexers.pyserini_indexer import is_pyserini_index
    from indexers.runs import read_queries, write_run

    if not os.path.isdir(args.index):
        raise FileNotFoundError(f"index folder not found: {args.index}")
    meta = read_meta(args.index)
    name = args.indexer or meta.get("indexer") or ("pyserini" if is_pyserini_index(args.index) else "faiss")
    index = _plugin_manager().get_indexer(name).load(args.index)
    model = args.model or meta.get("query_encoder", {}).get("path")
    if not model:
        raise ValueError("the index records no query encoder: pass --model")
    query_ids, texts = read_queries(args.queries, dedupe=args.dedupe_ids)
    encoder = load_encoder(model, device=args.device, dtype=args.dtype)
    start = time.perf_counter()
    results = index.search(texts, k=args.k, query_encoder=encoder, batch_size=args.batch_size, query_ids=query_ids)
    seconds = time.perf_counter() - start
    kind = write_run(args.output, results, query_ids, tag=args.run_tag)
    print(json.dumps({"output": args.output, "format": kind, "queries": len(texts), "k": args.k,
                      "indexer": name, "seconds": round(seconds, 3)}))  # fmt: skip
    return 0


def _benchmark_list(args) -> int:
    for name, description in _plugin_manager().benchmark_datasets().items():
        print(f"{name}\t{description}")
    return 0


def _benchmark_run(args) -> int:
    options = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    results = _plugin_manager().run_benchmark(args.name, args.model, options)
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(text)
    return 0


def _optional(handler):
    """Report a missing optional dependency (faiss, pluggy, pyserini) or Java as an error, not a traceback."""

    def run(args) -> int:
        from indexers.java import JavaNotFoundError

        try:
            return handler(args)
        except ImportError as error:
            hint = "" if "pip install" in str(error) else " (pip install 'bertapprox-hf[index]' or '[pyserini]')"
            print(f"bertapprox: error: {error}{hint}", file=sys.stderr)
            return 2
        except JavaNotFoundError as error:
            print(f"bertapprox: error: {error}", file=sys.stderr)
            return 2

    return run
