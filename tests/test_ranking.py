"""Ranking distillation: candidates mined by the teacher, the ranking losses, their config and validation view."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from bertapprox_hf.pipeline.candidates import MiningConfig, build_candidates, load_candidates, shard_path
from bertapprox_hf.pipeline.targets import build_targets, load_targets, targets_columns
from bertapprox_hf.training import Trainer
from bertapprox_hf.training.config import ConfigError, RankingConfig
from bertapprox_hf.training.ranking import ranking_loss, ranking_view

from .conftest import make_tiny_teacher_folder
from .test_training import inputs, tiny_config  # noqa: F401  (the module's fixture)

MINING = MiningConfig(k=8, val_fraction=0.1, shard_size=32)


@pytest.fixture(scope="module")
def candidates(inputs, tmp_path_factory) -> str:  # noqa: F811
    out = str(tmp_path_factory.mktemp("candidates") / "candidates")
    build_candidates([inputs["targets"]], [inputs["targets"]], out, MINING, show_progress_bar=False)
    return out


def test_candidates_are_each_querys_exact_top_k_among_training_documents(inputs, candidates):  # noqa: F811
    from bertapprox_hf.training.data import is_training

    mined = load_candidates(candidates)
    assert len(mined.query_ids) > 50 and len(mined.doc_ids) > 50
    assert all(len(text.split()) <= MINING.query_max_words for text in mined.query_texts)
    assert all(len(text.split()) >= MINING.doc_min_words for text in mined.doc_texts)
    assert all(is_training(i, MINING.val_fraction) for i in mined.doc_ids)
    queries = torch.nn.functional.normalize(torch.from_numpy(mined.query_embeddings.astype(np.float32)), dim=-1)
    documents = torch.nn.functional.normalize(torch.from_numpy(mined.doc_embeddings.astype(np.float32)), dim=-1)
    exact = (queries @ documents.T).topk(MINING.k, dim=-1)
    np.testing.assert_allclose(mined.scores, exact.values.numpy(), atol=1e-5)
    assert (mined.candidates[:, 0] == exact.indices[:, 0].numpy()).mean() > 0.99  # ties aside
    ids, texts, _ = targets_columns(load_targets(inputs["targets"]))
    assert set(mined.query_ids) <= set(ids) and set(mined.doc_texts) <= set(texts)


def test_mining_resumes_after_an_interruption_with_the_same_candidates(inputs, candidates, tmp_path):  # noqa: F811
    out = str(tmp_path / "resumed")
    # Interrupted: one of two processes did its shards, the other never ran; and one shard is truncated.
    build_candidates([inputs["targets"]], [inputs["targets"]], out, MINING, 0, 2, show_progress_bar=False)
    with open(shard_path(out, 0), "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ValueError, match="did not finish"):
        load_candidates(out)
    build_candidates([inputs["targets"]], [inputs["targets"]], out, MINING, show_progress_bar=False)
    resumed, whole = load_candidates(out), load_candidates(candidates)
    assert resumed.query_ids == whole.query_ids and resumed.doc_ids == whole.doc_ids
    np.testing.assert_array_equal(resumed.candidates, whole.candidates)
    np.testing.assert_array_equal(resumed.scores, whole.scores)


@pytest.fixture(scope="module")
def other_targets(train_sample_files, tmp_path_factory) -> str:
    from bertapprox_hf.pipeline.teacher import Teacher

    root = tmp_path_factory.mktemp("other-teacher")
    teacher = Teacher.from_pretrained(str(make_tiny_teacher_folder(root / "another-teacher", seed=1)), device="cpu")
    out = str(root / "targets")
    build_targets(train_sample_files, teacher, out, shard_size=256, show_progress_bar=False, max_per_source=150)
    return out


def test_a_teacher_mismatch_is_refused(inputs, candidates, other_targets, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="another teacher"):
        build_candidates([inputs["targets"]], [other_targets], str(tmp_path / "mixed"), MINING)
    with pytest.raises(ValueError, match="another teacher"):  # extending a folder of the first teacher
        build_candidates([other_targets], [other_targets], candidates, MINING)
    with pytest.raises(ValueError, match="another k"):
        build_candidates([inputs["targets"]], [inputs["targets"]], candidates, MiningConfig(k=4, val_fraction=0.1))
    other = str(tmp_path / "other-candidates")
    build_candidates([other_targets], [other_targets], other, MINING, show_progress_bar=False)
    config = tiny_config(inputs, tmp_path / "run", f"ranking.candidates={other}", "ranking.listwise=1")
    with pytest.raises(ValueError, match="another teacher"):
        Trainer(config)


def _scores(seed: int, queries: int = 6, documents: int = 4, dim: int = 16):
    generator = torch.Generator().manual_seed(seed)
    teacher_queries = torch.randn(queries, dim, generator=generator)
    teacher_documents = torch.randn(queries * documents, dim, generator=generator)
    own = torch.arange(queries * documents).reshape(queries, documents)
    return teacher_queries, teacher_documents, own


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_the_ranking_loss_is_zero_when_the_student_is_the_teacher_and_positive_otherwise(similarity):
    config = RankingConfig(listwise=1.0, margin_mse=1.0, sides="both")
    queries, documents, own = _scores(0)
    total, parts = ranking_loss(queries, queries, documents, own, config, similarity, documents)
    assert set(parts) == {"listwise", "margin_mse"}
    assert float(total) == pytest.approx(0.0, abs=1e-5)
    other = queries + 0.5 * torch.randn_like(queries)
    total, parts = ranking_loss(other, queries, documents, own, config, similarity, documents)
    assert float(parts["listwise"]) > 1e-3 and float(parts["margin_mse"]) > 1e-3


def test_the_ranking_view_is_perfect_for_the_teacher_and_counts_overlap():
    queries, documents, _ = _scores(1, queries=5, documents=6)
    scores = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(documents, dim=-1).T
    top = scores.topk(10, dim=-1).indices.numpy()
    view = ranking_view(queries.numpy(), documents.numpy(), top, "cosine")
    assert view == {"overlap10": pytest.approx(1.0), "ndcg10": pytest.approx(1.0)}
    reversed_order = ranking_view(queries.numpy(), documents.numpy(), top[:, ::-1].copy(), "cosine")
    assert reversed_order["overlap10"] == pytest.approx(1.0) and reversed_order["ndcg10"] < 0.9
    elsewhere = ranking_view(queries.numpy(), documents.numpy(), np.argsort(-scores.numpy())[:, -10:], "cosine")
    assert elsewhere["overlap10"] < 0.7


@pytest.mark.parametrize("sides", ["query", "both"])
def test_ranking_training_lowers_the_ranking_loss_and_validates_the_ranking(inputs, candidates, tmp_path, sides):  # noqa: F811
    config = tiny_config(
        inputs, tmp_path / "run", f"ranking.candidates={candidates}", "ranking.listwise=1", "ranking.margin_mse=1",
        f"ranking.sides={sides}", "ranking.queries_per_batch=16", "ranking.eval_queries=50", "optim.epochs=6",
        "eval.metric=rank_ndcg10_asymmetric",
    )  # fmt: skip
    trainer = Trainer(config)
    trainer.start_fresh()
    batch = next(trainer.data.batches(0, 0, config.optim.batch_size, config.run.seed, 0, 1))
    with torch.no_grad():
        _, before = trainer.step_loss(batch, 0)
    report = trainer.train()
    with torch.no_grad():
        trainer.state.epoch, trainer.state.batch_in_epoch = 0, 0  # the same ranking batch as before training
        _, after = trainer.step_loss(batch, 0)
    assert float(after["listwise"]) < 0.8 * float(before["listwise"])
    assert float(after["margin_mse"]) < float(before["margin_mse"])
    records = [json.loads(line) for line in open(os.path.join(tmp_path / "run", "metrics.jsonl"), encoding="utf-8")]
    evals = [record for record in records if record["event"] == "eval"]
    for key in ("rank_overlap10_asymmetric", "rank_ndcg10_asymmetric", "rank_overlap10_student", "rank_ndcg10_student"):
        assert all(0 <= record[key] <= 1 for record in evals)
    assert evals[-1]["rank_ndcg10_asymmetric"] > evals[0]["rank_ndcg10_asymmetric"]
    assert report["best"]["rank_ndcg10_asymmetric"] == max(r["rank_ndcg10_asymmetric"] for r in evals)
    assert all("listwise" in r and "margin_mse" in r for r in records if r["event"] == "train")


def test_candidates_alone_add_the_ranking_view_without_training_for_it(inputs, candidates, tmp_path):  # noqa: F811
    config = tiny_config(inputs, tmp_path / "run", f"ranking.candidates={candidates}", "optim.max_steps=3")
    trainer = Trainer(config)
    assert not trainer.ranking.training
    batch = next(trainer.data.batches(0, 0, config.optim.batch_size, config.run.seed, 0, 1))
    _, parts = trainer.step_loss(batch, 0)
    assert set(parts) == {"mse", "cosine"}
    assert "rank_ndcg10_student" in trainer.evaluate()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ranking.listwise=1"], "'ranking.candidates' is required"),
        (["ranking.margin_mse=0.5"], "'ranking.candidates' is required"),
        (["ranking.candidates=/nowhere/candidates"], "/nowhere/candidates"),
        (["ranking.top_k=3"], "unknown config key 'ranking.top_k'"),
        (["ranking.sides=documents"], "ranking.sides"),
        (["ranking.listwise=-1"], "ranking.listwise"),
        (["eval.metric=rank_ndcg10_asymmetric"], "eval.metric"),
    ],
)
def test_bad_ranking_configuration_names_the_key(inputs, overrides, message):  # noqa: F811
    from bertapprox_hf.training import load_config

    base = [f"data.vocab={inputs['vocab']}", f"data.targets={inputs['targets']}"]
    with pytest.raises(ConfigError, match=message):
        load_config(None, base + overrides)


def test_candidates_mined_with_another_split_are_refused(inputs, tmp_path):  # noqa: F811
    out = str(tmp_path / "split")
    build_candidates([inputs["targets"]], [inputs["targets"]], out, MiningConfig(k=8, val_fraction=0.2))
    config = tiny_config(inputs, tmp_path / "run", f"ranking.candidates={out}", "ranking.listwise=1")
    with pytest.raises(ValueError, match="val_fraction"):
        Trainer(config)


def test_the_cli_mines_candidates(inputs, tmp_path, capsys):  # noqa: F811
    from bertapprox_hf.cli import main

    out = str(tmp_path / "cli")
    argv = ["candidates", "build", "--queries", inputs["targets"], "--documents", inputs["targets"], "--out", out]
    assert main([*argv, "--k", "5", "--val-fraction", "0.1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["k"] == 5 and summary["num_queries"] == len(load_candidates(out).query_ids)
    assert main([*argv, "--k", "5", "--val-fraction", "0.1"]) == 0  # a rerun reuses every shard
    assert main(["candidates", "build", "--queries", "/nowhere", "--documents", inputs["targets"], "--out", out]) == 2
