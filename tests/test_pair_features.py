"""The pair-feature prototype (benchmarks/pair_features.py): its pairs, its zero start, and a short run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks import pair_features
from benchmarks.pair_features import PairStudent, consecutive_pairs, pad_pairs
from bertapprox_hf.tokenization_bertapprox import pad_bag_arrays

from .conftest import read_texts, trained_student
from .test_training import inputs  # noqa: F401 (fixture)


def test_pairs_are_consecutive_entries_in_text_order_without_skipgrams(tiny_vocab, train_sample_files):
    tokenizer = trained_student(tiny_vocab).get_tokenizer()
    skipgram_ids = set(tokenizer.bag_encoder.skipgrams.values())
    bags = tokenizer.encode_bags(read_texts(Path(train_sample_files[1]), 200))
    bag = next(bag for bag in bags if skipgram_ids & set(bag))  # a passage whose bag holds a skip-gram
    units = [entry for entry in bag if entry not in skipgram_ids]
    pairs = consecutive_pairs(bag, skipgram_ids)
    assert len(pairs) == len(units) - 1 and [a for a, _ in pairs] == units[:-1] and pairs[-1][1] == units[-1]
    assert not skipgram_ids & {entry for pair in pairs for entry in pair}
    assert consecutive_pairs(units[:1], skipgram_ids) == []


def test_pair_pooling_starts_at_the_plain_student_and_moves_once_trained(tiny_vocab):
    student = trained_student(tiny_vocab)
    tokenizer = student.get_tokenizer()
    bags = tokenizer.encode_bags(["the interest rate rose", "the", "the central bank said on monday"])
    assert len(bags[1]) == 1
    skipgram_ids = set(tokenizer.bag_encoder.skipgrams.values())
    ids, mask = pad_bag_arrays(bags)
    pairs, pair_mask = pad_pairs([consecutive_pairs(b, skipgram_ids) for b in bags])
    batch = [torch.from_numpy(x) for x in (ids, mask, pairs, pair_mask)]
    model = PairStudent(student, rank=16).eval()
    with torch.no_grad():
        plain = student(input_ids=batch[0], attention_mask=batch[1]).pooler_output
        torch.testing.assert_close(model(*batch), plain)
        model.pairs.up.weight.normal_()
        moved = model(*batch)
    assert not torch.allclose(moved[0], plain[0]) and not torch.allclose(moved[2], plain[2])
    torch.testing.assert_close(moved[1], plain[1])  # a single entry has no pair


def test_a_short_run_logs_validation_metrics(inputs, tmp_path):  # noqa: F811 (the training tests' fixture)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data: {{vocab: {inputs['vocab']}, targets: {inputs['targets']}, val_fraction: 0.1}}\n"
        "model: {num_heads: 4, intermediate_size: 32}\n"
        "optim: {batch_size: 32, max_steps: 6}\neval: {every_steps: 3}\n"
    )
    out = tmp_path / "out"
    assert pair_features.main(["--config", str(config), "--arm", "pairs", "--rank", "8", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "pairs.metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [3, 6]
    assert 0 < rows[-1]["cosine_all"] <= 1 and rows[-1]["count_all"] >= 3
