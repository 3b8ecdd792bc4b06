"""The ``model`` commands (init, info, strip, restore) and ``encode``."""

from __future__ import annotations

import json
import sys


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
    strip.set_defaults(handler=_model_strip)
    restore = sub.add_parser(
        "restore", help="rebuild a complete student from a stripped one and a vocabulary, and check it"
    )
    restore.add_argument("folder", help="a folder written by 'bertapprox model strip'")
    restore.add_argument("--vocab", required=True, help="the vocabulary folder the student was trained on")
    restore.add_argument("--out", required=True, help="output folder (loads with AutoModel)")
    restore.set_defaults(handler=_model_restore)


def _model_strip(args) -> int:
    from ..hub.stripped import strip_student

    print(json.dumps(strip_student(args.folder, args.out, args.dtype)))
    return 0


def _model_restore(args) -> int:
    from ..hub.stripped import restore_student

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
    parser.set_defaults(handler=_model_init)


def _model_init(args) -> int:
    from ..pipeline.vocabulary import Vocabulary
    from ..training.student import create_student

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
    from ..model.modeling_bertapprox import BertApproxModel

    model = BertApproxModel.from_pretrained(args.folder)
    info = {
        "trainable_parameters": model.num_parameters(only_trainable=True),
        "entry_table": list(model.entry_table.weight.shape),
        "config": model.config.to_diff_dict(),
    }
    print(json.dumps(info, indent=1, default=str))
    return 0


def _encode(args) -> int:
    from ..model.modeling_bertapprox import BertApproxModel

    model = BertApproxModel.from_pretrained(args.model)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin]
    tokenizer = model.get_tokenizer()
    for text, row in zip(texts, model.encode(texts), strict=True):
        print(
            json.dumps({"text": text, "bag": tokenizer.tokenize(text), "embedding": [round(float(x), 6) for x in row]})
        )
    return 0


def add_commands(commands) -> None:
    """``model`` (init, info, strip, restore) and ``encode``."""
    model = commands.add_parser("model", help="student models").add_subparsers(dest="action", required=True)
    _add_model_init(model)
    info = model.add_parser("info", help="print a model's size and config")
    info.add_argument("folder")
    info.set_defaults(handler=_model_info)
    _add_model_strip_restore(model)

    encode = commands.add_parser("encode", help="print the bag and embedding of texts (arguments or stdin)")
    encode.add_argument("--model", required=True)
    encode.add_argument("text", nargs="*")
    encode.set_defaults(handler=_encode)
