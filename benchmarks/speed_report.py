"""``benchmarks.speed``'s report: its Markdown tables and its plot."""

from __future__ import annotations

import math
import sys

from .speed_systems import BASELINE, SETS, SPEEDUP_BATCH_SIZE


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"


def to_markdown(report: dict) -> str:
    """Tables: speed per device and thread count, then footprint, stage breakdown and precision."""
    from benchmarks.machine import describe

    settings = report["settings"]
    lines = [f"# Speed: {', '.join(report['systems'])}", ""]
    lines.append(
        f"{describe(report['machine'])}. Samples: {settings['texts']['queries']} queries, "
        f"{settings['texts']['passages']} passages (distinct texts), {settings['repeats']} interleaved repeats, "
        f"median; end to end from raw text, caches off. Latency: one text per call, "
        f"{settings['latency_texts']} texts × {settings['repeats']} repeats. Ratio: texts/s over the teacher's."
    )
    throughput, latency = report["throughput"], report["latency"]
    groups = sorted({(r["device"], r["threads"]) for r in throughput}, key=lambda g: (g[0] != "cpu", g))
    for device, threads in groups:

        def speed(system, set_name, batch_size, key="texts_per_s", device=device, threads=threads):
            for r in throughput:
                match = (r["device"], r["threads"], r["system"], r["set"], r["batch_size"])
                if match == (device, threads, system, set_name, batch_size):
                    return r[key]
            return None

        def lat(system, set_name, device=device, threads=threads):
            for r in latency:
                if (r["device"], r["threads"], r["system"], r["set"]) == (device, threads, system, set_name):
                    return "/".join(_fmt(r[k], 2) for k in ("p50_ms", "p95_ms", "p99_ms"))
            return "—"

        b_small, b_large = SPEEDUP_BATCH_SIZE, max(settings["batch_sizes"])
        lines += ["", f"## {device}, {threads} torch thread{'s' if threads > 1 else ''}", ""]
        for c in report["conditions"]:
            if (c["device"], c["threads"]) == (device, threads) and c["load_average_before"] is not None:
                cores = report["machine"]["usable_cores"]
                busy = max(c["load_average_before"], c["load_average_after"]) > cores
                note = "."
                if busy:
                    note = ": other jobs oversubscribed the CPU, so figures are pessimistic"
                    spinning = (report["settings"]["environment"].get("OMP_WAIT_POLICY") or "").upper() != "PASSIVE"
                    note += (
                        " (at several threads OpenMP's spin-waiting makes it far worse; OMP_WAIT_POLICY=PASSIVE helps)."
                        if spinning and threads > 1
                        else "."
                    )
                lines += [
                    f"Load average (1 min) before / after: {c['load_average_before']:.1f} / "
                    f"{c['load_average_after']:.1f} on {cores} cores{note}",
                    "",
                ]
        lines.append(
            f"| system | queries/s b{b_small} | queries/s b{b_large} | passages/s b{b_small} | "
            f"passages/s b{b_large} | query ms p50/p95/p99 | passage ms p50/p95/p99 | "
            f"ratio queries b{b_small} / b{b_large} | ratio passages b{b_small} / b{b_large} |"
        )
        lines.append("|---" * 9 + "|")
        for system in report["systems"]:
            if speed(system, "queries", b_small) is None:
                continue
            cells = [_fmt(speed(system, s, b)) for s in SETS for b in (b_small, b_large)]
            cells += [lat(system, s) for s in SETS]
            cells += [
                f"{_ratio(speed(system, s, b_small, 'ratio'))} / {_ratio(speed(system, s, b_large, 'ratio'))}"
                for s in SETS
            ]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
    lines += ["", "## Footprint", ""]
    lines.append(
        "| system | device | disk MB (loaded files) | weights MB | peak RSS increase MB | RSS after load MB | load s |"
    )
    lines.append("|---" * 7 + "|")
    for row in report["memory"]:
        info = report["systems"][row["system"]]
        cuda = f" (CUDA {row['cuda_peak_mb']:.0f})" if "cuda_peak_mb" in row else ""
        lines.append(
            f"| {row['system']} | {row['device']} | {_fmt(info['disk_mb'], 1)} | {_fmt(info['weights_mb'], 1)} | "
            f"{_fmt(row['peak_increase_mb'])}{cuda} | {_fmt(row['rss_loaded_mb'] - row['rss_before_mb'])} | "
            f"{_fmt(row['load_s'], 2)} |"
        )
    if report["memory"]:
        lines.append(
            f"\nPeak memory: a fresh process per system ({report['memory'][0]['method']}), loading it and encoding "
            f"both samples at batch {max(settings['batch_sizes'])}. The student's precisions share one folder "
            "(quantized when loaded)."
        )
    if report["stages"]:
        lines += ["", f"## Where a student batch goes (batch {SPEEDUP_BATCH_SIZE}, ms per batch)", ""]
        lines += ["| system | device | threads | set | tokenize | pool | ρ |", "|---" * 7 + "|"]
        for r in report["stages"]:
            lines.append(
                f"| {r['system']} | {r['device']} | {r['threads']} | {r['set']} | {_fmt(r['tokenize_ms'], 3)} | "
                f"{_fmt(r['pool_ms'], 3)} | {_fmt(r['rho_ms'], 3)} |"
            )
    if report["precision"]:
        lines += ["", "## Precision: mean cosine to the float32 student", ""]
        lines += ["| system | device | set | mean cosine | ρ runs in |", "|---" * 5 + "|"]
        for r in report["precision"]:
            rho = report["systems"][r["system"]].get("rho_dtype", "—")
            lines.append(f"| {r['system']} | {r['device']} | {r['set']} | {r['mean_cosine_to_float32']:.6f} | {rho} |")
    basis = report["speedup_basis"]
    lines.append(
        f"\n`speedup` (returned and in speed.json): ratio at batch {basis['batch_size']}, {basis['device']}, "
        f"{basis['threads']} torch thread(s)."
    )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> bool:
    """Bar chart of the speed-up over the teacher (batch 64, log scale) per system, set and thread count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no speed.png", file=sys.stderr)
        return False
    rows = [r for r in report["throughput"] if r["batch_size"] == SPEEDUP_BATCH_SIZE and r["system"] != BASELINE]
    systems = [s for s in report["systems"] if any(r["system"] == s for r in rows)]
    series = sorted({(r["device"], r["threads"], r["set"]) for r in rows}, key=lambda k: (k[0] != "cpu", k))
    if not systems or not series:
        return False
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(systems) + 4), 4.5))
    width = 0.8 / len(series)
    for k, (device, threads, set_name) in enumerate(series):
        ratios = {
            r["system"]: r["ratio"]
            for r in rows
            if (r["device"], r["threads"], r["set"]) == (device, threads, set_name)
        }
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(systems))]
        heights = [ratios.get(s, float("nan")) for s in systems]
        bars = ax.bar(xs, heights, width, label=f"{set_name}, {device}, {threads} thread{'s' if threads > 1 else ''}")
        ax.bar_label(bars, labels=[_ratio(h) if math.isfinite(h) else "" for h in heights], fontsize=7, rotation=90)
    ax.set_yscale("log")
    finite = [r["ratio"] for r in rows if math.isfinite(r["ratio"]) and r["ratio"] > 0]
    ax.set_ylim(min(0.8, min(finite) / 1.5), max(finite) * 4)  # room for the labels above the bars
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks(range(len(systems)), systems)
    ax.set_ylabel("speed-up over the teacher (texts/s ratio)")
    ax.set_title(f"End-to-end throughput at batch {SPEEDUP_BATCH_SIZE} vs the teacher")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
