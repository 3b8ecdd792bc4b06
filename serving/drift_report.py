"""Offline drift report: how far a student's embeddings are from its teacher's over a query log, over time and by
query length, with the worst queries (``bertapprox drift``).

    bertapprox drift --model STUDENT --teacher TEACHER --queries queries.jsonl [--index INDEX] --out report/

The log is jsonl (``text`` or ``query``, optionally ``time``/``timestamp``: ISO 8601 or seconds since the epoch),
tsv (``id<TAB>text``) or one query per line; its order is taken as time when it has no timestamps. Writes
``drift.json`` (every query's cosine and overlap, windows, length buckets, summary), ``drift.md`` and ``drift.png``.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .drift import row_cosines
from .search import SearchService, overlap

LENGTH_BUCKETS = ((1, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, None))


@dataclass
class LoggedQuery:
    text: str
    time: float | None  # seconds since the epoch, when the log has it


def read_query_log(path: str) -> list[LoggedQuery]:
    """The queries of a log (see the module docstring for the formats)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"query log not found: {path}")
    queries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON: {error}") from None
                text = row.get("text", row.get("query"))
                if not isinstance(text, str):
                    raise ValueError(f"{path}:{number}: expected a 'text' (or 'query') string")
                queries.append(LoggedQuery(text, _seconds(row.get("time", row.get("timestamp")), path, number)))
            elif path.endswith(".tsv") and "\t" in line:
                queries.append(LoggedQuery(line.split("\t", 1)[1], None))
            else:
                queries.append(LoggedQuery(line, None))
    if not queries:
        raise ValueError(f"{path}: no queries")
    return queries


def _seconds(value: Any, path: str, number: int) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        stamp = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{path}:{number}: time {value!r} is neither ISO 8601 nor a number") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def drift_records(
    texts: list[str], student: np.ndarray, teacher: np.ndarray, search: SearchService | None, k: int
) -> tuple[np.ndarray, list[float | None]]:
    """Cosine of each query's student and teacher embeddings and, with an index, the overlap of their top-k."""
    cosines = row_cosines(student, teacher)
    if search is None:
        return cosines, [None] * len(texts)
    overlaps = []
    for start in range(0, len(texts), 256):
        mine = search.search(student[start : start + 256], k)
        theirs = search.search(teacher[start : start + 256], k)
        overlaps.extend(overlap(a, b, k) for a, b in zip(mine, theirs, strict=True))
    return cosines, overlaps


def summarize(
    queries: list[LoggedQuery], cosines: np.ndarray, overlaps: list[float | None], window: int, worst: int
) -> dict[str, Any]:
    """Summary, windows over time, length buckets and the worst queries."""
    lengths = [len(q.text.split()) for q in queries]
    windows = []
    for start in range(0, len(queries), window):
        part = slice(start, start + window)
        times = [q.time for q in queries[part] if q.time is not None]
        windows.append({
            "first": start,
            "queries": len(queries[part]),
            "time": min(times) if times else None,
            "cosine": _mean(cosines[part].tolist()),
            "topk_overlap": _mean(overlaps[part]),
        })  # fmt: skip
    buckets = []
    for low, high in LENGTH_BUCKETS:
        chosen = [i for i, n in enumerate(lengths) if n >= low and (high is None or n <= high)]
        if chosen:
            label = f"{low}–{high}" if high is not None else f"{low}+"
            buckets.append({
                "words": label,
                "queries": len(chosen),
                "cosine": _mean(cosines[chosen].tolist()),
                "topk_overlap": _mean([overlaps[i] for i in chosen]),
            })  # fmt: skip
    order = np.argsort(cosines)[:worst]
    worst_queries = [
        {
            "position": int(i),
            "text": queries[i].text,
            "cosine": round(float(cosines[i]), 4),
            "topk_overlap": overlaps[i],
        }
        for i in order
    ]
    window_cosines = [w["cosine"] for w in windows if w["cosine"] is not None]
    return {
        "queries": len(queries),
        "cosine": _mean(cosines.tolist()),
        "topk_overlap": _mean(overlaps),
        "lowest_window_cosine": min(window_cosines) if window_cosines else None,
        "highest_window_cosine": max(window_cosines) if window_cosines else None,
        "windows": windows,
        "by_length": buckets,
        "worst": worst_queries,
    }


def write_report(report: dict[str, Any], out: str) -> dict[str, str]:
    """``drift.json``, ``drift.md`` and ``drift.png`` in ``out``."""
    os.makedirs(out, exist_ok=True)
    files = {name: os.path.join(out, f"drift.{name}") for name in ("json", "md", "png")}
    with open(files["json"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    with open(files["md"], "w", encoding="utf-8") as handle:
        handle.write(markdown(report))
    plot(report, files["png"])
    return files


def markdown(report: dict[str, Any]) -> str:
    def cell(value) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = [
        "# Student-vs-teacher drift",
        "",
        f"Model `{report['model']}`, teacher `{report['teacher']}`, log `{report['log']}`"
        + (f", index `{report['index']}` (top-{report['k']} overlap)" if report.get("index") else "")
        + ".",
        "",
        f"{report['queries']} queries: mean cosine **{cell(report['cosine'])}**"
        + (f", mean top-{report['k']} overlap **{cell(report['topk_overlap'])}**" if report.get("index") else "")
        + f"; windows of {report['window']} queries range from {cell(report['lowest_window_cosine'])} to "
        f"{cell(report['highest_window_cosine'])}.",
        "",
        "## Over time",
        "",
        "| first query | time | queries | cosine | top-k overlap |",
        "|---|---|---|---|---|",
    ]
    for w in report["windows"]:
        when = datetime.datetime.fromtimestamp(w["time"], datetime.timezone.utc).isoformat() if w["time"] else "–"
        lines.append(f"| {w['first']} | {when} | {w['queries']} | {cell(w['cosine'])} | {cell(w['topk_overlap'])} |")
    lines += ["", "## By query length", "", "| words | queries | cosine | top-k overlap |", "|---|---|---|---|"]
    for b in report["by_length"]:
        lines.append(f"| {b['words']} | {b['queries']} | {cell(b['cosine'])} | {cell(b['topk_overlap'])} |")
    lines += ["", f"## The {len(report['worst'])} worst queries", "", "| position | cosine | overlap | query |"]
    lines.append("|---|---|---|---|")
    for q in report["worst"]:
        text = q["text"].replace("|", "\\|").replace("\n", " ")[:200]
        lines.append(f"| {q['position']} | {q['cosine']:.3f} | {cell(q['topk_overlap'])} | {text} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (over_time, by_length) = plt.subplots(1, 2, figsize=(12, 4.5))
    windows = report["windows"]
    x = [w["first"] for w in windows]
    over_time.plot(x, [w["cosine"] for w in windows], marker="o", label="cosine")
    if report.get("index"):
        over_time.plot(x, [w["topk_overlap"] for w in windows], marker="s", label=f"top-{report['k']} overlap")
    over_time.set_xlabel(f"query position in the log (windows of {report['window']})")
    over_time.set_ylabel("student vs teacher")
    over_time.set_ylim(0, 1.02)
    over_time.set_title("Over time")
    over_time.legend()
    over_time.grid(alpha=0.3)
    buckets = report["by_length"]
    labels = [b["words"] for b in buckets]
    by_length.bar(labels, [b["cosine"] for b in buckets], color="tab:blue")
    for position, bucket in enumerate(buckets):
        by_length.annotate(str(bucket["queries"]), (position, bucket["cosine"]), ha="center", va="bottom", fontsize=8)
    by_length.set_xlabel("query length (words); bar labels: queries")
    by_length.set_ylabel("mean cosine")
    by_length.set_ylim(0, 1.02)
    by_length.set_title("By query length")
    figure.suptitle(f"Drift: {os.path.basename(report['model'].rstrip('/'))} vs its teacher")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_drift(
    model: str,
    queries: str,
    out: str,
    teacher: str | None = None,
    index: str | None = None,
    k: int = 10,
    window: int = 100,
    worst: int = 20,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, Any]:
    """Embed a query log with the student and the teacher, write the report, return its summary."""
    from bertapprox_hf.inference import Encoder

    from .backends import load_teacher

    if window < 1 or worst < 0 or k < 1:
        raise ValueError("window and k must be ≥ 1, worst ≥ 0")
    log = read_query_log(queries)
    student = Encoder.from_pretrained(model, device=device, cache_size=0)
    teacher = teacher or getattr(student.config, "teacher", None)
    if not teacher:
        raise ValueError("the student records no teacher: pass --teacher")
    texts = [q.text for q in log]
    student_rows = student.encode(texts, batch_size=batch_size, show_progress_bar=True)
    teacher_rows = load_teacher(teacher, device).encode(texts, batch_size=batch_size, show_progress_bar=True)
    if student_rows.shape != teacher_rows.shape:
        raise ValueError(
            f"the student makes {student_rows.shape[1]}-d embeddings, the teacher {teacher_rows.shape[1]}-d"
        )
    search = SearchService.load(index) if index else None
    cosines, overlaps = drift_records(texts, student_rows, teacher_rows, search, k)
    report = {"model": model, "teacher": teacher, "log": queries, "index": index, "k": k, "window": window}
    report.update(summarize(log, cosines, overlaps, window, worst))
    files = write_report(report, out)
    keys = ("queries", "cosine", "topk_overlap", "lowest_window_cosine", "highest_window_cosine")
    return {**{key: report[key] for key in keys}, "files": files}
