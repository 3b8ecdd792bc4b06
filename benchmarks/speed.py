"""Speed of the student: tokenizer throughput and model forward latency, measured on real text.

    python -m benchmarks.speed --vocab VOCAB_DIR --corpus corpus.jsonl --out results/speed
    python -m benchmarks.speed --model MODEL_DIR --corpus corpus.jsonl --queries queries.jsonl

Reports texts/s of the tokenizer (text → padded bag tensors) and the latency of the model's forward
pass on batches of passages, median over repeats, with the machine it ran on. Then the production
path, :class:`~bertapprox_hf.inference.Encoder` (precomputed tables), for each precision with its
cache off: texts/s end to end from raw text, single-text latency percentiles, where a batch's time
goes (tokenize / pool / ρ) and the mean cosine to the float32 output. ``--teacher`` adds the
teacher's own throughput for comparison. Writes ``speed.json`` and ``speed.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from bertapprox_hf.corpus import iter_texts

ENCODER_DTYPES = ("float32", "float16", "bfloat16", "int8")


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


def perturb(model, noise: float, seed: int = 0) -> None:
    """Add Gaussian noise to the trainable weights: an untrained student looks trained (for cosines)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * noise)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_encoder(
    model, sets: dict[str, list[str]], batch_size: int, repeats: int, latency_texts: int, dtypes=ENCODER_DTYPES
) -> list[dict]:
    """The Encoder fast path per precision and text set, cache off."""
    from bertapprox_hf.inference import Encoder

    rows, reference = [], {}
    for dtype in dtypes:
        start = time.perf_counter()
        encoder = Encoder.from_pretrained(model, dtype=dtype, cache_size=0)
        load_s = time.perf_counter() - start
        for name, texts in sets.items():
            end_to_end = timed(lambda e=encoder, t=texts: e.encode(t, batch_size=batch_size), repeats)
            latencies = []
            for text in texts[:latency_texts]:
                start = time.perf_counter()
                encoder.encode(text)
                latencies.append(1000 * (time.perf_counter() - start))
            output = encoder.encode(texts, batch_size=batch_size)
            reference.setdefault(name, output)
            cosine = (output * reference[name]).sum(1) / (
                np.linalg.norm(output, axis=1) * np.linalg.norm(reference[name], axis=1) + 1e-30
            )
            rows.append(
                {
                    "set": name,
                    "dtype": dtype,
                    "rho": encoder.rho_dtype,
                    "texts_per_s": round(len(texts) / statistics.median(end_to_end)),
                    "p50_ms": round(percentile(latencies, 50), 3),
                    "p95_ms": round(percentile(latencies, 95), 3),
                    "p99_ms": round(percentile(latencies, 99), 3),
                    **profile_encoder(encoder, texts, batch_size, repeats),
                    "mean_cosine_to_float32": round(float(cosine.mean()), 6),
                    "load_s": round(load_s, 2),
                }
            )
    return rows


def profile_encoder(encoder, texts: list[str], batch_size: int, repeats: int) -> dict:
    """Milliseconds per batch in tokenization, pooling (tensors, softmax, bag sums) and ρ."""
    tokenizer, limit = encoder.tokenizer, encoder.max_bag_size
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    bags = [tokenizer.encode_bags(batch, limit) for batch in batches]

    def pooled(bag_batch):
        lengths = torch.tensor([len(b) for b in bag_batch])
        flat = torch.tensor([i for b in bag_batch for i in b], dtype=torch.long)
        return encoder._pool(flat.to(encoder.device), lengths.to(encoder.device))

    with torch.inference_mode():
        pooled_batches = [pooled(b) for b in bags]
        tokenize = timed(lambda: [tokenizer.encode_bags(batch, limit) for batch in batches], repeats)
        pool = timed(lambda: [pooled(b) for b in bags], repeats)
        rho = timed(lambda: [encoder._rho(p) for p in pooled_batches], repeats)
    per_batch = 1000 / len(batches)
    return {
        "tokenize_ms": round(statistics.median(tokenize) * per_batch, 3),
        "pool_ms": round(statistics.median(pool) * per_batch, 3),
        "rho_ms": round(statistics.median(rho) * per_batch, 3),
    }


def measure_teacher(path: str, sets: dict[str, list[str]], batch_size: int, limit: int) -> dict:
    """The teacher's texts/s (one timed pass after a warm-up batch)."""
    from bertapprox_hf.teacher import Teacher

    teacher = Teacher.from_pretrained(path, device="cpu")
    results = {}
    for name, texts in sets.items():
        texts = texts[:limit]
        teacher.encode(texts[:batch_size], batch_size=batch_size)
        start = time.perf_counter()
        teacher.encode(texts, batch_size=batch_size)
        results[name] = {"texts": len(texts), "texts_per_s": round(len(texts) / (time.perf_counter() - start))}
    return results


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
    if report.get("encoder"):
        keys = list(report["encoder"][0])
        lines += ["", f"Encoder, cache off, batch {report['batch_size']} (ms are per batch; p50-p99: one text)", ""]
        lines += ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in report["encoder"]]
    if report.get("teacher"):
        lines.append("")
        for name, row in report["teacher"].items():
            line = f"teacher on {name}: {row['texts_per_s']} texts/s ({row['texts']} texts)"
            best = max((r["texts_per_s"] for r in report.get("encoder", []) if r["set"] == name), default=0)
            if best:
                line += f"; fastest Encoder: {best / max(row['texts_per_s'], 1):.0f}x"
            lines.append(line)
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
    parser.add_argument("--dtypes", default=",".join(ENCODER_DTYPES), help="Encoder precisions ('' skips)")
    parser.add_argument("--latency-texts", type=int, default=500, help="texts timed one at a time")
    parser.add_argument("--noise", type=float, default=0.0, help="perturb trainable weights (an untrained student)")
    parser.add_argument("--teacher", help="teacher folder: measure its throughput too")
    parser.add_argument("--teacher-limit", type=int, default=512, help="texts of each kind for the teacher")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_student(args)
    if args.noise:
        perturb(model, args.noise)
    sets = {"passages": list(iter_texts(args.corpus, max_records=args.limit))}
    if args.queries:
        sets["queries"] = list(iter_texts(args.queries, max_records=args.limit))
    report = {
        "machine": machine(),
        "model": args.model or f"untrained student of {args.vocab}",
        "trainable_parameters": model.num_parameters(only_trainable=True),
        "noise": args.noise,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "results": measure(model, sets, args.batch_size, args.repeats),
    }
    dtypes = [d for d in args.dtypes.split(",") if d]
    if dtypes:
        report["encoder"] = measure_encoder(model, sets, args.batch_size, args.repeats, args.latency_texts, dtypes)
    if args.teacher:
        report["teacher"] = measure_teacher(args.teacher, sets, args.batch_size, args.teacher_limit)
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
