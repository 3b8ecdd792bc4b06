"""Speed of the student: tokenizer throughput and model forward latency, measured on real text.

    python -m benchmarks.speed --vocab VOCAB_DIR --corpus corpus.jsonl --out results/speed
    python -m benchmarks.speed --model MODEL_DIR --corpus corpus.jsonl --queries queries.jsonl

Reports texts/s of the tokenizer (text → padded bag tensors) and the latency of the model's forward
pass on batches of passages, median over repeats, with the machine it ran on. Writes
``speed.json`` and ``speed.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from bertapprox_hf.corpus import iter_texts


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def timed(function, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def load_student(args):
    if args.model:
        from bertapprox_hf import BertApproxModel

        return BertApproxModel.from_pretrained(args.model)
    from bertapprox_hf.student import create_student
    from bertapprox_hf.vocabulary import Vocabulary

    return create_student(Vocabulary.load(args.vocab))


def measure(model, sets: dict[str, list[str]], batch_size: int, repeats: int) -> dict:
    tokenizer = model.get_tokenizer()
    model.eval()
    results = {}
    for name, texts in sets.items():
        tokenize_times = timed(lambda texts=texts: tokenizer(texts, padding=True, return_tensors="pt"), repeats)
        bags = tokenizer.encode_bags(texts)
        batches = [texts[i : i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
        encoded = [tokenizer(b, padding=True, return_tensors="pt") for b in batches]

        def forward(encoded=encoded):
            with torch.inference_mode():
                for batch in encoded:
                    model(**batch)

        forward_times = timed(forward, repeats)
        end_to_end = timed(lambda texts=texts: model.encode(texts, batch_size=batch_size), repeats)
        n = len(texts)
        results[name] = {
            "texts": n,
            "mean_bag_size": round(sum(len(b) for b in bags) / n, 1),
            "tokenizer_texts_per_s": round(n / statistics.median(tokenize_times)),
            f"forward_ms_per_batch_{batch_size}": round(1000 * statistics.median(forward_times) / len(batches), 2),
            "encode_texts_per_s": round(n / statistics.median(end_to_end)),
        }
    return results


def to_markdown(report: dict) -> str:
    rows = report["results"]
    keys = list(next(iter(rows.values())))
    lines = ["| set | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(v[k]) for k in keys) + " |" for name, v in rows.items()]
    m = report["machine"]
    lines.append(f"\n{m['cpu']}, {m['torch_threads']} torch threads, torch {m['torch']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="saved student folder")
    source.add_argument("--vocab", help="vocabulary folder (an untrained student costs the same)")
    parser.add_argument("--corpus", required=True, help="passages (jsonl)")
    parser.add_argument("--queries", help="short texts (jsonl), measured separately")
    parser.add_argument("--limit", type=int, default=2048, help="texts of each kind")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--out", default="results/speed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_student(args)
    sets = {"passages": list(iter_texts(args.corpus, max_records=args.limit))}
    if args.queries:
        sets["queries"] = list(iter_texts(args.queries, max_records=args.limit))
    report = {
        "machine": machine(),
        "model": args.model or f"untrained student of {args.vocab}",
        "trainable_parameters": model.num_parameters(only_trainable=True),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "results": measure(model, sets, args.batch_size, args.repeats),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    markdown = to_markdown(report)
    with open(os.path.join(args.out, "speed.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    print(markdown)
    return report


if __name__ == "__main__":
    main()
