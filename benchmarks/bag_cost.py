"""What a lever between entries costs the fast ``Encoder`` per bag size: random-weight students, bags of ids.

    python -m benchmarks.bag_cost --bag-sizes 8 32 128 512 --threads 1 --out results/bag-cost

Each variant is a student of the demo recipe's widths (``--vocab-size`` entries of ``--embedding-dim``, hidden
``--hidden-size``, inner 1,024, 8 heads, one φ and one ρ block) with random weights, plus the variant's keys:
``plain``, ``context`` (one context block, as ``experiments/configs/context.yaml``) and ``selfattn`` (one
self-attention layer, MLP inner 512, as ``experiments/configs/selfattn.yaml``). For every bag size, each repeat
times every variant's ``Encoder.embed_bags`` (float32: pooling and ρ, no tokenizer, no cache) over the same
``--batches`` batches of ``--batch-size`` random bags of exactly that size, variants in a rotated order; the figure
is the best repeat (the least disturbed by other processes), in microseconds per bag. Writes ``bag_cost.json`` and
``bag_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from bertapprox_hf import BertApproxConfig, BertApproxModel, Encoder
from bertapprox_hf.model.tokenization_bertapprox import BertApproxTokenizer

from .reporting import markdown_table

PROG = "python -m benchmarks.bag_cost"
VARIANTS: dict[str, dict] = {
    "plain": {},
    "context": {"context_layers": 1},
    "selfattn": {"self_attention_layers": 1, "self_attention_intermediate_size": 512},
}


def random_student(
    variant: dict, vocab_size: int, embedding_dim: int, hidden_size: int, seed: int = 0
) -> tuple[Encoder, int]:
    """A float32 CPU ``Encoder`` of a student with random weights (every branch nonzero) and a stand-in tokenizer,
    and the student's trainable parameters."""
    torch.manual_seed(seed)
    config = BertApproxConfig(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_size=hidden_size,
                              output_dim=hidden_size, intermediate_size=1024, num_heads=8, **variant)  # fmt: skip
    model = BertApproxModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05)
    entries = ["[PAD]", "[UNK]", *(f"e{i}" for i in range(vocab_size - 2))]
    model.set_tokenizer(BertApproxTokenizer.from_entries(entries))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Encoder.from_pretrained(model, device="cpu", cache_size=0), trainable


def time_variants(
    encoders: dict[str, Encoder], bag_size: int, batch_size: int, batches: int, repeats: int, seed: int = 0
) -> dict[str, float]:
    """Best-of-``repeats`` microseconds per bag of each encoder on the same random bags of ``bag_size`` ids."""
    rng = np.random.default_rng(seed)
    vocab = next(iter(encoders.values())).vocab_size
    bags = rng.integers(1, vocab, size=(batches * batch_size, bag_size)).tolist()
    names = list(encoders)
    for encoder in encoders.values():  # warm-up: allocations, first-call paths
        encoder.embed_bags(bags[:batch_size], batch_size=batch_size)
    best = {name: float("inf") for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            started = time.perf_counter()
            encoders[name].embed_bags(bags, batch_size=batch_size)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: seconds / len(bags) * 1e6 for name, seconds in best.items()}


def to_markdown(result: dict) -> str:
    names = list(result["variants"])
    rows = []
    for size, row in zip(result["bag_sizes"], result["us_per_bag"], strict=True):
        base = row["plain"] if "plain" in row else None
        cells = [str(size)]
        for name in names:
            ratio = f" ({row[name] / base:.2f}×)" if base and name != "plain" else ""
            cells.append(f"{row[name]:,.0f}{ratio}")
        rows.append(cells)
    header = ["entries a bag", *(f"{name} µs/bag" for name in names)]
    params = ", ".join(f"{name} {result['trainable_parameters'][name]:,}" for name in names)
    return (
        markdown_table(header, rows)
        + f"\nTrainable parameters ({result['vocab_size']:,} entries): {params}. "
        + f"Batch {result['batch_size']}, {result['threads']} thread(s), best of {result['repeats']}.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--bag-sizes", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4, help="batches timed per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--embedding-dim", type=int, default=768)
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--out", help="folder for bag_cost.json and bag_cost.md (default: print only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = (args.vocab_size, args.embedding_dim, args.hidden_size)
    built = {name: random_student(VARIANTS[name], *widths) for name in args.variants}
    encoders = {name: encoder for name, (encoder, _) in built.items()}
    result = {
        "variants": {name: VARIANTS[name] for name in args.variants},
        "trainable_parameters": {name: trainable for name, (_, trainable) in built.items()},
        "vocab_size": args.vocab_size,
        "embedding_dim": args.embedding_dim,
        "hidden_size": args.hidden_size,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "bag_sizes": args.bag_sizes,
        "us_per_bag": [],
    }
    for size in args.bag_sizes:
        result["us_per_bag"].append(time_variants(encoders, size, args.batch_size, args.batches, args.repeats))
        print(size, {name: round(value, 1) for name, value in result["us_per_bag"][-1].items()}, flush=True)
    table = to_markdown(result)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bag_cost.json"), "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        with open(os.path.join(args.out, "bag_cost.md"), "w", encoding="utf-8") as handle:
            handle.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
