"""Request batching: single texts from many threads, encoded together in one background thread.

with BatchingEncoder(encoder, max_batch=64, max_wait_ms=2) as batcher:        # many threads
    row = batcher.submit("single query").result()
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from .encoder import Encoder

_STOP = object()


class BatchingEncoder:
    """Collects single texts from many threads and encodes them together in one background thread.

    A batch goes out when it holds ``max_batch`` texts or ``max_wait_ms`` after its first text
    arrived, whichever comes first. ``submit`` returns a :class:`~concurrent.futures.Future` of the
    text's embedding (1-D float32). ``close`` (or leaving a ``with`` block) encodes what was
    already submitted, then stops the thread.
    """

    def __init__(
        self, encoder: Encoder, max_batch: int = 64, max_wait_ms: float = 2.0, normalize_embeddings: bool = False
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int):
            raise TypeError(f"max_batch must be a positive integer, got {type(max_batch).__name__}")
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)):
            raise TypeError(f"max_wait_ms must be a number of milliseconds, got {type(max_wait_ms).__name__}")
        if max_batch < 1 or not max_wait_ms >= 0:
            raise ValueError(f"max_batch must be ≥ 1 and max_wait_ms ≥ 0, got {max_batch} and {max_wait_ms}")
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.normalize_embeddings = normalize_embeddings
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="BatchingEncoder", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future:
        """A future of ``text``'s embedding."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("this BatchingEncoder is closed")
            self._queue.put((text, future))
        return future

    def encode(self, text: str, timeout: float | None = None) -> np.ndarray:
        """``submit(text).result(timeout)``."""
        return self.submit(text).result(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._encode(batch)
            if stop:
                return

    def _encode(self, batch: list[tuple[str, Future]]) -> None:
        live = [(text, future) for text, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            rows = self.encoder.encode(
                [text for text, _ in live], batch_size=len(live), normalize_embeddings=self.normalize_embeddings
            )
        except BaseException as error:  # hand the failure to every waiting caller
            for _, future in live:
                future.set_exception(error)
            return
        for (_, future), row in zip(live, rows, strict=True):
            future.set_result(row.copy())

    def close(self) -> None:
        """Encode what was submitted, then stop the background thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> BatchingEncoder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
