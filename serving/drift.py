"""Quality-drift watch: a sampled share of live texts is embedded again by the teacher, off the request path.

The request path only draws a random number per text and, for a sampled one, puts it on a bounded queue
(dropped when the queue is full): answers never wait for the teacher. A background thread takes the queued texts in
batches and has the teacher embed them: in the server, a :class:`~serving.teacher_process.TeacherProcess` (the
teacher's passes run in a child process at the lowest CPU priority, outside the server's GIL; the thread only waits
on a pipe). The thread keeps a rolling window of student-vs-teacher cosines and, with an index, of the overlap of
both top-k rankings, exports them as metrics and tells ``/health`` when they fall below the thresholds.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import random
import threading
from typing import Any

import numpy as np

from .metrics import ServerMetrics
from .search import SearchService, overlap

logger = logging.getLogger(__name__)
WORKER_BATCH = 32
WORKER_NICE = 10  # the watch's thread runs at a lower priority than the serving threads


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each pair of rows (0 where a row is zero)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-12), 0.0)


class ShadowWatch:
    """Rolling student-vs-teacher agreement on sampled live texts."""

    def __init__(
        self,
        teacher: Any,
        rate: float,
        metrics: ServerMetrics | None = None,
        search: SearchService | None = None,
        window: int = 500,
        min_samples: int = 20,
        min_cosine: float = 0.8,
        min_overlap: float = 0.5,
        k: int = 10,
        queue_size: int = 1024,
        seed: int | None = None,
        close_teacher: bool = False,
    ) -> None:
        self.teacher = teacher  # anything with encode(texts, batch_size) -> [n, dim]; a TeacherProcess in the server
        self.close_teacher = close_teacher  # close() also closes the teacher (a TeacherProcess the watch was given)
        self.rate = rate
        self.metrics = metrics
        self.search = search
        self.min_samples = min_samples
        self.min_cosine = min_cosine
        self.min_overlap = min_overlap
        self.k = k
        self.cosines: collections.deque[float] = collections.deque(maxlen=window)
        self.overlaps: collections.deque[float] = collections.deque(maxlen=window)
        self.samples = 0
        self.dropped = 0
        self.failures = 0
        self._random = random.Random(seed)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="bertapprox-shadow", daemon=True)
        self._thread.start()

    # --- request path ---------------------------------------------------------------------------
    def offer(self, texts: list[str], rows: np.ndarray) -> None:
        """Sample some of ``texts`` (with the student's ``rows``) for the teacher; never blocks."""
        if self.rate <= 0:
            return
        for text, row in zip(texts, rows, strict=True):
            if self._random.random() >= self.rate:
                continue
            try:
                with self._idle:
                    self._busy += 1
                self._queue.put_nowait((text, row))
            except queue.Full:
                with self._idle:
                    self._busy -= 1
                self.dropped += 1
                if self.metrics is not None:
                    self.metrics.shadow_dropped.inc()

    # --- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        except (AttributeError, OSError):  # not Linux, or not allowed: run at the same priority
            pass
        while not self._stop.is_set():
            try:
                items = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(items) < WORKER_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._compare([text for text, _ in items], np.stack([row for _, row in items]))
            except Exception:  # a failing teacher must not stop the watch (nor the server)
                if self._stop.is_set():  # the teacher was closed under it
                    return
                self.failures += 1
                logger.exception("shadow comparison failed")
            finally:
                with self._idle:
                    self._busy -= len(items)
                    self._idle.notify_all()

    def _compare(self, texts: list[str], student: np.ndarray) -> None:
        teacher = np.asarray(self.teacher.encode(texts, batch_size=len(texts)), dtype=np.float32)
        cosines = row_cosines(student, teacher)
        overlaps: list[float] = []
        if self.search is not None:
            student_hits = self.search.search(student, self.k)
            teacher_hits = self.search.search(teacher, self.k)
            overlaps = [overlap(s, t, self.k) for s, t in zip(student_hits, teacher_hits, strict=True)]
        self.cosines.extend(float(c) for c in cosines)
        self.overlaps.extend(overlaps)
        self.samples += len(texts)
        if self.metrics is not None:
            for value in cosines:
                self.metrics.shadow_cosine_hist.observe(float(value))
            self.metrics.shadow_samples.inc(len(texts))
            self.metrics.shadow_cosine.set(self.mean_cosine)
            if self.overlaps:
                self.metrics.shadow_overlap.set(self.mean_overlap)

    # --- state ----------------------------------------------------------------------------------
    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else float("nan")

    @property
    def mean_overlap(self) -> float:
        return float(np.mean(self.overlaps)) if self.overlaps else float("nan")

    def problems(self) -> list[str]:
        """Why quality looks degraded (empty when fine or when too few samples were seen)."""
        reasons = []
        if len(self.cosines) >= self.min_samples and self.mean_cosine < self.min_cosine:
            reasons.append(
                f"student-vs-teacher cosine {self.mean_cosine:.3f} over the last {len(self.cosines)} shadowed texts "
                f"is below {self.min_cosine}"
            )
        if len(self.overlaps) >= self.min_samples and self.mean_overlap < self.min_overlap:
            reasons.append(
                f"top-{self.k} overlap with the teacher {self.mean_overlap:.3f} over the last {len(self.overlaps)} "
                f"shadowed queries is below {self.min_overlap}"
            )
        return reasons

    def describe(self) -> dict[str, Any]:
        def number(value: float) -> float | None:
            return None if np.isnan(value) else round(value, 4)

        return {
            "rate": self.rate,
            "samples": self.samples,
            "window": len(self.cosines),
            "dropped": self.dropped,
            "failures": self.failures,
            "cosine": number(self.mean_cosine),
            "topk_overlap": number(self.mean_overlap),
            "k": self.k,
            "min_cosine": self.min_cosine,
            "min_overlap": self.min_overlap,
            "teacher_process": getattr(getattr(self.teacher, "process", None), "pid", None),
        }

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued text is compared (tests and shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        """Stop the thread (and the teacher, with ``close_teacher``); what is still queued is not compared."""
        self._stop.set()
        if self.close_teacher:  # first: a thread waiting for the teacher's answer returns at once
            self.teacher.close()
        self._thread.join(timeout=10)
