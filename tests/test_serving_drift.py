"""The drift watch: live (shadowed texts, rolling cosine and top-k overlap, /health) and offline (the report),
each moving when the teacher and the student disagree (the student's own teacher vs an unrelated one)."""

from __future__ import annotations

import functools
import json
import os
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serving tests need the 'serve' extra")

from starlette.testclient import TestClient  # noqa: E402

from serving.app import create_app  # noqa: E402
from serving.config import ServeConfig  # noqa: E402
from serving.drift import ShadowWatch, row_cosines  # noqa: E402
from serving.drift_report import read_query_log, run_drift  # noqa: E402
from serving.service import EmbeddingService  # noqa: E402
from serving.teacher_process import TeacherProcess  # noqa: E402

from .serving_fixtures import SleepyTeacher, random_texts, serving_files  # noqa: E402

THRESHOLD = 0.5  # the tiny student agrees with its teacher at ~0.7 cosine, with an unrelated one at ~0.1


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return serving_files(tmp_path_factory)


def watched(files, teacher: str) -> tuple[dict, dict, str]:
    """Health, info and metrics after 60 texts went through a server shadowing every text with ``teacher``."""
    config = ServeConfig(
        model=files.student, index=files.index, teacher=teacher, shadow_rate=1.0, shadow_min_samples=20,
        min_cosine=THRESHOLD, min_overlap=0.0, overlap_k=5,
    )  # fmt: skip
    service = EmbeddingService.load(config)
    with TestClient(create_app(service)) as client:
        for start in range(0, 60, 6):
            assert client.post("/embed", json={"inputs": random_texts(6, seed=start)}).status_code == 200
        assert service.shadow.wait_idle(60)
        return client.get("/health").json(), client.get("/info").json(), client.get("/metrics").text


def gauge(text: str, name: str) -> float:
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_live_watch_is_ready_with_the_real_teacher_and_degraded_with_a_disagreeing_one(files):
    health, info, metrics = watched(files, files.teacher)
    assert health == {"status": "ready", "reasons": []}
    agreeing = gauge(metrics, "bertapprox_shadow_cosine")
    assert agreeing > THRESHOLD and info["shadow"]["samples"] == 60 and info["shadow"]["dropped"] == 0
    assert info["shadow"]["teacher_process"] not in (None, os.getpid())  # the teacher ran in a process of its own
    assert gauge(metrics, "bertapprox_shadow_samples_total") == 60
    assert 0 <= gauge(metrics, "bertapprox_shadow_topk_overlap") <= 1

    health, info, metrics = watched(files, files.other_teacher)
    disagreeing = gauge(metrics, "bertapprox_shadow_cosine")
    assert disagreeing < THRESHOLD < agreeing
    assert health["status"] == "degraded" and "cosine" in health["reasons"][0]
    assert gauge(metrics, "bertapprox_health") == 0.5


class SlowTeacher:
    """A teacher that blocks until released: the answers must not wait for it."""

    def __init__(self, dim: int) -> None:
        import threading

        self.dim = dim
        self.release = threading.Event()

    def encode(self, texts, batch_size=64):
        self.release.wait(30)
        return np.ones((len(texts), self.dim), dtype=np.float32)


def test_shadow_queue_never_blocks_and_drops_the_excess():
    teacher = SlowTeacher(4)
    watch = ShadowWatch(teacher, rate=1.0, queue_size=3)
    rows = np.ones((100, 4), dtype=np.float32)
    start = time.perf_counter()
    watch.offer([f"text {i}" for i in range(100)], rows)
    assert time.perf_counter() - start < 1.0  # although the teacher is stuck
    assert watch.dropped >= 100 - 3 - 32  # the worker holds one batch (≤ 32), the queue 3: the rest is dropped
    teacher.release.set()
    assert watch.wait_idle(10)
    assert watch.mean_cosine == pytest.approx(1.0)
    watch.close()


def test_teacher_process_busy_drops_samples_and_never_delays_the_caller():
    teacher = TeacherProcess(functools.partial(SleepyTeacher, 4, 1.0))
    assert teacher.wait_ready(120)["dim"] == 4
    watch = ShadowWatch(teacher, rate=1.0, queue_size=3, close_teacher=True)
    rows = np.ones((100, 4), dtype=np.float32)
    start = time.perf_counter()
    for first in range(0, 100, 10):  # the teacher takes a second per batch: it is busy all along
        watch.offer([f"text {i}" for i in range(first, first + 10)], rows[first : first + 10])
    assert time.perf_counter() - start < 0.5
    assert watch.dropped >= 100 - 3 - 32 and watch.samples == 0
    assert watch.wait_idle(30)
    assert watch.samples == 100 - watch.dropped and watch.mean_cosine == pytest.approx(1.0)
    assert watch.failures == 0
    watch.close()
    assert not teacher.process.is_alive()


def test_teacher_process_reports_a_teacher_that_does_not_load():
    teacher = TeacherProcess(functools.partial(SleepyTeacher, 4, 0.0, fail=True))
    with pytest.raises(RuntimeError, match="no such teacher"):
        teacher.encode(["a text"])
    teacher.close()


def test_row_cosines():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(row_cosines(a, b), [1.0, -1.0, 0.0])


def test_offline_report_shows_the_disagreement_over_time_and_names_the_worst_queries(files, tmp_path):
    log = tmp_path / "queries.jsonl"
    texts = random_texts(80, seed=11, low=1, high=20)
    with open(log, "w", encoding="utf-8") as handle:
        for number, text in enumerate(texts):
            handle.write(
                json.dumps({"text": text, "time": f"2026-01-01T00:{number // 60:02d}:{number % 60:02d}Z"}) + "\n"
            )
    same = run_drift(
        files.student, str(log), str(tmp_path / "same"), teacher=files.teacher, index=files.index, window=20
    )
    other = run_drift(files.student, str(log), str(tmp_path / "other"), teacher=files.other_teacher, window=20)
    assert same["queries"] == other["queries"] == 80
    assert other["cosine"] < THRESHOLD < same["cosine"]
    assert same["topk_overlap"] is not None and other["topk_overlap"] is None
    report = json.loads((tmp_path / "same" / "drift.json").read_text())
    assert len(report["windows"]) == 4 and report["windows"][0]["time"] is not None
    assert sum(bucket["queries"] for bucket in report["by_length"]) == 80
    worst = report["worst"]
    assert len(worst) == 20 and worst[0]["cosine"] == min(q["cosine"] for q in worst)
    assert worst[0]["text"] == texts[worst[0]["position"]]
    markdown = (tmp_path / "same" / "drift.md").read_text()
    assert "## Over time" in markdown and "## By query length" in markdown and worst[0]["text"][:30] in markdown
    assert (tmp_path / "same" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_query_logs_in_every_format(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"query": "one", "timestamp": 5}\n\n{"text": "two"}\n')
    (tmp_path / "b.tsv").write_text("q1\tfirst query\nq2\tsecond\n")
    (tmp_path / "c.txt").write_text("plain one\nplain two\n")
    assert [(q.text, q.time) for q in read_query_log(str(tmp_path / "a.jsonl"))] == [("one", 5.0), ("two", None)]
    assert [q.text for q in read_query_log(str(tmp_path / "b.tsv"))] == ["first query", "second"]
    assert [q.text for q in read_query_log(str(tmp_path / "c.txt"))] == ["plain one", "plain two"]
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "time": "yesterday"}\n')
    with pytest.raises(ValueError, match="ISO 8601"):
        read_query_log(str(tmp_path / "bad.jsonl"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no queries"):
        read_query_log(str(tmp_path / "empty.txt"))
