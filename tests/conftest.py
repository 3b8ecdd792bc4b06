"""Shared fixtures: a tiny random BERT teacher, the real MiniLM teacher and real data samples.

``BERTAPPROX_SHARED`` points at the shared folder (default: ``../shared`` beside the repository);
it must hold ``data/`` and ``teachers/fetch``. Tests never write there.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import string
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BERTAPPROX_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
TRAIN = DATA / "train"

TINY_WORDS = (
    "the of and to in is a for on that with as by it was what how are from at be this which new york city "
    "state united states bank rate interest market price oil company said year cat dog water health "
    "university school music game world house car people time day".split()
)


def need_shared(what: Path) -> None:
    """Skip a test that needs the shared data or teachers when they are absent, with the reason; fail instead
    where ``BERTAPPROX_REQUIRE_SHARED=1`` (CI, which has them: a skip there would hide a broken setup)."""
    if what.exists():
        return
    reason = f"{what} not found: set BERTAPPROX_SHARED to the shared data and teachers folder"
    if os.environ.get("BERTAPPROX_REQUIRE_SHARED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def read_texts(path: Path, limit: int) -> list[str]:
    """The first ``limit`` texts of a jsonl file of the shared data (skips the test when it is absent)."""
    need_shared(path)
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in itertools.islice(handle, limit)]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    need_shared(DATA / "train")
    return DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Local folder of the real all-MiniLM-L6-v2 teacher (fetched once, verified)."""
    fetch = SHARED / "teachers" / "fetch"
    need_shared(fetch)
    result = subprocess.run(["bash", str(fetch), "all-MiniLM-L6-v2"], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def minilm(minilm_path):
    from bertapprox_hf.pipeline.teacher import Teacher

    return Teacher.from_pretrained(minilm_path, device="cpu")


def make_tiny_teacher_folder(folder: Path, pooling: str = "mean", normalize: bool = True, seed: int = 0) -> Path:
    """Write a randomly initialised 2-layer BERT with a sentence-transformers layout to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase + string.digits)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
    tokens += letters + ["##" + c for c in letters] + list(string.punctuation)
    tokens += [w for w in TINY_WORDS if w not in tokens] + ["##s", "##ing", "##ed", "##er"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": pooling == "max",
            }
        )
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    return folder


@pytest.fixture(scope="session")
def tiny_teacher_path(tmp_path_factory) -> str:
    return str(make_tiny_teacher_folder(tmp_path_factory.mktemp("tiny-teacher")))


@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_path):
    from bertapprox_hf.pipeline.teacher import Teacher

    return Teacher.from_pretrained(tiny_teacher_path, device="cpu")


SYNTHETIC_CORPUS = REPO / "tests" / "data" / "corpus"  # made by tests/data/make_corpus.py


@pytest.fixture(scope="session")
def train_sample_files() -> list[str]:
    """A mix of real training sources (read with a per-source cap by the builder); where the shared data is
    absent, the small synthetic corpus committed under tests/data/corpus, so unit tests still run."""
    if (TRAIN / "msmarco_queries.jsonl").exists() or os.environ.get("BERTAPPROX_REQUIRE_SHARED") == "1":
        names = ["msmarco_queries", "msmarco_v2_passages", "reuters21578_sentences", "wordnet30_glosses"]
        return [str(TRAIN / f"{name}.jsonl") for name in names]
    return [str(SYNTHETIC_CORPUS / f"{name}.jsonl") for name in ("queries", "passages", "sentences", "glosses")]


@pytest.fixture(scope="session")
def minilm_vocab(minilm, train_sample_files, tmp_path_factory):
    """A small real vocabulary: MiniLM teacher, 1,500 texts from each of four training sources."""
    from bertapprox_hf.pipeline.vocab_builder import VocabularyConfig, build_vocabulary

    config = VocabularyConfig(min_count=3, max_words=400, max_ngrams=300, max_skipgrams=100, dtype="float32")
    return build_vocabulary(
        train_sample_files,
        minilm,
        config,
        cache_dir=str(tmp_path_factory.mktemp("vocab-cache")),
        show_progress_bar=False,
        max_per_source=1500,
    )


@pytest.fixture(scope="session")
def tiny_vocab(tiny_teacher, train_sample_files):
    """A vocabulary of the tiny random teacher over a few hundred real texts."""
    from bertapprox_hf.pipeline.vocab_builder import VocabularyConfig, build_vocabulary

    config = VocabularyConfig(min_count=2, max_words=200, max_ngrams=50, max_skipgrams=20, dtype="float32")
    return build_vocabulary(train_sample_files, tiny_teacher, config, show_progress_bar=False, max_per_source=150)


def trained_student(vocabulary, noise: float = 0.05, **config):
    """A small student whose trainable weights are off their identity init, as after training."""
    from bertapprox_hf.training.student import create_student

    torch.manual_seed(0)  # before creating it too: the initial weights are drawn from the global generator
    model = create_student(vocabulary, **{"num_heads": 4, "intermediate_size": 48, **config})
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * noise)
    return model.eval()


def offline_hub_cache(folder: Path, root: Path, repo_id: str) -> Path:
    """A Hugging Face Hub cache holding ``folder`` as the latest snapshot of ``repo_id``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root
