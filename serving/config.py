"""Server settings: one dataclass, filled from command-line flags or ``BERTAPPROX_SERVE_*`` environment variables."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "BERTAPPROX_SERVE_"


@dataclass
class ServeConfig:
    """Everything a server process needs; every field can be set as ``BERTAPPROX_SERVE_<FIELD>`` (upper case)."""

    model: str = ""  # student folder (or a teacher folder, to serve the teacher the same way)
    index: str | None = None  # a `bertapprox index` folder
    corpus: str | None = None  # jsonl corpus of the index: /search then returns the hits' texts
    teacher: str | None = None  # teacher folder: shadow drift watch and the page's side-by-side results
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1  # torch intra-op threads of the process
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    # dynamic batching and limits
    max_batch_texts: int = 256  # texts encoded together at most
    max_wait_ms: float = 0.0  # wait this long for more requests before a batch goes (0: batch while busy)
    max_texts_per_request: int = 256
    max_chars_per_text: int = 20000
    max_queued_requests: int = 256  # accepted, not yet answered; beyond: 429
    max_k: int = 1000
    cache_size: int = 10000  # texts → embedding LRU entries
    shutdown_timeout_s: float = 30.0
    # drift watch
    shadow_rate: float = 0.0  # fraction of live texts also embedded by the teacher
    shadow_window: int = 500  # rolling window of shadow samples
    shadow_min_samples: int = 20  # before /health judges drift
    shadow_queue: int = 1024  # pending shadow texts at most (more are dropped, never waited for)
    min_cosine: float = 0.8  # /health is degraded below this rolling student-vs-teacher cosine
    min_overlap: float = 0.5  # ... or below this rolling top-k overlap
    overlap_k: int = 10
    log_level: str = "info"

    def check(self) -> ServeConfig:
        """Raise ValueError for settings that cannot work."""
        if not self.model:
            raise ValueError("no model: pass --model or set BERTAPPROX_SERVE_MODEL")
        positive = ("threads", "workers", "max_batch_texts", "max_texts_per_request", "max_chars_per_text")
        positive += ("max_queued_requests", "max_k", "shadow_window", "shadow_min_samples", "shadow_queue", "overlap_k")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 <= self.shadow_rate <= 1.0:
            raise ValueError(f"shadow_rate must be in [0, 1], got {self.shadow_rate}")
        if self.shadow_rate > 0 and not self.teacher:
            raise ValueError("shadow_rate > 0 needs a teacher (--teacher)")
        if self.max_wait_ms < 0 or self.cache_size < 0:
            raise ValueError("max_wait_ms and cache_size must be ≥ 0")
        return self

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read: every text at its limit, as JSON (escapes up to 6 bytes a character)."""
        return self.max_texts_per_request * (self.max_chars_per_text * 6 + 8) + 4096

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables (how worker processes receive them)."""
        env = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is not None:
                env[ENV_PREFIX + item.name.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServeConfig:
        """Settings from ``BERTAPPROX_SERVE_*`` variables, then ``overrides`` (those not None)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _convert(item, raw)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


def env_default(name: str, default: Any) -> Any:
    """A flag's default: ``BERTAPPROX_SERVE_<NAME>`` converted to the type of ``default``, else ``default``."""
    raw = os.environ.get(ENV_PREFIX + name.upper())
    if raw is None:
        return default
    item = next(f for f in dataclasses.fields(ServeConfig) if f.name == name)
    return _convert(item, raw)


def _convert(item: dataclasses.Field, raw: str) -> Any:
    kind = str(item.type)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as error:
        raise ValueError(f"{ENV_PREFIX}{item.name.upper()}={raw!r} is not a number") from error
    return raw or None if "None" in kind else raw
