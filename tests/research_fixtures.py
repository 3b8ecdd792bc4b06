"""Tiny inputs of the research tools' tests, made without the shared data: texts drawn from the tiny teacher's
words (and a few words it lacks), a vocabulary and a student of the tiny teacher, and a BEIR folder.

Import the fixtures by name into a test module.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from .conftest import TINY_WORDS, trained_student

#: words outside the tiny teacher's vocabulary: they fall back to character pieces
RARE_WORDS = ("zyxomatic", "quokkas", "flurbish", "gimbaled", "wuxia")


def tiny_texts(count: int, seed: int = 0, rare: float = 0.0) -> list[str]:
    """``count`` texts of 3–20 words from :data:`TINY_WORDS`, a share ``rare`` of the words from
    :data:`RARE_WORDS`."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [
            rng.choice(RARE_WORDS) if rng.random() < rare else rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 20))
        ]
        texts.append(" ".join(words))
    return texts


def write_jsonl(path: Path, texts: list[str], prefix: str = "t") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"{prefix}{i}", "text": text}) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def tiny_corpus_file(tmp_path_factory) -> str:
    """400 texts of the tiny teacher's words."""
    return write_jsonl(tmp_path_factory.mktemp("tiny-corpus") / "texts.jsonl", tiny_texts(400))


@pytest.fixture(scope="session")
def tiny_own_vocab(tiny_teacher, tiny_corpus_file):
    """A vocabulary of the tiny teacher over :func:`tiny_corpus_file` (words, n-grams, skip-grams)."""
    from bertapprox_hf.pipeline.vocab_builder import VocabularyConfig, build_vocabulary

    config = VocabularyConfig(min_count=2, max_words=100, max_ngrams=60, max_skipgrams=20, min_npmi=0.0,
                              dtype="float32")  # fmt: skip
    return build_vocabulary([tiny_corpus_file], tiny_teacher, config, show_progress_bar=False)


@pytest.fixture(scope="session")
def tiny_student_dir(tiny_own_vocab, tiny_teacher_path, tmp_path_factory) -> str:
    """A saved student of the tiny teacher (weights off their identity init, as after training)."""
    folder = tmp_path_factory.mktemp("tiny-student")
    model = trained_student(tiny_own_vocab, noise=0.1, num_heads=4, intermediate_size=32)
    model.config.teacher = tiny_teacher_path
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> str:
    """A BEIR folder: 60 documents, 8 queries (some with rare words), each with 2 graded relevant documents."""
    folder = tmp_path_factory.mktemp("tiny-beir")
    documents = tiny_texts(60, seed=1, rare=0.1)
    queries = tiny_texts(8, seed=2, rare=0.2)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(documents):
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": text}) + "\n")
    (folder / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"]
    for i in range(len(queries)):
        lines += [f"q{i}\td{(7 * i) % 60}\t2", f"q{i}\td{(7 * i + 3) % 60}\t1"]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return str(folder)


@pytest.fixture(scope="session")
def tiny_training_inputs(tiny_teacher, tiny_own_vocab, tiny_corpus_file, tmp_path_factory) -> dict:
    """A vocabulary folder and a targets folder (the tiny corpus) of the tiny teacher."""
    from bertapprox_hf.pipeline.targets import build_targets

    root = tmp_path_factory.mktemp("tiny-training")
    tiny_own_vocab.save(str(root / "vocab"))
    build_targets([tiny_corpus_file], tiny_teacher, str(root / "targets"), shard_size=256, show_progress_bar=False)
    return {"vocab": str(root / "vocab"), "targets": str(root / "targets")}


def tiny_training_config(inputs: dict, path: Path, **overrides) -> str:
    """A training config file of a few seconds on the tiny inputs."""
    import yaml

    config = {
        "data": {"vocab": inputs["vocab"], "targets": inputs["targets"], "val_fraction": 0.1},
        "model": {"num_heads": 4, "intermediate_size": 32},
        "optim": {"batch_size": 32, "epochs": 1, "lr": 0.003},
        "eval": {"every_steps": 4},
        "run": {"device": "cpu", "checkpoint_every": 4, "log_every": 4, "tensorboard": False,
                "mixed_precision": "no"},
    }  # fmt: skip
    for key, value in overrides.items():
        section, name = key.split("__")
        config[section][name] = value
    path.write_text(yaml.safe_dump(config))
    return str(path)
