"""The card's YAML metadata: ``huggingface_hub.ModelCardData`` with ``model-index`` results."""

from __future__ import annotations

from .common import metric_keys, metric_name, metric_type, rows_by_dataset
from .sources import source_name

EVAL_DATASETS = {
    "scifact": ("BeIR/scifact", "BEIR SciFact"),
    "msmarco-passage-dl19": ("microsoft/ms_marco", "TREC DL 2019 passage (judged pool)"),
    "dl19": ("microsoft/ms_marco", "TREC DL 2019 passage (judged pool)"),
    "msmarco-dev": ("microsoft/ms_marco", "MS MARCO passage dev (small)"),
    "stsb": ("sentence-transformers/stsb", "STS Benchmark"),
}
TRAIN_DATASETS = {
    "msmarco": "microsoft/ms_marco",
    "reuters21578": "ucirvine/reuters21578",
    "scifact": "BeIR/scifact",
}
# Teachers fetched as local folders, by folder name.


def card_metadata(sources: dict, title: str, base_model: str | None, license: str | None):
    """``huggingface_hub.ModelCardData`` with ``model-index`` results of this model (the ``student`` rows)."""
    from huggingface_hub import EvalResult, ModelCardData

    results = sources["results"] or {}
    evals = []
    for section, task_type, task_name in (
        ("retrieval", "retrieval", "Retrieval"),
        ("sts", "sentence-similarity", "Semantic Textual Similarity"),
    ):
        settings = results.get("settings") if isinstance(results.get("settings"), dict) else {}
        split = settings.get("split") or "test"
        for dataset, systems in rows_by_dataset(results.get(section)).items():
            row = systems.get("student")
            if row is None:
                continue
            hub_id, pretty = _eval_dataset(dataset)
            for key in metric_keys({"student": row}):
                evals.append(
                    EvalResult(
                        task_type=task_type,
                        task_name=task_name,
                        dataset_type=hub_id,
                        dataset_name=pretty,
                        dataset_split=split,
                        metric_type=metric_type(key),
                        metric_name=metric_name(key),
                        metric_value=row[key],
                    )
                )
    datasets = []
    for manifest in sources["manifests"]:
        for path in (manifest.get("corpus") or {}).get("sources") or []:
            name = source_name(path)
            hub_id = next((v for k, v in TRAIN_DATASETS.items() if name.startswith(k)), None)
            if hub_id and hub_id not in datasets:
                datasets.append(hub_id)
    return ModelCardData(
        model_name=title,
        base_model=base_model,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=[
            "sentence-transformers",
            "sentence-similarity",
            "feature-extraction",
            "bertapprox",
            "distillation",
            "deepsets",
            "dense-retrieval",
            "custom_code",
        ],
        language="en",
        license=license,
        datasets=datasets or None,
        eval_results=evals or None,
    )


def _eval_dataset(name: str) -> tuple[str, str]:
    for prefix, (hub_id, pretty) in EVAL_DATASETS.items():
        if name.lower().startswith(prefix):
            return hub_id, pretty
    return name, name
