"""The body sections of a model card, each rendered from the gathered sources (missing parts: "not measured")."""

from __future__ import annotations

from .common import (
    HIDDEN_SETTINGS,
    LOSS_WEIGHTS,
    NOT_MEASURED,
    NOT_RECORDED,
    SYSTEM_LABELS,
    describe,
    is_number,
    is_path,
    markdown_table,
    metric_keys,
    metric_name,
    number,
    ordered_systems,
    percent_of_teacher,
    rows_by_dataset,
    speedup_table,
)
from .sources import source_name, teacher_hub_id


def headline_results(results: dict | None) -> dict[str, dict[str, float | None]]:
    """Per dataset, the main metric's % of the teacher for ``student`` and ``asymmetric``."""
    out: dict[str, dict[str, float | None]] = {}
    for section, key in (("retrieval", "ndcg@10"), ("sts", "spearman")):
        for dataset, systems in rows_by_dataset((results or {}).get(section)).items():
            out[dataset] = {
                "metric": metric_name(key),
                "student": percent_of_teacher(systems, "student", key),
                "asymmetric": percent_of_teacher(systems, "asymmetric", key),
            }
    return out


def render_headline(sources: dict) -> str:
    parts = []
    for dataset, entry in headline_results(sources["results"]).items():
        text = f"{_pct(entry['student'])} of the teacher's {entry['metric']} on {dataset}"
        if entry["asymmetric"] is not None:
            text += f" ({_pct(entry['asymmetric'])} with teacher-encoded documents)"
        parts.append(text)
    speedup = _student_speedup(sources["results"])
    lines = ["**Quality:** " + ("; ".join(parts) + "." if parts else NOT_MEASURED + ".")]
    if speedup:
        lines.append(f"**Speed:** {speedup} (see [Speed](#speed) for the machine).")
    else:
        lines.append(f"**Speed:** {NOT_MEASURED}.")
    return "  \n".join(lines)


def _pct(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.1f}%"


def _student_speedup(results: dict | None) -> str | None:
    student = speedup_table(results).get("student") or {}
    parts = [f"{value:.1f}× the teacher on {kind}" for kind, value in student.items() if is_number(value)]
    return ", ".join(parts) or None


def table_origin(sources: dict) -> str:
    """What the entry table's rows are, from the vocabulary record (``bertapprox_hf.pipeline.contextual`` tables)."""
    table = (sources.get("vocabulary") or {}).get("table") or {}
    texts = f"{number(table['texts'])} training texts" if is_number(table.get("texts")) else "training texts"
    contextual = f"the mean of the teacher's states of its tokens in {texts}"
    if table.get("kind") == "contextual+isolated":
        return f"{contextual}, beside its embedding read alone"
    if table.get("kind") == "contextual":
        return contextual
    return "each entry's embedding read alone"


def render_details(sources: dict) -> str:
    config, parameters = sources["config"], sources["parameters"] or {}
    report = sources["report"] or {}
    trainable = parameters.get("trainable", report.get("trainable_parameters"))
    rows = [
        ["teacher", f"`{teacher_hub_id(config.get('teacher')) or config.get('teacher') or NOT_RECORDED}`"],
        [
            "embedding",
            f"{config.get('output_dim')} dimensions, {config.get('similarity')} similarity"
            + (", L2-normalized" if config.get("normalize") else ""),
        ],
        ["trainable parameters", number(trainable)],
        [
            "frozen entry table",
            f"{number(config.get('vocab_size'))} entries × {config.get('embedding_dim')} "
            f"({number(parameters.get('frozen'))} values, from the teacher: {table_origin(sources)})",
        ],
        [
            "φ (per entry)",
            f"{config.get('phi_layers')} residual MLP block(s), width {config.get('hidden_size')}, "
            f"inner {config.get('intermediate_size')}",
        ],
        [
            "pooling",
            f"attention, {config.get('num_heads')} heads with learned queries"
            + (" and a learned per-entry score" if config.get("entry_bias") else "")
            + (
                f"; {config['pooling_rounds']} rounds (queries of each further round from the previous pooled vector)"
                if (config.get("pooling_rounds") or 1) > 1
                else ""
            ),
        ],
        [
            "self-attention (between a text's entries)",
            f"{config['self_attention_layers']} pre-LN Transformer encoder layer(s) over the bag's φ vectors, no "
            f"positions, {config.get('self_attention_heads') or config.get('num_heads')} heads, width "
            f"{config.get('self_attention_width') or config.get('hidden_size')}, MLP inner "
            f"{config.get('self_attention_intermediate_size') or config.get('intermediate_size')}"
            if config.get("self_attention_layers")
            else "none",
        ],
        [
            "context blocks (per entry, per text)",
            f"{config.get('context_layers') or 0} residual MLP block(s) on each entry's φ plus its text's pooled "
            f"vector, inner {config.get('context_intermediate_size') or config.get('intermediate_size')}",
        ],
        [
            "pair features (per text)",
            f"consecutive entries (skip-grams aside) as pairs (A·φ_u) ⊙ (B·φ_v), rank {config['pair_rank']}, "
            "pooled and added before ρ"
            if config.get("pair_rank")
            else "none",
        ],
        ["ρ (per text)", f"{config.get('rho_layers')} residual MLP block(s) and a linear map"],
        ["entry adapter rank", str(config.get("entry_adapter_rank") or 0)],
        ["bag size", f"at most {config.get('max_bag_size')} entries a text"],
    ]
    return markdown_table(["", ""], rows)


def render_vocabulary(sources: dict) -> str:
    vocabulary, kinds = sources["vocabulary"] or {}, sources["vocab_kinds"] or {}
    stats, settings = vocabulary.get("stats") or {}, vocabulary.get("settings") or {}
    total = stats.get("entries", kinds.get("entries"))
    if stats:
        parts = [
            f"{number(stats.get(k))} {label}"
            for k, label in (
                ("pieces", "WordPiece tokens of the teacher"),
                ("words", "words"),
                ("ngrams", "n-grams"),
                ("skipgrams", "skip-grams"),
            )
            if k in stats
        ]
    else:
        parts = [
            f"{number(kinds.get(k, 0))} {label}"
            for k, label in (
                ("piece", "WordPiece continuation pieces"),
                ("word", "words and whole-word pieces"),
                ("ngram", "n-grams"),
                ("skipgram", "skip-grams"),
            )
        ]
    max_ngram = settings.get("max_ngram", kinds.get("max_ngram"))
    gap = settings.get("skipgram_max_gap", (vocabulary.get("tokenizer") or {}).get("skipgram_max_gap"))
    lines = [
        f"- **Size:** {number(total)} entries: {', '.join(parts) or NOT_RECORDED}.",
        f"- **Entries:** single words and n-grams of up to {max_ngram if max_ngram else NOT_RECORDED} words "
        f"(greedy longest match), skip-grams of two words with up to {gap if gap else NOT_RECORDED} words between, "
        "WordPiece fallback for words outside the vocabulary.",
    ]
    corpus = vocabulary.get("corpus") or {}
    if corpus:
        sources_text = ", ".join(source_name(s) for s in corpus.get("sources") or []) or NOT_RECORDED
        lines.append(
            f"- **Mined from:** {number(corpus.get('texts'))} texts ({number(corpus.get('words'))} words) of "
            f"{sources_text}"
            + (f", at most {number(corpus['max_per_source'])} a source" if corpus.get("max_per_source") else "")
            + "."
        )
    else:
        lines.append(f"- **Mined from:** {NOT_RECORDED}.")
    if settings:
        lines.append(
            f"- **Selection:** min count {settings.get('min_count')}, min normalized PMI {settings.get('min_npmi')}, "
            f"n-grams {'without' if settings.get('drop_stopword_edges') else 'with'} stopwords at their edges."
        )
    return "\n".join(lines)


def render_training(sources: dict) -> str:
    record, report, manifests = sources["record"] or {}, sources["report"] or {}, sources["manifests"]
    config = record.get("config") or {}
    optim, loss, data = config.get("optim") or {}, config.get("loss") or {}, config.get("data") or {}
    lines = []
    if manifests:
        texts = sum(int(m.get("num_records", 0)) for m in manifests)
        names = []
        for manifest in manifests:
            names += [source_name(s) for s in (manifest.get("corpus") or {}).get("sources") or []]
        caps = {(m.get("corpus") or {}).get("max_per_source") for m in manifests} - {None}
        lines.append(
            f"- **Data:** {texts:,} unlabeled texts embedded by the teacher (targets), from "
            f"{', '.join(dict.fromkeys(names)) or NOT_RECORDED}"
            + (f", at most {', '.join(f'{c:,}' for c in sorted(caps))} a source" if caps else "")
            + "."
        )
    else:
        lines.append(f"- **Data:** {NOT_RECORDED}.")
    if data:
        lines.append(
            f"- **Validation:** {data.get('val_fraction')} of the texts held out (at most {data.get('max_val')})."
        )
    if optim:
        lines.append(
            f"- **Settings:** {optim.get('epochs')} epochs, batch {optim.get('batch_size')}, AdamW lr "
            f"{optim.get('lr')} (cosine schedule, {optim.get('warmup_ratio')} warm-up), weight decay "
            f"{optim.get('weight_decay')}; loss: "
            + ", ".join(f"{k} × {loss[k]}" for k in LOSS_WEIGHTS if is_number(loss.get(k)) and loss[k])
            + "."
        )
    else:
        lines.append(f"- **Settings:** {NOT_RECORDED}.")
    if report:
        lines.append(
            f"- **Run:** {number(report.get('steps'))} steps in {number(report.get('train_seconds'), 0)} s, "
            f"best at step {number(report.get('best_step'))}; {report.get('processes', 1)} process(es), mixed "
            f"precision {report.get('mixed_precision', NOT_RECORDED)}."
        )
    metrics = next((m for m in (report.get("best"), record.get("metrics")) if isinstance(m, dict) and m), {})
    if metrics:
        rows = []
        for part in ("all", "query", "sentence", "passage"):
            if f"cosine_{part}" in metrics:
                rows.append(
                    [
                        part,
                        number(metrics.get(f"count_{part}")),
                        number(metrics.get(f"cosine_{part}")),
                        number(metrics.get(f"spearman_{part}")),
                    ]
                )
        lines += [
            "",
            "Fidelity to the teacher on held-out texts (cosine of the two embeddings of a text; Spearman "
            "of pairwise similarities):",
            "",
            markdown_table(["texts", "count", "cosine", "Spearman"], rows),
        ]
    return "\n".join(lines)


def render_evaluation(results: dict | None) -> str:
    if not results:
        return f"Retrieval and STS: {NOT_MEASURED}."
    parts = []
    retrieval = rows_by_dataset(results.get("retrieval"))
    if retrieval:
        parts.append(_results_table(retrieval, "ndcg@10"))
    else:
        parts.append(f"Retrieval: {NOT_MEASURED}.")
    sts = rows_by_dataset(results.get("sts"))
    if sts:
        parts.append(_results_table(sts, "spearman"))
    else:
        parts.append(f"STS: {NOT_MEASURED}.")
    settings = results.get("settings")
    if isinstance(settings, dict):
        shown = {k: v for k, v in settings.items() if k not in HIDDEN_SETTINGS and not is_path(v)}
        if shown:
            parts.append("Settings: " + describe(shown) + ".")
    if results.get("run"):
        parts.append(f"Benchmark run: `{results['run']}`.")
    return "\n\n".join(parts)


def _results_table(table: dict[str, dict[str, dict]], main: str) -> str:
    keys = []
    for systems in table.values():
        keys += [k for k in metric_keys(systems) if k not in keys]
    header = ["dataset", "system"] + [metric_name(k) for k in keys] + [f"% of teacher ({metric_name(main)})"]
    rows = []
    for dataset, systems in table.items():
        for system in ordered_systems(systems):
            row = systems[system]
            cells = [number(row.get(k)) if k in row else "—" for k in keys]
            rows.append(
                [dataset, SYSTEM_LABELS.get(system, system)] + cells + [_pct(percent_of_teacher(systems, system, main))]
            )
    return markdown_table(header, rows)


def render_speed(results: dict | None) -> str:
    speed = (results or {}).get("speed")
    speed = speed if isinstance(speed, dict) else {}
    table = speedup_table(results)
    kinds: list[str] = []
    for values in table.values():
        kinds += [k for k, v in values.items() if is_number(v) and k not in kinds]
    if not kinds:
        error = f" (the speed benchmark failed: {speed['error']})" if speed.get("error") else ""
        return f"Throughput against the teacher: {NOT_MEASURED}{error}."
    rows = [
        [SYSTEM_LABELS.get(system, system)]
        + [f"{values[k]:.1f}×" if is_number(values.get(k)) else NOT_MEASURED for k in kinds]
        for system, values in table.items()
    ]
    header = ["system"] + kinds
    if any(isinstance(values.get("basis"), str) for values in table.values()):
        header.append("measured by")
        for row, values in zip(rows, table.values(), strict=True):
            row.append(str(values.get("basis", "")))
    basis = speed.get("speedup_basis")
    conditions = ""
    if isinstance(basis, dict) and basis:
        conditions = " (" + ", ".join(f"{key} {value}" for key, value in basis.items()) + ")"
    machine = speed.get("machine") or (results or {}).get("machine")
    return (
        "Texts per second as a multiple of the teacher's (its sentence-transformers `encode`), measured side by side"
        + conditions
        + ":\n\n"
        + markdown_table(header, rows)
        + f"\n\nMachine: {describe(machine)}."
    )


def extra_limitations(sources: dict) -> str:
    """Caveats that follow from the records: evaluation corpora seen in training, training-data terms."""
    lines = []
    seen = set()
    for manifest in sources["manifests"]:
        seen |= {source_name(s) for s in (manifest.get("corpus") or {}).get("sources") or []}
    evaluated = set(rows_by_dataset((sources["results"] or {}).get("retrieval")))
    overlap = sorted(d for d in evaluated if any(d in name for name in seen))
    if overlap:
        lines.append(
            f"- The document collections (not the queries) of {', '.join(overlap)} were among the unlabeled "
            "training texts; results there are in-domain."
        )
    if any("msmarco" in name or "reuters" in name for name in seen):
        lines.append(
            "- Training texts include MS MARCO and Reuters-21578, released for non-commercial research: check "
            "their terms before commercial use."
        )
    return "\n".join(lines)
