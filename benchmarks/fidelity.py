"""Fidelity to the teacher on held-out texts: how close the student's embeddings are to the teacher's.

    python -m benchmarks.fidelity --model RUN/best --targets TARGETS_DIR          # its validation split
    python -m benchmarks.fidelity --model RUN/best --teacher T --texts texts.jsonl

Texts come from a targets folder (``bertapprox targets build``; the teacher's embeddings are stored there),
taking the validation split the training held out (``is_validation(id, val_fraction)``; the fraction is
read from the student's ``training.json`` unless given), or from jsonl files of texts, which the teacher
encodes (cached). Per length bucket (``query`` ≤ 12 words, ``sentence``, ``passage`` > 40, and ``all``;
:mod:`bertapprox_hf.training.metrics`): the mean and percentiles of the student–teacher cosine, the mean
squared distance, and the Spearman correlation between the two models' pairwise similarity matrices.
model2vec, in another space, has only the last. With ``--error-scales``, also what the student would
reach with its errors scaled down (``teacher + a·(student − teacher)``): the cosine a target Spearman
needs. With ``--word-order``, also the teacher's own embedding of the texts with their words shuffled in
chunks (:mod:`benchmarks.word_order`): what input without word order supports. Writes ``fidelity.json``
(and ``word_order.png``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from . import systems
from .cache import file_identity, ids_digest
from .provenance import provenance
from .reporting import markdown_table, number, write_results
from .word_order import DEFAULT_ORDERS, mean_shuffled_embedding, word_order_plot, word_order_table

PROG = "python -m benchmarks.fidelity"
FIDELITY_SYSTEMS = ("student", "model2vec")
PERCENTILES = (5, 25, 50, 75, 95)
BUCKET_ORDER = ("query", "sentence", "passage", "all")


def training_data(model: str | None) -> dict:
    """The ``data`` section of a student's ``training.json`` (``{}`` when there is none)."""
    from bertapprox_hf.pipeline.jsonio import read_json

    path = os.path.join(model, "training.json") if model else ""
    if not path or not os.path.isfile(path):
        return {}
    return read_json(path, "training record").get("config", {}).get("data", {}) or {}


def targets_folders(value: str | Sequence[str] | None) -> list[str]:
    """A training config's ``data.targets`` (one folder, a comma-separated list, or a list) as a list."""
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(part) for part in value]


def held_out_targets(folders: Sequence[str], val_fraction: float, max_texts: int) -> tuple[list[str], np.ndarray]:
    """``(texts, teacher embeddings)`` of the validation split of targets folders (at most ``max_texts``, spread
    evenly over it), in corpus order."""
    from bertapprox_hf.pipeline.targets import load_targets, targets_columns
    from bertapprox_hf.training.data import is_validation

    dataset = load_targets(list(folders))
    ids = dataset.with_format("arrow")["id"].to_pylist()
    held_out = [i for i, record_id in enumerate(ids) if is_validation(record_id, val_fraction)]
    if len(held_out) > max_texts:  # evenly over the corpus: its sources come one after the other
        held_out = [held_out[int(j)] for j in np.linspace(0, len(held_out) - 1, max_texts)]
    chosen = sorted(set(held_out))
    if len(chosen) < 3:
        raise ValueError(f"{', '.join(folders)}: {len(chosen)} validation texts at val_fraction {val_fraction}")
    _, texts, embeddings = targets_columns(dataset.select(chosen))
    return texts, embeddings.astype(np.float32)


def read_texts(files: Sequence[str], max_texts: int) -> list[str]:
    """Up to ``max_texts`` distinct texts, taken evenly from each jsonl file (:mod:`bertapprox_hf.pipeline.corpus`)."""
    from bertapprox_hf.pipeline.corpus import iter_texts

    per_file = max(1, max_texts // len(files))
    texts: dict[str, None] = {}
    for path in files:
        texts.update(dict.fromkeys(t for t in iter_texts(path, max_per_source=per_file) if t.strip()))
    return list(texts)[:max_texts]


def cosine_summary(student: np.ndarray, teacher: np.ndarray, texts: list[str]) -> dict[str, dict[str, float]]:
    """Per bucket: the percentiles and minimum of the row-wise student–teacher cosine."""
    from bertapprox_hf.training.metrics import text_bucket

    a = student / np.maximum(np.linalg.norm(student, axis=1, keepdims=True), 1e-12)
    b = teacher / np.maximum(np.linalg.norm(teacher, axis=1, keepdims=True), 1e-12)
    cosines = (a * b).sum(axis=1)
    groups: dict[str, list[int]] = {"all": list(range(len(texts)))}
    for index, text in enumerate(texts):
        groups.setdefault(text_bucket(text), []).append(index)
    summary = {}
    for bucket, index in groups.items():
        if len(index) < 3:
            continue
        values = cosines[index]
        summary[bucket] = {f"cosine_p{q}": float(np.percentile(values, q)) for q in PERCENTILES}
        summary[bucket]["cosine_min"] = float(values.min())
    return summary


def by_bucket(flat: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"cosine_query": x, "count_query": n, ...}`` as ``{"query": {"cosine": x, "count": n}, ...}``."""
    nested: dict[str, dict[str, float]] = {}
    for key, value in flat.items():
        metric, _, bucket = key.rpartition("_")
        nested.setdefault(bucket, {})[metric] = value
    return {bucket: nested[bucket] for bucket in BUCKET_ORDER if bucket in nested}


def evaluate(
    texts: list[str], teacher: np.ndarray, compared: systems.Systems, similarity: str, scales: Sequence[float] = ()
) -> dict:
    """``{"student": {bucket: metrics}, "model2vec": {bucket: {"spearman", "count"}}}`` for the systems run,
    and ``"error_scaling"`` (:func:`error_scaling`) when ``scales`` are given."""
    from bertapprox_hf.training.metrics import fidelity

    results: dict[str, dict] = {}
    if "student" in compared.names:
        student = compared.encode("student", texts, desc="fidelity texts")
        buckets = by_bucket(fidelity(student, teacher, texts, similarity))
        for bucket, extra in cosine_summary(student, teacher, texts).items():
            buckets[bucket].update(extra)
        results["student"] = buckets
        if scales:
            results["error_scaling"] = error_scaling(student, teacher, texts, similarity, scales)
    if "model2vec" in compared.names:
        static = compared.encode("model2vec", texts, desc="fidelity texts")
        # cosine and distance need one space; the ranking of pairwise similarities does not
        results["model2vec"] = by_bucket(_pairwise_only(static, teacher, texts, similarity))
    return results


def error_scaling(
    student: np.ndarray, teacher: np.ndarray, texts: list[str], similarity: str, scales: Sequence[float]
) -> dict[str, list[dict[str, float]]]:
    """Per bucket, cosine and pairwise Spearman of ``teacher + a·(student − teacher)`` for each scale ``a``."""
    from bertapprox_hf.training.metrics import fidelity

    rows: dict[str, list[dict[str, float]]] = {}
    for scale in scales:
        for bucket, metrics in by_bucket(
            fidelity(teacher + scale * (student - teacher), teacher, texts, similarity)
        ).items():
            rows.setdefault(bucket, []).append(
                {"scale": scale, "cosine": metrics["cosine"], "spearman": metrics["spearman"]}
            )
    return rows


def _pairwise_only(static: np.ndarray, teacher: np.ndarray, texts: list[str], similarity: str) -> dict[str, float]:
    import torch

    from bertapprox_hf.training.metrics import pairwise_spearman, text_bucket

    groups: dict[str, list[int]] = {"all": list(range(len(texts)))}
    for index, text in enumerate(texts):
        groups.setdefault(text_bucket(text), []).append(index)
    flat: dict[str, float] = {}
    for bucket, index in groups.items():
        if len(index) < 3:
            continue
        s, t = torch.as_tensor(static[index]), torch.as_tensor(teacher[index])
        flat[f"count_{bucket}"] = len(index)
        flat[f"spearman_{bucket}"] = pairwise_spearman(s, t, similarity)
    return flat


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--targets", nargs="+", help="targets folder(s): their validation split (default: the "
                        "student's training targets, from training.json)")  # fmt: skip
    source.add_argument("--texts", nargs="+", help="jsonl files of held-out texts (the teacher encodes them)")
    parser.add_argument("--val-fraction", type=float, default=None, help="default: the student's training.json")
    parser.add_argument("--max-texts", type=int, default=3000, help="texts used at most (default 3000)")
    parser.add_argument("--error-scales", type=float, nargs="*", default=[], metavar="A",
                        help="also score teacher + A·(student − teacher) for each A in (0, 1]: the cosine that a "
                        "pairwise Spearman needs")  # fmt: skip
    parser.add_argument("--word-order", type=int, nargs="*", default=[], metavar="K",
                        help="also score the teacher on the texts with their words in shuffled chunks of K words "
                        "(mean over --orders shuffles): what a bag of K-word pieces supports")  # fmt: skip
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS,
                        help=f"shuffles averaged per chunk size (default {DEFAULT_ORDERS})")  # fmt: skip
    systems.add_arguments(parser, FIDELITY_SYSTEMS)
    return parser


def load_texts(args: argparse.Namespace, compared: systems.Systems) -> tuple[list[str], np.ndarray, dict]:
    """``(texts, teacher embeddings, source record)`` of the chosen held-out texts."""
    data = training_data(args.model)
    if args.texts:
        texts = read_texts(args.texts, args.max_texts)
        identity = {"files": [file_identity(p) for p in args.texts], "max_texts": args.max_texts}
        teacher = compared.encode("teacher", texts, identity, desc="fidelity texts")
        return texts, teacher, {"texts": [os.path.abspath(p) for p in args.texts]}
    folders = args.targets or targets_folders(data.get("targets"))
    if not folders:
        raise ValueError("give --targets or --texts (the student's training.json names no targets folder)")
    missing = [folder for folder in folders if not os.path.isdir(folder)]
    if missing:
        raise FileNotFoundError(f"targets folder not found: {', '.join(missing)}")
    val_fraction = args.val_fraction or data.get("val_fraction")
    if val_fraction is None:
        raise ValueError("give --val-fraction (the student's training.json does not record one)")
    texts, teacher = held_out_targets(folders, float(val_fraction), args.max_texts)
    source = {"targets": [os.path.abspath(f) for f in folders], "split": "validation", "val_fraction": val_fraction}
    return texts, teacher, source


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write ``<out>/fidelity.json``, print a table; return the results."""
    args = build_parser().parse_args(argv)
    compared = systems.from_args(args, systems.systems_given(argv))
    other = [name for name in compared.names if name not in FIDELITY_SYSTEMS]
    if other:
        raise ValueError(f"fidelity compares {' and '.join(FIDELITY_SYSTEMS)} with the teacher, not {other}")
    if any(not 0 < scale <= 1 for scale in args.error_scales):
        raise ValueError(f"--error-scales must lie in (0, 1], got {args.error_scales}")
    if any(k < 1 for k in args.word_order) or args.orders < 1:
        raise ValueError(f"--word-order and --orders must be at least 1, got {args.word_order} and {args.orders}")
    if "student" in compared.names and not args.model:
        raise ValueError("fidelity needs the student (--model)")
    texts, teacher, source = load_texts(args, compared)
    similarity = compared.similarity("student") if args.model else compared.teacher_similarity
    results = {
        "benchmark": "fidelity",
        "source": source,
        "texts": len(texts),
        "similarity": similarity,
        "settings": {"max_texts": args.max_texts, "percentiles": list(PERCENTILES), **compared.describe()},
        **evaluate(texts, teacher, compared, similarity, args.error_scales),
        **provenance(PROG, argv),
    }
    if args.word_order:
        results["word_order"] = shuffled_teacher(texts, teacher, compared, similarity, args.word_order, args.orders)
    path = write_results(args.out, "fidelity", results)
    print(markdown_table(*fidelity_table(results)))
    if results.get("error_scaling"):
        print(markdown_table(*error_scaling_table(results["error_scaling"])))
    if results.get("word_order"):
        print(markdown_table(*word_order_table(results["word_order"], results.get("student", {}))))
        word_order_plot(results["word_order"], results.get("student", {}), os.path.join(args.out, "word_order.png"))
    print(f"wrote {path}")
    return results


def shuffled_teacher(
    texts: list[str],
    teacher: np.ndarray,
    compared: systems.Systems,
    similarity: str,
    chunk_sizes: Sequence[int],
    orders: int,
    seed: int = 0,
) -> dict[str, list[dict[str, float]]]:
    """Per bucket, for each chunk size: cosine and pairwise Spearman of the teacher's mean embedding of the texts
    in shuffled chunks (:func:`benchmarks.word_order.mean_shuffled_embedding`; embeddings cached on disk)."""
    from bertapprox_hf.training.metrics import fidelity

    digest = ids_digest(texts)

    def encode(shuffled: list[str], chunk_words: int, order: int) -> np.ndarray:
        identity = {"texts": digest, "shuffled_chunk_words": chunk_words, "order": order, "seed": seed}
        return compared.encode("teacher", shuffled, identity, desc=f"chunks of {chunk_words}, order {order + 1}")

    rows: dict[str, list[dict[str, float]]] = {}
    for chunk_words in chunk_sizes:
        mean = mean_shuffled_embedding(texts, encode, chunk_words, orders, seed)
        for bucket, metrics in by_bucket(fidelity(mean, teacher, texts, similarity)).items():
            rows.setdefault(bucket, []).append(
                {
                    "chunk_words": chunk_words,
                    "orders": orders,
                    "cosine": metrics["cosine"],
                    "spearman": metrics["spearman"],
                }
            )
    return rows


def error_scaling_table(scaling: dict[str, list[dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: per bucket and error scale, the cosine and pairwise Spearman reached."""
    header = ["texts", "error scale", "cosine", "pairwise ρ"]
    rows = [
        [bucket, number(row["scale"]), number(row["cosine"]), number(row["spearman"])]
        for bucket in BUCKET_ORDER
        for row in scaling.get(bucket, [])
    ]
    return header, rows


def fidelity_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: per bucket, the student's cosine (mean, p5, p50) and both systems' pairwise Spearman."""
    header = ["texts", "count", "cosine mean", "cosine p5", "cosine p50", "pairwise ρ student", "pairwise ρ model2vec"]
    student, static = results.get("student", {}), results.get("model2vec", {})
    rows = []
    for bucket in BUCKET_ORDER:
        s, m = student.get(bucket, {}), static.get(bucket, {})
        if not s and not m:
            continue
        count = s.get("count", m.get("count"))
        rows.append(
            [
                bucket,
                str(int(count)) if count is not None else "–",
                number(s.get("cosine")),
                number(s.get("cosine_p5")),
                number(s.get("cosine_p50")),
                number(s.get("spearman")),
                number(m.get("spearman")),
            ]
        )
    return header, rows


if __name__ == "__main__":
    main()
