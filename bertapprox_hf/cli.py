"""The ``bertapprox`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields

from .vocab_builder import VocabularyConfig


def _add_vocab_build(sub) -> None:
    parser = sub.add_parser("build", help="mine a vocabulary from a corpus and embed it with the teacher")
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files or folders of them")
    parser.add_argument("--teacher", default=None, help="Hub id or local folder of the teacher")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-per-source", type=int, default=None, help="texts taken from each file at most")
    parser.add_argument("--max-texts", type=int, default=None, help="texts taken in all at most")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
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
    teacher = Teacher.from_pretrained(args.teacher or DEFAULT_TEACHER, device=args.device)
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
    parser.add_argument("--max-texts", type=int, default=None, help="texts taken in all at most")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: this process's accelerator)")


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
    try:
        teacher = Teacher.from_pretrained(args.teacher or DEFAULT_TEACHER, device=device)
        manifest = build_targets(
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
                "max_texts": args.max_texts,
            },
            max_per_source=args.max_per_source,
            max_records=args.max_texts,
        )
        if count > 1:
            state.wait_for_everyone()
            if index == 0:
                manifest = finalize_targets(args.out)
            state.wait_for_everyone()
    finally:
        if count > 1:
            state.destroy_process_group()
    if index == 0:
        summary = {key: manifest[key] for key in ("num_shards", "num_records", "shard_size")}
        print(json.dumps({"out": args.out, **summary, "processes": count, "teacher": teacher.name_or_path}))
    return 0


def _targets_info(args) -> int:
    from .targets import read_manifest

    print(json.dumps(read_manifest(args.folder), indent=1, default=str))
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
    from .modeling_bertapprox import BertApproxModel

    model = BertApproxModel.from_pretrained(args.folder)
    info = {
        "trainable_parameters": model.num_parameters(only_trainable=True),
        "entry_table": list(model.entry_table.weight.shape),
        "config": model.config.to_diff_dict(),
    }
    print(json.dumps(info, indent=1, default=str))
    return 0


def _encode(args) -> int:
    from .modeling_bertapprox import BertApproxModel

    model = BertApproxModel.from_pretrained(args.model)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    tokenizer = model.get_tokenizer()
    for text, row in zip(texts, model.encode(texts), strict=True):
        print(
            json.dumps({"text": text, "bag": tokenizer.tokenize(text), "embedding": [round(float(x), 6) for x in row]})
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertapprox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    vocab = commands.add_parser("vocab", help="vocabularies").add_subparsers(dest="action", required=True)
    _add_vocab_build(vocab)
    vocab.add_parser("info", help="print a vocabulary's record").add_argument("folder")

    targets = commands.add_parser("targets", help="precomputed teacher embeddings of a corpus").add_subparsers(
        dest="action", required=True
    )
    _add_targets_build(targets)
    targets.add_parser("info", help="print a targets folder's manifest").add_argument("folder")

    model = commands.add_parser("model", help="student models").add_subparsers(dest="action", required=True)
    _add_model_init(model)
    model.add_parser("info", help="print a model's size and config").add_argument("folder")

    encode = commands.add_parser("encode", help="print the bag and embedding of texts (arguments or stdin)")
    encode.add_argument("--model", required=True)
    encode.add_argument("text", nargs="*")
    return parser


HANDLERS = {
    ("vocab", "build"): _vocab_build,
    ("vocab", "info"): _vocab_info,
    ("targets", "build"): _targets_build,
    ("targets", "info"): _targets_info,
    ("model", "init"): _model_init,
    ("model", "info"): _model_info,
    ("encode", None): _encode,
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
