"""Dynamic batching on the event loop: concurrent requests' texts are encoded together in one worker thread.

A batch starts as soon as the worker is free (or ``max_wait_ms`` after its first request) and takes whole
requests, oldest first, up to ``max_batch_texts`` texts (a larger request goes alone). So a lone request is
answered at once, and under load batches grow by themselves while the previous one is being encoded. At most
``max_queued`` requests are accepted and unanswered at a time; beyond that :class:`Overloaded` is raised at
once, so the caller can answer 429 instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .backends import Encoded


class Overloaded(RuntimeError):
    """The queue is full: the request was not accepted."""


class ShuttingDown(RuntimeError):
    """The server is stopping and accepts no new work."""


@dataclass
class BatchResult:
    """One request's share of a batch."""

    rows: np.ndarray
    tokens: list[int]
    queue_seconds: float


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future
    arrived: float


class Batcher:
    """Collects requests' texts and encodes them in batches with ``encode`` (called in one worker thread)."""

    def __init__(
        self,
        encode: Callable[[list[str]], Encoded],
        max_batch_texts: int = 256,
        max_wait_ms: float = 0.0,
        max_queued: int = 256,
        on_batch: Callable[[Encoded, int], None] | None = None,
    ) -> None:
        self.encode = encode
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued = max_queued
        self.on_batch = on_batch
        self.accepted = 0  # requests accepted and not yet answered
        self.queued_texts = 0  # texts waiting for a batch
        self._jobs: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the batch loop (on the running event loop)."""
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertapprox-encode")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bertapprox-batcher")

    def admit(self) -> None:
        """Raise :class:`Overloaded` (or :class:`ShuttingDown`) now if :meth:`submit` would: a refused request is
        answered before its body is parsed."""
        if self._closing or self._task is None:
            raise ShuttingDown("the server is shutting down")
        if self.accepted >= self.max_queued:
            raise Overloaded(f"{self.accepted} requests are queued (the limit is {self.max_queued}): retry later")

    async def submit(self, texts: list[str]) -> BatchResult:
        """Embeddings of ``texts``; raises :class:`Overloaded` when ``max_queued`` requests are pending."""
        self.admit()
        job = _Job(texts, asyncio.get_running_loop().create_future(), time.perf_counter())
        self.accepted += 1
        self.queued_texts += len(texts)
        self._jobs.append(job)
        self._wakeup.set()
        try:
            return await job.future
        finally:
            self.accepted -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait:
                await self._wait_for_more()
            batch, texts = self._take()
            self.queued_texts -= len(texts)
            if not batch:
                continue
            started = time.perf_counter()
            try:
                encoded = await loop.run_in_executor(self._executor, self.encode, texts)
            except Exception as error:  # every waiting request gets the failure, the loop goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            if self.on_batch is not None:
                self.on_batch(encoded, len(batch))
            offset = 0
            for job in batch:
                end = offset + len(job.texts)
                if not job.future.done():  # a cancelled request (client gone) is skipped
                    result = BatchResult(encoded.rows[offset:end], encoded.tokens[offset:end], started - job.arrived)
                    job.future.set_result(result)
                offset = end

    async def _wait_for_more(self) -> None:
        deadline = self._jobs[0].arrived + self.max_wait
        while self.queued_texts < self.max_batch_texts and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> tuple[list[_Job], list[str]]:
        batch: list[_Job] = []
        texts: list[str] = []
        while self._jobs and (not batch or len(texts) + len(self._jobs[0].texts) <= self.max_batch_texts):
            job = self._jobs.popleft()
            if job.future.done():  # cancelled while waiting
                self.queued_texts -= len(job.texts)
                continue
            batch.append(job)
            texts.extend(job.texts)
        return batch, texts

    async def close(self) -> None:
        """Encode every accepted request, then stop (idempotent)."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._task
        self._task = None
        self._executor.shutdown(wait=True)
