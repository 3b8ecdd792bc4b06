"""The report's figure: retrieval quality against speed-up over the teacher, every system, log x-axis."""

from __future__ import annotations

import os
from collections.abc import Sequence

MARKERS = {"teacher": "o", "student": "s", "asymmetric": "D", "model2vec": "^", "bm25": "v"}
LABEL_OFFSETS = {"bm25": (6, -12), "student": (6, -12)}  # points; keeps labels of near points apart


def quality_vs_speed(
    rows: Sequence[dict],
    speedups: dict[str, dict[str, float | None]],
    path: str | os.PathLike,
    title: str = "",
    hollow_systems: Sequence[str] = (),
) -> bool:
    """Plot nDCG@10 (left axis) and % of the teacher's (right axis) against query speed-up, one panel per
    dataset; ``speedups[dataset][system]`` is the x value (systems without one are left out); the systems in
    ``hollow_systems`` get hollow markers. False when matplotlib is missing or nothing can be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    panels = [d for d in datasets if any(speedups.get(d, {}).get(r["system"]) for r in rows if r["dataset"] == d)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], panels, strict=True):
        teacher = next((r["ndcg@10"] for r in rows if r["dataset"] == dataset and r["system"] == "teacher"), None)
        for row in (r for r in rows if r["dataset"] == dataset):
            x = speedups.get(dataset, {}).get(row["system"])
            if not x:
                continue
            hollow = row["system"] in hollow_systems  # its speed-up measured another way (see the report's notes)
            color = f"C{list(MARKERS).index(row['system']) if row['system'] in MARKERS else 5}"
            ax.scatter(x, row["ndcg@10"], marker=MARKERS.get(row["system"], "o"), s=60, label=row["system"],
                       facecolors="none" if hollow else color, edgecolors=color)  # fmt: skip
            share = f" ({row['pct_teacher_ndcg@10']:.0f}%)" if row.get("pct_teacher_ndcg@10") is not None else ""
            offset = LABEL_OFFSETS.get(row["system"], (6, 4))
            ax.annotate(f"{row['system']}{share}", (x, row["ndcg@10"]), textcoords="offset points", xytext=offset,
                        fontsize=8)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("query speed-up over the teacher (×, log scale)")
        ax.set_ylabel("nDCG@10")
        ax.set_title(dataset)
        ax.grid(True, which="major", alpha=0.3)
        low, high = ax.get_xlim()
        ax.set_xlim(low / 1.5, high * 3)  # room for the labels
        if teacher:
            functions = (lambda y, t=teacher: 100 * y / t, lambda p, t=teacher: p * t / 100)
            ax.secondary_yaxis("right", functions=functions).set_ylabel("% of the teacher's nDCG@10")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
