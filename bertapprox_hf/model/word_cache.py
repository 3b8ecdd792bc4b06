"""A memo of a function of one word, bounded in bytes: untrusted text cannot grow it past its budget.

Copied next to the model as remote code: imports only the standard library.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")

DEFAULT_MAX_BYTES = 16 << 20
_ENTRY_OVERHEAD = 120  # the dict slot and the bookkeeping of one entry, in bytes (an upper estimate)


class WordCache(Generic[Value]):
    """Memoizes ``function(word)``. Words longer than ``max_word_chars`` are computed and never kept; once the
    kept words and values would pass ``max_bytes``, the memo starts over (cheap, and the bound is hard)."""

    def __init__(
        self, function: Callable[[str], Value], max_word_chars: int, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.function = function
        self.max_word_chars = max_word_chars
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self._memo: dict[str, Value] = {}

    def __call__(self, word: str) -> Value:
        value = self._memo.get(word)
        if value is not None:
            return value
        value = self.function(word)
        if len(word) <= self.max_word_chars:
            cost = sys.getsizeof(word) + _size(value) + _ENTRY_OVERHEAD
            if self.bytes_used + cost > self.max_bytes:
                self._memo.clear()
                self.bytes_used = 0
            self._memo[word] = value
            self.bytes_used += cost
        return value

    def __len__(self) -> int:
        return len(self._memo)


def _size(value) -> int:
    """Bytes of a cached value: an int, or a tuple of ints."""
    if isinstance(value, tuple):
        return sys.getsizeof(value) + sum(sys.getsizeof(item) for item in value)
    return sys.getsizeof(value)
