"""What turns texts into embeddings inside the server: the student's fast :class:`Encoder` (with tokenization and
model timed apart) or, to serve a teacher the same way, the :class:`Teacher`. Both keep an LRU cache of texts."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Encoded:
    """Embeddings of a batch of texts and what they cost."""

    rows: np.ndarray  # [n, dim] float32
    tokens: list[int]  # bag entries (student) or words (teacher) per text
    tokenize_seconds: float
    model_seconds: float
    cache_hits: int


class CachedBackend:
    """Shared part: the cache of text → (embedding, tokens). Called from one thread at a time (the batch worker)."""

    kind = ""
    dim: int
    dtype: str
    similarity: str

    def __init__(self, cache_size: int) -> None:
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()

    def encode(self, texts: list[str]) -> Encoded:
        """Embeddings of ``texts`` ([n, dim] float32); each distinct uncached text is computed once."""
        rows = np.empty((len(texts), self.dim), dtype=np.float32)
        tokens = [0] * len(texts)
        missing: dict[str, list[int]] = {}
        hits = 0
        for position, text in enumerate(texts):
            cached = self._cache.get(text) if self.cache_size else None
            if cached is None:
                missing.setdefault(text, []).append(position)
                continue
            self._cache.move_to_end(text)
            rows[position], tokens[position] = cached
            hits += 1
        tokenize_seconds = model_seconds = 0.0
        if missing:
            fresh = list(missing)
            computed, counts, tokenize_seconds, model_seconds = self._compute(fresh)
            for text, row, count in zip(fresh, computed, counts, strict=True):
                for position in missing[text]:
                    rows[position], tokens[position] = row, count
                if self.cache_size:
                    self._cache[text] = (row.copy(), count)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return Encoded(rows, tokens, tokenize_seconds, model_seconds, hits)

    def _compute(self, texts: list[str]) -> tuple[np.ndarray, list[int], float, float]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class StudentBackend(CachedBackend):
    """A student's :class:`~bertapprox_hf.inference.Encoder`: bags (tokenization), then the precomputed tables."""

    kind = "student"

    def __init__(self, encoder: Any, path: str = "", cache_size: int = 10000) -> None:
        super().__init__(cache_size)
        self.encoder = encoder
        self.path = path
        self.dim = int(encoder.dim)
        self.dtype = str(encoder.dtype)
        self.similarity = encoder.similarity

    def _compute(self, texts: list[str]) -> tuple[np.ndarray, list[int], float, float]:
        # the Encoder's own path for texts missing from its cache, as one batch (it times both steps)
        out = self.encoder.embed_texts(texts, batch_size=max(1, len(texts)))
        return out.rows, out.bag_sizes.tolist(), out.tokenize_seconds, out.model_seconds

    def describe(self) -> dict[str, Any]:
        config = self.encoder.config
        return {
            "model": self.path or getattr(config, "_name_or_path", ""),
            "model_type": self.kind,
            "teacher": getattr(config, "teacher", None),
            "dim": self.dim,
            "dtype": self.dtype,
            "similarity": self.similarity,
            "vocabulary_size": int(self.encoder.vocab_size),
            "max_bag_size": int(self.encoder.max_bag_size),
        }


class TeacherBackend(CachedBackend):
    """A :class:`~bertapprox_hf.pipeline.teacher.Teacher` (tokenization and model timed together, as ``model``)."""

    kind = "teacher"

    def __init__(self, teacher: Any, path: str = "", cache_size: int = 10000, batch_size: int = 64) -> None:
        super().__init__(cache_size)
        self.teacher = teacher
        self.path = path
        self.batch_size = batch_size
        self.dim = int(teacher.dim)
        self.dtype = "float32"
        self.similarity = teacher.pooling.similarity

    def _compute(self, texts: list[str]) -> tuple[np.ndarray, list[int], float, float]:
        start = time.perf_counter()
        rows = np.asarray(self.teacher.encode(texts, batch_size=self.batch_size), dtype=np.float32)
        return rows, [len(text.split()) for text in texts], 0.0, time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.path or self.teacher.name_or_path,
            "model_type": self.kind,
            "teacher": None,
            "dim": self.dim,
            "dtype": self.dtype,
            "similarity": self.similarity,
            "vocabulary_size": int(len(self.teacher.tokenizer)),
            "max_bag_size": None,
        }


def load_backend(
    path: str, device: str = "cpu", dtype: str = "float32", cache_size: int = 10000
) -> StudentBackend | TeacherBackend:
    """A student folder's backend, else a teacher's (a sentence-transformers folder or Hub id)."""
    from indexers.encoders import is_student_folder

    if is_student_folder(path):
        from bertapprox_hf.inference import Encoder

        encoder = Encoder.from_pretrained(path, device=device, dtype=dtype, cache_size=0)
        return StudentBackend(encoder, os.path.abspath(path), cache_size)
    return TeacherBackend(load_teacher(path, device), path, cache_size)


def load_teacher(path: str, device: str = "cpu") -> Any:
    """The :class:`~bertapprox_hf.pipeline.teacher.Teacher` of a folder or Hub id."""
    from bertapprox_hf.pipeline.teacher import Teacher

    return Teacher.from_pretrained(path, device=device)
