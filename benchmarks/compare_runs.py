"""Compare training runs by their validation curves: one PNG panel per metric and a table by step.

    python -m benchmarks.compare_runs --run base=RUN_A/metrics.jsonl --run contextual=RUN_B/metrics.jsonl \
        --metrics spearman_passage spearman_query cosine_passage --out results/NAME

Each ``--run`` is ``LABEL=PATH`` of a run's ``metrics.jsonl`` (train.py's log, or a sweep's copy of it). Writes
``curves.png`` and ``curves.md`` (each metric at every evaluated step, runs side by side) into ``--out``.
With ``--live``, a run trained with a weight average (``optim.ema_decay``; its log holds the live weights'
figures as ``raw_*``) is drawn twice: the average (LABEL) and the live weights (LABEL, live).
"""

from __future__ import annotations

import argparse
import os

from bertapprox_hf.pipeline.jsonio import iter_json_objects

DEFAULT_METRICS = ("spearman_passage", "spearman_query", "cosine_passage", "cosine_query")


def read_evaluations(path: str) -> list[dict]:
    """The ``eval`` events of a metrics log, in order; a missing or unreadable file raises an error naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics log not found: {path}")
    events = [event for _, event in iter_json_objects(path) if event.get("event") == "eval"]
    if not events:
        raise ValueError(f"{path} holds no evaluation")
    return events


def parse_run(text: str) -> tuple[str, str]:
    """``LABEL=PATH`` into its two parts."""
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {text!r}")
    return label, path


def with_live_weights(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each run, followed by its live weights' evaluations where its log holds them (``raw_*``)."""
    out: dict[str, list[dict]] = {}
    for label, events in runs.items():
        out[label] = events
        if any(key.startswith("raw_") for key in events[-1]):
            out[f"{label}, live"] = [
                {"step": e["step"], **{k.removeprefix("raw_"): v for k, v in e.items() if k.startswith("raw_")}}
                for e in events
            ]
    return out


def curves_table(runs: dict[str, list[dict]], metrics: list[str]) -> str:
    """Markdown: one row per evaluated step, one column per (metric, run); blank where a run has no value."""
    steps = sorted({event["step"] for events in runs.values() for event in events})
    by_step = {label: {event["step"]: event for event in events} for label, events in runs.items()}
    header = ["step"] + [f"{metric} {label}" for metric in metrics for label in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step in steps:
        cells = [str(step)]
        for metric in metrics:
            for label in runs:
                value = by_step[label].get(step, {}).get(metric)
                cells.append("" if value is None else f"{value:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: dict[str, list[dict]], metrics: list[str], path: str, skip_first: bool = True) -> None:
    """One panel per metric, a line per run (the step-0 evaluation left out with ``skip_first``: it is far off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        for label, events in runs.items():
            points = [(e["step"], e[metric]) for e in events if metric in e and not (skip_first and e["step"] == 0)]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        axis.set_title(metric)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=parse_run, action="append", required=True, help="LABEL=PATH of metrics.jsonl")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--out", required=True, help="folder for curves.png and curves.md")
    parser.add_argument("--live", action="store_true", help="also the live weights of weight-averaged runs")
    args = parser.parse_args(argv)
    labels = [label for label, _ in args.run]
    if len(set(labels)) != len(labels):
        parser.error(f"run labels repeat: {labels}")
    runs = {label: read_evaluations(path) for label, path in args.run}
    if args.live:
        runs = with_live_weights(runs)
    for label, events in runs.items():
        missing = [metric for metric in args.metrics if metric not in events[-1]]
        if missing:
            parser.error(f"run {label!r} has no {', '.join(missing)} (its metrics: {sorted(events[-1])})")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "curves.md"), "w", encoding="utf-8") as handle:
        handle.write(curves_table(runs, args.metrics))
    plot_curves(runs, args.metrics, os.path.join(args.out, "curves.png"))
    print(f"wrote {args.out}/curves.md and curves.png")
    return runs


if __name__ == "__main__":
    main()
