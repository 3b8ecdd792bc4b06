"""One table for an experiment's arms: each arm a folder holding its `benchmarks.report` results (`results.json`)
and its training run's `report.json`, beside a `bootstrap/DATASET-MODE/bootstrap.json` from `benchmarks.bootstrap`.

python experiments/arms_table.py FOLDER ARM [ARM ...]    → FOLDER/arms.md, arms.json, arms.png

Each retrieval cell is the arm's % of the teacher's nDCG@10 with its paired 95% interval over queries, and the
difference from the baseline arm (the one the bootstrap was run against) with its interval.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RANK_KEYS = ("rank_overlap10_asymmetric", "rank_ndcg10_asymmetric", "rank_overlap10_student", "rank_ndcg10_student")
PANELS = [(dataset, mode) for dataset in ("scifact", "dl19") for mode in ("asymmetric", "student")]


def _bootstrap(folder: Path, dataset: str, mode: str) -> dict[str, dict]:
    path = folder / "bootstrap" / f"{dataset}-{mode}" / "bootstrap.json"
    if not path.is_file():
        return {}
    return {row["run"]: row for row in json.loads(path.read_text())["rows"]}


def arm_row(folder: Path, arm: str) -> dict:
    """The figures of one arm: retrieval shares, STS-B share, fidelity, the ranking view, training time."""
    results = json.loads((folder / arm / "results.json").read_text())
    training = json.loads((folder / arm / "report.json").read_text())
    sts = {row["system"]: row["spearman"] for row in results["sts"]}
    fidelity = results["fidelity"]["student"]
    row = {"arm": arm, "train_seconds": training["train_seconds"], "best_step": training["best_step"]}
    for dataset, mode in PANELS:
        share = _bootstrap(folder, dataset, mode).get(arm)
        ndcg = next(r["ndcg@10"] for r in results["retrieval"] if r["dataset"] == dataset and r["system"] == mode)
        row[f"{dataset}_{mode}"] = {"ndcg@10": round(ndcg, 4), **(share or {})}
    row["stsb"] = {mode: round(100 * sts[mode] / sts["teacher"], 2) for mode in ("asymmetric", "student")}
    row["fidelity"] = {
        f"{kind}_{bucket}": round(fidelity[bucket][kind], 4)
        for kind in ("cosine", "spearman")
        for bucket in ("query", "passage")
    }
    row["ranking_view"] = {key: round(training["best"][key], 4) for key in RANK_KEYS if key in training["best"]}
    return row


def _share(cell: dict) -> str:
    if "pct_teacher" not in cell:
        return f"{cell['ndcg@10']:.3f}"
    low, high = cell["pct_teacher_95ci"]
    text = f"{cell['pct_teacher']:.1f} [{low:.1f}, {high:.1f}]"
    if "vs_baseline" in cell:
        a, b = cell["vs_baseline_95ci"]
        text += f"<br>{cell['vs_baseline']:+.1f} [{a:+.1f}, {b:+.1f}]{' real' if cell['real'] else ''}"
    return text


def to_markdown(rows: list[dict]) -> str:
    """The arms as one Markdown table (the ranking view's column only when some arm logged it)."""
    with_view = any(row["ranking_view"] for row in rows)
    header = [
        "arm", "SciFact asym.", "SciFact student", "DL19 asym.", "DL19 student", "STS-B % (asym. / student)",
        "cosine q / p", "Spearman q / p", *(["val. overlap@10 asym. / student"] if with_view else []), "train s",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        f, view = row["fidelity"], row["ranking_view"]
        overlap = (
            f"{view.get('rank_overlap10_asymmetric', float('nan')):.3f} / "
            f"{view.get('rank_overlap10_student', float('nan')):.3f}"
        )
        cells = [
            row["arm"],
            *(_share(row[f"{d}_{m}"]) for d, m in PANELS),
            f"{row['stsb']['asymmetric']:.1f} / {row['stsb']['student']:.1f}",
            f"{f['cosine_query']:.3f} / {f['cosine_passage']:.3f}",
            f"{f['spearman_query']:.3f} / {f['spearman_passage']:.3f}",
            *([overlap] if with_view else []),
            f"{row['train_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Each arm's share of the teacher's nDCG@10 with its interval, one panel per dataset and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 4, figsize=(15, 3.6), sharey=False)
    for axis, (dataset, mode) in zip(axes, PANELS, strict=True):
        cells = [row[f"{dataset}_{mode}"] for row in rows]
        if not all("pct_teacher" in cell for cell in cells):
            continue
        values = [cell["pct_teacher"] for cell in cells]
        errors = [[v - c["pct_teacher_95ci"][0] for v, c in zip(values, cells, strict=True)],
                  [c["pct_teacher_95ci"][1] - v for v, c in zip(values, cells, strict=True)]]  # fmt: skip
        axis.errorbar(range(len(rows)), values, yerr=errors, fmt="o", capsize=4)
        axis.set_xticks(range(len(rows)), [row["arm"] for row in rows], rotation=30, ha="right")
        axis.set_title(f"{dataset}, {mode}")
        axis.set_ylabel("% of the teacher's nDCG@10")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(folder: Path, arms: list[str]) -> None:
    rows = [arm_row(folder, arm) for arm in arms if (folder / arm / "results.json").is_file()]
    (folder / "arms.json").write_text(json.dumps(rows, indent=1))
    (folder / "arms.md").write_text(to_markdown(rows) + "\n")
    plot(rows, folder / "arms.png")
    print(to_markdown(rows))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
