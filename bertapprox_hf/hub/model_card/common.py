"""Shared pieces of the model card: labels, number formatting, reading benchmark result rows."""

from __future__ import annotations

import json
import os
from typing import Any

NOT_MEASURED = "not measured"
NOT_RECORDED = "not recorded"
SYSTEM_ORDER = ("teacher", "student", "asymmetric", "model2vec", "bm25")
SYSTEM_LABELS = {
    "teacher": "teacher",
    "student": "this model",
    "asymmetric": "asymmetric (queries: this model, documents: teacher)",
    "model2vec": "model2vec (distilled from the teacher)",
    "bm25": "BM25",
}
# Hub ids of datasets the benchmarks and training sources are known by (matched by name prefix).
HIDDEN_SETTINGS = {"systems", "steps", "skipped_steps", "model", "teacher", "data_dir", "cache_dir", "model2vec"}
LOSS_WEIGHTS = ("mse", "cosine", "relational")  # the weighted terms of training.losses
METRIC_WORDS = {"spearman", "pearson", "map", "mrr", "ndcg", "recall", "precision", "accuracy"}
METRIC_NAMES = {
    "ndcg@10": "nDCG@10",
    "mrr@10": "MRR@10",
    "recall@100": "Recall@100",
    "recall@1000": "Recall@1000",
    "spearman": "Spearman",
    "pearson": "Pearson",
}


def number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return NOT_MEASURED if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def metric_type(key: str) -> str:
    return key.lower().replace("@", "_at_")


def metric_name(key: str) -> str:
    return METRIC_NAMES.get(key.lower(), key)


def rows_by_dataset(rows: Any) -> dict[str, dict[str, dict]]:
    """``{dataset: {system: row}}`` of a results section (bad rows skipped)."""
    table: dict[str, dict[str, dict]] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and isinstance(row.get("dataset"), str) and isinstance(row.get("system"), str):
            table.setdefault(row["dataset"], {})[row["system"]] = row
    return table


def metric_keys(systems: dict[str, dict]) -> list[str]:
    """The metric fields (``name@k`` but not ``pct_…``, or a known metric name) of the rows, first-seen order."""
    keys: list[str] = []
    for row in systems.values():
        for key, value in row.items():
            is_metric = ("@" in key and not key.startswith("pct_")) or key.lower() in METRIC_WORDS
            if is_metric and is_number(value) and key not in keys:
                keys.append(key)
    return keys


def ordered_systems(systems: dict[str, dict]) -> list[str]:
    return [s for s in SYSTEM_ORDER if s in systems] + sorted(s for s in systems if s not in SYSTEM_ORDER)


def percent_of_teacher(systems: dict[str, dict], system: str, key: str) -> float | None:
    value, teacher = systems.get(system, {}).get(key), systems.get("teacher", {}).get(key)
    if not is_number(value) or not is_number(teacher) or teacher == 0:
        return None
    return 100.0 * value / teacher


def speedup_table(results: dict | None) -> dict[str, dict]:
    """``{system: {"queries": ×, "passages": ×, ...}}``: the report's per-system ``speedups`` if there, else
    ``speed.speedup`` (the speed benchmark's own); ``{}`` when neither was measured."""
    results = results or {}
    speed = results.get("speed") if isinstance(results.get("speed"), dict) else {}
    for table in (results.get("speedups"), speed.get("speedup")):
        if isinstance(table, dict) and any(isinstance(v, dict) for v in table.values()):
            return {system: values for system, values in table.items() if isinstance(values, dict)}
    return {}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or os.sep in value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def describe(machine: Any) -> str:
    if not isinstance(machine, dict) or not machine:
        return NOT_RECORDED
    parts = []
    for key, value in machine.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}: {value}")
    return "; ".join(parts)
