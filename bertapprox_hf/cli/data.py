"""The offline pipeline's commands: ``vocab``, ``targets`` and ``candidates``."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
from dataclasses import fields

from ..pipeline.vocab_adapt import add_commands as add_vocab_adapt
from ..pipeline.vocab_builder import VocabularyConfig
from .common import add_teacher_pass_options, build_on_every_process, distributed_state, load_teacher


def _add_vocab_build(sub) -> None:
    parser = sub.add_parser("build", help="mine a vocabulary from a corpus and embed it with the teacher")
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders of them")
    parser.add_argument("--teacher", default=None, help="Hub id or local folder of the teacher")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-per-source", type=int, default=None, help="texts taken from each file at most")
    parser.add_argument("--max-texts", type=int, default=None, help="texts taken in all at most")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    add_teacher_pass_options(parser)
    defaults = VocabularyConfig()
    for field in fields(VocabularyConfig):
        kind = type(getattr(defaults, field.name))
        option = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=getattr(defaults, field.name))
        else:
            parser.add_argument(option, type=kind, default=getattr(defaults, field.name))
    parser.set_defaults(handler=_vocab_build)


def _vocab_build(args) -> int:
    from ..pipeline.corpus import expand_paths
    from ..pipeline.teacher import DEFAULT_TEACHER
    from ..pipeline.vocab_builder import build_vocabulary

    config = VocabularyConfig(**{f.name: getattr(args, f.name) for f in fields(VocabularyConfig)})
    expand_paths(args.corpus)  # fail on a missing corpus before loading the teacher
    teacher = load_teacher(args, args.teacher or DEFAULT_TEACHER, args.device)
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
        "training texts of a targets folder or corpus (bertapprox_hf.pipeline.contextual)",
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
    parser.add_argument("--batch-size", type=int, default=256, help="texts a teacher batch holds at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--save-targets",
        default=None,
        help="also write the teacher's embeddings of the texts read as a targets folder, for targets build --reuse "
        "(the demo's targets then need no second teacher pass over them)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    add_teacher_pass_options(parser)
    parser.set_defaults(handler=_vocab_contextualize)


def _vocab_contextualize(args) -> int:
    import numpy as np

    from ..pipeline.contextual import contextualize
    from ..pipeline.targets import load_targets, targets_columns, write_targets
    from ..pipeline.vocabulary import Vocabulary
    from ..training.data import is_training

    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    vocabulary = Vocabulary.load(args.vocab)
    if args.targets:
        ids, texts, _ = targets_columns(load_targets(args.targets))
    else:
        from ..pipeline.corpus import iter_records

        records = list(iter_records(args.corpus, max_per_source=args.max_per_source))
        ids, texts = [r["id"] for r in records], [r["text"] for r in records]
    training = np.flatnonzero([is_training(record_id, args.val_fraction) for record_id in ids])
    if args.max_texts is not None and args.max_texts < len(training):
        training = np.sort(np.random.default_rng(args.seed).choice(training, args.max_texts, replace=False))
    teacher_name = args.teacher or vocabulary.metadata.get("teacher", {}).get("name_or_path")
    if not teacher_name:
        raise ValueError(f"{args.vocab} names no teacher; pass --teacher")
    teacher = load_teacher(args, teacher_name, args.device)
    read = [texts[i] for i in training]
    embeddings = np.zeros((len(read), teacher.dim), dtype=np.float32) if args.save_targets else None
    result = contextualize(
        vocabulary,
        teacher,
        read,
        args.prior,
        args.batch_size,
        show_progress_bar=True,
        keep_isolated=args.keep_isolated,
        embeddings_out=embeddings,
    )
    record = {"source": os.path.abspath(args.vocab), "val_fraction": args.val_fraction}
    if args.targets:
        record["targets"] = list(args.targets)
    else:
        record["corpus"] = {"sources": list(args.corpus), "max_per_source": args.max_per_source}
    result.metadata["table"].update(record)
    result.save(args.out)
    if args.save_targets:
        sample = {"texts_of": record.get("targets") or record["corpus"], "val_fraction": args.val_fraction}
        sample.update(max_texts=args.max_texts, seed=args.seed)
        records = [{"id": ids[i], "text": texts[i]} for i in training]
        write_targets(args.save_targets, records, embeddings, teacher, {"contextual_table_sample": sample})
    print(json.dumps({"out": args.out, **result.metadata["table"]}, indent=1))
    return 0


def _vocab_info(args) -> int:
    from ..pipeline.vocabulary import Vocabulary

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
    parser.add_argument("--batch-size", type=int, default=256, help="texts a teacher batch holds at most")
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=(),
        metavar="TARGETS",
        help="finished targets folders of the same teacher and precision (e.g. vocab contextualize --save-targets): "
        "a record found there with the same id and text is copied, not encoded again",
    )
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
    add_teacher_pass_options(parser)
    parser.set_defaults(handler=_targets_build)


def _targets_build(args) -> int:
    from ..pipeline.corpus import expand_paths
    from ..pipeline.targets import build_targets, finalize_targets
    from ..pipeline.teacher import DEFAULT_TEACHER

    expand_paths(args.corpus)  # fail on a missing corpus before loading the teacher
    state = distributed_state(args.device)
    index, count = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = args.device
    if state is not None and (device is None or (count > 1 and device != "cpu")):
        device = str(state.device)  # each process on its own accelerator
    if count > 1:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    teacher = load_teacher(args, args.teacher or DEFAULT_TEACHER, device)
    build = functools.partial(
        build_targets,
        args.corpus,
        teacher,
        args.out,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        process_index=index,
        num_processes=count,
        reuse=args.reuse,
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
    manifest = build_on_every_process(state, build, functools.partial(finalize_targets, args.out))
    if index == 0:
        summary = {key: manifest[key] for key in ("num_shards", "num_records", "shard_size")}
        print(json.dumps({"out": args.out, **summary, "processes": count, "teacher": teacher.name_or_path}))
    return 0


def _targets_info(args) -> int:
    from ..pipeline.targets import read_manifest

    print(json.dumps(read_manifest(args.folder), indent=1, default=str))
    return 0


def _add_candidates_build(sub) -> None:
    from ..pipeline.candidates import MiningConfig

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
    parser.set_defaults(handler=_candidates_build)


def _candidates_build(args) -> int:
    from ..pipeline.candidates import MiningConfig, build_candidates, finalize_candidates

    config = MiningConfig(
        k=args.k, query_max_words=args.query_max_words, doc_min_words=args.doc_min_words,
        val_fraction=args.val_fraction, shard_size=args.shard_size,
    )  # fmt: skip
    state = distributed_state("cpu") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    index, count = (state.process_index, state.num_processes) if state is not None else (0, 1)
    build = functools.partial(build_candidates, args.queries, args.documents, args.out, config, index, count)
    manifest = build_on_every_process(state, build, functools.partial(finalize_candidates, args.out))
    if index == 0:
        keys = ("num_queries", "num_documents", "k", "num_shards")
        print(json.dumps({"out": args.out, **{key: manifest[key] for key in keys}, "processes": count}))
    return 0


def add_commands(commands) -> None:
    """``vocab``, ``targets`` and ``candidates``: the offline pipeline's commands."""
    vocab = commands.add_parser("vocab", help="vocabularies").add_subparsers(dest="action", required=True)
    _add_vocab_build(vocab)
    _add_vocab_contextualize(vocab)
    add_vocab_adapt(vocab)
    info = vocab.add_parser("info", help="print a vocabulary's record")
    info.add_argument("folder")
    info.set_defaults(handler=_vocab_info)

    targets = commands.add_parser("targets", help="precomputed teacher embeddings of a corpus").add_subparsers(
        dest="action", required=True
    )
    _add_targets_build(targets)
    info = targets.add_parser("info", help="print a targets folder's manifest")
    info.add_argument("folder")
    info.set_defaults(handler=_targets_info)

    candidates = commands.add_parser(
        "candidates", help="teacher-ranked documents of training queries (ranking distillation)"
    ).add_subparsers(dest="action", required=True)
    _add_candidates_build(candidates)
