"""The failure analysis on a tiny student, the tiny random teacher and a tiny BEIR folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import failure_stats as stats
from benchmarks.failures import main

from .research_fixtures import (  # noqa: F401 (fixtures)
    RARE_WORDS,
    tiny_beir,
    tiny_corpus_file,
    tiny_own_vocab,
    tiny_student_dir,
)


def test_the_report_covers_every_query_and_its_worst_bags(tiny_student_dir, tiny_teacher_path, tiny_beir, tmp_path):  # noqa: F811
    out = tmp_path / "failures"
    report = main(
        ["--model", tiny_student_dir, "--teacher", tiny_teacher_path, "--dataset", tiny_beir, "--worst", "3",
         "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    )  # fmt: skip
    result = report["datasets"][0]
    assert len(result["queries"]) == 8
    for row in result["queries"]:
        for key in ("ndcg_teacher", "ndcg_student", "ndcg_asymmetric", "overlap_student", "overlap_asymmetric"):
            assert 0.0 <= row[key] <= 1.0, key
        assert -1.0 <= row["fidelity"] <= 1.0 + 1e-6
        assert 0.0 <= row["fallback_weight"] <= 1.0 + 1e-3
        assert (row["fallback_weight"] > 0) == (row["oov_rate"] > 0)
    deltas = [row["delta_asymmetric"] for row in result["worst"]]
    assert len(deltas) == 3 and deltas == sorted(deltas, reverse=True)
    assert deltas[0] == max(row["delta_asymmetric"] for row in result["queries"])
    for row in result["worst"]:
        weights = [entry["weight"] for entry in row["bag"]]
        assert weights and abs(sum(weights) - 1.0) < 1e-3  # the pooling's softmax over the bag
    roles = {entry["role"] for row in result["worst"] for entry in row["bag"]}
    assert roles <= {"entry", "skipgram", "fallback", "unknown"}
    sources = {group["source"] for group in report["fidelity"]["by_source"]}
    name = result["dataset"]["name"]
    assert sources == {f"{name} queries", f"{name} documents"}
    assert sum(group["count"] for group in report["fidelity"]["by_source"]) == 60 + 8
    assert sum(group["count"] for group in report["fidelity"]["by_oov"]) == 68
    for file in ("failures.json", "failures.md", "fidelity_groups.png", f"{name}_queries.png"):
        assert (out / file).is_file(), file
    saved = json.loads((out / "failures.json").read_text())
    assert saved["datasets"][0]["means"] == pytest.approx(result["means"])
    assert "### The 3 queries" in (out / "failures.md").read_text()


def test_the_teacher_ranks_like_itself(tiny_beir, tiny_teacher):  # noqa: F811
    """The ranking and overlap code: a system equal to the teacher agrees fully."""
    from benchmarks.datasets import load_beir_folder

    data = load_beir_folder(tiny_beir)
    docs = tiny_teacher.encode(list(data.corpus.values()))
    queries = tiny_teacher.encode(list(data.queries.values()))
    run = stats.rank(queries, docs, list(data.corpus), list(data.queries), "cosine", 20)
    rows = stats.per_query_rows(
        data.qrels, {"teacher": run, "student": run}, data.queries, dict.fromkeys(data.queries, 1.0),
        {qid: stats.BagStats(5, 0, 0) for qid in data.queries},
    )  # fmt: skip
    assert all(row["overlap_student"] == 1.0 and row["delta_student"] == 0.0 for row in rows)
    scores = queries @ docs.T
    best = list(data.corpus)[int(np.argmax(scores[0]))]
    assert stats.top_ids(run, "q0", 1) == [best]


def test_bags_label_fallback_pieces_and_weights_follow_the_pooling(tiny_student_dir):  # noqa: F811
    from bertapprox_hf import BertApproxModel

    model = BertApproxModel.from_pretrained(tiny_student_dir).eval()
    encoder = model.get_tokenizer().bag_encoder
    text = f"the bank rate {RARE_WORDS[0]} of oil"
    labelled = stats.labelled_bag(encoder, text, 512)
    assert [entry for entry, _ in labelled] == encoder.encode(text)
    assert any(role == "fallback" for _, role in labelled)  # the rare word falls back to pieces
    coverage = stats.bag_stats(encoder, text)
    assert coverage.words == 6 and coverage.fallback_words == 1
    ids = torch.tensor([encoder.encode(text)])
    weights = model.pooling_weights(ids)
    assert weights.shape == (1, ids.shape[1], model.config.num_heads)
    torch.testing.assert_close(weights.sum(1), torch.ones(1, model.config.num_heads))
    # the weights are the ones the forward pass pools with: the pooled vector they give is its pooled vector
    features = model(ids, output_entry_states=True).last_hidden_state
    pooled = model.bag_pooling().weighted_sum(features, weights)
    torch.testing.assert_close(model.embed_pooled(pooled), model(ids).pooler_output, atol=1e-5, rtol=1e-5)


def test_buckets_have_readable_labels_in_order():
    assert stats.bin_label(2, stats.LENGTH_BINS) == "≤ 3"
    assert stats.bin_label(5, stats.LENGTH_BINS) == "4–6"
    assert stats.bin_label(500, stats.LENGTH_BINS) == "> 200"
    assert stats.bin_label(0.0, stats.OOV_BINS, percent=True) == "0%"
    assert stats.bin_label(0.07, stats.OOV_BINS, percent=True) == "5%–10%"
    assert stats.bin_order(stats.LENGTH_BINS)[0] == "≤ 3" and stats.bin_order(stats.LENGTH_BINS)[-1] == "> 200"
