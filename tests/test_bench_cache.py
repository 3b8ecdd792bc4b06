"""benchmarks.cache: teacher embeddings are kept by what the corpus holds, not where or when it was written."""

from __future__ import annotations

import os
import shutil

import numpy as np

from benchmarks.cache import cache_key, cached_embeddings, file_identity


def test_a_copied_corpus_keeps_its_cache_and_an_edited_one_does_not(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "text": "oil prices rose"}\n{"_id": "d2", "text": "café crème ☕"}\n')
    moved = tmp_path / "elsewhere" / "corpus.jsonl"
    moved.parent.mkdir()
    shutil.copyfile(corpus, moved)
    os.utime(moved, ns=(1, 1))  # another path and modification time, the same bytes
    assert file_identity(moved) == file_identity(corpus)

    calls = []

    def embed() -> np.ndarray:
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3) + len(calls)

    first = cached_embeddings(tmp_path / "cache", cache_key("teacher", file_identity(corpus)), {}, 2, embed)
    again = cached_embeddings(tmp_path / "cache", cache_key("teacher", file_identity(moved)), {}, 2, embed)
    assert len(calls) == 1 and np.array_equal(first, again)

    moved.write_text(moved.read_text().replace("rose", "fell"))
    assert file_identity(moved) != file_identity(corpus)
    edited = cached_embeddings(tmp_path / "cache", cache_key("teacher", file_identity(moved)), {}, 2, embed)
    assert len(calls) == 2 and not np.array_equal(edited, first)
