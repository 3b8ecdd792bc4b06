"""How the teacher's batches are formed, and how fast each way runs: texts a batch against padded tokens a batch.

    python -m benchmarks.teacher_batches --teacher TEACHER --corpus DATA/train/*.jsonl ... --max-per-source 15000 \\
        --every 24 --settings 64 32 16 2048t 1024t --out experiments/results/teacher-batches

Every teacher pass (vocabulary, targets, contextual tables) sorts its texts by length and cuts batches of at most
``--batch-size`` texts and ``--max-batch-tokens`` padded tokens. A setting ``N`` is N texts a batch with no token
bound (how the passes ran before the bound); ``Nt`` is at most N padded tokens and 256 texts. Each setting encodes
the same sample of the corpus (every ``--every``-th text, read as ``targets build`` reads it) after a warm-up
batch. Reported: seconds, texts/s, the speed-up over the first setting, and the largest difference of an
embedding from the first setting's. Writes ``teacher_batches.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np

from .reporting import markdown_table, write_results

HEADER = ("batches of", "texts", "tokens", "seconds", "texts/s", "speed-up", "max difference")
UNBOUNDED = 1 << 30
TEXTS_WITH_A_TOKEN_BOUND = 256


def parse_setting(setting: str) -> tuple[int, int]:
    """``"64"`` → (64 texts, no token bound); ``"2048t"`` → (256 texts, 2,048 tokens)."""
    try:
        value = int(setting[:-1] if setting.endswith("t") else setting)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"a setting is a positive number of texts (64) or of tokens (2048t), got {setting!r}")
    return (TEXTS_WITH_A_TOKEN_BOUND, value) if setting.endswith("t") else (value, UNBOUNDED)


def describe(setting: str) -> str:
    texts, tokens = parse_setting(setting)
    return f"{texts} texts" if tokens == UNBOUNDED else f"{tokens:,} tokens, ≤ {texts} texts"


def sample_texts(corpus: Sequence[str], max_per_source: int | None, every: int) -> list[str]:
    """Every ``every``-th text of the corpus, read as ``targets build`` reads it."""
    from bertapprox_hf.pipeline.corpus import iter_records

    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    records = iter_records(list(corpus), max_per_source=max_per_source)
    texts = [record["text"] for index, record in enumerate(records) if index % every == 0]
    if not texts:
        raise ValueError(f"{list(corpus)} hold no texts")
    return texts


def measure(teacher_path: str, texts: list[str], settings: Sequence[str], device: str) -> list[dict]:
    """One row per setting, in order; differences are from the first setting's embeddings."""
    from bertapprox_hf.pipeline.teacher import Teacher

    teacher = Teacher.from_pretrained(teacher_path, device=device)
    encoded = teacher.tokenizer(texts, truncation=True, max_length=teacher.pooling.max_length)
    tokens = sum(len(ids) for ids in encoded["input_ids"])
    rows, reference = [], None
    for setting in settings:
        batch_size, teacher.max_batch_tokens = parse_setting(setting)
        teacher.encode(texts[:batch_size], batch_size=batch_size)  # warm-up
        start = time.perf_counter()
        embeddings = teacher.encode(texts, batch_size=batch_size)
        seconds = time.perf_counter() - start
        reference = embeddings if reference is None else reference
        rows.append(
            {
                "setting": setting,
                "batches_of": describe(setting),
                "texts": len(texts),
                "tokens": tokens,
                "seconds": seconds,
                "texts_per_s": len(texts) / seconds,
                "max_difference": float(np.abs(embeddings - reference).max()),
            }
        )
    for row in rows:
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    return rows


def table(rows: Sequence[dict]) -> str:
    cells = [
        [r["batches_of"], f"{r['texts']:,}", f"{r['tokens']:,}", f"{r['seconds']:.1f}", f"{r['texts_per_s']:.1f}",
         f"{r['speedup']:.2f}×", f"{r['max_difference']:.1e}"]
        for r in rows
    ]  # fmt: skip
    return markdown_table(HEADER, cells)


def plot(rows: Sequence[dict], path: str) -> bool:
    """Texts per second by setting; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.4))
    ax.bar([r["setting"] for r in rows], [r["texts_per_s"] for r in rows], color="#4c72b0")
    ax.set_ylabel("texts/s")
    ax.set_xlabel("batches of N texts, or of N tokens (t)")
    ax.set_title("Teacher passes by batch shape")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    from .provenance import provenance

    parser = argparse.ArgumentParser(prog="python -m benchmarks.teacher_batches", description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="Hub id or local folder of the teacher")
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files, read as targets build reads them")
    parser.add_argument("--max-per-source", type=int, default=None, help="texts taken from each file at most")
    parser.add_argument("--every", type=int, default=24, help="encode every N-th text of the corpus (default 24)")
    parser.add_argument("--settings", nargs="+", default=["64", "2048t"], help="N texts, or Nt tokens, a batch")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/teacher-batches")
    args = parser.parse_args(argv)
    for setting in args.settings:
        parse_setting(setting)  # refuse a bad one before the teacher loads
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    texts = sample_texts(args.corpus, args.max_per_source, args.every)
    rows = measure(args.teacher, texts, args.settings, args.device)
    results = {"rows": rows, **provenance("python -m benchmarks.teacher_batches", argv)}
    write_results(args.out, "teacher_batches", results)
    markdown = table(rows)
    with open(os.path.join(args.out, "teacher_batches.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    plot(rows, os.path.join(args.out, "teacher_batches.png"))
    print(markdown)
    return results


if __name__ == "__main__":
    main()
