"""A thread-safe LRU cache of text → embedding row with hit counters."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


class EmbeddingCache:
    """At most ``size`` texts (0 disables it); ``lookup`` and ``store`` may be called from many threads."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache_size must be a non-negative integer, got {size!r}")
        self.size = size
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def lookup(self, texts: list[str], out: np.ndarray) -> tuple[dict[str, int], list[tuple[int, int]]]:
        """Copy the cached rows of ``texts`` into ``out``; returns each missing text's first position and the
        (position, first position) of the missing texts' repeats."""
        first: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []
        with self._lock:
            rows = self._rows if self.size else {}
            hits = 0
            for position, text in enumerate(texts):
                row = rows.get(text)
                if row is not None:
                    rows.move_to_end(text)
                    out[position] = row
                    hits += 1
                elif first.setdefault(text, position) != position:
                    repeats.append((position, first[text]))
            self._hits += hits
            self._misses += len(texts) - hits
        return first, repeats

    def store(self, texts: list[str], rows: np.ndarray) -> None:
        """Remember the rows of ``texts`` (private copies), dropping the least recently used beyond ``size``."""
        if not self.size:
            return
        with self._lock:
            for text, row in zip(texts, rows, strict=True):
                self._rows[text] = row.copy()  # a private copy: the caller's array is its own
                self._rows.move_to_end(text)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def texts(self) -> list[str]:
        """The cached texts, least recently used first."""
        with self._lock:
            return list(self._rows)

    def info(self) -> dict:
        """``hits``/``misses`` (texts asked for, counting repeats), ``size``, ``maxsize``, ``hit_rate``."""
        with self._lock:
            asked = self._hits + self._misses
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._rows),
                "maxsize": self.size,
                "hit_rate": self._hits / asked if asked else 0.0,
            }

    def clear(self) -> None:
        """Empty the cache and reset its counters."""
        with self._lock:
            self._rows.clear()
            self._hits = self._misses = 0
