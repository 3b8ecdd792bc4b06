"""Run a suite of benchmarks and write one report: every system side by side with the teacher.

    python -m benchmarks.report --suite quick --model RUN/best --out results/quick      # CI: ~2 min
    python -m benchmarks.report --suite full --model RUN/best --teacher TEACHER --out experiments/results/full-minilm

Suites: ``quick`` (300 SciFact documents and their queries, 200 STS-B test pairs, a few hundred fidelity
texts, the speed benchmark's ``--quick``) and ``full`` (SciFact, TREC DL 2019, STS-B test, fidelity on the
student's held-out training texts, speed). Each step is one benchmark module (its own JSON in
``OUT/<step>/``); a step that fails is recorded and the others still run. Writes into ``OUT``:

* ``results.json``: ``run``, ``suite``, ``machine``, ``versions``, ``settings``, ``retrieval`` (one row per
  dataset and system), ``sts``, ``fidelity``, ``speed``, plus ``skipped``, ``errors`` and ``steps``;
* ``results.md``: the summary table (rows: systems; columns: nDCG@10 per dataset with % of the teacher,
  STS ρ, speed-up) and the detailed tables;
* ``quality_vs_speed.png``: nDCG@10 (and % of the teacher) against query speed-up, log x-axis.

Speed-ups come from ``benchmarks.speed`` (texts/s over the teacher's, at batch 64, run with ``--threads 1``
unless ``--speed-args`` says otherwise). BM25 is not in it: its query speed-up is measured in the retrieval
runs (BM25 top-10 search time vs the teacher's query encoding plus exact top-10 search, same queries, same
process). Where the speed step failed, every system's query speed-up comes from the retrieval runs that
way, and the report says so.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import default_data_dir
from .fidelity import FIDELITY_SYSTEMS, targets_folders, training_data
from .provenance import provenance
from .reporting import write_results
from .retrieval import DEFAULT_SYSTEMS
from .summary import plot_speedups, summary_table, system_speedups, to_markdown
from .systems import NEEDS_STUDENT, Systems, read_student_teacher

PROG = "python -m benchmarks.report"
SUITES = ("quick", "full")
QUALITY_MODULES = ("beir", "msmarco", "sts", "fidelity")
PROVENANCE_KEYS = ("machine", "versions", "command", "date")


@dataclass
class Step:
    name: str  # what the step measures: a dataset name, "fidelity" or "speed"
    module: str  # benchmarks.<module>
    args: list[str] = field(default_factory=list)


QUICK_SIZES = {"docs": 300, "queries": 100, "pairs": 200, "texts": 400}
# Extra arguments of the speed step: one thread, like the quality runs (OMP_NUM_THREADS=1); on a small shared
# machine the student's tiny ops at 2+ threads measure thread contention, not the model. Quick: no memory probes.
SPEED_ARGS = {"quick": "--threads 1 --no-memory", "full": "--threads 1"}


def suite_steps(suite: str, data: Path, fidelity_args: list[str], sizes: dict[str, int | None]) -> list[Step]:
    """The steps of a suite (their own arguments; the shared ones are added by :func:`step_argv`).

    ``sizes`` caps the slices (``docs``, ``queries``, ``pairs``; None: the whole set)."""
    dl19 = data / "msmarco-passage-dl19"
    speed = ["--queries", str(dl19 / "queries.jsonl"), "--corpus", str(dl19 / "corpus.jsonl")]
    slices = _flags(("--max-docs", sizes.get("docs")), ("--max-queries", sizes.get("queries")))
    sts = ["--file", str(data / "sts" / "stsb" / "sts-test.csv"), "--name", "stsb"]
    sts += _flags(("--max-pairs", sizes.get("pairs")))
    steps = [Step("scifact", "beir", ["--dataset", str(data / "beir" / "scifact"), "--name", "scifact", *slices])]
    if suite == "full":
        steps.append(Step("dl19", "msmarco", ["--dataset", "dl19", "--data", str(dl19), *slices]))
    steps += [Step("stsb", "sts", sts), Step("fidelity", "fidelity", fidelity_args)]
    steps.append(Step("speed", "speed", speed + (["--quick"] if suite == "quick" else [])))
    return steps


def _flags(*pairs: tuple[str, int | None]) -> list[str]:
    return [item for flag, value in pairs if value is not None for item in (flag, str(value))]


def suite_sizes(args: argparse.Namespace) -> dict[str, int | None]:
    """Slice sizes: the quick suite's defaults (or none for full), overridden by ``--max-*`` options."""
    sizes: dict[str, int | None] = dict(QUICK_SIZES) if args.suite == "quick" else dict.fromkeys(QUICK_SIZES)
    for key in sizes:
        value = getattr(args, f"max_{key}")
        if value is not None:
            sizes[key] = value
    return sizes


def fidelity_source(args: argparse.Namespace, data: Path, max_texts: int | None) -> tuple[list[str], str]:
    """``(arguments, description)`` of the fidelity step's texts: ``--fidelity-targets``, else (full suite)
    the student's training targets when they exist, else TREC DL 2019 queries and passages with the teacher."""
    argv, description = _fidelity_texts(args, data)
    return argv + _flags(("--max-texts", max_texts)), description


def _fidelity_texts(args: argparse.Namespace, data: Path) -> tuple[list[str], str]:
    if args.fidelity_targets:
        return ["--targets", *args.fidelity_targets], "the given targets' validation split"
    folders = targets_folders(training_data(args.model).get("targets")) if args.suite == "full" else []
    if folders and all(os.path.isdir(folder) for folder in folders):
        return ["--targets", *folders], "the student's training targets, validation split"
    dl19 = data / "msmarco-passage-dl19"
    texts = ["--texts", str(dl19 / "queries.jsonl"), str(dl19 / "corpus.jsonl")]
    return texts, "TREC DL 2019 queries and passages, encoded by the teacher"


def step_argv(step: Step, args: argparse.Namespace, names: list[str], model2vec: str | None, out: Path) -> list[str]:
    """A step's full command line: its own arguments plus the models, systems, cache and output folder."""
    argv = list(step.args) + ["--out", str(out / step.name)]
    if step.module == "speed":
        argv += ["--model", args.model, "--teacher", args.teacher]
        argv += ["--model2vec", model2vec] if model2vec and "model2vec" in names else []
        extra = args.speed_args if args.speed_args is not None else SPEED_ARGS[args.suite]
        return argv + shlex.split(extra)
    argv += ["--model", args.model] if args.model else []
    argv += ["--teacher", args.teacher] if args.teacher else []
    argv += ["--model2vec", model2vec] if model2vec else []
    chosen = [n for n in names if n in FIDELITY_SYSTEMS] if step.module == "fidelity" else names
    argv += ["--systems", *chosen]
    argv += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    argv += ["--dtype", args.dtype, "--batch-size", str(args.batch_size)]
    argv += ["--device", args.device] if args.device else []
    argv += ["--no-progress"] if args.no_progress else []
    argv += ["--save-runs"] if args.save_runs and step.module in ("beir", "msmarco") else []
    return argv


def run_step(step: Step, argv: list[str]) -> dict:
    """Run one benchmark module's ``main(argv)``; ``{"result"}`` or ``{"error"}`` with the seconds it took."""
    import importlib

    print(f"\n=== {step.name}: python -m benchmarks.{step.module} {shlex.join(argv)}", flush=True)
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"benchmarks.{step.module}")
        main = getattr(module, "main", None)
        if not callable(main):
            raise AttributeError(f"benchmarks.{step.module} has no main(argv)")
        outcome = {"result": main(argv)}
        if not isinstance(outcome["result"], dict):
            raise TypeError(f"benchmarks.{step.module}.main returned {type(outcome['result']).__name__}, not a dict")
    except (Exception, SystemExit) as error:  # SystemExit: argparse refused the arguments
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
        print(f"=== {step.name} failed: {outcome['error']}", flush=True)
    outcome["seconds"] = round(time.perf_counter() - start, 1)
    return outcome


# --- the command ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=SUITES, default="quick")
    parser.add_argument("--model", help="saved student folder")
    parser.add_argument("--teacher", help="teacher folder (default: the one the student's config.json names)")
    parser.add_argument("--out", default=None, help="run folder (default: results/<suite>)")
    parser.add_argument("--run", default=None, help="run name (default: the --out folder's name)")
    parser.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS), metavar="NAME")
    parser.add_argument("--skip", nargs="+", default=[], metavar="STEP", help="steps to leave out (e.g. speed)")
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: $BERTAPPROX_SHARED/data)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (default: $BERTAPPROX_CACHE, else "
                        "~/.cache/bertapprox/bench)")  # fmt: skip
    parser.add_argument("--model2vec", default=None, help="a saved model2vec folder (default: distilled, cached)")
    parser.add_argument("--fidelity-targets", nargs="+", default=None, help="targets folder(s) for fidelity")
    parser.add_argument(
        "--speed-args",
        default=None,
        help=f"extra arguments for benchmarks.speed, one string (default: {SPEED_ARGS})",
    )
    parser.add_argument("--max-docs", type=int, default=None, help="retrieval slice: documents (quick: 300)")
    parser.add_argument("--max-queries", type=int, default=None, help="retrieval slice: queries (quick: 100)")
    parser.add_argument("--max-pairs", type=int, default=None, help="STS pairs (quick: 200)")
    parser.add_argument("--max-texts", type=int, default=None, help="fidelity texts (quick: 400; full: 3000)")
    parser.add_argument("--plugin-benchmark", nargs="+", default=[], metavar="NAME",
                        help="also run these benchmarks of installed plugins (bertapprox benchmark list)")  # fmt: skip
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "int8"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--save-runs",
        action="store_true",
        help="keep each retrieval run as TREC (OUT/<dataset>/runs), e.g. for python -m benchmarks.bootstrap",
    )
    return parser


def resolve(args: argparse.Namespace) -> tuple[list[str], str | None, list[dict]]:
    """``(systems, model2vec folder, skipped)`` after checking the models; fills ``args.teacher``."""
    if args.model and not os.path.isdir(args.model):
        raise FileNotFoundError(f"student folder not found: {args.model}")
    args.teacher = args.teacher or (read_student_teacher(args.model) if args.model else None)
    if not args.teacher:
        raise ValueError("give --teacher (or a --model whose config.json names its teacher)")
    names = [n for n in args.systems if args.model or n not in NEEDS_STUDENT]
    skipped: list[dict] = []
    model2vec = args.model2vec
    if "model2vec" in names and model2vec is None:
        try:
            model2vec = Systems(["model2vec"], teacher=args.teacher, cache=args.cache_dir).model2vec_dir()
        except Exception as error:  # model2vec not installed, distillation failed
            skipped.append({"dataset": "all", "system": "model2vec", "reason": f"{type(error).__name__}: {error}"})
            names.remove("model2vec")
    return names, model2vec, skipped


def main(argv: list[str] | None = None) -> dict:
    """Run the suite; write ``results.json``, ``results.md`` and ``quality_vs_speed.png``; return the report."""
    args = build_parser().parse_args(argv)
    out = Path(args.out or f"results/{args.suite}")
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data_dir) if args.data_dir else default_data_dir()
    names, model2vec, skipped = resolve(args)
    sizes = suite_sizes(args)
    fidelity_args, fidelity_description = fidelity_source(args, data, sizes["texts"])
    steps = [step for step in suite_steps(args.suite, data, fidelity_args, sizes) if step.name not in args.skip]
    report: dict = {
        "run": args.run or out.name,
        "suite": args.suite,
        **{key: value for key, value in provenance(PROG, argv).items()},
        "settings": {
            "suite": args.suite,
            "model": os.path.abspath(args.model) if args.model else None,
            "teacher": args.teacher,
            "model2vec": model2vec,
            "systems": names,
            "data_dir": str(data),
            "cache_dir": args.cache_dir or os.environ.get("BERTAPPROX_CACHE") or "~/.cache/bertapprox/bench",
            "student_dtype": args.dtype,
            "batch_size": args.batch_size,
            "sizes": sizes,
            "steps": {step.name: step.module for step in steps},
            "skipped_steps": list(args.skip),
        },
        "retrieval": [],
        "sts": [],
        "fidelity": {},
        "speed": {},
        "skipped": skipped,
        "errors": {},
        "steps": {},
    }
    for step in steps:
        if step.module == "speed" and not args.model:
            report["speed"] = {"error": "the speed benchmark needs the student (--model)"}
            continue
        argv_step = step_argv(step, args, names, model2vec, out)
        outcome = run_step(step, argv_step)
        report["steps"][step.name] = {"module": step.module, "argv": argv_step, "seconds": outcome["seconds"]}
        if "error" in outcome:
            report["errors"][step.name] = outcome["error"]
            if step.module == "speed":
                report["speed"] = {"error": outcome["error"]}
            continue
        collect(report, step, outcome["result"], fidelity_description)
    run_plugins(report, args, out)
    speed_ok = isinstance(report["speed"].get("speedup"), dict)
    report["speedups"] = system_speedups(report["speed"], report["retrieval"], names)
    finish(report, out, speed_ok)
    return report


def collect(report: dict, step: Step, result: dict, fidelity_description: str) -> None:
    """File a step's results into the report."""
    if step.module in ("beir", "msmarco"):
        report["retrieval"] += result["retrieval"]
        report["skipped"] += result.get("skipped", [])
        report["steps"][step.name]["dataset"] = result.get("dataset")
    elif step.module == "sts":
        report["sts"] += result["sts"]
        report["steps"][step.name]["dataset"] = result.get("dataset")
    elif step.module == "fidelity":
        kept = {k: v for k, v in result.items() if k not in PROVENANCE_KEYS}
        report["fidelity"] = {**kept, "source_description": fidelity_description}
    elif step.module == "speed":
        report["speed"] = {k: v for k, v in result.items() if k != "machine"}


def run_plugins(report: dict, args: argparse.Namespace, out: Path) -> None:
    """Benchmarks of installed plugins (``--plugin-benchmark``), through the plugin manager."""
    if not args.plugin_benchmark:
        return
    from bertapprox_hf.plugins import get_plugin_manager

    manager = get_plugin_manager()
    report["plugins"] = {}
    for name in args.plugin_benchmark:
        try:
            result = manager.run_benchmark(name, args.model or args.teacher, {"out": str(out / name)})
            report["plugins"][name] = result
        except Exception as error:
            report["errors"][f"plugin {name}"] = f"{type(error).__name__}: {error}"


def finish(report: dict, out: Path, speed_ok: bool) -> None:
    """Plot, write ``results.json`` and ``results.md``, print the summary table."""
    from .plots import quality_vs_speed

    xs = plot_speedups(report["speedups"], report["retrieval"], speed_ok)
    if speed_ok:
        note = "query speed-ups from benchmarks.speed; BM25's (hollow marker) from the retrieval runs (top-10 search "
        note += "vs the teacher's query encoding + top-10 search)"
    else:
        note = "benchmarks.speed gave no figures: every query speed-up is from the retrieval runs (encoding + top-10 "
        note += "search)"
    title = f"{report['run']}: quality vs query speed-up ({'speed benchmark' if speed_ok else 'retrieval timings'})"
    hollow = ["bm25"] if speed_ok else []  # BM25's speed-up comes from the retrieval runs
    drawn = quality_vs_speed(report["retrieval"], xs, out / "quality_vs_speed.png", title, hollow)
    report["plot"] = "quality_vs_speed.png" if drawn else None
    report["plot_note"] = note
    report["plot_speedups"] = xs
    write_results(out, "results", report)
    (out / "results.md").write_text(to_markdown(report), encoding="utf-8")
    print("\n" + summary_table(report))
    for name, error in report["errors"].items():
        print(f"step {name} failed: {error}")
    print(
        f"wrote {out / 'results.json'}, {out / 'results.md'}" + (f", {out / report['plot']}" if report["plot"] else "")
    )


if __name__ == "__main__":
    result = main()
    sys.exit(1 if any(not name.startswith("speed") for name in result["errors"]) else 0)
