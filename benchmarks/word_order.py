"""How much of the teacher's embedding survives without word order: a reference for bag models.

The student sees a text as a bag of entries (words, n-grams up to 3 words, skip-grams), so word order beyond
an entry is lost to it. To see what such input can support, the teacher itself encodes each text with its
words cut into chunks of ``k`` words and the chunks shuffled, ``orders`` times with different shuffles; the
mean of those embeddings is a permutation-invariant function of the text's chunks, scored against the
teacher's embedding of the intact text like the student is (cosine, pairwise Spearman per length bucket).
``python -m benchmarks.fidelity ... --word-order 1 2 3`` adds it to ``fidelity.json``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence

import numpy as np

from .reporting import number

DEFAULT_ORDERS = 4


def shuffled_chunks(text: str, chunk_words: int, rng: random.Random) -> str:
    """``text``'s words (split on whitespace) in chunks of ``chunk_words``, the chunks in a random order."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")
    words = text.split()
    chunks = [words[start : start + chunk_words] for start in range(0, len(words), chunk_words)]
    rng.shuffle(chunks)
    return " ".join(word for chunk in chunks for word in chunk)


def mean_shuffled_embedding(
    texts: Sequence[str],
    encode: Callable[[list[str], int, int], np.ndarray],
    chunk_words: int,
    orders: int = DEFAULT_ORDERS,
    seed: int = 0,
) -> np.ndarray:
    """The mean over ``orders`` shuffles of the teacher's embeddings of ``texts`` with their words in shuffled
    chunks of ``chunk_words``; ``encode(shuffled_texts, chunk_words, order)`` returns the teacher's embeddings."""
    if orders < 1:
        raise ValueError(f"--orders must be at least 1, got {orders}")
    total = None
    for order in range(orders):
        rng = random.Random(f"{seed}-{chunk_words}-{order}")
        rows = encode([shuffled_chunks(text, chunk_words, rng) for text in texts], chunk_words, order)
        total = rows.astype(np.float64) if total is None else total + rows
    return (total / orders).astype(np.float32)


def word_order_table(
    scores: dict[str, list[dict[str, float]]], student: dict[str, dict[str, float]]
) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: per bucket and chunk size, the shuffled teacher's cosine and pairwise Spearman,
    next to the student's pairwise Spearman."""
    header = ["texts", "chunk (words)", "orders", "cosine", "pairwise ρ", "pairwise ρ student"]
    rows = [
        [
            bucket,
            str(row["chunk_words"]),
            str(row["orders"]),
            number(row["cosine"]),
            number(row["spearman"]),
            number(student.get(bucket, {}).get("spearman")),
        ]
        for bucket, bucket_rows in scores.items()
        for row in bucket_rows
    ]
    return header, rows


def word_order_plot(
    scores: dict[str, list[dict[str, float]]], student: dict[str, dict[str, float]], path: str | os.PathLike
) -> bool:
    """Pairwise Spearman of the shuffled teacher against chunk size, one line per bucket, the student's as a
    dashed line of the same colour. False when matplotlib is missing or there is nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not scores:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for index, (bucket, rows) in enumerate(scores.items()):
        color = f"C{index}"
        ax.plot(
            [r["chunk_words"] for r in rows],
            [r["spearman"] for r in rows],
            marker="o",
            color=color,
            label=f"teacher, shuffled chunks: {bucket}",
        )
        if student.get(bucket, {}).get("spearman") is not None:
            ax.axhline(
                student[bucket]["spearman"], color=color, linestyle="--", linewidth=1, label=f"student: {bucket}"
            )
    ax.set_xticks(sorted({r["chunk_words"] for rows in scores.values() for r in rows}))
    ax.set_xlabel("words kept in order (chunk size; chunks shuffled)")
    ax.set_ylabel("pairwise Spearman with the teacher")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
