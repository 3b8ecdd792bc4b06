"""Failure analysis: where and why the student's rankings and embeddings part from the teacher's.

    python -m benchmarks.failures --model STUDENT --teacher TEACHER --dataset dl19 scifact --out experiments/failures

For each dataset (a shared name such as ``dl19`` or ``scifact``, or a BEIR folder):

* per judged query: the nDCG@10 of the teacher, the student alone (student-only search) and the asymmetric
  system (teacher documents, student queries), the overlap of each student top 10 with the teacher's, the
  query's fidelity (student–teacher cosine), its length and its out-of-vocabulary rate (share of its words that
  no vocabulary entry covers: WordPiece fallback or unknown);
* the worst queries (largest drop of asymmetric nDCG@10 below the teacher's) with their bags: each entry, its
  role (vocabulary entry, skip-gram, fallback piece, unknown) and the attention pooling's weight on it (mean
  over heads), next to the teacher's and the student's first document;
* fidelity of every query and document, and ranking agreement of the queries, grouped by text length, by
  out-of-vocabulary rate and by source (dataset × queries/documents).

Writes ``failures.json``, ``failures.md`` and PNG plots into ``--out``. Teacher document embeddings come from
the benchmarks' cache (shared with ``benchmarks.beir`` and ``benchmarks.msmarco``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from . import failure_stats as stats
from .datasets import RetrievalData, load_beir_folder, relevance_threshold_of, resolve_beir, slice_data
from .provenance import provenance
from .reporting import markdown_table, number, write_results
from .retrieval import corpus_identity
from .systems import Systems

PROG = "python -m benchmarks.failures"
STUDENT_SYSTEMS = ("student", "asymmetric")
SNIPPET_CHARS = 160


# --- analysis ---------------------------------------------------------------------------------------
def load_dataset(name: str, args: argparse.Namespace, download_dir: Path) -> RetrievalData:
    """A dataset by shared name or BEIR folder, sliced as the options say."""
    folder = resolve_beir(name, args.data_dir, download_dir)
    label = folder.name if Path(name).expanduser().exists() else name
    data = load_beir_folder(folder, args.split, label, relevance_threshold_of(name))
    return slice_data(data, args.max_docs, args.max_queries)


def encode_all(data: RetrievalData, systems: Systems) -> dict[str, np.ndarray]:
    """Teacher and student embeddings of the dataset's documents and queries."""
    doc_texts, query_texts = list(data.corpus.values()), list(data.queries.values())
    return {
        "teacher_docs": systems.encode("teacher", doc_texts, corpus_identity(data), desc=f"{data.name} documents"),
        "student_docs": systems.encode("student", doc_texts, desc=f"{data.name} documents"),
        "teacher_queries": systems.encode("teacher", query_texts),
        "student_queries": systems.encode("student", query_texts),
    }


def bag_details(model, text: str) -> list[dict]:
    """The bag of ``text`` with each entry's role and pooling weight (mean over heads), in bag order."""
    import torch

    tokenizer = model.get_tokenizer()
    labelled = stats.labelled_bag(tokenizer.bag_encoder, text, model.config.max_bag_size)
    if not labelled:
        return []
    ids = torch.tensor([[entry for entry, _ in labelled]], dtype=torch.long)
    weights = model.pooling_weights(ids)[0].float().mean(-1).tolist()
    entries = tokenizer.bag_encoder.entries
    return [
        {"entry": entries[entry], "role": role, "weight": round(weight, 4)}
        for (entry, role), weight in zip(labelled, weights, strict=True)
    ]


def analyse(data: RetrievalData, systems: Systems, model, worst: int, k: int = 100) -> dict:
    """Everything the report shows about one dataset."""
    vectors = encode_all(data, systems)
    doc_ids, query_ids = list(data.corpus), list(data.queries)
    similarity = systems.teacher_similarity
    runs = {
        "teacher": stats.rank(vectors["teacher_queries"], vectors["teacher_docs"], doc_ids, query_ids, similarity, k),
        "student": stats.rank(vectors["student_queries"], vectors["student_docs"], doc_ids, query_ids, similarity, k),
        "asymmetric": stats.rank(
            vectors["student_queries"], vectors["teacher_docs"], doc_ids, query_ids, similarity, k
        ),
    }
    encoder = model.get_tokenizer().bag_encoder
    query_fidelity = stats.cosines(vectors["student_queries"], vectors["teacher_queries"])
    doc_fidelity = stats.cosines(vectors["student_docs"], vectors["teacher_docs"])
    query_bags = {qid: stats.bag_stats(encoder, data.queries[qid]) for qid in query_ids}
    rows = stats.per_query_rows(
        data.qrels, runs, data.queries, dict(zip(query_ids, query_fidelity.tolist(), strict=True)), query_bags
    )
    texts = [
        text_row(f"{data.name} queries", query_bags[qid], float(f))
        for qid, f in zip(query_ids, query_fidelity, strict=True)
    ]
    doc_texts = list(data.corpus.values())
    texts += [
        text_row(f"{data.name} documents", stats.bag_stats(encoder, text), float(f))
        for text, f in zip(doc_texts, doc_fidelity, strict=True)
    ]
    bags = {qid: bag_details(model, data.queries[qid]) for qid in query_ids}
    for row in rows:
        weights = [(entry["role"], entry["weight"]) for entry in bags[row["query_id"]]]
        row["fallback_weight"] = sum(weight for role, weight in weights if role in ("fallback", "unknown"))
        row["length_bucket"] = stats.bin_label(row["words"], stats.LENGTH_BINS)
        row["oov_bucket"] = stats.bin_label(row["oov_rate"], stats.OOV_BINS, percent=True)
    ranked = sorted(rows, key=lambda r: (-r["delta_asymmetric"], -r["delta_student"], r["query_id"]))
    worst_rows = []
    for row in ranked[:worst]:
        qid = row["query_id"]
        tops = {name: stats.top_ids(run, qid, 1) for name, run in runs.items()}
        firsts = {
            name: {"id": top[0], "grade": data.qrels[qid].get(top[0], 0), "text": data.corpus[top[0]][:SNIPPET_CHARS]}
            for name, top in tops.items()
            if top
        }
        worst_rows.append({**row, "bag": bags[qid], "first_document": firsts})
    means = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key.startswith(("ndcg_", "overlap_"))}
    agreement_values = [f"ndcg_{n}" for n in runs] + [f"overlap_{n}" for n in STUDENT_SYSTEMS]
    agreement_values += ["fidelity", "fallback_weight"]
    return {
        "dataset": data.describe(),
        "means": means,
        "queries": rows,
        "worst": worst_rows,
        "fidelity_by_source": stats.grouped(texts, "source", ["fidelity", "oov_rate", "words"]),
        "fidelity_by_length": stats.grouped(texts, "length_bucket", ["fidelity"], stats.bin_order(stats.LENGTH_BINS)),
        "fidelity_by_oov": stats.grouped(
            texts, "oov_bucket", ["fidelity"], stats.bin_order(stats.OOV_BINS, percent=True)
        ),
        "ranking_by_length": stats.grouped(rows, "length_bucket", agreement_values, stats.bin_order(stats.LENGTH_BINS)),
        "ranking_by_oov": stats.grouped(
            rows, "oov_bucket", agreement_values, stats.bin_order(stats.OOV_BINS, percent=True)
        ),
        "texts": texts,
    }


def text_row(source: str, bag: stats.BagStats, fidelity: float) -> dict:
    """One text's row of the fidelity groups."""
    return {
        "source": source,
        "fidelity": fidelity,
        "words": bag.words,
        "oov_rate": bag.oov_rate,
        "length_bucket": stats.bin_label(bag.words, stats.LENGTH_BINS),
        "oov_bucket": stats.bin_label(bag.oov_rate, stats.OOV_BINS, percent=True),
    }


def fidelity_groups(texts: list[dict]) -> dict[str, list[dict]]:
    """Fidelity of all datasets' texts together, by source, length and out-of-vocabulary rate."""
    return {
        "by_source": stats.grouped(texts, "source", ["fidelity", "oov_rate", "words"]),
        "by_length": stats.grouped(texts, "length_bucket", ["fidelity"], stats.bin_order(stats.LENGTH_BINS)),
        "by_oov": stats.grouped(texts, "oov_bucket", ["fidelity"], stats.bin_order(stats.OOV_BINS, percent=True)),
    }


# --- report ---------------------------------------------------------------------------------------
def group_table(groups: list[dict], key: str, values: list[str]) -> str:
    rows = [[g[key], str(g["count"]), *(number(g[v], 3) for v in values)] for g in groups]
    return markdown_table([key, "texts", *values], rows)


def bag_line(bag: list[dict], limit: int = 40) -> str:
    """A bag as one line: ``entry (weight)``, fallback pieces in italics, unknowns in bold."""
    marks = {"fallback": "_", "unknown": "**", "skipgram": "", "entry": ""}
    parts = [f"{marks[e['role']]}{e['entry']}{marks[e['role']]} ({e['weight']:.2f})" for e in bag[:limit]]
    more = f" … (+{len(bag) - limit})" if len(bag) > limit else ""
    return ", ".join(parts).replace("|", "\\|") + more


def dataset_markdown(result: dict, plots: dict[str, str]) -> str:
    name = result["dataset"]["name"]
    means = result["means"]
    lines = [f"## {name}", ""]
    header = ["system", "mean nDCG@10", "mean top-10 overlap with the teacher"]
    table = [["teacher", number(means["ndcg_teacher"]), "1"]]
    table += [[n, number(means[f"ndcg_{n}"]), number(means[f"overlap_{n}"], 3)] for n in STUDENT_SYSTEMS]
    lines += [markdown_table(header, table)]
    for title, key in (("length (words)", "ranking_by_length"), ("out-of-vocabulary rate", "ranking_by_oov")):
        values = [
            "ndcg_teacher",
            "ndcg_asymmetric",
            "ndcg_student",
            "overlap_asymmetric",
            "fidelity",
            "fallback_weight",
        ]
        lines += [f"Queries by {title}:", "", group_table(result[key], key.split("_by_")[1] + "_bucket", values)]
    for plot in plots.values():
        lines += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    lines += ["`fallback_weight`: the pooling weight on fallback pieces and unknowns (mean over heads).", ""]
    lines += [f"### The {len(result['worst'])} queries the asymmetric system loses most on", ""]
    lines += ["Bag entries in text order with their pooling weight; _fallback pieces_, **unknown**.", ""]
    for row in result["worst"]:
        lines.append(
            f"- **{row['text']}** (`{row['query_id']}`): nDCG@10 teacher {row['ndcg_teacher']:.3f}, asymmetric "
            f"{row['ndcg_asymmetric']:.3f}, student {row['ndcg_student']:.3f}; top-10 overlap "
            f"{row['overlap_asymmetric']:.1f} / {row['overlap_student']:.1f}; fidelity {row['fidelity']:.3f}; "
            f"OOV {100 * row['oov_rate']:.0f}%, pooling weight on fallback pieces {row['fallback_weight']:.2f}"
        )
        lines.append(f"  - bag: {bag_line(row['bag'])}")
        for system in ("teacher", "asymmetric"):
            first = row["first_document"].get(system)
            if first:
                snippet = first["text"].replace("\n", " ").replace("|", "\\|")
                lines.append(f"  - {system}'s first (grade {first['grade']}): {snippet}…")
    return "\n".join(lines) + "\n"


def write_plots(results: list[dict], fidelity: dict, out: Path) -> dict[str, dict[str, str]]:
    """PNG figures: per dataset, teacher vs student nDCG@10 per query and the overlap histogram; overall,
    fidelity by length and by out-of-vocabulary rate per source. ``{dataset or "all": {name: path}}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    written: dict[str, dict[str, str]] = {}
    for result in results:
        name, rows = result["dataset"]["name"], result["queries"]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        for system, marker in (("asymmetric", "o"), ("student", "x")):
            axes[0].scatter([r["ndcg_teacher"] for r in rows], [r[f"ndcg_{system}"] for r in rows], marker=marker,
                            alpha=0.6, label=system)  # fmt: skip
        axes[0].plot([0, 1], [0, 1], color="grey", lw=0.8)
        axes[0].set(xlabel="teacher nDCG@10", ylabel="student nDCG@10", title=f"{name}: per query")
        axes[0].legend()
        bins = np.linspace(0, 1, 11)
        for system in STUDENT_SYSTEMS:
            axes[1].hist([r[f"overlap_{system}"] for r in rows], bins=bins, alpha=0.5, label=system)
        axes[1].set(xlabel="top-10 overlap with the teacher", ylabel="queries", title=f"{name}: ranking agreement")
        axes[1].legend()
        axes[2].scatter([r["fidelity"] for r in rows], [r["delta_asymmetric"] for r in rows], alpha=0.6)
        axes[2].axhline(0, color="grey", lw=0.8)
        axes[2].set(xlabel="query fidelity (cosine to the teacher)", ylabel="teacher − asymmetric nDCG@10",
                    title=f"{name}: fidelity vs loss")  # fmt: skip
        fig.tight_layout()
        path = out / f"{safe_name(name)}_queries.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[name] = {"queries": str(path)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    sources = sorted({t["source"] for t in fidelity["texts"]})
    for axis, key, bins, percent, label in (
        (axes[0], "length_bucket", stats.LENGTH_BINS, False, "words"),
        (axes[1], "oov_bucket", stats.OOV_BINS, True, "out-of-vocabulary rate"),
    ):
        order = stats.bin_order(bins, percent)
        width = 0.8 / max(len(sources), 1)
        for i, source in enumerate(sources):
            groups = {g[key]: g for g in stats.grouped([t for t in fidelity["texts"] if t["source"] == source], key,
                                                       ["fidelity"], order)}  # fmt: skip
            xs = [j + i * width for j, b in enumerate(order) if b in groups]
            axis.bar(xs, [groups[b]["fidelity"] for b in order if b in groups], width=width, label=source)
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(order))], order, rotation=30)
        axis.set(xlabel=label, ylabel="mean cosine to the teacher", ylim=(0, 1), title=f"fidelity by {label}")
        axis.legend(fontsize=8)
    fig.tight_layout()
    path = out / "fidelity_groups.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written["all"] = {"fidelity": str(path)}
    return written


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_report(report: dict, plots: dict, out: Path) -> Path:
    lines = ["# Failure analysis", "", f"Student `{report['settings']['model']}`, teacher "
             f"`{report['settings']['teacher']}`. Command: `{report['command']}`", ""]  # fmt: skip
    fidelity = report["fidelity"]
    lines += ["## Fidelity (student–teacher cosine) of every query and document", ""]
    lines += [group_table(fidelity["by_source"], "source", ["fidelity", "oov_rate", "words"])]
    lines += ["By length (words):", "", group_table(fidelity["by_length"], "length_bucket", ["fidelity"])]
    lines += ["By out-of-vocabulary rate:", "", group_table(fidelity["by_oov"], "oov_bucket", ["fidelity"])]
    if "fidelity" in plots.get("all", {}):
        lines += ["![fidelity by length and OOV rate](fidelity_groups.png)", ""]
    for result in report["datasets"]:
        lines.append(dataset_markdown(result, plots.get(result["dataset"]["name"], {})))
    path = out / "failures.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --- command line ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="saved student folder")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the one the student records)")
    parser.add_argument(
        "--dataset", nargs="+", required=True, help="shared dataset names (dl19, scifact) or BEIR folders"
    )
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: $BERTAPPROX_SHARED/data)")
    parser.add_argument("--max-docs", type=int, default=None, help="evaluate on a slice of this many documents")
    parser.add_argument("--max-queries", type=int, default=None, help="at most this many queries")
    parser.add_argument("--worst", type=int, default=10, help="worst queries shown with their bags (default 10)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", default=None, help="benchmarks' cache folder")
    parser.add_argument("--out", default="results/failures", help="output folder")
    parser.add_argument("--keep-texts", action="store_true", help="keep every text's fidelity row in the JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Analyse each dataset, write ``failures.json``, ``failures.md`` and the plots; return the report."""
    from bertapprox_hf import BertApproxModel

    args = build_parser().parse_args(argv)
    if args.worst < 0:
        raise SystemExit(f"{PROG}: error: --worst must not be negative")
    systems = Systems(
        ["teacher", "student", "asymmetric"],
        model=args.model,
        teacher=args.teacher,
        cache=args.cache_dir,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    model = BertApproxModel.from_pretrained(args.model).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.dataset:
        data = load_dataset(name, args, systems.cache / "beir-datasets")
        if not data.queries:
            raise ValueError(f"{data.name}: no judged query is left to analyse")
        results.append(analyse(data, systems, model, args.worst))
    texts = [text for result in results for text in result.pop("texts")]
    fidelity = {**fidelity_groups(texts), "texts": texts}
    plots = write_plots(results, fidelity, out)
    if not args.keep_texts:
        fidelity.pop("texts")
    report = {
        "benchmark": "failures",
        "settings": {
            **systems.describe(),
            "worst": args.worst,
            "length_bins": stats.LENGTH_BINS,
            "oov_bins": stats.OOV_BINS,
        },  # fmt: skip
        "fidelity": fidelity,
        "datasets": results,
        "plots": {key: {k: os.path.basename(v) for k, v in value.items()} for key, value in plots.items()},
        **provenance(PROG, argv),
    }
    write_results(out, "failures", report)
    path = write_report(report, plots, out)
    print(f"wrote {path} and {out / 'failures.json'}")
    return report


if __name__ == "__main__":
    main()
