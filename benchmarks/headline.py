"""The README's headline table: quality and speed of the teacher, the students and the baselines, side by side.

Each row reads one system from a ``benchmarks.report`` folder (``results.json``: SciFact and DL19 nDCG@10, STS-B
Spearman) and, where measured, its speed-up over the teacher from a ``benchmarks.speed`` file (one thread, the
file's batch size). A JSON spec lists the rows, so the table is rebuilt by one command::

    python -m benchmarks.headline --spec results/headline.json --out results/

writes ``headline.md`` (the table, with the spec's sources under it) and ``headline.png`` (quality against
query speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .reporting import markdown_table

QUALITY = (("scifact", "SciFact nDCG@10"), ("dl19", "DL19 nDCG@10"))


def _report(folder: Path) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark report at {path} (python -m benchmarks.report ... --out {folder})")
    return json.loads(path.read_text(encoding="utf-8"))


def _cell(report: dict, dataset: str, system: str) -> tuple[str, float | None]:
    teacher = next((r for r in report["retrieval"] if r["dataset"] == dataset and r["system"] == "teacher"), None)
    row = next((r for r in report["retrieval"] if r["dataset"] == dataset and r["system"] == system), None)
    if row is None:
        return "–", None
    share = 100 * row["ndcg@10"] / teacher["ndcg@10"] if teacher else None
    return (f"{row['ndcg@10']:.3f}" + (f" ({share:.1f}%)" if share is not None else "")), share


def _sts(report: dict, system: str) -> str:
    row = next((r for r in report.get("sts", []) if r["system"] == system), None)
    return "n/a" if row is None else f"{row['spearman']:.3f}"


def _speedup(path: Path | None, system: str | None, asymmetric: bool = False) -> tuple[str, float | None]:
    if path is None or system is None:
        return "–", None
    speed = json.loads(path.read_text(encoding="utf-8"))
    table = speed.get("speedup_by_threads", {}).get("1") or speed["speedup"]
    if system not in table:
        raise ValueError(f"{path} has no system {system!r} (it has {', '.join(table)})")
    queries, passages = table[system]["queries"], table[system]["passages"]
    # asymmetric: the documents are the teacher's, embedded once offline
    return f"{queries:.0f}× / " + ("teacher's" if asymmetric else f"{passages:.0f}×"), queries


def build_table(spec: dict, root: Path) -> tuple[str, list[dict]]:
    """The Markdown table and, per row, the figures the plot needs."""
    header = ["system", *(label for _, label in QUALITY), "STS-B ρ", "speed-up queries / passages"]
    rows, points = [], []
    for row in spec["rows"]:
        report = _report(root / row["report"])
        cells, shares = [], []
        for dataset, _ in QUALITY:
            text, share = _cell(report, dataset, row["system"])
            cells.append(text)
            shares.append(share)
        speed_path = root / row["speed"] if row.get("speed") else None
        speed_text, query_speedup = _speedup(speed_path, row.get("speed_system"), row["system"] == "asymmetric")
        label = f"**{row['label']}**" if row.get("bold") else row["label"]
        rows.append([label, *cells, _sts(report, row["system"]), speed_text])
        points.append({"label": row["label"], "shares": shares, "speedup": query_speedup})
    return markdown_table(header, rows), points


def plot(points: list[dict], path: Path) -> None:
    """Mean % of the teacher's nDCG@10 against query speed-up (log scale), one point per row that has both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for point in points:
        shares = [s for s in point["shares"] if s is not None]
        if point["speedup"] is None or not shares:
            continue
        y = sum(shares) / len(shares)
        axes.scatter(point["speedup"], y)
        axes.annotate(point["label"], (point["speedup"], y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("queries/s over the teacher's (one CPU thread, batch 64)")
    axes.set_ylabel("% of the teacher's nDCG@10 (mean of SciFact and DL19)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="JSON: {rows: [{label, report, system, speed?, speed_system?}]}")
    parser.add_argument("--out", required=True, help="folder for headline.md and headline.png")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    root = Path(spec.get("root", ".")) if os.path.isabs(spec.get("root", ".")) else Path.cwd() / spec.get("root", ".")
    table, points = build_table(spec, root)
    sources = sorted({row["report"] for row in spec["rows"]} | {row["speed"] for row in spec["rows"] if "speed" in row})
    note = spec.get("note", "")
    text = table + ("\n" + note + "\n" if note else "") + "\nSources: " + ", ".join(f"`{s}`" for s in sources) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "headline.md").write_text(text, encoding="utf-8")
    plot(points, out / "headline.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
