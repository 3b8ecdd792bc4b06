"""Paired bootstrap of nDCG@10 shares over queries (benchmarks.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bootstrap import main, paired_bootstrap


def _data(queries: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {f"d{i}": 2, f"e{i}": 1} for i in range(queries)}
    teacher = {f"q{i}": {f"d{i}": 3.0, f"e{i}": 2.0, "x": 1.0} for i in range(queries)}
    # "worse": the relevant document below a distractor in most queries; "same": the teacher's ranking
    worse = {qid: ({**docs, "x": 4.0} if rng.random() < 0.7 else dict(docs)) for qid, docs in teacher.items()}
    return qrels, teacher, {"same": dict(teacher), "worse": worse}


def test_a_run_equal_to_the_teacher_keeps_100_percent_and_a_worse_one_is_really_worse():
    qrels, teacher, runs = _data()
    result = paired_bootstrap(qrels, teacher, runs, baseline="same", samples=2000)
    same, worse = result["rows"]
    assert result["queries"] == 40
    assert same["pct_teacher"] == 100.0 and same["pct_teacher_95ci"] == [100.0, 100.0]
    assert worse["pct_teacher"] < 90 and worse["pct_teacher_95ci"][1] < 100
    assert worse["real"] and worse["vs_baseline_95ci"][1] < 0


def test_noise_of_a_few_queries_is_not_called_real():
    qrels, teacher, runs = _data()
    one_off = dict(teacher)
    one_off["q0"] = {**teacher["q0"], "x": 9.0}
    result = paired_bootstrap(qrels, teacher, {"same": teacher, "one": one_off}, baseline="same", samples=2000)
    assert not result["rows"][1]["real"]


def test_the_command_reads_trec_runs_and_writes_its_tables(tmp_path):
    qrels, teacher, runs = _data(queries=10)
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{g}\n" for q, docs in qrels.items() for d, g in docs.items())
    )
    for name, run in {"teacher": teacher, **runs}.items():
        lines = [
            f"{q} Q0 {d} {rank + 1} {score} {name}\n"
            for q, docs in run.items()
            for rank, (d, score) in enumerate(sorted(docs.items(), key=lambda item: -item[1]))
        ]
        (tmp_path / f"{name}.trec").write_text("".join(lines))
    argv = ["--qrels", str(tmp_path / "qrels.tsv"), "--teacher", str(tmp_path / "teacher.trec"), "--runs"]
    argv += [f"{n}={tmp_path / n}.trec" for n in runs] + ["--baseline", "same", "--out", str(tmp_path / "out")]
    result = main(argv)
    assert (tmp_path / "out" / "bootstrap.md").read_text().count("|") > 10
    assert result["rows"][0]["pct_teacher"] == 100.0
    with pytest.raises(ValueError, match="baseline"):
        paired_bootstrap(qrels, teacher, runs, baseline="missing")
