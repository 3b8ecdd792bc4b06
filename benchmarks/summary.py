"""The report's tables: speed-ups over the teacher per system, and ``results.md``.

Speed-ups come from ``benchmarks.speed`` (texts/s over the teacher's). BM25 is not in it: its query
speed-up is the teacher's query time (encoding + exact search) over BM25's search time in the retrieval
runs. Without the speed benchmark, every system's query speed-up comes from the retrieval runs that way.
"""

from __future__ import annotations

import statistics

from .fidelity import fidelity_table
from .reporting import markdown_table, number, percent

DATASET_LABELS = {"scifact": "SciFact", "dl19": "DL19", "stsb": "STS-B"}


# --- speed-ups ------------------------------------------------------------------------------------
def retrieval_speedups(rows: list[dict]) -> dict[str, dict[str, float]]:
    """``{dataset: {system: teacher query time / system query time}}`` from the retrieval runs."""
    table: dict[str, dict[str, float]] = {}
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        teacher = next((r for r in rows if r["dataset"] == dataset and r["system"] == "teacher"), None)
        if teacher is None:
            continue
        table[dataset] = {
            r["system"]: teacher["query_seconds"] / r["query_seconds"]
            for r in rows
            if r["dataset"] == dataset and r.get("query_seconds")
        }
    return table


def system_speedups(speed: dict, rows: list[dict], names: list[str]) -> dict[str, dict]:
    """Per system: ``{"queries", "passages", "basis"}`` speed-ups over the teacher (None where not measured)."""
    measured = speed.get("speedup") if isinstance(speed.get("speedup"), dict) else {}
    from_runs = retrieval_speedups(rows)
    bm25 = [table["bm25"] for table in from_runs.values() if table.get("bm25")]
    out: dict[str, dict] = {}
    for name in names:
        if name == "teacher":
            out[name] = {"queries": 1.0, "passages": 1.0, "basis": "baseline"}
        elif name in ("student", "model2vec") and name in measured:
            out[name] = {**_pair(measured[name]), "basis": "benchmarks.speed"}
        elif name == "asymmetric" and "student" in measured:
            q = _pair(measured["student"])["queries"]
            out[name] = {"queries": q, "passages": 1.0, "basis": "benchmarks.speed (student queries, teacher passages)"}
        elif name == "bm25" and bm25:
            out[name] = {
                "queries": float(statistics.median(bm25)),
                "passages": None,
                "basis": "retrieval runs: BM25 top-10 search vs the teacher's query encoding + exact top-10 search "
                "(median over datasets)",
            }
        else:
            out[name] = {"queries": None, "passages": None, "basis": "not measured"}
    return out


def _pair(value: dict) -> dict[str, float | None]:
    return {key: (float(value[key]) if value.get(key) is not None else None) for key in ("queries", "passages")}


def plot_speedups(speedups: dict[str, dict], rows: list[dict], speed_ok: bool) -> dict[str, dict[str, float]]:
    """x values of the plot, per dataset: the speed benchmark's query speed-ups (BM25's from the runs), or,
    without the speed benchmark, every system's from the retrieval runs."""
    from_runs = retrieval_speedups(rows)
    table: dict[str, dict[str, float]] = {}
    for dataset, measured in from_runs.items():
        if not speed_ok:
            table[dataset] = dict(measured)
            continue
        table[dataset] = {s: v["queries"] for s, v in speedups.items() if v.get("queries") and s != "bm25"}
        if measured.get("bm25"):
            table[dataset]["bm25"] = measured["bm25"]
    return table


# --- the Markdown report --------------------------------------------------------------------------
def _x(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}×" if value >= 10 else f"{value:.1f}×"


def summary_table(report: dict) -> str:
    """Rows: systems; columns: nDCG@10 (% of the teacher) per retrieval dataset, STS ρ, speed-ups."""
    rows, sts = report["retrieval"], report["sts"]
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    sts_sets = list(dict.fromkeys(row["dataset"] for row in sts))
    header = ["system"] + [f"{DATASET_LABELS.get(d, d)} nDCG@10" for d in datasets]
    header += [f"{DATASET_LABELS.get(d, d)} ρ" for d in sts_sets] + ["speed-up queries", "speed-up passages"]
    lines = []
    for name in report["settings"]["systems"]:
        cells = [name]
        for dataset in datasets:
            row = next((r for r in rows if r["dataset"] == dataset and r["system"] == name), None)
            cells.append(f"{number(row['ndcg@10'], 3)} ({percent(row['pct_teacher_ndcg@10'])})" if row else "–")
        for dataset in sts_sets:
            row = next((r for r in sts if r["dataset"] == dataset and r["system"] == name), None)
            cells.append(number(row["spearman"], 3) if row else ("n/a" if name == "bm25" else "–"))
        speed = report["speedups"].get(name, {})
        cells += [_x(speed.get("queries")), _x(speed.get("passages")) if name != "bm25" else "n/a"]
        lines.append(cells)
    return markdown_table(header, lines)


def to_markdown(report: dict) -> str:
    settings = report["settings"]
    machine = report["machine"]
    parts = [
        f"# Benchmarks: {report['run']} ({report['suite']} suite)\n",
        f"Teacher `{settings['teacher']}`, student `{settings['model']}`; {machine.get('cpu')}, "
        f"{machine.get('usable_cores')} cores, torch threads {machine.get('torch_threads')}; {report['date']}; "
        f"commit {str(report['versions'].get('git_commit'))[:10]}"
        f"{' (uncommitted changes)' if report['versions'].get('git_dirty') else ''}.\n",
        summary_table(report),
        "nDCG@10 with its % of the teacher's; ρ: Spearman of cosine similarity with the gold scores (BM25: n/a, it "
        "scores no sentence pair); speed-up: texts/s over the teacher's (asymmetric: queries by the student, "
        "passages by the teacher).\n",
    ]
    if report.get("plot"):
        parts.append(f"![quality vs speed]({report['plot']})\n")
    if report["retrieval"]:
        header = ["dataset", "system", "nDCG@10", "MRR@10", "R@100", "R@1000", "% teacher", "queries", "documents"]
        lines = [
            [r["dataset"], r["system"], number(r["ndcg@10"]), number(r["mrr@10"]), number(r["recall@100"]),
             number(r["recall@1000"]), percent(r["pct_teacher_ndcg@10"]), str(r["queries"]), str(r["documents"])]
            for r in report["retrieval"]
        ]  # fmt: skip
        parts += ["## Retrieval\n", markdown_table(header, lines)]
        parts.append(
            "MRR@10 and recall count grade ≥ the dataset's relevance threshold (DL19: 2; SciFact: 1); exact search.\n"
        )
    if report["sts"]:
        lines = [[r["dataset"], r["system"], number(r["spearman"]), number(r["pearson"]), str(r["pairs"])]
                 for r in report["sts"]]  # fmt: skip
        parts += ["## STS\n", markdown_table(["dataset", "system", "Spearman", "Pearson", "pairs"], lines)]
    if report["fidelity"].get("student") or report["fidelity"].get("model2vec"):
        source = report["fidelity"].get("source_description", "")
        parts += [f"## Fidelity to the teacher ({report['fidelity'].get('texts')} held-out texts: {source})\n"]
        parts.append(markdown_table(*fidelity_table(report["fidelity"])))
    speedup = report["speed"].get("speedup")
    if isinstance(speedup, dict):
        lines = [[name, _x(v.get("queries")), _x(v.get("passages"))] for name, v in speedup.items()]
        parts += ["## Speed (benchmarks.speed)\n", markdown_table(["system", "queries", "passages"], lines)]
        basis = report["speed"].get("speedup_basis")
        if isinstance(basis, dict):
            basis = ", ".join(f"{key} {value}" for key, value in basis.items())
        if basis:
            parts.append(f"Texts/s over the teacher's ({basis}); details in `speed/speed.md`.\n")
    notes = [
        f"- {name}: {value['basis']}" for name, value in report["speedups"].items() if value["basis"] != "baseline"
    ]
    notes += [f"- skipped {s['system']} on {s['dataset']}: {s['reason']}" for s in report["skipped"]]
    notes += [f"- step {name} failed: {error}" for name, error in report["errors"].items()]
    if report.get("plot_note"):
        notes.append(f"- plot: {report['plot_note']}")
    if notes:
        parts += ["## Notes\n", "\n".join(notes) + "\n"]
    return "\n".join(parts)
