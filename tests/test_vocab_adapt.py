"""Vocabulary adaptation on the tiny teacher: new entries appended, old outputs unchanged, another teacher refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertapprox_hf import BertApproxModel
from bertapprox_hf.pipeline.vocab_adapt import AdaptConfig, adapt_student, main

from .conftest import make_tiny_teacher_folder, trained_student
from .research_fixtures import (  # noqa: F401 (fixtures)
    RARE_WORDS,
    tiny_corpus_file,
    tiny_own_vocab,
    tiny_student_dir,
    tiny_texts,
    write_jsonl,
)

SETTINGS = AdaptConfig(min_count=2, max_words=20, max_ngrams=20, max_skipgrams=5, min_npmi=0.0)


@pytest.fixture(scope="module")
def new_texts() -> list[str]:
    """Texts of a new domain: the old words with rare ones among them, and one rare phrase."""
    texts = tiny_texts(120, seed=7, rare=0.3)
    return texts + [f"the {RARE_WORDS[0]} {RARE_WORDS[1]} of the bank" for _ in range(6)]


def old_student(tiny_student_dir):  # noqa: F811
    return BertApproxModel.from_pretrained(tiny_student_dir).eval()


def test_adaptation_appends_entries_and_keeps_every_old_output(tiny_student_dir, tiny_teacher, new_texts):  # noqa: F811
    model = old_student(tiny_student_dir)
    adapted, record = adapt_student(model, tiny_teacher, new_texts, SETTINGS)
    old_size = model.config.vocab_size
    added = [item["entry"] for item in record["new_entries"]]
    assert set(RARE_WORDS) <= set(added), added
    assert f"{RARE_WORDS[0]} {RARE_WORDS[1]}" in added
    assert adapted.config.vocab_size == old_size + len(added)
    new_entries = adapted.get_tokenizer().bag_encoder.entries
    assert new_entries[:old_size] == model.get_tokenizer().bag_encoder.entries
    for name, table in (
        ("entry_table", lambda m: m.entry_table.weight),
        ("bias", lambda m: m.pooling.entry_bias.weight),
    ):
        torch.testing.assert_close(table(adapted)[:old_size], table(model), rtol=0, atol=0, msg=name)
    # each new word's row is the teacher's embedding of it
    rare = added.index(RARE_WORDS[2])
    expected = tiny_teacher.encode([RARE_WORDS[2]])[0]
    np.testing.assert_allclose(adapted.entry_table.weight[old_size + rare].numpy(), expected, atol=1e-5)

    old_texts = tiny_texts(200, seed=11) + new_texts
    new_ids = set(range(old_size, adapted.config.vocab_size))
    bags = adapted.get_tokenizer().encode_bags(old_texts)
    untouched = [text for text, bag in zip(old_texts, bags, strict=True) if not new_ids.intersection(bag)]
    touched = [text for text, bag in zip(old_texts, bags, strict=True) if new_ids.intersection(bag)]
    assert len(untouched) > 100 and len(touched) > 20
    assert adapted.get_tokenizer().encode_bags(untouched) == model.get_tokenizer().encode_bags(untouched)
    np.testing.assert_allclose(adapted.encode(untouched), model.encode(untouched), rtol=0, atol=1e-6)
    # texts with a new entry read it instead of its pieces
    assert adapted.get_tokenizer().encode_bags(touched) != model.get_tokenizer().encode_bags(touched)


def test_new_entries_start_from_their_neighbours(tiny_student_dir, tiny_teacher, new_texts):  # noqa: F811
    model = old_student(tiny_student_dir)
    adapted, record = adapt_student(model, tiny_teacher, new_texts, AdaptConfig(**{**vars(SETTINGS), "neighbours": 1}))
    old_entries = model.get_tokenizer().bag_encoder.entries
    for offset, item in enumerate(record["new_entries"][:5]):
        nearest = old_entries.index(item["neighbours"][0])
        torch.testing.assert_close(
            adapted.pooling.entry_bias.weight[model.config.vocab_size + offset],
            model.pooling.entry_bias.weight[nearest],
        )


def test_another_teacher_is_refused(tiny_student_dir, tmp_path, new_texts):  # noqa: F811
    from bertapprox_hf.pipeline.teacher import Teacher

    other = Teacher.from_pretrained(str(make_tiny_teacher_folder(tmp_path / "other", seed=1)), device="cpu")
    with pytest.raises(ValueError, match="another teacher"):
        adapt_student(old_student(tiny_student_dir), other, new_texts, SETTINGS)


def test_fine_tuning_trains_only_the_new_entries(tiny_student_dir, tiny_teacher, new_texts):  # noqa: F811
    model = old_student(tiny_student_dir)
    adapted, record = adapt_student(model, tiny_teacher, new_texts, SETTINGS, fine_tune_steps=30, fine_tune_lr=1e-2)
    tuned = record["fine_tune"]
    assert tuned["texts"] > 20 and tuned["loss_after"] < tuned["loss_before"]
    old_size = model.config.vocab_size
    plain, _ = adapt_student(model, tiny_teacher, new_texts, SETTINGS)
    assert not torch.equal(adapted.entry_table.weight[old_size:], plain.entry_table.weight[old_size:])
    for (name, value), (_, before) in zip(adapted.state_dict().items(), plain.state_dict().items(), strict=True):
        rows = value[:old_size] if value.dim() and value.shape[0] == adapted.config.vocab_size else value
        reference = before[:old_size] if value.dim() and value.shape[0] == adapted.config.vocab_size else before
        torch.testing.assert_close(rows, reference, rtol=0, atol=0, msg=name)
    assert all(not p.requires_grad for p in [adapted.entry_table.weight])


def test_a_table_with_contextual_and_isolated_halves_gets_both(tiny_own_vocab, tiny_teacher, new_texts):  # noqa: F811
    from bertapprox_hf.pipeline.vocabulary import Vocabulary

    isolated = np.asarray(tiny_own_vocab.embeddings, dtype=np.float32)
    mixing = np.random.default_rng(0).normal(size=(isolated.shape[1], isolated.shape[1])).astype(np.float32)
    contextual = isolated @ mixing  # a contextual half that is exactly a linear map of the isolated one
    both = Vocabulary(tiny_own_vocab.entries, np.concatenate([contextual, isolated], axis=1), tiny_own_vocab.counts,
                      tiny_own_vocab.metadata)  # fmt: skip
    model = trained_student(both, num_heads=4, intermediate_size=32)
    adapted, record = adapt_student(model, tiny_teacher, new_texts, SETTINGS)
    old_size, width = model.config.vocab_size, model.config.output_dim
    rows = adapted.entry_table.weight[old_size:].numpy()
    vectors = tiny_teacher.encode([item["entry"].replace(" <skip> ", " ") for item in record["new_entries"]])
    np.testing.assert_allclose(rows[:, width:], vectors, atol=1e-5)
    np.testing.assert_allclose(rows[:, :width], vectors @ mixing, atol=1e-3)


def test_the_command_writes_a_student_that_loads_like_any_other(
    tiny_student_dir,  # noqa: F811
    tiny_teacher_path,
    new_texts,
    tmp_path,
):
    from transformers import AutoModel

    corpus = write_jsonl(tmp_path / "new.jsonl", new_texts)
    out = tmp_path / "adapted"
    args = ["--model", tiny_student_dir, "--corpus", corpus, "--out", str(out), "--teacher", tiny_teacher_path,
            "--min-count", "2", "--min-npmi", "0", "--fine-tune-steps", "5"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "adaptation.json").read_text())
    assert record["new_entries"] and record["fine_tune"]["steps"] == 5
    loaded = AutoModel.from_pretrained(out, trust_remote_code=True)
    direct = BertApproxModel.from_pretrained(out)
    assert loaded.config.vocab_size == direct.config.vocab_size > old_student(tiny_student_dir).config.vocab_size
    np.testing.assert_allclose(loaded.encode(new_texts[:10]), direct.encode(new_texts[:10]), atol=1e-6)
    assert main([*args[:2], "--corpus", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
