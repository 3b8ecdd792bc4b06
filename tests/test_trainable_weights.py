"""scripts/trainable_weights.py: a student travels without its entry table and is put back together."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import load_script, trained_student


@pytest.fixture(scope="module")
def trainable_weights():
    return load_script("trainable_weights")


def test_split_then_assemble_gives_the_same_student(trainable_weights, tiny_vocab, tmp_path):
    from transformers import AutoModel

    student = trained_student(tiny_vocab, phi_layers=2, intermediate_size=64, num_heads=4)
    student.save_pretrained(tmp_path / "student")
    tiny_vocab.save(str(tmp_path / "vocab"))
    parts = trainable_weights.split(str(tmp_path / "student"), str(tmp_path / "moved"), max_mb=0.05)
    assert len(parts) > 1  # a small limit cuts the weights into several files
    table_bytes = tiny_vocab.embeddings.size * 4
    assert (
        sum((tmp_path / p).stat().st_size for p in parts)
        < (tmp_path / "student" / "model.safetensors").stat().st_size - table_bytes // 2
    )
    trainable_weights.assemble(str(tmp_path / "moved"), str(tmp_path / "vocab"), str(tmp_path / "back"))
    texts = ["a small test of the round trip", "", "naïve café ☕"]
    original = AutoModel.from_pretrained(tmp_path / "student", trust_remote_code=True).encode(texts)
    rebuilt = AutoModel.from_pretrained(tmp_path / "back", trust_remote_code=True).encode(texts)
    np.testing.assert_array_equal(rebuilt, original)


def test_assemble_refuses_another_vocabulary(trainable_weights, tiny_vocab, tmp_path):
    from bertapprox_hf.vocabulary import Vocabulary

    student = trained_student(tiny_vocab, intermediate_size=64, num_heads=4)
    student.save_pretrained(tmp_path / "student")
    trainable_weights.split(str(tmp_path / "student"), str(tmp_path / "moved"), max_mb=16)
    other = Vocabulary(
        entries=[*tiny_vocab.entries[:-1], "another entry"],
        embeddings=tiny_vocab.embeddings,
        counts=tiny_vocab.counts,
        metadata=tiny_vocab.metadata,
    )
    other.save(str(tmp_path / "other"))
    with pytest.raises(SystemExit, match="does not hold the entries"):
        trainable_weights.assemble(str(tmp_path / "moved"), str(tmp_path / "other"), str(tmp_path / "back"))


def test_assemble_accepts_the_same_entries_in_another_order(trainable_weights, tiny_vocab, tmp_path):
    from transformers import AutoModel

    from bertapprox_hf.vocabulary import Vocabulary

    student = trained_student(tiny_vocab, intermediate_size=64, num_heads=4)
    student.save_pretrained(tmp_path / "student")
    trainable_weights.split(str(tmp_path / "student"), str(tmp_path / "moved"), max_mb=16)
    order = np.arange(len(tiny_vocab))
    order[2:] = order[2:][::-1]  # [PAD] and [UNK] stay; every other entry moves
    shuffled = Vocabulary(
        entries=[tiny_vocab.entries[i] for i in order],
        embeddings=tiny_vocab.embeddings[order],
        counts=tiny_vocab.counts[order],
        metadata=tiny_vocab.metadata,
    )
    shuffled.save(str(tmp_path / "shuffled"))
    trainable_weights.assemble(str(tmp_path / "moved"), str(tmp_path / "shuffled"), str(tmp_path / "back"))
    texts = ["a small test of the round trip", "the bias of each entry must follow it"]
    original = AutoModel.from_pretrained(tmp_path / "student", trust_remote_code=True).encode(texts)
    rebuilt = AutoModel.from_pretrained(tmp_path / "back", trust_remote_code=True).encode(texts)
    np.testing.assert_allclose(rebuilt, original, rtol=1e-5, atol=1e-6)
