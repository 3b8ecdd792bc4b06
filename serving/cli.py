"""Command-line commands ``serve`` and ``drift``, added to a parser by :func:`add_commands`
(``bertapprox`` registers them through its plugin hook; ``python -m serving`` runs them alone)."""

from __future__ import annotations

import argparse
import json
import sys

from .config import ServeConfig, env_default


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``serve`` and ``drift`` on ``subparsers``; each sets ``handler(args) -> int``."""
    _add_serve(subparsers)
    _add_drift(subparsers)


def _add_serve(subparsers) -> None:
    d = ServeConfig()
    serve = subparsers.add_parser(
        "serve",
        help="HTTP server: /embed (TEI), /v1/embeddings (OpenAI), /search, /health, /info, /metrics, a search page",
        description="Every flag can also be set as BERTAPPROX_SERVE_<NAME> (e.g. BERTAPPROX_SERVE_PORT=9000).",
    )
    flag = _flag_adder(serve, d)
    flag("model", str, "student folder (or a teacher folder, served the same way)", required=True)
    flag("index", str, "a `bertapprox index` folder: enables /search (asymmetric indexes too)")
    flag("corpus", str, "the index's jsonl corpus: /search then returns the hits' texts")
    flag("teacher", str, "teacher folder: drift watch (--shadow-rate) and the page's side-by-side results")
    flag("host", str, "address to listen on")
    flag("port", int, "port to listen on")
    flag("workers", int, "server processes (each loads the model; metrics are per process)")
    flag("device", str, "cpu or cuda")
    flag("dtype", str, "student precision: float32, float16, bfloat16, int8")
    flag("threads", int, "torch threads per process")
    flag("max_batch_texts", int, "texts encoded together at most")
    flag("max_wait_ms", float, "wait this long for more requests before a batch goes (0: batch while busy)")
    flag("max_texts_per_request", int, "more texts in one request: 413")
    flag("max_chars_per_text", int, "a longer text: 422")
    flag("max_queued_requests", int, "requests accepted and not yet answered at most; more: 429")
    flag("max_k", int, "largest k of /search")
    flag("cache_size", int, "texts kept in the embedding cache (0: none)")
    flag("shutdown_timeout_s", float, "on SIGTERM, seconds to finish accepted requests")
    flag("shadow_rate", float, "fraction of live texts also embedded by the teacher (drift watch)")
    flag("shadow_window", int, "shadowed texts in the rolling window")
    flag("shadow_min_samples", int, "shadowed texts before /health judges drift")
    flag("min_cosine", float, "/health is degraded below this rolling student-vs-teacher cosine")
    flag("min_overlap", float, "/health is degraded below this rolling top-k overlap")
    flag("overlap_k", int, "k of the drift watch's top-k overlap")
    flag("log_level", str, "uvicorn log level")
    serve.set_defaults(handler=_serve)


def _flag_adder(parser: argparse.ArgumentParser, defaults: ServeConfig):
    def flag(name: str, kind: type, text: str, required: bool = False) -> None:
        default = env_default(name, getattr(defaults, name))
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, type=kind, default=default, required=required and default in ("", None),
                            help=f"{text} (default: {default})" if default not in ("", None) else text)  # fmt: skip

    return flag


def _serve(args: argparse.Namespace) -> int:
    from .server import run_server

    names = list(vars(ServeConfig()))
    config = ServeConfig(**{name: getattr(args, name) for name in names if hasattr(args, name)}).check()
    return run_server(config)


def _add_drift(subparsers) -> None:
    drift = subparsers.add_parser(
        "drift", help="student-vs-teacher agreement over a query log: Markdown + JSON + PNG report"
    )
    drift.add_argument("--model", required=True, help="student folder")
    drift.add_argument("--teacher", default=None, help="teacher folder (default: the one the student records)")
    drift.add_argument("--queries", required=True, help="query log: jsonl ({text|query, time?}), tsv (id<TAB>text) "
                       "or one query per line")  # fmt: skip
    drift.add_argument("--index", default=None, help="an index folder: also the top-k overlap of both rankings")
    drift.add_argument("--k", type=int, default=10, help="k of the top-k overlap")
    drift.add_argument("--out", required=True, help="report folder (drift.md, drift.json, drift.png)")
    drift.add_argument("--window", type=int, default=100, help="queries per point of the curve over time")
    drift.add_argument("--worst", type=int, default=20, help="worst queries listed")
    drift.add_argument("--batch-size", type=int, default=64)
    drift.add_argument("--device", default="cpu")
    drift.set_defaults(handler=_drift)


def _drift(args: argparse.Namespace) -> int:
    from .drift_report import run_drift

    summary = run_drift(
        args.model, args.queries, args.out, teacher=args.teacher, index=args.index, k=args.k, window=args.window,
        worst=args.worst, batch_size=args.batch_size, device=args.device,
    )  # fmt: skip
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m serving serve|drift ...``."""
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
