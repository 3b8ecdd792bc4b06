"""The report: a quick suite on small slices writes results.json (the agreed shape), results.md and the plot;
a failing speed step is recorded without losing the rest; the modules run as ``python -m``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import report

from .benchmark_fixtures import bench_cache, small_model2vec, student_dir  # noqa: F401 (fixtures)
from .conftest import REPO

SYSTEMS = ["teacher", "student", "asymmetric", "model2vec", "bm25"]
# the smallest speed measurement: one repeat of a few texts, one thread, no memory probes
TINY_SPEED = "--threads 1 --no-memory --no-plot --repeats 1 --queries-limit 8 --passages-limit 4 --latency-texts 2 " \
    "--min-time 0.01 --batch-sizes 64"  # fmt: skip


@pytest.fixture(scope="module")
def argv(student_dir, minilm_path, bench_cache, small_model2vec, shared_data):  # noqa: F811
    return ["--suite", "quick", "--model", student_dir, "--teacher", minilm_path, "--cache-dir", str(bench_cache),
            "--data-dir", str(shared_data), "--max-docs", "40", "--max-queries", "10", "--max-pairs", "30",
            "--max-texts", "40", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def quick(argv, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    return out, report.main([*argv, "--out", str(out), "--speed-args", TINY_SPEED, "--save-runs"])


def test_saved_runs_give_bootstrap_intervals_of_each_share_of_the_teacher(quick, shared_data):
    from benchmarks.bootstrap import paired_bootstrap
    from benchmarks.datasets import read_qrels_tsv
    from indexers.runs import read_trec

    out, _ = quick
    runs = {}
    for name in ("teacher", "student", "asymmetric"):
        hits = read_trec(out / "scifact" / "runs" / f"scifact.{name}.trec")
        runs[name] = {query: {doc: score for doc, _, score in ranked} for query, ranked in hits.items()}
    qrels = read_qrels_tsv(shared_data / "beir" / "scifact" / "qrels" / "test.tsv")
    qrels = {q: docs for q, docs in qrels.items() if q in runs["teacher"]}
    result = paired_bootstrap(qrels, runs["teacher"], runs, baseline="teacher", samples=500)
    rows = {row["run"]: row for row in result["rows"]}
    assert rows["teacher"]["pct_teacher_95ci"] == [100.0, 100.0]
    low, high = rows["student"]["pct_teacher_95ci"]
    assert low <= rows["student"]["pct_teacher"] <= high and high - low > 0


def test_quick_suite_writes_the_agreed_results(quick):
    out, result = quick
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(result))
    assert {"run", "suite", "machine", "versions", "settings", "retrieval", "sts", "fidelity", "speed"} <= set(saved)
    assert saved["run"] == out.name and saved["suite"] == "quick" and saved["errors"] == {}
    assert saved["versions"]["torch"] and saved["machine"]["cpu"]
    retrieval = {row["system"]: row for row in saved["retrieval"]}
    assert list(retrieval) == SYSTEMS and all(row["dataset"] == "scifact" for row in saved["retrieval"])
    for row in retrieval.values():
        assert {"ndcg@10", "mrr@10", "recall@100", "recall@1000", "pct_teacher_ndcg@10"} <= set(row)
    assert retrieval["teacher"]["pct_teacher_ndcg@10"] == 100.0
    assert [(row["dataset"], row["system"]) for row in saved["sts"]] == [("stsb", s) for s in SYSTEMS[:4]]
    assert all(isinstance(row["spearman"], float) for row in saved["sts"])
    assert saved["fidelity"]["texts"] == 40 and "cosine" in saved["fidelity"]["student"]["all"]
    assert set(saved["speed"]["speedup"]) >= {"student", "model2vec"}
    assert saved["speedups"]["student"]["queries"] > 0 and saved["speedups"]["bm25"]["queries"] > 0


def test_quick_suite_markdown_and_plot(quick):
    out, result = quick
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "| system | SciFact nDCG@10 | STS-B ρ | speed-up queries | speed-up passages |" in markdown
    assert "| teacher | " in markdown and "| bm25 | " in markdown and "| n/a |" in markdown
    assert "![quality vs speed](quality_vs_speed.png)" in markdown
    assert (out / "quality_vs_speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for step in ("scifact/beir.json", "stsb/sts.json", "fidelity/fidelity.json", "speed/speed.json"):
        assert (out / step).is_file()


def test_a_failing_speed_step_is_recorded_and_the_rest_written(argv, quick, tmp_path, monkeypatch):
    import benchmarks.speed

    def broken(argv):
        raise RuntimeError("speed benchmark not ready")

    monkeypatch.setattr(benchmarks.speed, "main", broken)
    result = report.main([*argv, "--out", str(tmp_path)])
    assert result["speed"] == {"error": "RuntimeError: speed benchmark not ready"}
    assert result["errors"] == {"speed": "RuntimeError: speed benchmark not ready"}
    assert len(result["retrieval"]) == 5 and len(result["sts"]) == 4 and result["fidelity"]["student"]
    ndcg = [row["ndcg@10"] for row in quick[1]["retrieval"]]
    assert [row["ndcg@10"] for row in result["retrieval"]] == pytest.approx(ndcg)  # the same, from the caches
    assert "retrieval runs" in result["plot_note"] and (tmp_path / "quality_vs_speed.png").is_file()
    assert "step speed failed: RuntimeError: speed benchmark not ready" in (tmp_path / "results.md").read_text()


def test_modules_run_as_python_m(argv, quick, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("beir", "msmarco", "sts", "fidelity", "report"):
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0 and f"usage: python -m benchmarks.{name}" in done.stdout, done.stderr
    command = [sys.executable, "-m", "benchmarks.report", *argv, "--skip", "speed", "fidelity", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "| system | SciFact nDCG@10 | STS-B ρ |" in done.stdout
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["settings"]["skipped_steps"] == ["speed", "fidelity"] and saved["fidelity"] == {}
    assert [row["ndcg@10"] for row in saved["retrieval"]] == pytest.approx(
        [row["ndcg@10"] for row in quick[1]["retrieval"]]
    )
