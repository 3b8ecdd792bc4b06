"""Speed of the teacher, the student and baselines, end to end from raw text, measured side by side.

    python -m benchmarks.speed --model RUN/best --teacher TEACHER_DIR \\
        --queries queries.jsonl --corpus corpus.jsonl --distill-model2vec --threads 1 all --out results/speed

Every system encodes the same texts (tokenization included, caches off) in one process, each through
its own ``encode(texts, batch_size=...)`` (the teacher sorts texts by length before batching, as
sentence-transformers does):

* throughput, texts/s at batch 64 and 256, for short queries and for passages. Each repeat runs every
  system once over the same batch list, in a rotated order; the figure is the median over repeats.
  A system faster than ``--min-time`` per pass goes over the list again until it has run that long.
* latency at batch 1 (one text per call): p50/p95/p99 over all single-text calls of all repeats
  (interleaved the same way).
* ratios: a system's median texts/s over the teacher's (same texts, batch, threads and device).
* all of it at each ``--threads`` setting: torch threads, and for 1 thread the Rust tokenizers'
  parallelism switched off (``TOKENIZERS_PARALLELISM=false``), so the whole pipeline uses one core.
* peak memory: each system in a fresh subprocess that imports the same libraries, resets the
  kernel's peak-RSS mark (``/proc/self/clear_refs``), loads the system and encodes the query and
  passage samples at the largest batch size; the figure is peak RSS (``VmHWM``) minus RSS before
  loading. On CUDA also ``torch.cuda.max_memory_allocated``.
* size on disk: the files of the system's folder that loading uses (weights, tokenizer, config,
  code), and the weights alone.
* for the student's ``Encoder`` systems: where a batch's time goes (tokenize / pool / ρ) and the
  mean cosine of each precision's output to float32.

With a GPU (``torch.cuda.is_available()``) the systems that support it are also timed on ``cuda``
(with ``torch.cuda.synchronize()`` around every timed call), once, with all CPU threads; model2vec stays on CPU.

Writes ``speed.json`` (machine, settings, every measurement), ``speed.md`` (tables) and
``speed.png`` (speed-up over the teacher, log scale) into ``--out``. Adding a system is one entry of
:data:`SYSTEMS`: a loader ``(sources, device) -> object with encode(texts, batch_size=...)`` and the
source folder it reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertapprox_hf.inference.protocol import TextEncoder

from .speed_report import plot, to_markdown
from .speed_systems import BASELINE, BATCH_SIZES, SETS, SPEEDUP_BATCH_SIZE, SYSTEMS, System  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
# Files a system folder holds that loading it does not read: they do not count in its size on disk.
NOT_LOADED = {"README.md", "training.json", "data_config.json", ".gitattributes"}
NOT_LOADED_DIRS = {"onnx", "openvino", ".git", "__pycache__"}  # alternative exports shipped beside the weights
# Read when the libraries start, so recorded with the figures (OMP_WAIT_POLICY=PASSIVE matters on a busy CPU).
ENVIRONMENT = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "MKL_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "CUDA_VISIBLE_DEVICES",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".npy")


# --- inputs ----------------------------------------------------------------------------------------
def _distinct(texts: Iterator[str]) -> Iterator[str]:
    seen: set[str] = set()
    for text in texts:
        if text.strip() and text not in seen:
            seen.add(text)
            yield text


def read_texts(path: str, limit: int, what: str) -> list[str]:
    """The first ``limit`` distinct non-blank texts of a jsonl corpus; a clear error when there are none."""
    from bertapprox_hf.pipeline.corpus import iter_texts

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    sample = list(itertools.islice(_distinct(iter_texts(path)), limit))
    if not sample:
        raise ValueError(f"no texts in the {what} file {path}")
    return sample


def check_folder(path: str, what: str, needs: str = "config.json") -> str:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder not found: {path}")
    if not os.path.isfile(os.path.join(path, needs)):
        raise FileNotFoundError(f"{what} folder {path} has no {needs}: not a saved model")
    return path


def disk_size(folder: str) -> dict[str, float]:
    """MB of the files loading reads (weights, tokenizer, config, code) and of the weights alone."""
    total = weights = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in NOT_LOADED_DIRS]
        for name in files:
            if name in NOT_LOADED or name.endswith(".md"):
                continue
            size = os.path.getsize(os.path.join(root, name))
            total += size
            weights += size if name.endswith(WEIGHT_SUFFIXES) else 0
    return {"disk_mb": total / 2**20, "weights_mb": weights / 2**20}


# --- threads and devices ----------------------------------------------------------------------------
def thread_count(setting: str) -> int:
    from benchmarks.machine import usable_cores

    return usable_cores() if setting == "all" else int(setting)


class ThreadSetting:
    """``with ThreadSetting(n):`` torch threads = n; for n == 1 also no Rust-tokenizer parallelism."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> ThreadSetting:
        import torch

        self._torch, self._env = torch.get_num_threads(), os.environ.get("TOKENIZERS_PARALLELISM")
        torch.set_num_threads(self.threads)
        if self.threads == 1:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # read by tokenizers at each batch call
        return self

    def __exit__(self, *exc_info) -> None:
        import torch

        torch.set_num_threads(self._torch)
        if self._env is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = self._env


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes): other jobs sharing the CPU show here."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def synchronizer(device: str) -> Callable[[], None]:
    """Waits for queued GPU work (nothing on CPU): call before starting and before stopping a clock."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


# --- timing ------------------------------------------------------------------------------------------
def rotated(names: Sequence[str], repeat: int) -> list[str]:
    """``names`` starting at position ``repeat`` (mod len): each system takes each slot in turn."""
    k = repeat % len(names)
    return list(names[k:]) + list(names[:k])


def timed_passes(encoder: TextEncoder, texts: list[str], batch_size: int, min_time: float, sync) -> tuple[float, int]:
    """Seconds per pass over ``texts`` and the passes made: passes repeat until ``min_time`` has elapsed."""
    passes = 0
    sync()
    start = time.perf_counter()
    while True:
        encoder.encode(texts, batch_size=batch_size)
        passes += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / passes, passes


def measure_throughput(
    encoders: dict[str, TextEncoder],
    texts: list[str],
    batch_size: int,
    repeats: int,
    min_time: float,
    sync,
    desc: str = "",
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds per pass of each system over ``texts`` in each repeat, interleaved; and the passes per run.

    One untimed warm-up batch per system first. A run lasts at least ``min_time`` seconds: fast
    systems make several passes over the list (their mean is the run's figure), slow ones one.
    """
    from tqdm.auto import tqdm

    for encoder in encoders.values():
        encoder.encode(texts[:batch_size], batch_size=batch_size)  # lazy initialisation, allocator, library caches
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    passes: dict[str, list[int]] = {name: [] for name in encoders}
    for repeat in tqdm(range(repeats), desc=desc, leave=False):
        for name in rotated(list(encoders), repeat):
            per_pass, count = timed_passes(encoders[name], texts, batch_size, min_time, sync)
            seconds[name].append(per_pass)
            passes[name].append(count)
    return seconds, passes


def measure_latency(
    encoders: dict[str, TextEncoder], texts: list[str], repeats: int, sync, desc: str = ""
) -> dict[str, list[float]]:
    """Milliseconds of each single-text call (batch 1) of each system, interleaved over repeats."""
    from tqdm.auto import tqdm

    for encoder in encoders.values():
        encoder.encode(texts[:1], batch_size=1)
    calls: dict[str, list[float]] = {name: [] for name in encoders}
    for repeat in tqdm(range(repeats), desc=desc, leave=False):
        for name in rotated(list(encoders), repeat):
            encoder, out = encoders[name], calls[name]
            for text in texts:
                sync()
                start = time.perf_counter()
                encoder.encode([text], batch_size=1)
                sync()
                out.append(1000 * (time.perf_counter() - start))
    return calls


def percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def profile_stages(encoder, texts: list[str], batch_size: int, repeats: int) -> dict[str, float]:
    """Milliseconds per batch of an ``Encoder`` (CPU) in tokenization, pooling (softmax, bag sums) and ρ."""
    import torch

    from bertapprox_hf.model.tokenization_bertapprox import pad_flat_bags

    tokenizer, limit = encoder.tokenizer, encoder.max_bag_size
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    flat = getattr(tokenizer, "encode_bags_flat", None)  # what Encoder.encode reads, where the tokenizer has it
    to_bags = flat or tokenizer.encode_bags
    bags = [to_bags(batch, limit) for batch in batches]

    def pooled(bag_batch):
        if flat is None:
            return encoder.pool_bags(bag_batch)
        ids, offsets = bag_batch
        return encoder.pool_padded(*pad_flat_bags(ids, offsets, np.arange(len(offsets) - 1)))

    def median_seconds(function) -> float:
        function()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    with torch.inference_mode():
        pooled_batches = [pooled(b) for b in bags]
        tokenize = median_seconds(lambda: [to_bags(batch, limit) for batch in batches])
        pool = median_seconds(lambda: [pooled(b) for b in bags])
        rho = median_seconds(lambda: [encoder.readout(p) for p in pooled_batches])
    per_batch = 1000 / len(batches)
    return {"tokenize_ms": tokenize * per_batch, "pool_ms": pool * per_batch, "rho_ms": rho * per_batch}


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(1) / np.maximum(norms, 1e-30)).mean())


def is_encoder(obj: object) -> bool:
    from bertapprox_hf.inference import Encoder

    return isinstance(obj, Encoder)


# --- peak memory in a fresh process -----------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_probe(request: dict) -> dict:
    """In a fresh interpreter: RSS before loading, then peak RSS while loading the system and encoding."""
    import resource

    import torch

    import bertapprox_hf.inference  # noqa: F401  (the same libraries in every probe, imported before the baseline)
    import bertapprox_hf.pipeline.teacher  # noqa: F401

    try:
        import model2vec  # noqa: F401
    except ImportError:
        pass
    device = request["device"]
    system = SYSTEMS[request["system"]]
    if device.startswith("cuda"):  # the CUDA context (hundreds of MB of host memory) is not the system's
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:  # reset the peak-RSS mark (Linux ≥ 4.0): the peak then excludes imports
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        method = "VmHWM after clear_refs - VmRSS before loading"
    except OSError:
        method = "ru_maxrss - VmRSS before loading"
    before = _status_mb("VmRSS") or 0.0
    start = time.perf_counter()
    encoder = system.load(request["sources"], device)
    load_s = time.perf_counter() - start
    loaded = _status_mb("VmRSS") or 0.0
    for texts in request["texts"]:
        encoder.encode(texts, batch_size=request["batch_size"])
    peak = _status_mb("VmHWM") if method.startswith("VmHWM") else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    result = {
        "rss_before_mb": before,
        "rss_loaded_mb": loaded,
        "peak_rss_mb": peak,
        "peak_increase_mb": peak - before,
        "load_s": load_s,
        "method": method,
    }
    if device.startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _probe_main() -> None:
    """Entry of the probe subprocess: a JSON request on stdin, the JSON result as the last stdout line."""
    request = json.loads(sys.stdin.read())
    import torch

    torch.set_num_threads(request["threads"])
    print(json.dumps(memory_probe(request)), flush=True)


def measure_memory(name: str, sources: dict[str, str], device: str, texts: list[list[str]], batch_size: int) -> dict:
    """Peak memory of one system, measured in a fresh subprocess (see :func:`memory_probe`)."""
    from benchmarks.machine import usable_cores

    request = {
        "system": name,
        "sources": sources,
        "device": device,
        "texts": texts,
        "batch_size": batch_size,
        "threads": usable_cores(),
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    code = "from benchmarks.speed import _probe_main; _probe_main()"
    done = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(request), capture_output=True, text=True, env=env, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {name} on {device} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_all_memory(
    names: list[str], sources: dict[str, str], devices: list[str], texts: list[list[str]], args: argparse.Namespace
) -> list[dict]:
    """Peak memory of every system on every device, ``--memory-jobs`` probe processes at a time.

    Each probe is its own process, so running several at once leaves each one's RSS figures unchanged.
    """
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(name, device) for device in devices for name in names if device in SYSTEMS[name].devices]
    print(f"peak memory: {len(jobs)} fresh processes, {args.memory_jobs} at a time", flush=True)
    largest = max(args.batch_sizes)
    with ThreadPoolExecutor(max_workers=max(1, args.memory_jobs)) as pool:
        probes = pool.map(lambda job: measure_memory(job[0], sources, job[1], texts, largest), jobs)
        return [
            {"system": name, "device": device, **probe}
            for (name, device), probe in zip(jobs, list(probes), strict=True)
        ]


# --- the run -------------------------------------------------------------------------------------------
def run_device(
    device: str,
    names: list[str],
    sources: dict[str, str],
    sets: dict[str, list[str]],
    thread_settings: list[str],
    args: argparse.Namespace,
) -> dict[str, list[dict]]:
    """Every measurement on one device: throughput, latency, stage breakdown and precision rows."""
    import torch

    rows: dict[str, list[dict]] = {"throughput": [], "latency": [], "stages": [], "precision": [], "conditions": []}
    sync = synchronizer(device)
    names = [name for name in names if device.split(":")[0] in SYSTEMS[name].devices]
    encoders, load_s = {}, {}
    for name in names:
        print(f"loading {name} on {device}", flush=True)
        start = time.perf_counter()
        encoders[name] = SYSTEMS[name].load(sources, device)
        load_s[name] = time.perf_counter() - start
    rows["load_s"] = [{"device": device, "system": name, "load_s": seconds} for name, seconds in load_s.items()]
    if not device.startswith("cpu"):
        thread_settings = ["all"]  # threads matter little on a GPU: time once, at all cores
    for setting in thread_settings:
        threads = thread_count(setting)
        with ThreadSetting(threads):
            where = {"device": device, "threads": threads}
            print(f"{device}, {threads} torch thread(s): throughput and latency", flush=True)
            load_before = load_average()
            for set_name, texts in sets.items():
                for batch_size in args.batch_sizes:
                    desc = f"{device} t{threads} {set_name} b{batch_size}"
                    seconds, passes = measure_throughput(
                        encoders, texts, batch_size, args.repeats, args.min_time, sync, desc
                    )
                    speeds = {name: len(texts) / statistics.median(runs) for name, runs in seconds.items()}
                    for name in encoders:
                        rows["throughput"].append(
                            {
                                **where,
                                "set": set_name,
                                "batch_size": batch_size,
                                "system": name,
                                "texts": len(texts),
                                "passes_per_run": passes[name],
                                "seconds": seconds[name],
                                "texts_per_s": speeds[name],
                                "ratio": speeds[name] / speeds[BASELINE],
                            }
                        )
                sample = texts[: args.latency_texts]
                calls = measure_latency(encoders, sample, args.repeats, sync, f"{device} t{threads} {set_name} b1")
                teacher_p50 = percentiles(calls[BASELINE])["p50_ms"]
                for name, ms in calls.items():
                    figures = percentiles(ms)
                    rows["latency"].append(
                        {
                            **where,
                            "set": set_name,
                            "system": name,
                            "calls": len(ms),
                            **figures,
                            "p50_ratio": teacher_p50 / figures["p50_ms"],
                        }
                    )
                if device == "cpu":
                    for name, encoder in encoders.items():
                        if is_encoder(encoder):
                            stage_ms = profile_stages(encoder, texts, SPEEDUP_BATCH_SIZE, args.repeats)
                            rows["stages"].append(
                                {**where, "set": set_name, "system": name, "batch_size": SPEEDUP_BATCH_SIZE, **stage_ms}
                            )
            rows["conditions"].append(
                {**where, "load_average_before": load_before, "load_average_after": load_average()}
            )
    reference = encoders.get("student")
    if reference is not None:
        with torch.inference_mode():
            for set_name, texts in sets.items():
                expected = reference.encode(texts, batch_size=SPEEDUP_BATCH_SIZE)
                for name, encoder in encoders.items():
                    if name != "student" and is_encoder(encoder):
                        cosine = mean_cosine(encoder.encode(texts, batch_size=SPEEDUP_BATCH_SIZE), expected)
                        rows["precision"].append(
                            {"device": device, "set": set_name, "system": name, "mean_cosine_to_float32": cosine}
                        )
    details = {name: {"rho_dtype": enc.rho_dtype} for name, enc in encoders.items() if is_encoder(enc)}
    rows["details"] = [{"device": device, "system": name, **d} for name, d in details.items()]
    return rows


def speedups(throughput: list[dict], device: str, threads: int) -> dict[str, dict[str, float]]:
    """{system: {set: ratio to the teacher}} at :data:`SPEEDUP_BATCH_SIZE`, for one device and thread count."""
    out: dict[str, dict[str, float]] = {}
    for row in throughput:
        if row["device"] == device and row["threads"] == threads and row["batch_size"] == SPEEDUP_BATCH_SIZE:
            out.setdefault(row["system"], {})[row["set"]] = row["ratio"]
    return out


# --- command line -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description="Throughput, latency, memory and size of the teacher, the student and baselines, side by side.",
    )
    student = parser.add_mutually_exclusive_group(required=True)
    student.add_argument("--model", help="saved student folder")
    student.add_argument("--vocab", help="vocabulary folder: time an untrained student of it (costs the same)")
    parser.add_argument("--teacher", required=True, help="teacher folder (the baseline of every ratio)")
    parser.add_argument("--queries", required=True, help="short texts (jsonl)")
    parser.add_argument("--corpus", required=True, help="passages (jsonl)")
    m2v = parser.add_mutually_exclusive_group()
    m2v.add_argument("--model2vec", help="saved model2vec folder to time as a baseline")
    m2v.add_argument(
        "--distill-model2vec", action="store_true", help="distil model2vec from the teacher (PCA 256) if not cached"
    )
    parser.add_argument("--onnx", help="export folder of the student (bertapprox export onnx) to time on ONNX Runtime")
    parser.add_argument("--model2vec-cache", help="folder of distilled model2vec models (default: $BERTAPPROX_WORK)")
    parser.add_argument("--systems", help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all available)")
    parser.add_argument(
        "--threads", nargs="+", default=["1", "all"], help="torch thread counts to measure at: numbers or 'all'"
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; --quick 2)")
    parser.add_argument("--queries-limit", type=int, default=None, help="distinct queries (default 1024)")
    parser.add_argument("--passages-limit", type=int, default=None, help="distinct passages (default 256)")
    parser.add_argument("--latency-texts", type=int, default=None, help="texts per set timed one at a time (100)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds a timed run lasts at least (0.3)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES), help="throughput batches")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-jobs", type=int, default=2, help="peak-memory subprocesses run at once (2)")
    parser.add_argument("--no-plot", action="store_true", help="skip speed.png")
    parser.add_argument("--quick", action="store_true", help="small samples and 2 repeats (CI, tests)")
    parser.add_argument("--out", default="results/speed", help="folder for speed.json, speed.md and speed.png")
    return parser


def _settle_defaults(args: argparse.Namespace) -> None:
    quick = {"repeats": 2, "queries_limit": 64, "passages_limit": 16, "latency_texts": 8, "min_time": 0.02}
    full = {"repeats": 3, "queries_limit": 1024, "passages_limit": 256, "latency_texts": 100, "min_time": 0.3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("repeats", "queries_limit", "passages_limit", "latency_texts"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1")
    if any(b < 1 for b in args.batch_sizes) or SPEEDUP_BATCH_SIZE not in args.batch_sizes:
        raise ValueError(f"--batch-sizes must be positive and include {SPEEDUP_BATCH_SIZE}")
    for setting in args.threads:
        if setting != "all" and not (setting.isdigit() and int(setting) >= 1):
            raise ValueError(f"--threads takes positive numbers or 'all', got {setting!r}")


def check_inputs(args: argparse.Namespace) -> None:
    """Every given folder and file exists (cheap: before any library is imported)."""
    check_folder(args.teacher, "teacher")
    if args.model:
        check_folder(args.model, "student")
    elif not os.path.isdir(args.vocab):
        raise FileNotFoundError(f"vocabulary folder not found: {args.vocab}")
    if args.model2vec:
        check_folder(args.model2vec, "model2vec")
    if args.onnx:
        check_folder(args.onnx, "ONNX export", needs="model.onnx")
    for path, what in ((args.queries, "queries"), (args.corpus, "passages (--corpus)")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")


def resolve_sources(args: argparse.Namespace, scratch: str) -> dict[str, str]:
    """Paths of every system's folder: an untrained student saved to ``scratch`` for ``--vocab``,
    model2vec distilled (or found in the cache) for ``--distill-model2vec``."""
    sources = {"teacher": args.teacher}
    if args.model:
        sources["model"] = args.model
    else:
        from bertapprox_hf.pipeline.vocabulary import Vocabulary
        from bertapprox_hf.training.student import create_student

        sources["model"] = os.path.join(scratch, "untrained-student")
        create_student(Vocabulary.load(args.vocab)).save_pretrained(sources["model"])
    if args.onnx:
        sources["onnx"] = args.onnx
    if args.model2vec:
        sources["model2vec"] = args.model2vec
    elif args.distill_model2vec:
        from benchmarks.model2vec_baseline import distilled_model2vec

        print("model2vec: distilling from the teacher unless cached", flush=True)
        sources["model2vec"] = distilled_model2vec(args.teacher, args.model2vec_cache)
    return sources


def select_systems(args: argparse.Namespace) -> list[str]:
    """The systems to time: ``--systems`` (the teacher always joins) or all whose source was given."""
    given = {"teacher", "model"} | ({"model2vec"} if args.model2vec or args.distill_model2vec else set())
    given |= {"onnx"} if args.onnx else set()
    available = [name for name, system in SYSTEMS.items() if system.source in given]
    if not args.systems:
        return available
    names = list(dict.fromkeys(name.strip() for name in args.systems.split(",") if name.strip()))
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(f"systems {missing} need their source folder (--model2vec or --distill-model2vec?)")
    if BASELINE not in names:
        names.insert(0, BASELINE)  # every ratio is to the teacher
    return names


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write speed.json, speed.md and speed.png; return the report.

    The report holds ``machine``, ``settings``, ``systems`` (sizes), ``throughput``, ``latency``,
    ``memory``, ``stages``, ``precision`` and ``speedup``: {system: {"queries", "passages"}}, each
    system's texts/s over the teacher's at batch 64, on CPU, at the largest thread count measured
    (all cores with the default ``--threads 1 all``); ``speedup_basis`` says which. With a GPU,
    ``speedup_cuda`` holds the same on CUDA.
    """
    args = build_parser().parse_args(argv)
    _settle_defaults(args)
    check_inputs(args)
    names = select_systems(args)
    import torch

    from benchmarks.machine import machine_info

    sets = {
        "queries": read_texts(args.queries, args.queries_limit, "queries"),
        "passages": read_texts(args.corpus, args.passages_limit, "passages (--corpus)"),
    }
    with tempfile.TemporaryDirectory(prefix="bertapprox-speed-") as scratch:
        sources = resolve_sources(args, scratch)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        thread_settings = list(dict.fromkeys(args.threads))
        report: dict[str, Any] = {
            "machine": machine_info(),
            "settings": {
                "texts": {name: len(texts) for name, texts in sets.items()},
                "sources": {key: os.path.abspath(path) for key, path in sources.items()},
                "untrained_student_of": args.vocab,
                "batch_sizes": args.batch_sizes,
                "repeats": args.repeats,
                "latency_texts": args.latency_texts,
                "min_time_s": args.min_time,
                "threads": [thread_count(s) for s in thread_settings],
                "devices": devices,
                "quick": args.quick,
                "statistic": "median over interleaved repeats (rotated order); latency percentiles over all calls",
                "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
            },
            "systems": {},
            "throughput": [],
            "latency": [],
            "stages": [],
            "precision": [],
            "conditions": [],
            "load": [],
            "memory": [],
        }
        for name in names:
            report["systems"][name] = {
                "source": sources[SYSTEMS[name].source],
                **disk_size(sources[SYSTEMS[name].source]),
            }
        for device in devices:
            rows = run_device(device, names, sources, sets, thread_settings, args)
            for key in ("throughput", "latency", "stages", "precision", "conditions"):
                report[key] += rows[key]
            report["load"] += rows["load_s"]
            for detail in rows["details"]:
                report["systems"][detail["system"]].setdefault("rho_dtype", {})[device] = detail["rho_dtype"]
        if not args.no_memory:
            report["memory"] = measure_all_memory(names, sources, devices, list(sets.values()), args)
    for info in report["systems"].values():  # one precision name per system when it is the same on every device
        if isinstance(info.get("rho_dtype"), dict) and len(set(info["rho_dtype"].values())) == 1:
            info["rho_dtype"] = next(iter(info["rho_dtype"].values()))
    basis_threads = max(report["settings"]["threads"])
    report["speedup_basis"] = {"batch_size": SPEEDUP_BATCH_SIZE, "device": "cpu", "threads": basis_threads}
    report["speedup"] = speedups(report["throughput"], "cpu", basis_threads)
    report["speedup_by_threads"] = {
        str(threads): speedups(report["throughput"], "cpu", threads) for threads in report["settings"]["threads"]
    }
    if "cuda" in devices:
        report["speedup_cuda"] = speedups(report["throughput"], "cuda", thread_count("all"))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "speed.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    markdown = to_markdown(report)
    with open(os.path.join(args.out, "speed.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    if not args.no_plot:
        plot(report, os.path.join(args.out, "speed.png"))
    print(markdown)
    return report


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
