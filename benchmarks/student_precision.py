"""The student ``Encoder``'s reduced precisions against its float32 output, on every corpus and on fuzzed texts.

    python -m benchmarks.student_precision --model RUN/best --out results/student-precision
    python -m benchmarks.student_precision --model RUN/best --time      # also texts/s, one thread, batch 64

Texts: the first ``--max-texts`` distinct texts of each corpus of the shared data (``--data``, default
``../shared/data``: every ``train/*.jsonl``, the DL19 and SciFact corpora and queries, the STS-B test sentences;
absent files are skipped) and ``--fuzzed`` texts no corpus holds (:func:`fuzzed_texts`). Each configuration
embeds them and is compared with the float32 ``Encoder``: the cosine loss (1 − cosine) of every text, as mean,
99.9th percentile and maximum per corpus and over all real texts. Configurations: ``int8`` (tables and ρ in
int8, where ``torch._int_mm`` runs), ``int8-rho-float32`` (int8 tables, float32 ρ), ``float16`` and
``bfloat16`` (ρ as the ``Encoder`` picks on this CPU). ``--time`` adds texts per second at batch 64 on one
thread for the queries and the DL19 passages, float32 included (interleaved repeats,
:func:`benchmarks.speed.measure_throughput`). Writes ``student_precision.json`` and ``student_precision.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .provenance import provenance
from .reporting import markdown_table, write_results

PROG = "python -m benchmarks.student_precision"
CONFIGS: dict[str, dict[str, str]] = {
    "int8": {"dtype": "int8", "rho_dtype": "int8"},
    "int8-rho-float32": {"dtype": "int8", "rho_dtype": "float32"},
    "float16": {"dtype": "float16"},
    "bfloat16": {"dtype": "bfloat16"},
}
# Corpus name → its file under the data folder (jsonl), besides every train/*.jsonl.
EVALUATION_FILES = {
    "dl19-corpus": "msmarco-passage-dl19/corpus.jsonl",
    "dl19-queries": "msmarco-passage-dl19/queries.jsonl",
    "scifact-corpus": "beir/scifact/corpus.jsonl",
    "scifact-queries": "beir/scifact/queries.jsonl",
}
STS_FILE = "sts/stsb/sts-test.csv"
FUZZED = "fuzzed"
ALL_REAL = "all real texts"
TIMED_SETS = {"queries": "msmarco_queries", "passages": "dl19-corpus"}
# What fuzzed texts are made of besides words: markup and specials written out, other scripts, accents,
# punctuation, odd whitespace, control characters, a long run of one letter.
PIECES = (
    "[CLS]", "[SEP]", "[UNK]", "漢", "字", "é", "e\u0301", "naïve", "İ", "ß", "😀", "Привет", ".", ",", "!", "-",
    "'", "(", "%", " ", "  ", "\t", "\n", "\u00a0", "\u200b", "\x00", "\ufffd", "x" * 60, "1", "2024", "3.5",
)  # fmt: skip


def fuzzed_texts(words: Sequence[str], count: int, seed: int = 0) -> list[str]:
    """``count`` texts no corpus holds, made from ``words`` and :data:`PIECES` (deterministic for a seed).

    In turn: one to three words (bags where a single entry's φ is most of the pooled vector), 20 to 300 words in
    random order, one word repeated, words glued to pieces, pieces alone, and random printable characters.
    """
    if not words:
        raise ValueError("fuzzed texts need some words")
    rng = random.Random(seed)
    words = list(words)
    makers = (
        lambda: " ".join(rng.choices(words, k=rng.randint(1, 3))),
        lambda: " ".join(rng.choices(words, k=rng.randint(20, 300))),
        lambda: " ".join([rng.choice(words)] * rng.randint(2, 80)),
        lambda: "".join(rng.choice((rng.choice(words), rng.choice(PIECES))) for _ in range(rng.randint(1, 30))),
        lambda: "".join(rng.choices(PIECES, k=rng.randint(0, 12))),
        lambda: "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 80))),
    )
    return [makers[i % len(makers)]() for i in range(count)]


def words_of(texts: Sequence[str], limit: int = 5000) -> list[str]:
    """Up to ``limit`` distinct whitespace-separated words of ``texts``, in order of appearance."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in text.split():
            seen.setdefault(word, None)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)


def read_corpora(data: str | os.PathLike, max_texts: int) -> dict[str, list[str]]:
    """Corpus name → its first ``max_texts`` distinct texts, for every corpus of the data folder present."""
    from .speed import read_texts
    from .sts import read_sts

    data = Path(data)
    files = {path.stem: path for path in sorted((data / "train").glob("*.jsonl"))}
    files.update({name: data / path for name, path in EVALUATION_FILES.items()})
    corpora = {name: read_texts(str(path), max_texts, name) for name, path in files.items() if path.is_file()}
    if (data / STS_FILE).is_file():
        pairs = read_sts(data / STS_FILE)
        sentences = dict.fromkeys(text for pair in pairs for text in (pair.first, pair.second))
        corpora["stsb-test"] = list(sentences)[:max_texts]
    if not corpora:
        expected = ", ".join(["train/*.jsonl", *EVALUATION_FILES.values(), STS_FILE])
        raise FileNotFoundError(f"no corpus found under {data} (expected {expected})")
    return corpora


def loss_summary(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Cosine loss (1 − cosine) of each row to its reference row: count, mean, 99.9th percentile and max."""
    from bertapprox_hf.export.verify import cosine_loss

    loss = cosine_loss(reference.astype(np.float64), candidate.astype(np.float64))
    return {
        "count": int(len(loss)),
        "mean": float(loss.mean()),
        "p99_9": float(np.quantile(loss, 0.999)),
        "max": float(loss.max()),
    }


def encoders_for(model, configs: Sequence[str]) -> dict:
    """The float32 ``Encoder`` (``"float32"``) and one per configuration this machine runs (cache off, CPU)."""
    import torch

    from bertapprox_hf.inference import Encoder
    from bertapprox_hf.inference.precision import int_mm_works

    encoders = {"float32": Encoder.from_pretrained(model, device="cpu", cache_size=0)}
    for name in configs:
        options = CONFIGS[name]
        if options.get("rho_dtype") == "int8" and not int_mm_works(torch.device("cpu")):
            print(f"skipping {name}: torch._int_mm does not run here")
            continue
        encoders[name] = Encoder.from_pretrained(model, device="cpu", cache_size=0, **options)
    return encoders


def compare(encoders: dict, texts: dict[str, list[str]]) -> list[dict]:
    """One row per configuration and text set (and all real texts together): its loss to float32."""
    reference = {name: encoders["float32"].encode(sample) for name, sample in texts.items()}
    rows = []
    for config, encoder in encoders.items():
        if config == "float32":
            continue
        got = {name: encoder.encode(sample) for name, sample in texts.items()}
        for name in texts:
            summary = loss_summary(reference[name], got[name])
            rows.append({"config": config, "rho": encoder.rho_dtype, "texts": name, **summary})
        real = [name for name in texts if name != FUZZED]
        if len(real) > 1:
            joined = (np.concatenate([reference[n] for n in real]), np.concatenate([got[n] for n in real]))
            rows.append({"config": config, "rho": encoder.rho_dtype, "texts": ALL_REAL, **loss_summary(*joined)})
    return rows


def throughput(encoders: dict, sets: dict[str, list[str]], repeats: int, min_time: float) -> list[dict]:
    """Texts per second at batch 64 on one torch thread, each configuration and float32, interleaved."""
    from .speed import ThreadSetting, measure_throughput

    rows = []
    with ThreadSetting(1):
        for set_name, texts in sets.items():
            seconds, _ = measure_throughput(encoders, texts, 64, repeats, min_time, lambda: None, set_name)
            for config, runs in seconds.items():
                speed = len(texts) / statistics.median(runs)
                rows.append({"config": config, "set": set_name, "batch_size": 64, "threads": 1, "texts_per_s": speed})
    return rows


def to_markdown(results: dict) -> str:
    """The loss table (and the speed table when timed)."""
    header = ("configuration", "ρ", "texts", "count", "mean loss", "p99.9 loss", "max loss")
    rows = [
        (row["config"], row["rho"], row["texts"], str(row["count"]), f"{row['mean']:.1e}", f"{row['p99_9']:.1e}",
         f"{row['max']:.1e}")
        for row in results["loss"]
    ]  # fmt: skip
    out = markdown_table(header, rows)
    if results.get("speed"):
        speed_rows = [
            (row["config"], row["set"], str(row["batch_size"]), str(row["threads"]), f"{row['texts_per_s']:,.0f}")
            for row in results["speed"]
        ]
        out += "\n" + markdown_table(("configuration", "texts", "batch", "threads", "texts/s"), speed_rows)
    return out


def build_parser() -> argparse.ArgumentParser:
    from .datasets import default_data_dir

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="saved student folder")
    parser.add_argument("--data", default=str(default_data_dir()), help="shared data folder (default ../shared/data)")
    parser.add_argument("--max-texts", type=int, default=2000, help="texts per corpus at most (default 2000)")
    parser.add_argument("--fuzzed", type=int, default=2000, help="fuzzed texts (default 2000; 0: none)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), help="default: all")
    parser.add_argument("--time", action="store_true", help="also texts/s at batch 64 on one thread")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing repeats (default 5)")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds a timed run lasts at least (0.3)")
    parser.add_argument("--out", default="results/student-precision", help="folder for the results")
    return parser


def main(argv: list[str] | None = None) -> dict:
    from bertapprox_hf import BertApproxModel

    args = build_parser().parse_args(argv)
    model = BertApproxModel.from_pretrained(args.model).eval()
    texts = read_corpora(args.data, args.max_texts)
    if args.fuzzed:
        texts[FUZZED] = fuzzed_texts(words_of([text for sample in texts.values() for text in sample]), args.fuzzed)
    encoders = encoders_for(model, args.configs)
    results = {"loss": compare(encoders, texts), "speed": []}
    if args.time:
        sets = {name: texts[source] for name, source in TIMED_SETS.items() if source in texts}
        results["speed"] = throughput(encoders, sets, args.repeats, args.min_time)
    results.update(provenance(PROG, argv))
    write_results(args.out, "student_precision", results)
    table = to_markdown(results)
    with open(os.path.join(args.out, "student_precision.md"), "w", encoding="utf-8") as handle:
        handle.write(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
