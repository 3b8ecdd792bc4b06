"""The serving state of one process: the model backend, the batcher, the index, the drift watch, the metrics."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .backends import CachedBackend, Encoded, TeacherBackend, load_backend, load_teacher
from .batcher import Batcher, BatchResult
from .config import ServeConfig
from .drift import ShadowWatch
from .metrics import ServerMetrics
from .schemas import Limits
from .search import Hit, SearchService
from .teacher_process import TeacherProcess

logger = logging.getLogger(__name__)
OVERLOAD_MEMORY_S = 10.0  # /health reports rejected requests for this long


class EmbeddingService:
    """Everything the endpoints call. Build it with :meth:`load` (from a config) or directly (tests)."""

    def __init__(
        self,
        backend: CachedBackend,
        config: ServeConfig,
        search: SearchService | None = None,
        teacher: Any = None,
        teacher_name: str | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.search_index = search
        self.teacher = teacher
        self.teacher_name = teacher_name
        self.model_name = backend.describe()["model"]
        self.metrics = ServerMetrics()
        self.limits = Limits(config.max_texts_per_request, config.max_chars_per_text, config.max_k)
        self.batcher = Batcher(
            backend.encode, config.max_batch_texts, config.max_wait_ms, config.max_queued_requests, self._on_batch
        )
        self.teacher_backend = TeacherBackend(teacher, teacher_name or "", cache_size=1000) if teacher else None
        self.shadow: ShadowWatch | None = None
        self._side_executor: ThreadPoolExecutor | None = None
        self.started = False
        self.stopping = False
        self._last_overload = -1e9
        self._overloads = 0
        if search is not None and search.dim != backend.dim:
            raise ValueError(
                f"the index holds {search.dim}-d vectors but the model makes {backend.dim}-d embeddings: "
                "serve the index with the model (or the student of the teacher) that built it"
            )
        if teacher is not None and int(teacher.dim) != backend.dim:
            raise ValueError(f"the teacher makes {teacher.dim}-d embeddings but the model {backend.dim}-d")

    @classmethod
    def load(cls, config: ServeConfig) -> EmbeddingService:
        """Load the model, the index and the teacher a config names."""
        import torch

        config.check()
        torch.set_num_threads(config.threads)
        backend = load_backend(config.model, config.device, config.dtype, config.cache_size)
        search = SearchService.load(config.index, config.corpus) if config.index else None
        teacher = load_teacher(config.teacher, config.device) if config.teacher else None
        return cls(backend, config, search, teacher, config.teacher)

    # --- life cycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.batcher.start()
        self._side_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bertapprox-side")
        if self.teacher is not None and self.config.shadow_rate > 0:
            c = self.config
            teacher = self.teacher
            if self.teacher_name:  # its passes run in a process of its own, never on this process' GIL and core
                teacher = TeacherProcess(functools.partial(load_teacher, self.teacher_name, c.device))
            self.shadow = ShadowWatch(
                teacher, c.shadow_rate, self.metrics, self.search_index, c.shadow_window, c.shadow_min_samples,
                c.min_cosine, c.min_overlap, c.overlap_k, c.shadow_queue, close_teacher=teacher is not self.teacher,
            )  # fmt: skip
        self.started = True
        self.metrics.healthy.set(1)

    async def stop(self) -> None:
        """Answer what was accepted, then stop the workers."""
        self.stopping = True
        self.metrics.healthy.set(0)
        await self.batcher.close()
        if self.shadow is not None:
            self.shadow.close()
        if self._side_executor is not None:
            self._side_executor.shutdown(wait=True)

    # --- work -----------------------------------------------------------------------------------
    def _on_batch(self, encoded: Encoded, requests: int) -> None:
        self.metrics.batch(len(encoded.rows), requests, encoded.cache_hits, encoded.tokenize_seconds,
                           encoded.model_seconds)  # fmt: skip

    def overloaded(self) -> None:
        """Note a rejected request (for /health)."""
        self._last_overload = time.monotonic()
        self._overloads += 1

    async def embed(self, texts: list[str]) -> BatchResult:
        """The model's embeddings of ``texts`` (batched with other requests)."""
        result = await self.batcher.submit(texts)
        self.metrics.stage_seconds("queue", result.queue_seconds)
        if self.shadow is not None:
            self.shadow.offer(texts, result.rows)
        return result

    async def search(self, texts: list[str], k: int) -> tuple[list[list[Hit]], float, float]:
        """Top-``k`` hits of each query, the seconds spent embedding and searching."""
        if self.search_index is None:
            raise LookupError("no index is loaded: start the server with --index")
        start = time.perf_counter()
        result = await self.embed(texts)
        embedded = time.perf_counter()
        loop = asyncio.get_running_loop()
        hits = await loop.run_in_executor(self._side_executor, self.search_index.search, result.rows, k)
        searched = time.perf_counter()
        self.metrics.stage_seconds("search", searched - embedded)
        return hits, embedded - start, searched - embedded

    async def teacher_search(self, texts: list[str], k: int) -> tuple[list[list[Hit]], float]:
        """The teacher's top-``k`` for the same queries (the page's comparison), and its seconds."""
        if self.teacher_backend is None or self.search_index is None:
            raise LookupError("no teacher or no index is loaded")

        def run() -> tuple[list[list[Hit]], float]:
            start = time.perf_counter()
            rows = self.teacher_backend.encode(texts).rows
            return self.search_index.search(rows, k), time.perf_counter() - start

        return await asyncio.get_running_loop().run_in_executor(self._side_executor, run)

    # --- state ----------------------------------------------------------------------------------
    def health(self) -> tuple[str, list[str]]:
        """``("ready" | "degraded" | "starting" | "stopping", reasons)``."""
        if self.stopping:
            return "stopping", ["the server is shutting down"]
        if not self.started:
            return "starting", ["the server is loading"]
        reasons = list(self.shadow.problems()) if self.shadow is not None else []
        if time.monotonic() - self._last_overload < OVERLOAD_MEMORY_S:
            reasons.append(
                f"requests were rejected in the last {OVERLOAD_MEMORY_S:g} s: the queue was full "
                f"({self.config.max_queued_requests} requests)"
            )
        status = "degraded" if reasons else "ready"
        self.metrics.healthy.set(0.5 if reasons else 1)
        return status, reasons

    def info(self) -> dict[str, Any]:
        from bertapprox_hf import __version__

        c = self.config
        info = self.backend.describe()
        return {
            **info,
            "model_id": info["model"],
            "version": __version__,
            "teacher_loaded": self.teacher_name if self.teacher is not None else None,
            "index": self.search_index.describe() if self.search_index is not None else None,
            "index_size": self.search_index.size if self.search_index is not None else 0,
            "max_client_batch_size": c.max_texts_per_request,
            "max_input_length": c.max_chars_per_text,
            "max_batch_texts": c.max_batch_texts,
            "max_concurrent_requests": c.max_queued_requests,
            "max_k": c.max_k,
            "cache_size": c.cache_size,
            "shadow": self.shadow.describe() if self.shadow is not None else None,
        }


def normalized(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
