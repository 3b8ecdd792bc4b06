"""Files of the serving tests (built once per session): a tiny teacher, a student of it built from inline texts
(no shared data), a corpus, a student-only and an asymmetric Faiss index and a second,
unrelated teacher of the same size."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest

from .conftest import TINY_WORDS, make_tiny_teacher_folder, trained_student


@dataclass
class ServingFiles:
    teacher: str
    other_teacher: str
    student: str
    corpus: str
    index: str
    asymmetric_index: str
    texts: list[str]


def random_texts(count: int, seed: int, low: int = 2, high: int = 12) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(low, high))) for _ in range(count)]


def serving_files(tmp_path_factory) -> ServingFiles:
    """The files, built under the session's base temporary folder at the first call, reused afterwards."""
    from bertapprox_hf.inference import Encoder
    from bertapprox_hf.pipeline.teacher import Teacher
    from bertapprox_hf.pipeline.vocab_builder import VocabularyConfig, build_vocabulary

    faiss_indexer = pytest.importorskip("indexers.faiss_indexer", reason="the serving tests need faiss-cpu")
    root = tmp_path_factory.getbasetemp() / "serving-files"
    files = ServingFiles(
        str(root / "teacher"), str(root / "other-teacher"), str(root / "student"), str(root / "corpus.jsonl"),
        str(root / "index"), str(root / "asymmetric-index"), random_texts(60, seed=1, low=6, high=16),
    )  # fmt: skip
    if (root / "asymmetric-index" / "meta.json").is_file():
        return files
    make_tiny_teacher_folder(root / "other-teacher", seed=1)
    teacher = Teacher.from_pretrained(str(make_tiny_teacher_folder(root / "teacher")), device="cpu")
    config = VocabularyConfig(min_count=2, max_words=100, max_ngrams=40, max_skipgrams=10, dtype="float32")
    vocabulary = build_vocabulary(random_texts(400, seed=0), teacher, config, show_progress_bar=False)
    trained_student(vocabulary, noise=0.02).save_pretrained(root / "student")
    corpus = root / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for number, text in enumerate(files.texts):
            handle.write(json.dumps({"_id": f"doc{number}", "text": text}) + "\n")
    student = Encoder.from_pretrained(str(root / "student"), device="cpu")
    for documents, name in ((student, "index"), (teacher, "asymmetric-index")):
        index = faiss_indexer.FaissIndexer.build(str(corpus), documents, show_progress_bar=False)
        index.meta["query_encoder"] = {"path": str(root / "student")}
        index.save(root / name)
    return files


class SleepyTeacher:
    """A teacher whose every call takes ``seconds`` (built in a :class:`~serving.teacher_process.TeacherProcess`
    child: module-level, so that it pickles); ``fail`` makes loading it fail."""

    def __init__(self, dim: int, seconds: float, fail: bool = False) -> None:
        if fail:
            raise OSError("no such teacher")
        self.dim = dim
        self.seconds = seconds

    def encode(self, texts, batch_size=64):
        import time

        import numpy as np

        time.sleep(self.seconds)
        return np.ones((len(texts), self.dim), dtype=np.float32)
