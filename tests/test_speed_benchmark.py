"""benchmarks.speed: a quick end-to-end run (MiniLM teacher, a small student, a tiny model2vec), its report
and its errors. Speed is measured, never asserted."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, trained_student


@pytest.fixture(scope="module")
def student_dir(minilm_vocab, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("speed-student")
    trained_student(minilm_vocab).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def model2vec_dir(minilm_path, tmp_path_factory) -> str:
    """A static model over the teacher's tokenizer with random vectors (distilling takes minutes)."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(minilm_path, "tokenizer.json"))
    vectors = np.random.default_rng(0).standard_normal((tokenizer.get_vocab_size(), 32)).astype(np.float32)
    folder = tmp_path_factory.mktemp("speed-model2vec")
    StaticModel(vectors, tokenizer).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def data_args(shared_data) -> list[str]:
    return [
        "--queries",
        str(shared_data / "train" / "msmarco_queries.jsonl"),
        "--corpus",
        str(shared_data / "msmarco-passage-dl19" / "corpus.jsonl"),
    ]


@pytest.fixture(scope="module")
def onnx_dir(student_dir, tmp_path_factory) -> str:
    from bertapprox_hf.export import export_model

    folder = tmp_path_factory.mktemp("speed-onnx")
    export_model("onnx", student_dir, folder, texts=["what is the interest rate", "new york city"])
    return str(folder)


@pytest.fixture(scope="module")
def quick_run(student_dir, model2vec_dir, onnx_dir, minilm_path, data_args, tmp_path_factory):
    from benchmarks.speed import main

    out = tmp_path_factory.mktemp("speed-out")
    argv = ["--model", student_dir, "--teacher", minilm_path, "--model2vec", model2vec_dir, "--onnx", onnx_dir]
    argv += data_args
    report = main([*argv, "--threads", "1", "--quick", "--out", str(out)])
    return report, out


SYSTEM_NAMES = {"teacher", "student", "student-int8", "student-bfloat16", "model2vec", "student-onnx"}


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_report_files_and_keys(quick_run):
    report, out = quick_run
    assert {"machine", "settings", "systems", "throughput", "latency", "memory", "speedup"} <= set(report)
    for name in ("speed.json", "speed.md", "speed.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "speed.json").read_text())["speedup"] == report["speedup"]
    machine = report["machine"]
    assert machine["cpu"] and machine["torch"] and machine["usable_cores"] >= 1
    assert set(report["systems"]) == SYSTEM_NAMES
    assert set(report["speedup"]) == SYSTEM_NAMES
    assert report["speedup_basis"] == {"batch_size": 64, "device": "cpu", "threads": 1}
    assert report["speedup_by_threads"] == {"1": report["speedup"]}
    assert "OMP_WAIT_POLICY" in report["settings"]["environment"]
    markdown = (out / "speed.md").read_text()
    for name in SYSTEM_NAMES:
        assert f"| {name} |" in markdown


def test_figures_positive_and_finite(quick_run):
    report, _ = quick_run
    throughput = report["throughput"]
    # every system, both sets, both batch sizes, one thread setting
    assert len(throughput) == len(SYSTEM_NAMES) * 2 * 2
    for row in throughput:
        assert positive(row["texts_per_s"]) and positive(row["ratio"])
        assert len(row["seconds"]) == 2 and all(positive(s) for s in row["seconds"])
    for row in report["latency"]:
        assert row["calls"] == 2 * 8
        assert all(positive(row[k]) for k in ("p50_ms", "p95_ms", "p99_ms"))
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    for info in report["systems"].values():
        assert positive(info["disk_mb"]) and positive(info["weights_mb"]) and info["weights_mb"] <= info["disk_mb"]
    assert {row["system"] for row in report["memory"]} == SYSTEM_NAMES
    for row in report["memory"]:
        assert positive(row["peak_rss_mb"]) and math.isfinite(row["peak_increase_mb"])
    for row in report["stages"]:
        assert all(positive(row[k]) for k in ("tokenize_ms", "pool_ms", "rho_ms"))
    assert {row["system"] for row in report["precision"]} == {"student-int8", "student-bfloat16"}
    for row in report["precision"]:
        assert 0.99 < row["mean_cosine_to_float32"] <= 1.0 + 1e-6


def test_ratios_are_throughput_over_teacher(quick_run):
    report, _ = quick_run
    rows = report["throughput"]
    teacher = {(r["set"], r["batch_size"], r["threads"]): r["texts_per_s"] for r in rows if r["system"] == "teacher"}
    for row in rows:
        expected = row["texts_per_s"] / teacher[(row["set"], row["batch_size"], row["threads"])]
        assert row["ratio"] == pytest.approx(expected, rel=1e-12)
        assert row["texts_per_s"] == pytest.approx(row["texts"] / np.median(row["seconds"]), rel=1e-12)
        if row["batch_size"] == 64:
            assert report["speedup"][row["system"]][row["set"]] == row["ratio"]
    assert report["speedup"]["teacher"] == {"queries": 1.0, "passages": 1.0}


def test_help_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--model", "--teacher", "--queries", "--corpus", "--model2vec", "--distill-model2vec", "--quick"):
        assert flag in done.stdout


def test_missing_model_folder(minilm_path, data_args, tmp_path):
    from benchmarks.speed import main

    missing = tmp_path / "no-such-student"
    with pytest.raises(FileNotFoundError, match="student folder not found"):
        main(["--model", str(missing), "--teacher", minilm_path, *data_args, "--quick", "--out", str(tmp_path)])
    assert not (tmp_path / "speed.json").exists()


def test_empty_queries_file(student_dir, minilm_path, data_args, tmp_path):
    from benchmarks.speed import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    argv = ["--model", student_dir, "--teacher", minilm_path, "--queries", str(empty), "--corpus", data_args[3]]
    with pytest.raises(ValueError, match="no texts in the queries file"):
        main([*argv, "--quick", "--out", str(tmp_path)])


def test_cli_reports_bad_input_without_traceback(minilm_path, data_args, tmp_path):
    argv = ["--model", str(tmp_path / "missing"), "--teacher", minilm_path, *data_args, "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "error: student folder not found" in done.stderr and "Traceback" not in done.stderr


class ConstantEncoder:
    """A stand-in system: all a registry entry needs is a loader of something with ``encode(texts, batch_size)``."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def encode(self, texts, batch_size=64):
        time.sleep(self.delay * len(texts))
        return np.zeros((len(texts), 4), dtype=np.float32)


def test_registry_adds_a_system_in_one_entry(monkeypatch, minilm_path, data_args, tmp_path):
    """A new system is one SYSTEMS entry: it is timed beside the teacher (here a stand-in too) and gets a ratio."""
    from benchmarks import speed

    monkeypatch.setitem(
        speed.SYSTEMS, "teacher", speed.System(lambda sources, device: ConstantEncoder(1e-4), "teacher")
    )
    monkeypatch.setitem(speed.SYSTEMS, "new", speed.System(lambda sources, device: ConstantEncoder(1e-5), "model"))
    argv = ["--model", str(tmp_path), "--teacher", minilm_path, *data_args, "--systems", "new", "--threads", "1"]
    (tmp_path / "config.json").write_text("{}")
    report = speed.main([*argv, "--quick", "--no-memory", "--no-plot", "--out", str(tmp_path)])
    assert set(report["speedup"]) == {"teacher", "new"}
    assert all(positive(r["ratio"]) for r in report["throughput"])
    assert "| new |" in Path(tmp_path / "speed.md").read_text()
