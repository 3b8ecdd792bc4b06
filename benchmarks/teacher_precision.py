"""The teacher under autocast: how much faster, and how far from its float32 embeddings.

    python -m benchmarks.teacher_precision --teacher TEACHER --queries DATA/train/msmarco_queries.jsonl \\
        --corpus DATA/msmarco-passage-dl19/corpus.jsonl --precisions no bf16 --out experiments/results/teacher-precision

Every teacher pass of the project (vocabulary, targets, contextual tables) can run under autocast
(``--mixed-precision``). For queries and for passages this encodes the same texts in float32 and in each
precision asked, after a warm-up batch, and reports texts per second, the speed-up over float32, the cosine
of each text's embedding to its float32 one (mean and minimum) and the Spearman correlation of the two
passes' pairwise similarities. Writes ``teacher_precision.json``, ``teacher_precision.md`` and
``teacher_precision.png`` (texts/s).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np

from bertapprox_hf.pipeline.precision import PRECISIONS

from .reporting import markdown_table, number, write_results

HEADER = ("texts", "precision", "count", "texts/s", "speed-up", "cosine mean", "cosine min", "pairwise Spearman")


def read_texts(path: str, max_texts: int) -> list[str]:
    """The first ``max_texts`` texts of a corpus file (titles joined as the corpus reader does)."""
    from bertapprox_hf.pipeline.corpus import iter_records

    texts = [record["text"] for record in iter_records(path, max_records=max_texts)]
    if not texts:
        raise ValueError(f"{path} holds no texts")
    return texts


def timed_encode(teacher, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    """``(embeddings, texts per second)``, after one warm-up batch."""
    teacher.encode(texts[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    embeddings = teacher.encode(texts, batch_size=batch_size)
    return embeddings, len(texts) / (time.perf_counter() - start)


def agreement(reference: np.ndarray, other: np.ndarray, similarity: str) -> dict[str, float]:
    """Cosine of each row to its reference row (mean, min) and Spearman of the pairwise similarities."""
    import torch

    from bertapprox_hf.training.metrics import pairwise_spearman

    a, b = reference.astype(np.float64), other.astype(np.float64)
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    spearman = pairwise_spearman(torch.from_numpy(other), torch.from_numpy(reference), similarity, len(reference))
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()), "pairwise_spearman": spearman}


def measure(
    teacher_path: str, text_sets: dict[str, list[str]], precisions: Sequence[str], batch_size: int, device: str
) -> list[dict]:
    """One row per text set and precision; float32 (``no``) is always measured first, as the reference."""
    from bertapprox_hf.pipeline.teacher import Teacher

    teachers = {
        precision: Teacher.from_pretrained(teacher_path, device=device, mixed_precision=precision)
        for precision in dict.fromkeys(["no", *precisions])
    }
    similarity = teachers["no"].describe()["similarity"]
    rows = []
    for name, texts in text_sets.items():
        reference, reference_speed = timed_encode(teachers["no"], texts, batch_size)
        for precision, teacher in teachers.items():
            embeddings, speed = (
                (reference, reference_speed) if precision == "no" else timed_encode(teacher, texts, batch_size)
            )
            rows.append(
                {
                    "texts": name,
                    "precision": precision,
                    "count": len(texts),
                    "texts_per_s": speed,
                    "speedup": speed / reference_speed,
                    **agreement(reference, embeddings, similarity),
                }
            )
    return rows


def table(rows: Sequence[dict]) -> str:
    cells = [
        [
            r["texts"],
            r["precision"],
            str(r["count"]),
            f"{r['texts_per_s']:,.0f}",
            f"{r['speedup']:.2f}×",
            number(r["cosine_mean"], 6),
            number(r["cosine_min"], 6),
            number(r["pairwise_spearman"], 6),
        ]
        for r in rows
    ]
    return markdown_table(HEADER, cells)


def plot(rows: Sequence[dict], path: str) -> bool:
    """Texts per second, one group of bars per text set; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sets = list(dict.fromkeys(r["texts"] for r in rows))
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.4), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        speeds = [
            next(r["texts_per_s"] for r in rows if r["texts"] == name and r["precision"] == p) for p in precisions
        ]
        ax.bar(["float32" if p == "no" else p for p in precisions], speeds, color="#4c72b0")
        ax.set_title(name)
        ax.set_ylabel("texts/s")
    fig.suptitle("Teacher under autocast")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict:
    from .provenance import provenance

    parser = argparse.ArgumentParser(prog="python -m benchmarks.teacher_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="Hub id or local folder of the teacher")
    parser.add_argument("--queries", required=True, help="jsonl of short texts")
    parser.add_argument("--corpus", required=True, help="jsonl of passages")
    parser.add_argument("--max-queries", type=int, default=2048)
    parser.add_argument("--max-passages", type=int, default=768)
    parser.add_argument("--precisions", nargs="+", default=["bf16"], choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/teacher-precision")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    text_sets = {
        "queries": read_texts(args.queries, args.max_queries),
        "passages": read_texts(args.corpus, args.max_passages),
    }
    rows = measure(args.teacher, text_sets, args.precisions, args.batch_size, args.device)
    results = {"rows": rows, **provenance("python -m benchmarks.teacher_precision", argv)}
    write_results(args.out, "teacher_precision", results)
    markdown = table(rows)
    with open(os.path.join(args.out, "teacher_precision.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    plot(rows, os.path.join(args.out, "teacher_precision.png"))
    print(markdown)
    return results


if __name__ == "__main__":
    main()
