"""What the rest of the toolkit (indexers, benchmarks) may rely on in a text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..model.configuration_bertapprox import BertApproxConfig


@runtime_checkable
class TextEncoder(Protocol):
    """Texts in, a [n, dim] float32 matrix out: the student's encoders, the teacher, sentence-transformers models
    (through an adapter) and the baselines all offer this."""

    @property
    def dim(self) -> int:
        """Size of the embeddings."""
        ...

    @property
    def similarity(self) -> str:
        """``"cosine"`` or ``"dot"``: how embeddings are compared."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        """A ``[len(texts), dim]`` float32 array."""
        ...

    def description(self) -> dict:
        """A JSON-able record of what makes these embeddings, with a ``kind`` (kept beside indexes and results)."""
        ...


class ConfigProperties:
    """``dim``, ``similarity`` and sentence-transformers' ``get_sentence_embedding_dimension``, read from the
    model config (``self.config``) of an encoder: :class:`~.encoder.Encoder` and the exported-graph runtimes."""

    config: BertApproxConfig
    dtype: str | None = None  # the precision of the tables, where the encoder has a choice

    @property
    def dim(self) -> int:
        """Size of the embeddings."""
        return self.config.output_dim

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    @property
    def similarity(self) -> str:
        """``"cosine"`` or ``"dot"``: the teacher's scoring function, from the model config."""
        return self.config.similarity

    def description(self) -> dict:
        """The student behind these embeddings: its folder, teacher, size, similarity and precision."""
        return {
            "kind": "student",
            "name_or_path": self.config._name_or_path or None,
            "teacher": self.config.teacher,
            "dim": self.dim,
            "similarity": self.similarity,
            "dtype": self.dtype,
        }
