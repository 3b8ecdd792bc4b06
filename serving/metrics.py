"""The server's Prometheus metrics, in a registry of its own (several servers can live in one process).

What every request and batch updates (request counts and latencies, stage times, batch sizes, texts) is counted in
plain Python numbers on the event loop, which is the only thread that updates or reads them, and exposed by a
collector when ``/metrics`` is scraped: a ``prometheus_client`` metric takes a lock and several calls per update,
a large share of a request's cost at thousands of requests per second. The drift watch's metrics, updated from its
own thread, are ``prometheus_client`` metrics.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 (re-exported for the app)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

PREFIX = "bertapprox"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STAGES = ("queue", "tokenization", "model", "search")
ENDPOINT_CODE = ("endpoint", "code")
RATE_WINDOW_S = 10.0


class LoopHistogram:
    """Bucket counts and sum of one histogram series (no lock: one thread updates it)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # first bound ≥ value: Prometheus' "le"
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((floatToGoString(bound), total))
        return out


class LoopMetrics:
    """Counters and histograms by label values, exposed as Prometheus metric families (a registry collector)."""

    def __init__(self) -> None:
        # name -> (kind, documentation, label names, bucket bounds or None, {label values: number or histogram})
        self.families: dict[str, tuple[str, str, tuple[str, ...], tuple | None, dict]] = {}

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> dict[tuple, float]:
        """The counts of a new counter by label values (add to them in place)."""
        values: dict[tuple, float] = {}
        self.families[name] = ("counter", documentation, labels, None, values)
        return values

    def histogram(
        self, name: str, documentation: str, bounds: Sequence[float], labels: tuple[str, ...] = ()
    ) -> dict[tuple, LoopHistogram]:
        """The series of a new histogram by label values (add new ones with :meth:`series`)."""
        series: dict[tuple, LoopHistogram] = {}
        self.families[name] = ("histogram", documentation, labels, tuple(bounds), series)
        return series

    def series(self, name: str, *labels: str) -> LoopHistogram:
        """The histogram series ``labels`` of ``name``, created empty the first time."""
        _, _, _, bounds, series = self.families[name]
        found = series.get(labels)
        if found is None:
            found = series[labels] = LoopHistogram(bounds)
        return found

    def collect(self) -> Iterator[Metric]:
        for name, (kind, documentation, labels, _, values) in list(self.families.items()):
            if kind == "counter":
                family = CounterMetricFamily(name, documentation, labels=labels)
                for key, value in list(values.items()):
                    family.add_metric(list(key), value)
            else:
                family = HistogramMetricFamily(name, documentation, labels=labels)
                for key, histogram in list(values.items()):
                    family.add_metric(list(key), histogram.buckets(), histogram.sum)
            yield family


class ServerMetrics:
    """Counters, histograms and gauges of one server; :meth:`render` gives the text format.

    :meth:`request`, :meth:`stage_seconds`, :meth:`batch` and :meth:`render` are called on the event loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        r = self.registry
        loop = self.loop = LoopMetrics()
        self.requests = loop.counter(f"{PREFIX}_requests", "HTTP requests by endpoint and status code", ENDPOINT_CODE)
        self.errors = loop.counter(
            f"{PREFIX}_errors", "HTTP error answers by endpoint, status code and error type", (*ENDPOINT_CODE, "type")
        )
        latency = "Request latency (arrival to answer) by endpoint"
        self.latency = loop.histogram(f"{PREFIX}_request_seconds", latency, LATENCY_BUCKETS, ("endpoint",))
        stage = f"{PREFIX}_stage_seconds"
        loop.histogram(
            stage,
            "Time per stage: queue (per request), tokenization and model (per batch), search (per request)",
            LATENCY_BUCKETS,
            ("stage",),
        )
        self._stage = {name: loop.series(stage, name) for name in STAGES}
        loop.histogram(f"{PREFIX}_batch_texts", "Texts per encoded batch", BATCH_BUCKETS)
        loop.histogram(f"{PREFIX}_batch_requests", "Requests per encoded batch", BATCH_BUCKETS)
        self.batch_texts = loop.series(f"{PREFIX}_batch_texts")
        self.batch_requests = loop.series(f"{PREFIX}_batch_requests")
        self.texts = loop.counter(f"{PREFIX}_texts", "Texts embedded (cache hits included)")
        self.cache_hits = loop.counter(f"{PREFIX}_cache_hits", "Texts answered from the embedding cache")
        self.texts[()] = self.cache_hits[()] = 0
        r.register(loop)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Requests accepted and not yet answered", registry=r)
        self.queue_texts = Gauge(f"{PREFIX}_queue_texts", "Texts waiting for a batch", registry=r)
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
        self._children: dict[tuple[str, int], tuple[tuple[str, str], LoopHistogram]] = {}
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._recent_texts = 0  # texts in _recent

    def request(self, endpoint: str, code: int, seconds: float, error_type: str | None = None) -> None:
        """Count one answered request."""
        child = self._children.get((endpoint, code))
        if child is None:
            latency = self.loop.series(f"{PREFIX}_request_seconds", endpoint)
            child = self._children[(endpoint, code)] = ((endpoint, str(code)), latency)
        key, latency = child
        self.requests[key] = self.requests.get(key, 0) + 1
        latency.observe(seconds)
        if code >= 400:
            key = (*key, error_type or "error")
            self.errors[key] = self.errors.get(key, 0) + 1

    def stage_seconds(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def batch(self, texts: int, requests: int, hits: int, tokenize_s: float, model_s: float) -> None:
        """Count one encoded batch."""
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        if texts > hits:
            self._stage["tokenization"].observe(tokenize_s)
            self._stage["model"].observe(model_s)
        self.texts[()] += texts
        self.cache_hits[()] += hits
        now = time.monotonic()
        self._recent.append((now, texts))
        self._recent_texts += texts
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop the batches older than the rate window."""
        recent = self._recent
        while recent and recent[0][0] < now - RATE_WINDOW_S:
            self._recent_texts -= recent.popleft()[1]

    def render(self, queue_depth: int, queue_texts: int) -> bytes:
        """The text exposition format, gauges brought up to date first."""
        self.queue_depth.set(queue_depth)
        self.queue_texts.set(queue_texts)
        self._forget(time.monotonic())
        self.texts_per_second.set(self._recent_texts / RATE_WINDOW_S)
        texts = self.texts[()]
        self.cache_hit_rate.set(self.cache_hits[()] / texts if texts else 0.0)
        return generate_latest(self.registry)
