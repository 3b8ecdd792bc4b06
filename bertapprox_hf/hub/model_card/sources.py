"""Reading what a model card is written from: the model folder, training and vocabulary records, results."""

from __future__ import annotations

import os
from typing import Any

from ...model.tokenization_bertapprox import entry_kind
from ...pipeline.jsonio import read_json

KNOWN_TEACHERS = {
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "all-minilm-l12-v2": "sentence-transformers/all-MiniLM-L12-v2",
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
    "msmarco-distilbert-dot-v5": "sentence-transformers/msmarco-distilbert-dot-v5",
    "multi-qa-minilm-l6-cos-v1": "sentence-transformers/multi-qa-MiniLM-L6-cos-v1",
}


def load_json_source(source: str | os.PathLike | dict | None, what: str) -> dict | None:
    """A JSON object from a path (clear errors) or as given; ``None`` stays ``None``."""
    if source is None or isinstance(source, dict):
        return source
    data = read_json(os.fspath(source), what)
    if not isinstance(data, dict):
        raise ValueError(f"{os.fspath(source)} must hold a JSON object, not {type(data).__name__}")
    return data


def gather_sources(
    model_dir: str | os.PathLike,
    results: str | os.PathLike | dict | None = None,
    training_report: str | os.PathLike | dict | None = None,
    vocab_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every record the card is written from, read once (missing optional records are ``None``)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    config = read_json(os.path.join(model_dir, "config.json"), "model config")
    record_path = os.path.join(model_dir, "training.json")
    record = read_json(record_path, "training record") if os.path.isfile(record_path) else None
    data_config = ((record or {}).get("config") or {}).get("data") or {}
    if training_report is None:
        default = os.path.join(os.path.dirname(os.path.abspath(model_dir)), "report.json")
        training_report = default if os.path.isfile(default) else None
    if vocab_dir is None and data_config.get("vocab") and os.path.isdir(data_config["vocab"]):
        vocab_dir = data_config["vocab"]
    vocabulary = None
    if vocab_dir is not None:
        vocabulary = read_json(os.path.join(os.fspath(vocab_dir), "vocabulary.json"), "vocabulary record")
        vocabulary.pop("entries", None)
    targets = data_config.get("targets") or []
    manifests = []
    for folder in [targets] if isinstance(targets, str) else targets:
        path = os.path.join(folder, "manifest.json")
        if os.path.isfile(path):
            manifests.append(read_json(path, "targets manifest"))
    return {
        "model_dir": model_dir,
        "config": config,
        "record": record,
        "report": load_json_source(training_report, "training report"),
        "vocabulary": vocabulary,
        "manifests": manifests,
        "results": load_json_source(results, "benchmark results"),
        "parameters": count_parameters(model_dir),
        "vocab_kinds": vocab_file_kinds(model_dir),
    }


def count_parameters(model_dir: str) -> dict[str, int] | None:
    """Trainable and frozen (entry table) parameter counts from the weights file, without loading it."""
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(path):
        return None
    from safetensors import safe_open

    trainable = frozen = 0
    with safe_open(path, framework="np") as handle:
        for key in handle.keys():
            count = 1
            for size in handle.get_slice(key).get_shape():
                count *= size
            if key == "entry_table.weight":
                frozen += count
            else:
                trainable += count
    return {"trainable": trainable, "frozen": frozen}


def vocab_file_kinds(model_dir: str) -> dict[str, int] | None:
    """Entries of ``vocab.txt`` by kind, and the longest n-gram (in words)."""
    path = os.path.join(model_dir, "vocab.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        entries = handle.read().split("\n")
    if entries and entries[-1] == "":
        entries.pop()
    counts: dict[str, int] = {"entries": len(entries), "max_ngram": 1}
    for entry in entries:
        kind = entry_kind(entry, {"[PAD]", "[UNK]"})
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "ngram":
            counts["max_ngram"] = max(counts["max_ngram"], len(entry.split(" ")))
    return counts


def source_name(path: str) -> str:
    """A readable name for a corpus file: ``msmarco_queries``, ``scifact corpus``."""
    parts = str(path).replace("\\", "/").rstrip("/").split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    if stem in ("corpus", "queries") and len(parts) > 1:
        return f"{parts[-2]} {stem}"
    return stem


def teacher_hub_id(teacher: str | None) -> str | None:
    """The Hub id of a teacher given as a Hub id or as a local folder of a known model."""
    if not teacher:
        return None
    name = str(teacher).replace("\\", "/").rstrip("/")
    parts = name.split("/")
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--") :].replace("--", "/")  # a Hub cache snapshot
    if not os.path.isabs(name) and not name.startswith(".") and len(parts) == 2 and not os.path.exists(name):
        return name
    return KNOWN_TEACHERS.get(parts[-1].lower())
