"""Load test of the HTTP server: the student and the teacher served the same way, over loopback.

    python -m benchmarks.serve --model STUDENT --teacher TEACHER --queries queries.jsonl --out results/serve

For each model the benchmark starts ``python -m serving serve`` on 127.0.0.1 (a subprocess, embedding cache off,
so every text is computed), waits until ``/health`` answers, drives it from this process with a bounded number of
concurrent keep-alive clients (asyncio, raw HTTP/1.1) for a bounded time and request count, then stops it with
SIGTERM. Scenarios:

* ``single``: ``--concurrency`` clients, one text per ``POST /embed``;
* ``batched``: ``--batch-concurrency`` clients, ``--batch`` texts per request;
* ``overload``: ``--overload`` × ``--concurrency`` clients against a server admitting ``--concurrency`` queued
  requests: the excess must get 429 quickly, every accepted request an answer, no 5xx, memory flat;
* ``single, shadow R`` (with ``--teacher``): ``single`` again on a server running the drift watch at
  ``--shadow-rate`` R, whose cost is the throughput lost against ``single``.

Every 200 answer is parsed and compared with the direct ``Encoder`` (or ``Teacher``) output of its texts (nothing
lost, duplicated or swapped between concurrent requests). Reports requests/s, texts/s, p50/p95/p99 latency of
answered and of refused requests, errors by status and the server's resident memory before and after, as
``serve.json``, ``serve.md`` and ``serve.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the server process ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``python -m serving serve`` on a free loopback port, for the duration of a ``with`` block."""

    def __init__(self, model: str, kind: str, max_queued: int, threads: int, extra: list[str] | None = None) -> None:
        self.model_kind = kind
        self.port = free_port()
        self.command = [
            sys.executable, "-m", "serving", "serve", "--model", model, "--host", "127.0.0.1",
            "--port", str(self.port), "--cache-size", "0", "--max-queued-requests", str(max_queued),
            "--threads", str(threads), "--log-level", "warning", *(extra or []),
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.log = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.process = subprocess.Popen(
            self.command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.process.stdout.read()}") from None
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("the server did not answer /health within 180 s") from None
                time.sleep(0.3)

    def process_figures(self) -> tuple[float, float]:
        """The server's resident memory (bytes) and CPU time (seconds), from its own /metrics."""
        figures = {}
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                name, _, value = line.partition(" ")
                if name in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
                    figures[name] = float(value)
        return figures.get("process_resident_memory_bytes", np.nan), figures.get("process_cpu_seconds_total", np.nan)

    def children_cpu(self) -> float:
        """CPU time (seconds) of the server's child processes (the drift watch's teacher, uvicorn's workers)."""
        try:
            import psutil
        except ImportError:
            return float("nan")
        total = 0.0
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:  # gone meanwhile
                pass
        return total

    def measure(self, scenario: Scenario, *args) -> Outcome:
        """Drive ``scenario`` against this server, with its memory and CPU time around the run."""
        rss, cpu = self.process_figures()
        children = self.children_cpu()
        client_cpu = time.process_time()
        outcome = drive(self.port, scenario, *args)
        outcome.client_cpu_s = time.process_time() - client_cpu
        rss_after, cpu_after = self.process_figures()
        outcome.children_cpu_s = self.children_cpu() - children
        outcome.rss_before_mb, outcome.rss_after_mb = rss / 2**20, rss_after / 2**20
        outcome.server_cpu_s = cpu_after - cpu
        print(json.dumps({"model": self.model_kind, **outcome.as_dict()}), flush=True)
        return outcome

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.log = self.process.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.log = self.process.communicate()[0]


# --- the clients ----------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    clients: int
    texts_per_request: int


@dataclass
class Outcome:
    """What one scenario measured."""

    name: str
    clients: int
    texts_per_request: int
    seconds: float = 0.0
    requests: int = 0
    answered: int = 0
    texts: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    mismatches: int = 0
    worst_difference: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    refused_latency_ms: dict[str, float] = field(default_factory=dict)
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    server_cpu_s: float = 0.0  # CPU time the server process used during the run (of the one answering /metrics)
    children_cpu_s: float = 0.0  # CPU time of its child processes (the drift watch's teacher; workers)
    client_cpu_s: float = 0.0

    @property
    def server_cpu_us_per_request(self) -> float:
        """Server CPU time per answered request: what one core sustains, whatever else the machine runs."""
        return self.server_cpu_s / self.answered * 1e6 if self.answered else 0.0

    @property
    def children_cpu_us_per_request(self) -> float:
        """The child processes' CPU time per answered request (with ``--workers`` > 1: the workers', all of them)."""
        return self.children_cpu_s / self.answered * 1e6 if self.answered else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(requests_per_s=round(self.requests_per_s, 1), texts_per_s=round(self.texts_per_s, 1))
        out.update(server_cpu_us_per_request=round(self.server_cpu_us_per_request, 1))
        out.update(children_cpu_us_per_request=round(self.children_cpu_us_per_request, 1))
        return out


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(array, q)), 3) for q in (50, 95, 99)} | {
        "max": round(float(array.max()), 3)
    }


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split(b" ", 2)[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _drive(
    port: int, scenario: Scenario, texts: list[str], expected: np.ndarray, duration: float, max_requests: int,
    tolerance: float,
) -> Outcome:  # fmt: skip
    import orjson

    outcome = Outcome(scenario.name, scenario.clients, scenario.texts_per_request)
    latencies: list[float] = []
    refused: list[float] = []
    counter = iter(range(max_requests))
    stop_at = time.perf_counter() + duration

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in counter:
                if time.perf_counter() > stop_at:
                    return
                first = (request * scenario.texts_per_request + number) % len(texts)
                rows = [(first + i) % len(texts) for i in range(scenario.texts_per_request)]
                body = orjson.dumps({"inputs": [texts[i] for i in rows], "normalize": False})
                head = (
                    f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                start = time.perf_counter()
                writer.write(head + body)
                status, answer = await _read_answer(reader)
                seconds = time.perf_counter() - start
                outcome.requests += 1
                outcome.codes[str(status)] = outcome.codes.get(str(status), 0) + 1
                if status != 200:
                    refused.append(seconds)
                    continue
                latencies.append(seconds)
                outcome.answered += 1
                outcome.texts += len(rows)
                got = np.asarray(orjson.loads(answer), dtype=np.float32)
                difference = (
                    float(np.abs(got - expected[rows]).max()) if got.shape == (len(rows), expected.shape[1]) else np.inf
                )
                outcome.worst_difference = max(outcome.worst_difference, difference)
                if difference > tolerance:
                    outcome.mismatches += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(number) for number in range(scenario.clients)))
    outcome.seconds = time.perf_counter() - start
    outcome.latency_ms = percentiles(latencies)
    outcome.refused_latency_ms = percentiles(refused)
    return outcome


def drive(*args) -> Outcome:
    try:
        import uvloop

        return uvloop.run(_drive(*args))
    except ImportError:
        return asyncio.run(_drive(*args))


# --- the run --------------------------------------------------------------------------------------
def read_texts(path: str, limit: int) -> list[str]:
    """Texts of a jsonl (``text`` or ``query`` field) or a plain file (one per line)."""
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            texts.append(json.loads(line).get("text") or json.loads(line).get("query") if line[0] == "{" else line)
            if len(texts) >= limit:
                break
    if not texts:
        raise ValueError(f"{path}: no texts")
    return texts


def direct_embeddings(model: str, texts: list[str]) -> tuple[np.ndarray, str]:
    """What the model gives outside the server, and its kind."""
    from indexers.encoders import is_student_folder

    if is_student_folder(model):
        from bertapprox_hf.inference import Encoder

        return Encoder.from_pretrained(model, device="cpu", cache_size=0).encode(texts, batch_size=256), "student"
    from bertapprox_hf.pipeline.teacher import Teacher

    return Teacher.from_pretrained(model, device="cpu").encode(texts, batch_size=64), "teacher"


def run_model(model: str, texts: list[str], args: argparse.Namespace, teacher: bool) -> list[Outcome]:
    if teacher:  # its direct embeddings are the slow part: fewer distinct texts
        texts = texts[: args.teacher_texts]
    expected, kind = direct_embeddings(model, texts)
    tolerance = 1e-4 if kind == "teacher" else 1e-5
    duration = args.duration * (args.teacher_fraction if teacher else 1.0)
    scenarios = [Scenario("single", args.concurrency, 1), Scenario("batched", args.batch_concurrency, args.batch)]
    measure = (texts, expected, duration, args.max_requests, tolerance)
    with ServerProcess(model, kind, args.max_queued or 4 * args.concurrency, args.threads, args.server_flags) as server:
        drive(server.port, Scenario("warm-up", 4, 1), texts, expected, 1.0, 200, tolerance)
        outcomes = [server.measure(scenario, *measure) for scenario in scenarios]
    if teacher:
        return outcomes
    with ServerProcess(model, kind, args.concurrency, args.threads, args.server_flags) as server:
        outcomes.append(server.measure(Scenario("overload", args.overload * args.concurrency, 1), *measure))
    if args.teacher and args.shadow_rate > 0:  # the drift watch's cost: the single scenario with shadowing on
        flags = [*args.server_flags, "--teacher", args.teacher, "--shadow-rate", str(args.shadow_rate)]
        with ServerProcess(model, kind, args.max_queued or 4 * args.concurrency, args.threads, flags) as server:
            drive(server.port, Scenario("warm-up", 4, 1), texts, expected, 1.0, 200, tolerance)
            name = f"single, shadow {args.shadow_rate:g}"
            outcomes.append(server.measure(Scenario(name, args.concurrency, 1), *measure))
    return outcomes


def markdown(rows: list[tuple[str, Outcome]], settings: dict) -> str:
    lines = [
        "# HTTP server load test (loopback)",
        "",
        f"Settings: {json.dumps(settings)}",
        "",
        "| model | scenario | clients | texts/request | requests/s | texts/s | p50 ms | p95 ms | p99 ms | "
        "refused p99 ms | codes | mismatches | server CPU µs/request | child processes CPU µs/request | "
        "RSS MB before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, o in rows:
        lat, ref = o.latency_ms, o.refused_latency_ms
        lines.append(
            f"| {model} | {o.name} | {o.clients} | {o.texts_per_request} | {o.requests_per_s:,.0f} | "
            f"{o.texts_per_s:,.0f} | {lat.get('p50', '–')} | {lat.get('p95', '–')} | {lat.get('p99', '–')} | "
            f"{ref.get('p99', '–')} | {json.dumps(o.codes)} | {o.mismatches} | {o.server_cpu_us_per_request:,.0f} | "
            f"{o.children_cpu_us_per_request:,.0f} | {o.rss_before_mb:.0f} → {o.rss_after_mb:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[tuple[str, Outcome]], path: str) -> None:
    """Texts/s (log scale) and p99 latency of every run, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{model}\n{outcome.name}" for model, outcome in rows]
    colors = ["tab:blue" if model == "student" else "tab:orange" for model, _ in rows]
    figure, (speed, latency) = plt.subplots(1, 2, figsize=(13, 4.5))
    speed.bar(labels, [max(o.texts_per_s, 1e-3) for _, o in rows], color=colors)
    speed.set_yscale("log")
    speed.set_ylabel("texts/s answered (log)")
    latency.bar(labels, [o.latency_ms.get("p99", 0.0) for _, o in rows], color=colors)
    latency.set_yscale("log")
    latency.set_ylabel("p99 latency of answered requests, ms (log)")
    for axis in (speed, latency):
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("HTTP server over loopback: student (blue) and teacher (orange) served the same way")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="student folder")
    parser.add_argument("--teacher", default=None, help="teacher folder, served and measured the same way")
    parser.add_argument("--queries", required=True, help="texts: jsonl (text/query) or one per line")
    parser.add_argument("--num-texts", type=int, default=5000, help="distinct texts cycled through")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="texts per request of the batched scenario")
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument("--overload", type=int, default=4, help="clients per admitted request in the overload run")
    parser.add_argument("--max-queued", type=int, default=None, help="server queue limit (default 4 × concurrency)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario at most")
    parser.add_argument("--teacher-texts", type=int, default=512, help="distinct texts of the teacher's runs")
    parser.add_argument("--teacher-fraction", type=float, default=0.5, help="the teacher's share of --duration")
    parser.add_argument("--max-requests", type=int, default=200_000, help="requests per scenario at most")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--shadow-rate", type=float, default=0.05, help="drift watch rate of the shadow run (0: none)")
    parser.add_argument("--server-flags", nargs="*", default=[], help="more flags for the server (e.g. --dtype int8)")
    parser.add_argument("--out", default=None, help="folder for serve.json and serve.md")
    args = parser.parse_args(argv)
    texts = read_texts(args.queries, args.num_texts)
    rows = [("student", o) for o in run_model(args.model, texts, args, teacher=False)]
    if args.teacher:
        rows += [("teacher", o) for o in run_model(args.teacher, texts, args, teacher=True)]
    from benchmarks.machine import machine_info

    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    report = markdown(rows, settings)
    print(report)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        record = {
            "settings": settings,
            "machine": machine_info(),
            "runs": [{"model": m, **o.as_dict()} for m, o in rows],
        }
        Path(args.out, "serve.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        Path(args.out, "serve.md").write_text(report, encoding="utf-8")
        plot(rows, str(Path(args.out, "serve.png")))
    failed = any(o.mismatches or any(code.startswith("5") for code in o.codes) for _, o in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
