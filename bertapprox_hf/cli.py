"""The ``bertapprox`` command line."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields

from .vocab_builder import VocabularyConfig


def _add_mixed_precision(parser) -> None:
    """The teacher's ``--mixed-precision`` (its forward pass under autocast)."""
    from .precision import PRECISIONS

    parser.add_argument(
        "--mixed-precision",
        choices=PRECISIONS,
        default="no",
        help="run the teacher under autocast: bf16 is 1.8-2.2x as fast on a CPU with AVX-512 BF16, embeddings "
        "within 1e-4 cosine of float32's; auto: bf16 on a GPU that has it, else no (default: no, float32)",
    )


def _add_vocab_build(sub) -> None:
    parser = sub.add_parser("build", help="mine a vocabulary from a corpus and embed it with the teacher")
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders of them")
    parser.add_argument("--teacher", default=None, help="Hub id or local folder of the teacher")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-per-source", type=int, default=None, help="texts taken from each file at most")
    parser.add_argument("--max-texts", type=int, default=None, help="texts taken in all at most")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    _add_mixed_precision(parser)
    defaults = VocabularyConfig()
    for field in fields(VocabularyConfig):
        kind = type(getattr(defaults, field.name))
        option = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=getattr(defaults, field.name))
        else:
            parser.add_argument(option, type=kind, default=getattr(defaults, field.name))


def _vocab_build(args) -> int:
    from .corpus import expand_paths
    from .teacher import DEFAULT_TEACHER, Teacher
    from .vocab_builder import build_vocabulary

    config = VocabularyConfig(**{f.name: getattr(args, f.name) for f in fields(VocabularyConfig)})
    expand_paths(args.corpus)  # fail on a missing corpus before loading the teacher
    teacher = Teacher.from_pretrained(
        args.teacher or DEFAULT_TEACHER, device=args.device, mixed_precision=args.mixed_precision
    )
    vocabulary = build_vocabulary(
        args.corpus,
        teacher,
        config,
        cache_dir=f"{args.out}/.embedding-cache",
        corpus_description={"sources": args.corpus, "max_per_source": args.max_per_source},
        max_per_source=args.max_per_source,
        max_records=args.max_texts,
    )
    vocabulary.save(args.out)
    print(json.dumps({"out": args.out, **vocabulary.metadata["stats"]}, indent=1))
    return 0


def _add_vocab_contextualize(sub) -> None:
    parser = sub.add_parser(
        "contextualize",
        help="a copy of a vocabulary whose table holds the teacher's token states of each entry inside the "
        "training texts of a targets folder or corpus (bertapprox_hf.contextual)",
    )
    parser.add_argument("--vocab", required=True, help="vocabulary folder")
    texts = parser.add_mutually_exclusive_group(required=True)
    texts.add_argument("--targets", nargs="+", help="targets folders whose training texts are read")
    texts.add_argument(
        "--corpus", nargs="+", help="or the corpus itself (jsonl files): the same texts as its targets folder"
    )
    parser.add_argument("--max-per-source", type=int, default=None, help="with --corpus: as targets build took it")
    parser.add_argument("--out", required=True, help="output vocabulary folder")
    parser.add_argument("--teacher", default=None, help="the teacher (default: the one the vocabulary names)")
    parser.add_argument(
        "--val-fraction", type=float, default=0.02, help="the training run's data.val_fraction: its texts stay out"
    )
    parser.add_argument("--max-texts", type=int, default=None, help="training texts read at most (a seeded sample)")
    parser.add_argument("--prior", type=float, default=2.0, help="occurrences' worth of the linear fallback")
    parser.add_argument(
        "--keep-isolated", action="store_true", help="keep the isolated embeddings beside the contextual ones"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    _add_mixed_precision(parser)


def _vocab_contextualize(args) -> int:
    import numpy as np

    from .contextual import contextualize
    from .targets import load_targets, targets_columns
    from .teacher import Teacher
    from .training.data import is_training
    from .vocabulary import Vocabulary

    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    vocabulary = Vocabulary.load(args.vocab)
    if args.targets:
        ids, texts, _ = targets_columns(load_targets(args.targets))
    else:
        from .corpus import iter_records

        records = list(iter_records(args.corpus, max_per_source=args.max_per_source))
        ids, texts = [r["id"] for r in records], [r["text"] for r in records]
    training = np.flatnonzero([is_training(record_id, args.val_fraction) for record_id in ids])
    if args.max_texts is not None and args.max_texts < len(training):
        training = np.sort(np.random.default_rng(args.seed).choice(training, args.max_texts, replace=False))
    teacher_name = args.teacher or vocabulary.metadata.get("teacher", {}).get("name_or_path")
    if not teacher_name:
        raise ValueError(f"{args.vocab} names no teacher; pass --teacher")
    teacher = Teacher.from_pretrained(teacher_name, device=args.device, mixed_precision=args.mixed_precision)
    result = contextualize(
        vocabulary,
        teacher,
        [texts[i] for i in training],
        args.prior,
        args.batch_size,
        show_progress_bar=True,
        keep_isolated=args.keep_isolated,
    )
    record = {"source": os.path.abspath(args.vocab), "val_fraction": args.val_fraction}
    if args.targets:
        record["targets"] = list(args.targets)
    else:
        record["corpus"] = {"sources": list(args.corpus), "max_per_source": args.max_per_source}
    result.metadata["table"].update(record)
    result.save(args.out)
    print(json.dumps({"out": args.out, **result.metadata["table"]}, indent=1))
    return 0


def _vocab_info(args) -> int:
    from .vocabulary import Vocabulary

    vocabulary = Vocabulary.load(args.folder)
    info = {k: v for k, v in vocabulary.metadata.items()}
    info["kinds"] = vocabulary.kind_counts()
    info["dim"] = vocabulary.dim
    print(json.dumps(info, indent=1, default=str))
    return 0


def _add_targets_build(sub) -> None:
    parser = sub.add_parser(
        "build",
        help="encode a corpus with the teacher into parquet shards (resumable; several processes "
        "under torchrun / accelerate launch share the shards)",
    )
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders of them")
    parser.add_argument("--teacher", default=None, help="Hub id or local folder of the teacher")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--shard-size", type=int, default=4096, help="records a shard")
    parser.add_argument("--batch-size", type=int, default=64, help="teacher batch size")
    parser.add_argument("--max-per-source", type=int, default=None, help="texts taken from each file at most")
    parser.add_argument(
        "--skip-per-source", type=int, default=0, help="skip the first texts of each file (to extend an earlier set)"
    )
    parser.add_argument("--max-texts", type=int, default=None, help="texts taken in all at most")
    parser.add_argument(
        "--crops",
        type=int,
        default=0,
        help="instead of the texts, this many crops (random runs of words) of each long text: more passage-like "
        "training texts (see bertapprox_hf/crops.py)",
    )
    parser.add_argument("--crop-min-words", type=int, default=41, help="texts shorter than this give no crops")
    parser.add_argument(
        "--first-crop",
        type=int,
        default=0,
        help="number of the first crop of each text: 1 adds crops to a set made with --crops 1 without redoing it",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: this process's accelerator)")
    _add_mixed_precision(parser)


def _distributed_state(device: str | None):
    """accelerate's ``PartialState`` (one per process under torchrun / accelerate launch), or None without it."""
    try:
        from accelerate import PartialState
    except ImportError:
        return None
    import torch

    # Without cpu=True, accelerate treats torchrun processes on a machine without an accelerator as unrelated
    # single processes (which would all write the same shards).
    accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    state = PartialState(cpu=device == "cpu" or (device is None and not accelerator))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise ValueError(
            f"{launched} processes were launched but accelerate set up {state.num_processes} "
            f"({state.distributed_type}); pass --device cpu or launch on a machine with one accelerator a process"
        )
    return state


def _build_on_every_process(state, build: Callable[[], dict], finalize: Callable[[], dict]) -> dict:
    """Run ``build`` in this process; with several processes, ``finalize`` on process 0 once all have built.
    Returns the manifest (complete on process 0)."""
    several = state is not None and state.num_processes > 1
    try:
        manifest = build()
        if several:
            state.wait_for_everyone()
            if state.process_index == 0:
                manifest = finalize()
            state.wait_for_everyone()
    finally:
        if several:
            state.destroy_process_group()
    return manifest


def _targets_build(args) -> int:
    from .corpus import expand_paths
    from .targets import build_targets, finalize_targets
    from .teacher import DEFAULT_TEACHER, Teacher

    expand_paths(args.corpus)  # fail on a missing corpus before loading the teacher
    state = _distributed_state(args.device)
    index, count = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = args.device
    if state is not None and (device is None or (count > 1 and device != "cpu")):
        device = str(state.device)  # each process on its own accelerator
    if count > 1:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    teacher = Teacher.from_pretrained(
        args.teacher or DEFAULT_TEACHER, device=device, mixed_precision=args.mixed_precision
    )
    build = functools.partial(
        build_targets,
        args.corpus,
        teacher,
        args.out,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        process_index=index,
        num_processes=count,
        corpus_description={
            "sources": args.corpus,
            "max_per_source": args.max_per_source,
            "skip_per_source": args.skip_per_source,
            "max_texts": args.max_texts,
            **(
                {"crops_per_text": args.crops, "crop_min_words": args.crop_min_words, "first_crop": args.first_crop}
                if args.crops
                else {}
            ),
        },
        max_per_source=args.max_per_source,
        skip_per_source=args.skip_per_source,
        max_records=args.max_texts,
        crops_per_text=args.crops,
        crop_min_words=args.crop_min_words,
        first_crop=args.first_crop,
    )
    manifest = _build_on_every_process(state, build, functools.partial(finalize_targets, args.out))
    if index == 0:
        summary = {key: manifest[key] for key in ("num_shards", "num_records", "shard_size")}
        print(json.dumps({"out": args.out, **summary, "processes": count, "teacher": teacher.name_or_path}))
    return 0


def _targets_info(args) -> int:
    from .targets import read_manifest

    print(json.dumps(read_manifest(args.folder), indent=1, default=str))
    return 0


def _add_candidates_build(sub) -> None:
    from .candidates import MiningConfig

    defaults = MiningConfig()
    parser = sub.add_parser(
        "build",
        help="mine each query-like training text's top-k documents by the teacher's embedding (ranking distillation)",
        description="Searches the teacher's embeddings of the queries (records of at most --query-max-words words) "
        "over those of the documents (training records of at least --doc-min-words words) with Faiss. Reads "
        "targets folders; no teacher pass. Resumable; data-parallel under torchrun like targets build.",
    )
    parser.add_argument("--queries", nargs="+", required=True, help="targets folders whose short records are queries")
    parser.add_argument(
        "--documents", nargs="+", required=True, help="targets folders whose long records are documents"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--k", type=int, default=defaults.k, help="candidates kept per query")
    parser.add_argument("--query-max-words", type=int, default=defaults.query_max_words)
    parser.add_argument("--doc-min-words", type=int, default=defaults.doc_min_words)
    parser.add_argument(
        "--val-fraction", type=float, default=defaults.val_fraction, help="the training's data.val_fraction"
    )
    parser.add_argument("--shard-size", type=int, default=defaults.shard_size, help="queries a shard")


def _candidates_build(args) -> int:
    from .candidates import MiningConfig, build_candidates, finalize_candidates

    config = MiningConfig(
        k=args.k, query_max_words=args.query_max_words, doc_min_words=args.doc_min_words,
        val_fraction=args.val_fraction, shard_size=args.shard_size,
    )  # fmt: skip
    state = _distributed_state("cpu") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    index, count = (state.process_index, state.num_processes) if state is not None else (0, 1)
    build = functools.partial(build_candidates, args.queries, args.documents, args.out, config, index, count)
    manifest = _build_on_every_process(state, build, functools.partial(finalize_candidates, args.out))
    if index == 0:
        keys = ("num_queries", "num_documents", "k", "num_shards")
        print(json.dumps({"out": args.out, **{key: manifest[key] for key in keys}, "processes": count}))
    return 0


def _add_model_strip_restore(sub) -> None:
    strip = sub.add_parser(
        "strip",
        help="write a student without its entry table (a few MB; restore it with 'model restore')",
        description="Writes the trainable weights, the config, the trained entries and a check of the embeddings; "
        "the entry table is rebuilt from a vocabulary by 'bertapprox model restore'.",
    )
    strip.add_argument("folder", help="a saved student (RUN/best)")
    strip.add_argument("--out", required=True, help="output folder")
    strip.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="the weights' precision")
    restore = sub.add_parser(
        "restore", help="rebuild a complete student from a stripped one and a vocabulary, and check it"
    )
    restore.add_argument("folder", help="a folder written by 'bertapprox model strip'")
    restore.add_argument("--vocab", required=True, help="the vocabulary folder the student was trained on")
    restore.add_argument("--out", required=True, help="output folder (loads with AutoModel)")


def _model_strip(args) -> int:
    from .stripped import strip_student

    print(json.dumps(strip_student(args.folder, args.out, args.dtype)))
    return 0


def _model_restore(args) -> int:
    from .stripped import restore_student

    print(json.dumps(restore_student(args.folder, args.vocab, args.out)))
    return 0


def _add_model_init(sub) -> None:
    parser = sub.add_parser("init", help="make an untrained student from a vocabulary and save it")
    parser.add_argument("--vocab", required=True, help="vocabulary folder")
    parser.add_argument("--out", required=True, help="output folder (loads with AutoModel)")
    for name, kind in (
        ("hidden-size", int),
        ("intermediate-size", int),
        ("num-heads", int),
        ("phi-layers", int),
        ("rho-layers", int),
        ("dropout", float),
    ):
        parser.add_argument(f"--{name}", type=kind, default=None)


def _model_init(args) -> int:
    from .student import create_student
    from .vocabulary import Vocabulary

    overrides = {
        key: getattr(args, key)
        for key in ("hidden_size", "intermediate_size", "num_heads", "phi_layers", "rho_layers", "dropout")
        if getattr(args, key) is not None
    }
    model = create_student(Vocabulary.load(args.vocab), **overrides)
    model.save_pretrained(args.out)
    print(json.dumps({"out": args.out, "trainable_parameters": model.num_parameters(only_trainable=True)}))
    return 0


def _model_info(args) -> int:
    from .model.modeling_bertapprox import BertApproxModel

    model = BertApproxModel.from_pretrained(args.folder)
    info = {
        "trainable_parameters": model.num_parameters(only_trainable=True),
        "entry_table": list(model.entry_table.weight.shape),
        "config": model.config.to_diff_dict(),
    }
    print(json.dumps(info, indent=1, default=str))
    return 0


def _encode(args) -> int:
    from .model.modeling_bertapprox import BertApproxModel

    model = BertApproxModel.from_pretrained(args.model)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    tokenizer = model.get_tokenizer()
    for text, row in zip(texts, model.encode(texts), strict=True):
        print(
            json.dumps({"text": text, "bag": tokenizer.tokenize(text), "embedding": [round(float(x), 6) for x in row]})
        )
    return 0


# --- indexes, search and plugins (the ``index`` / ``pyserini`` extras) ------------------------------
def _add_index_commands(commands) -> None:
    plugins = commands.add_parser("plugins", help="indexer and benchmark plugins").add_subparsers(
        dest="action", required=True
    )
    listing = plugins.add_parser("list", help="print the plugins, their indexers and benchmarks, and failures")
    listing.add_argument("--json", action="store_true", help="print JSON")

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

    benchmark = commands.add_parser("benchmark", help="benchmarks provided by plugins").add_subparsers(
        dest="action", required=True
    )
    benchmark.add_parser("list", help="print the benchmarks the plugins provide")
    run = benchmark.add_parser("run", help="run a plugin's benchmark on a model")
    run.add_argument("name")
    run.add_argument("--model", required=True, help="model folder (student or teacher)")
    run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="options handed to the benchmark")
    run.add_argument("--out", default=None, help="also write the results to this JSON file")


def _plugin_manager():
    from plugins.manager import PluginManager

    return PluginManager()


def _plugins_list(args) -> int:
    manager = _plugin_manager()
    print(json.dumps(manager.report(), indent=1) if args.json else manager.format_report())
    return 0


def _index(args) -> int:
    from indexers.base import describe_encoder, encoder_dim
    from indexers.encoders import load_encoder

    from .corpus import expand_paths

    indexer = _plugin_manager().get_indexer(args.indexer)
    expand_paths(args.corpus)  # fail on a missing corpus before loading models
    queries = load_encoder(args.model, device=args.device, dtype=args.dtype, cache_size=0)  # documents: no cache
    documents = load_encoder(args.teacher, device=args.device) if args.teacher else queries
    if encoder_dim(documents) != encoder_dim(queries):
        raise ValueError(
            f"the teacher makes {encoder_dim(documents)}-d embeddings but the model {encoder_dim(queries)}-d: "
            "an asymmetric index needs the student of that teacher"
        )
    options = {key: value for key, value in (("factory", args.factory), ("train_size", args.train_size)) if value}
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
    query_ids, texts = read_queries(args.queries)
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
            print(f"bertapprox: error: {error} (pip install 'bertapprox-hf[index]' or '[pyserini]')", file=sys.stderr)
            return 2
        except JavaNotFoundError as error:
            print(f"bertapprox: error: {error}", file=sys.stderr)
            return 2

    return run


# --- export and Hub upload (the ``export`` extra for ONNX) ---------------------------------------------
def _add_export_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="export a student as a graph (bag ids → embedding), checked against PyTorch"
    ).add_subparsers(dest="action", required=True, metavar="{onnx,torchscript}")
    for name, text in (("onnx", "ONNX (onnxruntime)"), ("torchscript", "TorchScript (torch.jit)")):
        parser = export.add_parser(name, help=f"export to {text}; the tokenizer stays in Python")
        parser.add_argument("--model", required=True, help="student folder (save_pretrained)")
        parser.add_argument("--out", required=True, help="output folder (graph, config, tokenizer files, export.json)")
        parser.add_argument("--texts", default=None, help="check on these texts: .jsonl ('text' fields) or one a line")
        parser.add_argument("--max-texts", type=int, default=1000, help="check on at most this many texts")
        parser.add_argument("--tolerance", type=float, default=None, help="max |export − PyTorch| allowed (1e-5)")
        if name == "onnx":
            parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (int8 φ table)")
            parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")

    push = commands.add_parser("push", help="write the Hugging Face Hub folder (with model card) and upload it")
    push.add_argument("--model", required=True, help="student folder (save_pretrained)")
    push.add_argument("--repo-id", required=True, help="Hub model id, owner/name")
    push.add_argument("--results", default=None, help="benchmark results.json for the model card")
    push.add_argument("--training-report", default=None, help="training report.json (default: beside the model)")
    push.add_argument("--vocab", default=None, help="vocabulary folder (default: the one training.json names)")
    push.add_argument("--base-model", default=None, help="Hub id of the teacher (default: from the config)")
    push.add_argument("--license", default=None, help="license id for the card metadata, e.g. apache-2.0")
    push.add_argument("--out", default=None, help="write the Hub folder here (default: a temporary folder)")
    push.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--commit-message", default=None)
    push.add_argument("--dry-run", action="store_true", help="write the folder and list its files; no network")


def _export(args) -> int:
    from .export import TOLERANCE, export_model, read_texts

    options = {"tolerance": TOLERANCE if args.tolerance is None else args.tolerance}
    if args.texts:
        options["texts"] = read_texts(args.texts, args.max_texts)
    if args.action == "onnx":
        options.update(int8=args.int8, opset=args.opset)
    try:
        report = export_model(args.action, args.model, args.out, **options)
    except ImportError as error:
        print(f"bertapprox: error: {error} (pip install 'bertapprox-hf[export]')", file=sys.stderr)
        return 2
    summary = {key: report[key] for key in ("format", "graph", "tolerance", "passed", "bytes", "seconds")}
    summary.update(out=args.out, max_abs_diff=report["check"]["max_abs_diff"], texts=report["check"]["texts"])
    if "int8" in report:
        summary["int8_vs_float32"] = report["int8"]["vs_float32_onnx"]
    print(json.dumps(summary, indent=1))
    return 0


def _push(args) -> int:
    import tempfile

    from .hub import check_repo_id, push_folder, write_hub_folder

    check_repo_id(args.repo_id)
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"model folder not found: {args.model}")
    with tempfile.TemporaryDirectory(prefix="bertapprox-hub-") as scratch:
        folder = args.out or (tempfile.mkdtemp(prefix="bertapprox-hub-") if args.dry_run else scratch)
        files = write_hub_folder(
            args.model, folder, repo_id=args.repo_id, results=args.results, training_report=args.training_report,
            vocab_dir=args.vocab, base_model=args.base_model, license=args.license, overwrite=args.overwrite,
        )  # fmt: skip
        summary = {"repo_id": args.repo_id, "folder": folder, "dry_run": args.dry_run, "files": files}
        summary["total_bytes"] = sum(f["bytes"] for f in files)
        if not args.dry_run:
            summary["commit"] = push_folder(folder, args.repo_id, args.private, args.commit_message)
    print(json.dumps(summary, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertapprox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    vocab = commands.add_parser("vocab", help="vocabularies").add_subparsers(dest="action", required=True)
    _add_vocab_build(vocab)
    _add_vocab_contextualize(vocab)
    vocab.add_parser("info", help="print a vocabulary's record").add_argument("folder")

    targets = commands.add_parser("targets", help="precomputed teacher embeddings of a corpus").add_subparsers(
        dest="action", required=True
    )
    _add_targets_build(targets)
    targets.add_parser("info", help="print a targets folder's manifest").add_argument("folder")

    candidates = commands.add_parser(
        "candidates", help="teacher-ranked documents of training queries (ranking distillation)"
    ).add_subparsers(dest="action", required=True)
    _add_candidates_build(candidates)

    model = commands.add_parser("model", help="student models").add_subparsers(dest="action", required=True)
    _add_model_init(model)
    model.add_parser("info", help="print a model's size and config").add_argument("folder")
    _add_model_strip_restore(model)

    encode = commands.add_parser("encode", help="print the bag and embedding of texts (arguments or stdin)")
    encode.add_argument("--model", required=True)
    encode.add_argument("text", nargs="*")
    _add_index_commands(commands)
    _add_export_commands(commands)
    return parser


HANDLERS = {
    ("vocab", "build"): _vocab_build,
    ("vocab", "contextualize"): _vocab_contextualize,
    ("vocab", "info"): _vocab_info,
    ("targets", "build"): _targets_build,
    ("targets", "info"): _targets_info,
    ("candidates", "build"): _candidates_build,
    ("model", "init"): _model_init,
    ("model", "info"): _model_info,
    ("model", "strip"): _model_strip,
    ("model", "restore"): _model_restore,
    ("encode", None): _encode,
    ("plugins", "list"): _optional(_plugins_list),
    ("index", None): _optional(_index),
    ("search", None): _optional(_search),
    ("benchmark", "list"): _optional(_benchmark_list),
    ("benchmark", "run"): _optional(_benchmark_run),
    ("export", "onnx"): _export,
    ("export", "torchscript"): _export,
    ("push", None): _push,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = HANDLERS[(args.command, getattr(args, "action", None))]
    try:
        return handler(args)
    except (OSError, ValueError) as error:
        print(f"bertapprox: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
