"""The server's Prometheus metrics, in a registry of its own (several servers can live in one process)."""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 (re-exported for the app)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

PREFIX = "bertapprox"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STAGES = ("queue", "tokenization", "model", "search")
RATE_WINDOW_S = 10.0


class ServerMetrics:
    """Counters, histograms and gauges of one server; :meth:`render` gives the text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests by endpoint and status code", ["endpoint", "code"], registry=r
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "HTTP error answers by endpoint, status code and error type",
            ["endpoint", "code", "type"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "Request latency (arrival to answer) by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            f"{PREFIX}_stage_seconds",
            "Time per stage: queue (per request), tokenization and model (per batch), search (per request)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_texts = Histogram(
            f"{PREFIX}_batch_texts", "Texts per encoded batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            f"{PREFIX}_batch_requests", "Requests per encoded batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests accepted and not yet answered", registry=r)
        self.queue_texts = Gauge(f"{PREFIX}_queue_texts", "Texts waiting for a batch", registry=r)
        self.texts = Counter(f"{PREFIX}_texts", "Texts embedded (cache hits included)", registry=r)
        self.cache_hits = Counter(f"{PREFIX}_cache_hits", "Texts answered from the embedding cache", registry=r)
        self.cache_hit_rate = Gauge(f"{PREFIX}_cache_hit_rate", "Cache hits / texts since start", registry=r)
        self.texts_per_second = Gauge(
            f"{PREFIX}_texts_per_second", f"Texts embedded per second over the last {RATE_WINDOW_S:g} s", registry=r
        )
        self.shadow_cosine = Gauge(
            f"{PREFIX}_shadow_cosine",
            "Rolling mean student-vs-teacher cosine of shadowed texts (NaN before the first sample)",
            registry=r,
        )
        self.shadow_overlap = Gauge(
            f"{PREFIX}_shadow_topk_overlap",
            "Rolling mean overlap of the student's and the teacher's top-k (NaN without an index)",
            registry=r,
        )
        self.shadow_cosine_hist = Histogram(
            f"{PREFIX}_shadow_cosine_distribution",
            "Student-vs-teacher cosine per shadowed text",
            buckets=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0),
            registry=r,
        )
        self.shadow_samples = Counter(f"{PREFIX}_shadow_samples", "Texts embedded by the teacher", registry=r)
        self.shadow_dropped = Counter(
            f"{PREFIX}_shadow_dropped", "Sampled texts dropped (shadow queue full)", registry=r
        )
        self.healthy = Gauge(f"{PREFIX}_health", "1 ready, 0.5 degraded, 0 not serving", registry=r)
        self.shadow_cosine.set(float("nan"))
        self.shadow_overlap.set(float("nan"))
        self._children: dict[tuple, object] = {}
        self._stage = {name: self.stage.labels(name) for name in STAGES}
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self._texts_seen = 0
        self._hits_seen = 0

    def request(self, endpoint: str, code: int, seconds: float, error_type: str | None = None) -> None:
        """Count one answered request."""
        key = (endpoint, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(endpoint, str(code)), self.latency.labels(endpoint))
        child[0].inc()
        child[1].observe(seconds)
        if code >= 400:
            self.errors.labels(endpoint, str(code), error_type or "error").inc()

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def batch(self, texts: int, requests: int, hits: int, tokenize_s: float, model_s: float) -> None:
        """Count one encoded batch (called on the event loop)."""
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        if texts > hits:
            self._stage["tokenization"].observe(tokenize_s)
            self._stage["model"].observe(model_s)
        self.texts.inc(texts)
        self.cache_hits.inc(hits)
        now = time.monotonic()
        with self._lock:
            self._texts_seen += texts
            self._hits_seen += hits
            self._recent.append((now, texts))
            while self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()

    def render(self, queue_depth: int, queue_texts: int) -> bytes:
        """The text exposition format, gauges brought up to date first."""
        self.queue_depth.set(queue_depth)
        self.queue_texts.set(queue_texts)
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()
            self.texts_per_second.set(sum(count for _, count in self._recent) / RATE_WINDOW_S)
            self.cache_hit_rate.set(self._hits_seen / self._texts_seen if self._texts_seen else 0.0)
        return generate_latest(self.registry)
