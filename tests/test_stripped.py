"""bertapprox model strip / restore: a student ships without its entry table and is restored and checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertapprox_hf.cli import main
from bertapprox_hf.hub.stripped import restore_student, strip_student

from .conftest import trained_student


@pytest.fixture()
def saved(tiny_vocab, tmp_path):
    student = trained_student(tiny_vocab, phi_layers=2, intermediate_size=64, num_heads=4, pair_rank=8)
    student.save_pretrained(tmp_path / "student")
    (tmp_path / "student" / "training.json").write_text('{"step": 7}')
    tiny_vocab.save(str(tmp_path / "vocab"))
    return tmp_path


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_strip_then_restore_gives_the_same_student(saved, dtype, capsys):
    from transformers import AutoModel

    assert main(["model", "strip", str(saved / "student"), "--out", str(saved / "moved"), "--dtype", dtype]) == 0
    summary = json.loads(capsys.readouterr().out)
    table_bytes = (saved / "student" / "model.safetensors").stat().st_size
    assert (saved / "moved" / "weights.safetensors").stat().st_size < table_bytes
    argv = ["model", "restore", str(saved / "moved"), "--vocab", str(saved / "vocab"), "--out", str(saved / "back")]
    assert main(argv) == 0
    check = json.loads(capsys.readouterr().out)
    assert summary["dtype"] == dtype and check["min_cosine"] > 0.9999
    texts = ["a small test of the round trip", "", "naïve café ☕", "new york city state bank rate"]
    original = AutoModel.from_pretrained(saved / "student", trust_remote_code=True).encode(texts)
    rebuilt = AutoModel.from_pretrained(saved / "back", trust_remote_code=True).encode(texts)
    if dtype == "float32":
        np.testing.assert_array_equal(rebuilt, original)
    else:
        np.testing.assert_allclose(rebuilt, original, atol=5e-3)
    assert json.loads((saved / "back" / "training.json").read_text()) == {"step": 7}


def test_restore_accepts_the_same_entries_in_another_order(saved, tiny_vocab):
    from bertapprox_hf.pipeline.vocabulary import Vocabulary

    strip_student(str(saved / "student"), str(saved / "moved"), "float32")
    stats = tiny_vocab.metadata["stats"]  # the words shuffled among themselves: each kind keeps its id range
    start = 2 + stats["pieces"]
    order = np.arange(len(tiny_vocab.entries))
    order[start : start + stats["words"]] = start + np.random.default_rng(0).permutation(stats["words"])
    entries, embeddings = [tiny_vocab.entries[i] for i in order], tiny_vocab.embeddings[order]
    shuffled = Vocabulary(entries, embeddings, tiny_vocab.counts[order], tiny_vocab.metadata)
    shuffled.save(str(saved / "shuffled"))
    result = restore_student(str(saved / "moved"), str(saved / "shuffled"), str(saved / "back"))
    assert result["reordered_entries"] and result["min_cosine"] > 0.9999


def test_restore_refuses_another_vocabulary_and_a_failed_check(saved, tiny_vocab, capsys):
    from bertapprox_hf.pipeline.vocabulary import Vocabulary

    strip_student(str(saved / "student"), str(saved / "moved"), "float32")
    fewer = Vocabulary(tiny_vocab.entries[:-5], tiny_vocab.embeddings[:-5], tiny_vocab.counts[:-5], tiny_vocab.metadata)
    fewer.save(str(saved / "fewer"))
    argv = ["model", "restore", str(saved / "moved"), "--vocab", str(saved / "fewer"), "--out", str(saved / "x")]
    assert main(argv) == 2
    assert "does not hold the entries" in capsys.readouterr().err
    other = Vocabulary(
        list(tiny_vocab.entries), tiny_vocab.embeddings[::-1].copy(), tiny_vocab.counts, tiny_vocab.metadata
    )
    other.save(str(saved / "other"))  # the same entries, other embeddings: a vocabulary built from other data
    with pytest.raises(ValueError, match="not the one that was stripped"):
        restore_student(str(saved / "moved"), str(saved / "other"), str(saved / "y"))
    assert not (saved / "y").exists()


SHIPPED = Path(__file__).resolve().parent.parent / "results" / "demo" / "student"


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="no student shipped in results/demo/student")
def test_the_shipped_student_is_whole_but_for_its_entry_table():
    """The student the README's figures come from: its weights fit its config, its entries match their digest,
    and its check holds the original's embeddings (make student restores it on a local vocabulary)."""
    from safetensors.torch import load_file

    from bertapprox_hf.hub.stripped import entries_digest
    from bertapprox_hf.model.configuration_bertapprox import BertApproxConfig
    from bertapprox_hf.model.modeling_bertapprox import BertApproxModel
    from bertapprox_hf.model.tokenization_bertapprox import load_entries

    settings = json.loads((SHIPPED / "config.json").read_text())
    entries = load_entries(str(SHIPPED / "entries.txt"))
    assert entries_digest(entries) == settings.pop("entries_sha256") and settings.pop("weights_dtype") == "float16"
    model = BertApproxModel(BertApproxConfig.from_dict(settings))
    missing, unexpected = model.load_state_dict(load_file(SHIPPED / "weights.safetensors"), strict=False)
    assert missing == ["entry_table.weight"] and not unexpected
    assert len(entries) == model.config.vocab_size
    check = json.loads((SHIPPED / "check.json").read_text())
    assert np.asarray(check["embeddings"]).shape == (len(check["texts"]), model.config.output_dim)
