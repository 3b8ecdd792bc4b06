"""A thread-safe LRU cache of text → embedding row with hit counters, bounded in entries and in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

MAX_CACHE_BYTES = 64 * 2**20  # texts and rows together
MAX_TEXT_CHARS = 4096  # a longer text is not cached: untrusted input must not fill the memory with keys


class EmbeddingCache:
    """At most ``size`` texts (0 disables it) and ``max_bytes`` of texts and rows together; a text longer than
    ``max_text_chars`` is never cached. ``lookup`` and ``store`` may be called from many threads."""

    def __init__(self, size: int, max_bytes: int = MAX_CACHE_BYTES, max_text_chars: int = MAX_TEXT_CHARS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"cache_size must be a non-negative integer, got {size!r}")
        for name, value in (("max_bytes", max_bytes), ("max_text_chars", max_text_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        self.size = size
        self.max_bytes = max_bytes
        self.max_text_chars = max_text_chars
        self.bytes = 0
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
                if len(text) > self.max_text_chars:
                    continue
                old = self._rows.pop(text, None)
                if old is not None:
                    self.bytes -= _cost(text, old)
                self._rows[text] = row.copy()  # a private copy: the caller's array is its own
                self.bytes += _cost(text, row)
            while self._rows and (len(self._rows) > self.size or self.bytes > self.max_bytes):
                text, row = self._rows.popitem(last=False)
                self.bytes -= _cost(text, row)

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
            self.bytes = 0
            self._hits = self._misses = 0


def _cost(text: str, row: np.ndarray) -> int:
    """Bytes a cached text and its row hold, near enough (a str holds up to 4 bytes a character)."""
    return 4 * len(text) + row.nbytes + 100
