"""A vocabulary: entry strings, their corpus counts and their teacher embeddings, on disk.

A vocabulary folder holds two files:

* ``vocabulary.safetensors``: ``embeddings`` [entries, dim] (float16 or float32) and ``counts`` [entries];
* ``vocabulary.json``: the entries (id order) and a record of what went in (teacher, corpus,
  settings, statistics, tokenizer normalization).

Entry 0 is ``[PAD]`` (a zero vector); the teacher's unknown token follows. Entry kinds are read
from the strings (see :func:`bertapprox_hf.model.tokenization_bertapprox.entry_kind`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ..model.tokenization_bertapprox import BertApproxTokenizer, entry_kind
from .jsonio import read_json, write_json_atomic

EMBEDDINGS_FILE = "vocabulary.safetensors"
METADATA_FILE = "vocabulary.json"
FORMAT_VERSION = 1
PAD_TOKEN = "[PAD]"
_KIND_KEYS = (("wordpiece", "pieces"), ("word", "words"), ("ngram", "ngrams"), ("skipgram", "skipgrams"))


@dataclass
class Vocabulary:
    """Entries with their teacher embeddings; the frozen table of a student model."""

    entries: list[str]
    embeddings: np.ndarray
    counts: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.entries):
            raise ValueError(f"embeddings of shape {self.embeddings.shape} do not match {len(self.entries)} entries")
        if self.counts.shape != (len(self.entries),):
            raise ValueError(f"counts of shape {self.counts.shape} do not match {len(self.entries)} entries")
        if not self.entries or self.entries[0] != PAD_TOKEN:
            raise ValueError(f"entry 0 must be {PAD_TOKEN}")

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def unk_token(self) -> str:
        return self.metadata.get("tokenizer", {}).get("unk_token", "[UNK]")

    def kinds(self) -> list[str]:
        """Kind of each entry: special, wordpiece (the teacher's tokens), word, ngram or skipgram.

        Built vocabularies record how many entries of each kind they hold, in id order; otherwise
        kinds are read from the strings, and a whole-word WordPiece token counts as a word.
        """
        stats = self.metadata.get("stats", {})
        layout = [("special", 2)] + [(kind, stats.get(key, -1)) for kind, key in _KIND_KEYS]
        if all(size >= 0 for _, size in layout) and sum(size for _, size in layout) == len(self.entries):
            return [kind for kind, size in layout for _ in range(size)]
        special = {PAD_TOKEN, self.unk_token}
        return [entry_kind(entry, special) for entry in self.entries]

    def kind_counts(self) -> dict[str, int]:
        return dict(Counter(self.kinds()))

    def tokenizer(self) -> BertApproxTokenizer:
        """A tokenizer over these entries, with the teacher's normalization and its window (``max_length``)."""
        settings = self.metadata.get("tokenizer", {})
        kinds = self.kind_counts()
        return BertApproxTokenizer(
            entries=list(self.entries),
            unk_token=self.unk_token,
            pad_token=PAD_TOKEN,
            do_lower_case=settings.get("do_lower_case", True),
            strip_accents=settings.get("strip_accents"),
            skipgram_max_gap=settings.get("skipgram_max_gap", 2),
            teacher_window=int(self.metadata.get("teacher", {}).get("max_length") or 0),
            wordpiece_entries=kinds.get("wordpiece", 0),
            teacher_special_tokens=settings.get("special_tokens"),  # None (older vocabularies): BERT's
        )

    def save(self, folder: str) -> None:
        """Write ``vocabulary.safetensors`` and ``vocabulary.json`` into ``folder``."""
        os.makedirs(folder, exist_ok=True)
        save_file(
            {"embeddings": np.ascontiguousarray(self.embeddings), "counts": self.counts.astype(np.int64)},
            os.path.join(folder, EMBEDDINGS_FILE),
        )
        record = {"format_version": FORMAT_VERSION, **self.metadata, "entries": self.entries}
        write_json_atomic(os.path.join(folder, METADATA_FILE), record)

    @classmethod
    def load(cls, folder: str) -> Vocabulary:
        """Read a vocabulary folder; missing, corrupt or inconsistent files raise an error naming them."""
        tensors_path = os.path.join(folder, EMBEDDINGS_FILE)
        metadata_path = os.path.join(folder, METADATA_FILE)
        for path in (tensors_path, metadata_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"vocabulary file not found: {path}")
        metadata = read_json(metadata_path, "vocabulary file")
        try:
            tensors = load_file(tensors_path)
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise ValueError(f"cannot read {tensors_path}: {error}") from error
        if "embeddings" not in tensors or "counts" not in tensors:
            raise ValueError(f"{tensors_path} must hold 'embeddings' and 'counts' tensors")
        entries = metadata.pop("entries", None)
        if not isinstance(entries, list):
            raise ValueError(f"{metadata_path} has no list of 'entries'")
        if len(entries) != tensors["embeddings"].shape[0]:
            raise ValueError(
                f"{metadata_path} lists {len(entries)} entries but {tensors_path} holds "
                f"{tensors['embeddings'].shape[0]} embeddings"
            )
        metadata.pop("format_version", None)
        return cls(entries, tensors["embeddings"], tensors["counts"], metadata)
