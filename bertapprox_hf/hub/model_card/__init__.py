"""Hugging Face model cards for students: YAML metadata (with ``model-index``) and a README from records.

Sources, each optional except the model folder; whatever is missing reads "not measured" or "not recorded":

* the model folder: ``config.json``, ``model.safetensors`` (parameter counts), ``vocab.txt``, ``training.json``;
* the training report (``report.json`` in the run folder, the model folder's parent by default);
* the vocabulary record (``vocabulary.json``; by default the folder named in ``training.json``);
* the teacher-targets manifests named in ``training.json`` (training texts);
* a benchmark ``results.json`` (``benchmarks/report.py``): ``retrieval`` and ``sts`` rows per dataset and
  system, speed-ups over the teacher (``speedups`` per system, else ``speed.speedup``), ``machine``.

The body comes from ``hub_cards/model_card.md`` (a :class:`string.Template`); the metadata from
``huggingface_hub.ModelCardData``.
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

from hub_cards import MODEL_CARD

from .common import NOT_MEASURED, NOT_RECORDED
from .metadata import card_metadata
from .sections import (
    extra_limitations,
    render_details,
    render_evaluation,
    render_headline,
    render_speed,
    render_training,
    render_vocabulary,
)
from .sources import gather_sources, load_json_source, teacher_hub_id

TEMPLATE = MODEL_CARD


def render_model_card(
    model_dir: str | os.PathLike,
    repo_id: str | None = None,
    results: str | os.PathLike | dict | None = None,
    training_report: str | os.PathLike | dict | None = None,
    vocab_dir: str | os.PathLike | None = None,
    base_model: str | None = None,
    license: str | None = None,
    template: str | os.PathLike | None = None,
) -> str:
    """The README.md text (YAML metadata + body) of a student's model card."""
    sources = gather_sources(model_dir, results, training_report, vocab_dir)
    template_path = Path(template) if template is not None else TEMPLATE
    if not template_path.is_file():
        raise FileNotFoundError(f"model card template not found: {template_path} (pass template=)")
    config = sources["config"]
    title = (repo_id or os.path.basename(os.path.abspath(os.fspath(model_dir)))).split("/")[-1]
    teacher = teacher_hub_id(config.get("teacher"))
    base_model = base_model or teacher
    metadata = card_metadata(sources, title, base_model, license)
    teacher_label = teacher or config.get("teacher") or NOT_RECORDED
    body = Template(template_path.read_text(encoding="utf-8")).substitute(
        metadata=metadata.to_yaml(),
        title=title,
        teacher=teacher_label,
        teacher_url=f"https://huggingface.co/{teacher}" if teacher else "#model-details",
        dim=config.get("output_dim"),
        max_bag=config.get("max_bag_size"),
        repo_id=repo_id or "path/to/this/folder",
        headline=render_headline(sources),
        details=render_details(sources),
        vocabulary=render_vocabulary(sources),
        training=render_training(sources),
        evaluation=render_evaluation(sources["results"]),
        speed=render_speed(sources["results"]),
        extra_limitations=extra_limitations(sources),
    )
    return body.rstrip("\n") + "\n"


def write_model_card(out_path: str | os.PathLike, model_dir: str | os.PathLike, **options) -> str:
    """Render the card, check that its metadata parses (``huggingface_hub.ModelCard``), write it; returns the text."""
    from huggingface_hub import ModelCard

    text = render_model_card(model_dir, **options)
    ModelCard(text)  # raises on metadata that does not parse
    with open(out_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return text


__all__ = [
    "NOT_MEASURED",
    "NOT_RECORDED",
    "TEMPLATE",
    "gather_sources",
    "load_json_source",
    "render_model_card",
    "teacher_hub_id",
    "write_model_card",
]
