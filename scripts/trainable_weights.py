"""Move a trained student without its frozen entry table, and put it back together elsewhere.

The entry table is data (the teacher's embedding of each vocabulary entry): whoever holds the same
vocabulary can rebuild it, so a student travels as its trainable weights alone (a few MB instead of
~100 MB). Used to bring students trained on a lent GPU machine back (scripts/gpu_session.sh).

    python scripts/trainable_weights.py split RUN/best OUT/name --max-mb 15
        → OUT/name.part0.safetensors, OUT/name.part1.safetensors, ... and OUT/name.config.json
    python scripts/trainable_weights.py assemble OUT/name --vocab VOCAB --out MODEL_DIR \
        [--training RUN/best/training.json]
        → a complete student folder (save_pretrained) whose table is VOCAB's embeddings

``assemble`` checks that VOCAB has the entries the student was trained with (``split`` writes them and
their SHA-256 into the config), so a student is never paired with another vocabulary's table. The same
entries in another order (a vocabulary rebuilt on another machine) are accepted: the per-entry weights
(pooling bias, adapter) are moved to the vocabulary's order. For parts written before the entries were
recorded, ``--trained-entries`` names the training vocabulary's ``vocabulary.json`` or ``vocab.txt``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

TABLE_KEY = "entry_table.weight"


def entries_digest(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()


def split(model_dir: str, prefix: str, max_mb: float) -> list[str]:
    """Write the student's weights minus its table in parts of at most ``max_mb`` MB, and its config."""
    from bertapprox_hf.tokenization_bertapprox import load_entries

    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    weights.pop(TABLE_KEY)
    parts: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(weights):
        tensor = weights[name].contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if parts[-1] and size + nbytes > max_mb * 1e6:
            parts.append({})
            size = 0
        parts[-1][name] = tensor
        size += nbytes
    written = []
    for index, part in enumerate(parts):
        path = f"{prefix}.part{index}.safetensors"
        save_file(part, path)
        written.append(path)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    entries = load_entries(os.path.join(model_dir, "vocab.txt"))
    config["_entries_sha256"] = entries_digest(entries)
    config["_entries"] = entries
    with open(f"{prefix}.config.json", "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1)
    return written


def read_entries(path: str) -> list[str]:
    """Entries of a vocabulary: its ``vocabulary.json`` (or the folder holding it) or a ``vocab.txt``."""
    from bertapprox_hf.tokenization_bertapprox import load_entries

    if os.path.isdir(path):
        path = os.path.join(path, "vocabulary.json")
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            return list(json.load(handle)["entries"])
    return load_entries(path)


def entry_order(trained: list[str], expected: str, vocab_entries: list[str], vocab: str) -> torch.Tensor | None:
    """For each entry of the vocabulary, its index in the training order (None: the same order)."""
    if entries_digest(trained) != expected:
        raise SystemExit("the recorded entries do not match their SHA-256")
    if trained == vocab_entries:
        return None
    position = {entry: index for index, entry in enumerate(trained)}
    if len(trained) != len(vocab_entries) or any(entry not in position for entry in vocab_entries):
        raise SystemExit(f"{vocab} does not hold the entries this student was trained with")
    return torch.tensor([position[entry] for entry in vocab_entries])


def assemble(
    prefix: str, vocab: str, out: str, training: str | None = None, trained_entries: str | None = None
) -> None:
    """A complete student folder from the parts written by :func:`split` and a vocabulary folder."""
    from bertapprox_hf.configuration_bertapprox import BertApproxConfig
    from bertapprox_hf.modeling_bertapprox import BertApproxModel
    from bertapprox_hf.vocabulary import Vocabulary

    with open(f"{prefix}.config.json", encoding="utf-8") as handle:
        settings = json.load(handle)
    expected = settings.pop("_entries_sha256")
    trained = settings.pop("_entries", None)
    vocabulary = Vocabulary.load(vocab)
    vocab_entries = list(vocabulary.entries)
    if trained is None and trained_entries:
        trained = read_entries(trained_entries)
    if trained is None:  # parts written before the entries were recorded: the order must match too
        if entries_digest(vocab_entries) != expected:
            raise SystemExit(f"{vocab} does not hold the entries this student was trained with")
        order = None
    else:
        order = entry_order(trained, expected, vocab_entries, vocab)
    config = BertApproxConfig.from_dict(settings)
    model = BertApproxModel(config)
    weights = {}
    for path in sorted(glob.glob(f"{glob.escape(prefix)}.part*.safetensors")):
        weights.update(load_file(path))
    if order is not None:  # per-entry weights follow the vocabulary's order
        for name, tensor in weights.items():
            if tensor.dim() and tensor.shape[0] == config.vocab_size:
                weights[name] = tensor[order].contiguous()
    weights[TABLE_KEY] = torch.from_numpy(vocabulary.embeddings.astype("float32"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not fit the config: missing {missing}, unexpected {unexpected}")
    model.set_tokenizer(vocabulary.tokenizer())
    model.save_pretrained(out)
    if training:
        shutil.copy(training, os.path.join(out, "training.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split")
    s.add_argument("model_dir")
    s.add_argument("prefix")
    s.add_argument("--max-mb", type=float, default=15.0)
    a = sub.add_parser("assemble")
    a.add_argument("prefix")
    a.add_argument("--vocab", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--training", default=None, help="a training.json to copy into the folder")
    a.add_argument("--trained-entries", default=None, help="the training vocabulary (parts without entries)")
    args = parser.parse_args(argv)
    if args.command == "split":
        for path in split(args.model_dir, args.prefix, args.max_mb):
            print(path)
    else:
        assemble(args.prefix, args.vocab, args.out, args.training, args.trained_entries)
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
