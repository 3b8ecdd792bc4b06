"""Contextual entry tables: entries aligned with the teacher's tokens, their states averaged, the table smoothed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bertapprox_hf.cli import main
from bertapprox_hf.pipeline.contextual import TokenStateSums, accumulate_token_states, contextualize, smoothed_table
from bertapprox_hf.pipeline.targets import build_targets, load_targets, targets_columns
from bertapprox_hf.pipeline.vocabulary import Vocabulary
from bertapprox_hf.training.data import is_training
from bertapprox_hf.training.student import create_student

from .conftest import read_texts, trained_student


@pytest.fixture(scope="module")
def texts(train_sample_files) -> list[str]:
    """Real texts of four sources, queries to passages (200 of each)."""
    from pathlib import Path

    return [text for path in train_sample_files for text in read_texts(Path(path), 200)]


def test_entries_line_up_with_the_teachers_tokens(minilm, minilm_vocab, texts):
    encoder = minilm_vocab.tokenizer().bag_encoder
    entries = minilm_vocab.entries
    checked = 0
    for text in texts[::4]:
        aligned = encoder.encode_with_positions(text)
        assert [entry for entry, _ in aligned] == encoder.encode(text)
        tokens = minilm.tokenizer(text, truncation=True, max_length=minilm.pooling.max_length)["input_ids"]
        for entry, positions in aligned:
            assert 0 < min(positions) and max(positions) < len(tokens) - 1  # never [CLS] or [SEP]
            words = minilm.tokenizer.decode([tokens[p] for p in positions])
            kind = entries[entry]
            if " <skip> " in kind:
                first, second = kind.split(" <skip> ")
                assert words.startswith(first) and words.endswith(second)
            elif not kind.startswith("##") and kind != minilm_vocab.unk_token:
                assert words.replace(" ", "") == kind.replace(" ", "") or len(positions) == 1
                checked += 1
    assert checked > 1000


def test_token_states_are_the_teachers_and_sum_per_entry(minilm, minilm_vocab, texts):
    sample = texts[:40]
    states = dict(minilm.token_states(sample, batch_size=16))
    assert sorted(states) == list(range(len(sample)))
    pooled = F.normalize(torch.stack([torch.from_numpy(s).mean(0) for s in (states[i] for i in range(40))]), dim=-1)
    np.testing.assert_allclose(pooled.numpy(), minilm.encode(sample), atol=1e-5)  # the teacher's mean pooling

    encoder = minilm_vocab.tokenizer().bag_encoder
    sums = accumulate_token_states(minilm, encoder, sample, batch_size=16)
    assert sums.texts == 40 and sums.skipped == 0
    expected = np.zeros_like(sums.sums)
    counts = np.zeros(len(minilm_vocab), dtype=np.int64)
    for index, text in enumerate(sample):
        for entry, positions in encoder.encode_with_positions(text):
            expected[entry] += states[index][list(positions)].mean(0)
            counts[entry] += 1
    np.testing.assert_array_equal(sums.occurrences, counts)
    np.testing.assert_allclose(sums.sums, expected, atol=1e-4)


def test_smoothed_table_shrinks_rare_entries_toward_the_linear_map():
    rng = np.random.default_rng(0)
    entries, dim = 400, 8
    isolated = rng.normal(size=(entries, dim))
    isolated[0] = 0
    mapping = rng.normal(size=(dim, dim))
    occurrences = np.where(np.arange(entries) < 300, 1000, 0)
    occurrences[0] = 0
    contextual = isolated @ mapping
    sums = TokenStateSums(contextual * occurrences[:, None], occurrences)
    table = smoothed_table(isolated, sums, prior=2.0)
    assert table.dtype == np.float32 and not table[0].any()
    assert np.linalg.norm(table[1:], axis=1).mean() == pytest.approx(1.0, rel=1e-5)
    scale = np.linalg.norm(contextual[1:], axis=1).mean()
    np.testing.assert_allclose(table[1:] * scale, contextual[1:], atol=1e-6)  # the map is exact here: unseen too

    with pytest.raises(ValueError, match="only 0 entries"):
        smoothed_table(isolated, TokenStateSums(np.zeros_like(isolated), np.zeros(entries, dtype=np.int64)))
    with pytest.raises(ValueError, match="differ"):
        smoothed_table(isolated[:, :4], sums)
    with pytest.raises(ValueError, match="prior"):
        smoothed_table(isolated, sums, prior=-1)


@pytest.fixture(scope="module")
def both_tables(minilm, minilm_vocab, texts) -> Vocabulary:
    """A contextual table read from every other text, with the isolated one kept beside it."""
    return contextualize(minilm_vocab, minilm, texts[1::2], batch_size=32, keep_isolated=True)


def test_a_contextual_table_starts_closer_to_the_teacher(minilm, minilm_vocab, both_tables, texts):
    """The plain mean of the contextual rows of a text's bag is nearer the teacher's embedding than the mean of
    the isolated rows, on texts the table never read."""
    dim = minilm_vocab.dim
    assert both_tables.entries == minilm_vocab.entries and both_tables.dim == 2 * dim
    assert both_tables.embeddings.dtype == minilm_vocab.embeddings.dtype
    np.testing.assert_array_equal(both_tables.embeddings[:, dim:], minilm_vocab.embeddings)
    record = both_tables.metadata["table"]
    assert record["kind"] == "contextual+isolated" and record["texts"] == len(texts[1::2])
    assert 0 < record["entries_seen"] < len(minilm_vocab)
    held_out = texts[::2]
    bags = minilm_vocab.tokenizer().encode_bags(held_out)
    teacher = torch.from_numpy(minilm.encode(held_out))

    def mean_cosine(table: np.ndarray) -> float:
        means = torch.from_numpy(np.stack([table[bag].astype(np.float32).mean(0) for bag in bags]))
        return float(F.cosine_similarity(means, teacher).mean())

    isolated, contextual = mean_cosine(minilm_vocab.embeddings), mean_cosine(both_tables.embeddings[:, :dim])
    assert contextual > isolated + 0.2, (isolated, contextual)


def test_a_student_on_both_tables_answers_in_the_teachers_space(minilm_vocab, both_tables, texts):
    """Its table is twice as wide, its output the teacher's size; untrained, it is the contextual rows' mean."""
    dim = minilm_vocab.dim
    model = create_student(both_tables, num_heads=4, intermediate_size=32)
    assert (model.config.embedding_dim, model.config.hidden_size, model.config.output_dim) == (2 * dim, dim, dim)
    sample = texts[::40]
    embeddings = model.encode(sample, convert_to_numpy=True)
    table = both_tables.embeddings[:, :dim].astype(np.float32)
    means = [table[bag].mean(0) for bag in minilm_vocab.tokenizer().encode_bags(sample)]
    expected = F.normalize(torch.from_numpy(np.stack(means)), dim=-1).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_another_teacher_is_refused(tiny_teacher, minilm_vocab, texts):
    with pytest.raises(ValueError, match="the vocabulary was made by another teacher: dim is 384 there but 32"):
        contextualize(minilm_vocab, tiny_teacher, texts[:5])


def test_cli_reads_only_training_texts(tiny_teacher, tiny_teacher_path, tiny_vocab, train_sample_files, tmp_path):
    vocab_dir, targets_dir, out = tmp_path / "vocab", tmp_path / "targets", tmp_path / "contextual"
    tiny_vocab.save(str(vocab_dir))
    build_targets(train_sample_files[:2], tiny_teacher, str(targets_dir), show_progress_bar=False, max_per_source=80)
    ids, _, _ = targets_columns(load_targets(str(targets_dir)))
    training = sum(is_training(record_id, 0.2) for record_id in ids)
    assert 0 < training < len(ids)
    args = ["vocab", "contextualize", "--vocab", str(vocab_dir), "--targets", str(targets_dir), "--out", str(out)]
    assert main([*args, "--teacher", tiny_teacher_path, "--val-fraction", "0.2", "--device", "cpu"]) == 0
    table = Vocabulary.load(str(out))
    assert table.metadata["table"]["texts"] == training and table.metadata["table"]["skipped_texts"] == 0
    assert table.entries == tiny_vocab.entries and not np.allclose(table.embeddings, tiny_vocab.embeddings)
    assert main([*args, "--teacher", tiny_teacher_path, "--max-texts", "10", "--device", "cpu"]) == 0
    assert Vocabulary.load(str(out)).metadata["table"]["texts"] == 10
    assert main([*args, "--val-fraction", "1.5"]) == 2
    assert table.metadata["table"]["val_fraction"] == 0.2


def test_the_corpus_gives_the_same_table_as_its_targets(
    tiny_teacher, tiny_teacher_path, tiny_vocab, train_sample_files, tmp_path
):
    vocab_dir, targets_dir = tmp_path / "vocab", tmp_path / "targets"
    tiny_vocab.save(str(vocab_dir))
    build_targets(train_sample_files[:2], tiny_teacher, str(targets_dir), show_progress_bar=False, max_per_source=60)
    common = ["vocab", "contextualize", "--vocab", str(vocab_dir), "--teacher", tiny_teacher_path, "--device", "cpu"]
    common += ["--val-fraction", "0.2", "--max-texts", "50", "--keep-isolated"]
    assert main([*common, "--targets", str(targets_dir), "--out", str(tmp_path / "from-targets")]) == 0
    corpus = ["--corpus", *train_sample_files[:2], "--max-per-source", "60"]
    assert main([*common, *corpus, "--out", str(tmp_path / "from-corpus")]) == 0
    from_targets, from_corpus = (
        Vocabulary.load(str(tmp_path / "from-targets")),
        Vocabulary.load(str(tmp_path / "from-corpus")),
    )
    np.testing.assert_array_equal(from_corpus.embeddings, from_targets.embeddings)
    assert from_corpus.metadata["table"]["corpus"]["max_per_source"] == 60


def test_training_refuses_a_table_that_read_its_validation_texts(
    tiny_teacher, tiny_vocab, train_sample_files, tmp_path
):
    from bertapprox_hf.pipeline.contextual import check_table_split
    from bertapprox_hf.training import Trainer, load_config

    record = {"kind": "contextual+isolated", "val_fraction": 0.02}
    metadata = {**tiny_vocab.metadata, "table": record}
    table = Vocabulary(tiny_vocab.entries, tiny_vocab.embeddings, tiny_vocab.counts, metadata)
    check_table_split(table, 0.02, "v")
    check_table_split(table, 0.01, "v")  # a run holding out less: its validation texts were held out then too
    check_table_split(tiny_vocab, 0.5, "v")  # an isolated table read no text
    table.save(str(tmp_path / "vocab"))
    targets = tmp_path / "targets"
    build_targets(train_sample_files[:1], tiny_teacher, str(targets), show_progress_bar=False, max_per_source=40)
    config = load_config(None, [f"data.vocab={tmp_path / 'vocab'}", f"data.targets={targets}", "data.val_fraction=0.03",
                                f"run.output_dir={tmp_path / 'run'}", "run.device=cpu"])  # fmt: skip
    with pytest.raises(ValueError, match=r"read the training split of val_fraction 0.02, but this run holds out"):
        Trainer(config)
    del record["val_fraction"]
    with pytest.raises(ValueError, match="records no val_fraction"):
        check_table_split(table, 0.03, "v")


def test_a_trained_student_on_both_tables_encodes_saves_and_loads(both_tables, texts, tmp_path):
    from transformers import AutoModel

    from bertapprox_hf.export import export_model
    from bertapprox_hf.inference import Encoder

    model = trained_student(both_tables, pooling_rounds=2)
    sample = texts[::25]
    expected = model.encode(sample, convert_to_numpy=True)
    assert expected.shape == (len(sample), model.config.output_dim)
    encoder = Encoder.from_pretrained(model, device="cpu", cache_size=0)
    np.testing.assert_allclose(encoder.encode(sample), expected, atol=1e-5)
    model.save_pretrained(tmp_path / "student")
    loaded = AutoModel.from_pretrained(tmp_path / "student", trust_remote_code=True)
    np.testing.assert_allclose(loaded.encode(sample, convert_to_numpy=True), expected, atol=1e-6)
    for kind in ("onnx", "torchscript"):  # the graphs precompute φ from the wide rows too, checked on the texts
        report = export_model(kind, tmp_path / "student", tmp_path / kind, texts=sample)
        assert report["passed"] and report["check"]["max_abs_diff"] <= 1e-5, report["check"]


def test_the_tables_pass_saves_targets_that_targets_build_reuses(
    tiny_teacher, tiny_teacher_path, tiny_vocab, train_sample_files, tmp_path
):
    """make demo's order: the contextual table's teacher pass writes its texts' embeddings, and the targets
    build copies them instead of encoding those texts again; the result equals a build that encoded all."""
    vocab_dir, sample = tmp_path / "vocab", tmp_path / "sample"
    tiny_vocab.save(str(vocab_dir))
    corpus = ["--corpus", *train_sample_files[:2], "--max-per-source", "60"]
    common = ["--teacher", tiny_teacher_path, "--device", "cpu"]
    contextual = ["vocab", "contextualize", "--vocab", str(vocab_dir), *corpus, "--val-fraction", "0.2"]
    assert main([*contextual, *common, "--max-texts", "40", "--out", str(tmp_path / "table")]) == 0
    assert main([*contextual, *common, "--max-texts", "40", "--out", str(tmp_path / "table2"),
                 "--save-targets", str(sample)]) == 0  # fmt: skip
    np.testing.assert_array_equal(
        Vocabulary.load(str(tmp_path / "table2")).embeddings, Vocabulary.load(str(tmp_path / "table")).embeddings
    )
    ids, texts, saved = targets_columns(load_targets(str(sample)))
    assert len(ids) == 40 and all(is_training(i, 0.2) for i in ids)
    np.testing.assert_allclose(saved.astype(np.float32), tiny_teacher.encode(texts), atol=2e-3)  # float16

    targets = ["targets", "build", *corpus, *common]
    assert main([*targets, "--out", str(tmp_path / "reusing"), "--reuse", str(sample)]) == 0
    assert main([*targets, "--out", str(tmp_path / "plain")]) == 0
    reusing, plain = (targets_columns(load_targets(str(tmp_path / name))) for name in ("reusing", "plain"))
    assert reusing[:2] == plain[:2]
    np.testing.assert_allclose(reusing[2].astype(np.float32), plain[2].astype(np.float32), atol=2e-3)
    copied = [ids.index(i) for i in reusing[0] if i in ids]
    np.testing.assert_array_equal(reusing[2][[reusing[0].index(ids[k]) for k in copied]], saved[copied])
