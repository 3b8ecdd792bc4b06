"""Speed of the bag tokenizer alone: the pure-Python path against the compiled one, on the same texts.

    python -m benchmarks.tokenizer_speed --tokenizer STUDENT_OR_VOCAB_DIR \\
        --queries queries.jsonl --corpus corpus.jsonl --out results/tokenizer_speed

Both paths tokenize the same distinct texts (1,024 queries and 256 passages by default) in batches of 64, as the
``Encoder`` does, and give the same bags (checked here before timing). The Python path keeps its word caches
warm (its steady state in a server, the figure most favourable to it); the compiled path has no cache. Each
figure is the median over ``--repeats`` passes; a pass repeats the batches until it has run ``--min-time``
seconds. Threads: the Python path runs on one; the compiled path on each ``--threads`` setting (1 by default:
torch is also limited to that many threads), both as lists of bags (``encode_bags``) and as the flat arrays the
``Encoder`` reads (``encode_bags_flat``, path ``compiled-flat``). Writes ``tokenizer_speed.json`` and
``tokenizer_speed.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.machine import describe, machine_info
from benchmarks.reporting import markdown_table, write_results
from benchmarks.speed import read_texts

BATCH_SIZE = 64
MAX_BAG_SIZE = 512


def load_tokenizer(args: argparse.Namespace):
    """The tokenizer of a saved student or tokenizer folder, of a vocabulary folder, or of an entries file."""
    from bertapprox_hf.model.tokenization_bertapprox import BertApproxTokenizer, load_entries

    if args.entries:
        return BertApproxTokenizer(
            entries=load_entries(args.entries),
            teacher_window=args.teacher_window,
            wordpiece_entries=args.wordpiece_entries,
        )
    folder = Path(args.tokenizer)
    if (folder / "vocabulary.json").is_file():
        from bertapprox_hf.pipeline.vocabulary import Vocabulary

        return Vocabulary.load(str(folder)).tokenizer()
    if (folder / "vocab.txt").is_file():
        return BertApproxTokenizer.from_pretrained(str(folder))
    raise FileNotFoundError(f"{folder} holds neither vocab.txt (a student or tokenizer) nor vocabulary.json")


def batches(texts: list[str]) -> list[list[str]]:
    return [texts[start : start + BATCH_SIZE] for start in range(0, len(texts), BATCH_SIZE)]


def texts_per_second(tokenize: Callable[[list[str]], object], texts: list[str], repeats: int, min_time: float) -> float:
    """Median texts/s over ``repeats`` passes over ``texts`` in batches."""
    chunks = batches(texts)
    rates = []
    for _ in range(repeats):
        done, start = 0, time.perf_counter()
        while True:
            for chunk in chunks:
                tokenize(chunk)
            done += len(texts)
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rates.append(done / elapsed)
    return statistics.median(rates)


def measure(tokenizer, sets: dict[str, list[str]], threads: list[int], repeats: int, min_time: float) -> list[dict]:
    """One row per path and thread setting: texts/s on each set and the ratio to the Python path."""
    bag_encoder, compiled = tokenizer.bag_encoder, tokenizer.compiled_encoder
    if compiled is None:
        raise RuntimeError("the compiled tokenizer is unavailable: build it (pip install -e . with a C++ compiler)")

    def python(texts: list[str]) -> list[list[int]]:
        return [bag_encoder.encode(text, MAX_BAG_SIZE) for text in texts]

    for name, texts in sets.items():
        if python(texts) != compiled.encode_batch(texts, MAX_BAG_SIZE, 1):
            raise AssertionError(f"the compiled tokenizer's bags differ from the Python ones on the {name}")
    import torch

    rows = [{"path": "python", "threads": 1}]
    rows += [{"path": "compiled", "threads": count} for count in threads]
    rows += [{"path": "compiled-flat", "threads": count} for count in threads]
    for row in rows:
        torch.set_num_threads(row["threads"])
        if row["path"] == "python":
            tokenize = python
        elif row["path"] == "compiled":

            def tokenize(texts: list[str], count=row["threads"]) -> list[list[int]]:
                return compiled.encode_batch(texts, MAX_BAG_SIZE, count)

        else:

            def tokenize(texts: list[str], count=row["threads"]) -> tuple:
                return compiled.encode_flat(texts, MAX_BAG_SIZE, count)

        for name, texts in sets.items():
            row[name] = texts_per_second(tokenize, texts, repeats, min_time)
    for row in rows:
        for name in sets:
            row[f"{name}_ratio"] = row[name] / rows[0][name]
    return rows


def to_markdown(report: dict) -> str:
    sets = report["sets"]
    header = ["path", "threads"] + [f"{name} texts/s" for name in sets] + [f"{name} × Python" for name in sets]
    rows = [
        [row["path"], str(row["threads"])]
        + [f"{row[name]:,.0f}" for name in sets]
        + [f"{row[f'{name}_ratio']:.1f}×" for name in sets]
        for row in report["rows"]
    ]
    counts = ", ".join(f"{len_} {name}" for name, len_ in sets.items())
    return (
        f"# Tokenizer speed\n\nBag tokenizer alone, batches of {BATCH_SIZE}, {counts}, "
        f"vocabulary of {report['vocab_size']:,} entries (teacher window {report['teacher_window']}); "
        f"median of {report['repeats']} passes.\n\n{describe(report['machine'])}\n\n" + markdown_table(header, rows)
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokenizer", help="student, tokenizer or vocabulary folder")
    source.add_argument("--entries", help="a one-entry-per-line vocabulary file (with the two options below)")
    parser.add_argument("--teacher-window", type=int, default=256, help="with --entries: the teacher's window")
    parser.add_argument("--wordpiece-entries", type=int, default=0, help="with --entries: teacher tokens")
    parser.add_argument("--queries", required=True, help="short texts (jsonl)")
    parser.add_argument("--corpus", required=True, help="passages (jsonl)")
    parser.add_argument("--queries-limit", type=int, default=1024)
    parser.add_argument("--passages-limit", type=int, default=256)
    parser.add_argument("--threads", default="1", help="comma-separated thread counts of the compiled path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds a pass runs at least")
    parser.add_argument("--out", default="results/tokenizer_speed")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    threads = [int(count) for count in args.threads.split(",")]
    if any(count < 1 for count in threads) or args.repeats < 1:
        raise SystemExit("tokenizer_speed: error: --threads and --repeats must be positive")
    tokenizer = load_tokenizer(args)
    sets = {
        "queries": read_texts(args.queries, args.queries_limit, "queries"),
        "passages": read_texts(args.corpus, args.passages_limit, "corpus"),
    }
    rows = measure(tokenizer, sets, threads, args.repeats, args.min_time)
    report = {
        "machine": machine_info(),
        "sets": {name: len(texts) for name, texts in sets.items()},
        "vocab_size": tokenizer.vocab_size,
        "teacher_window": tokenizer.bag_encoder.teacher_window,
        "repeats": args.repeats,
        "batch_size": BATCH_SIZE,
        "rows": rows,
    }
    write_results(args.out, "tokenizer_speed", report)
    markdown = to_markdown(report)
    with open(os.path.join(args.out, "tokenizer_speed.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
