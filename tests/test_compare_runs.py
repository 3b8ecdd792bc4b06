"""benchmarks.compare_runs: validation curves of real runs side by side, and clear errors on bad logs."""

from __future__ import annotations

import json

import pytest

from benchmarks.compare_runs import main, read_evaluations

from .conftest import REPO

LOGS = REPO / "experiments" / "results" / "sweep-crops"


def test_compares_two_real_runs(tmp_path):
    a, b = LOGS / "crops-4ep.metrics.jsonl", LOGS / "crops-steps.metrics.jsonl"
    metrics = ["--metrics", "spearman_passage"]
    runs = main(["--run", f"crops={a}", "--run", f"fewer-steps={b}", *metrics, "--out", str(tmp_path)])
    assert list(runs) == ["crops", "fewer-steps"]
    last = {label: events[-1] for label, events in runs.items()}
    assert last["crops"]["step"] == 3800 and last["fewer-steps"]["step"] == 2880
    table = (tmp_path / "curves.md").read_text().splitlines()
    assert table[0] == "| step | spearman_passage crops | spearman_passage fewer-steps |"
    steps = sorted({e["step"] for events in runs.values() for e in events})
    assert len(table) == 2 + len(steps)
    row_3800 = next(line for line in table if line.startswith("| 3800 |"))
    assert row_3800 == f"| 3800 | {last['crops']['spearman_passage']:.4f} |  |"  # the shorter run stopped at 2880
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_logs_and_arguments_fail_clearly(tmp_path, capsys):
    good = str(LOGS / "crops-4ep.metrics.jsonl")
    with pytest.raises(FileNotFoundError, match="metrics log not found"):
        read_evaluations(str(tmp_path / "missing.jsonl"))
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(json.dumps({"event": "eval", "step": 0}) + "\n{not json\n")
    with pytest.raises(ValueError, match="corrupt.jsonl:2: not valid JSON"):
        read_evaluations(str(corrupt))
    empty = tmp_path / "train-only.jsonl"
    empty.write_text(json.dumps({"event": "train", "step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="holds no evaluation"):
        read_evaluations(str(empty))
    for argv, message in (
        (["--run", good], "expected LABEL=PATH"),
        (["--run", f"a={good}", "--run", f"a={good}"], "run labels repeat"),
        (["--run", f"a={good}", "--metrics", "spearman_nothing"], "has no spearman_nothing"),
    ):
        with pytest.raises(SystemExit):
            main([*argv, "--out", str(tmp_path)])
        assert message in capsys.readouterr().err


def test_live_weights_of_an_averaged_run_are_a_second_line(tmp_path):
    averaged = REPO / "experiments" / "results" / "weight-average" / "scratch.metrics.jsonl"
    plain = LOGS / "crops-4ep.metrics.jsonl"
    argv = ["--run", f"ema={averaged}", "--run", f"plain={plain}", "--metrics", "spearman_passage", "--live"]
    runs = main([*argv, "--out", str(tmp_path)])
    assert list(runs) == ["ema", "ema, live", "plain"]  # the plain run has no live weights of its own
    source = read_evaluations(str(averaged))
    assert [e["spearman_passage"] for e in runs["ema, live"]] == [e["raw_spearman_passage"] for e in source]
    assert runs["ema, live"][2]["spearman_passage"] < runs["ema"][2]["spearman_passage"]  # step 1,000
