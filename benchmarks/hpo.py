"""Hyperparameter search over the training configuration, with Optuna.

    python -m benchmarks.hpo --config configs/demo.yaml --space benchmarks/hpo_spaces/demo.yaml --trials 12 \
        --out runs/hpo
    python -m benchmarks.hpo ... --set optim.epochs=1 eval.every_steps=200      # overrides every trial shares

Each trial trains a student with ``train.py``'s machinery (the config file, the shared ``--set`` overrides, then the
trial's values of the search space, :mod:`benchmarks.hpo_space`) into ``OUT/trials/trial_NNNN``. The validation
metric is reported to Optuna at every evaluation, and a median pruner stops trials that fall below the median of
earlier trials at the same step. The trial's value is its best validation metric (what picks its ``best/``).

The study lives in ``OUT/study.db`` (SQLite): rerunning the same command continues it up to ``--trials`` finished
(complete or pruned) trials. A trial whose process was killed is noticed by its stopped heartbeat, marked failed,
and retried with the same values, its training resuming from its last checkpoint.

Writes into ``OUT``: ``best.yaml`` (the config file with the best trial's values: ``python train.py --config
OUT/best.yaml``), ``study.json``, ``study.md``, and Optuna's plots ``history.png``, ``importances.png`` and
``intermediate.png``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from .hpo_space import SearchSpace, SpaceError, load_space

PROG = "python -m benchmarks.hpo"
STUDY_FILE = "study.db"
FINISHED = ("COMPLETE", "PRUNED")


def trial_trainer_class():
    """A :class:`~bertapprox_hf.training.Trainer` that reports each evaluation to an Optuna trial and stops when
    the trial is pruned (defined on first use: the training stack is imported lazily)."""
    import optuna

    from bertapprox_hf.training import Trainer

    class TrialTrainer(Trainer):
        def __init__(self, config, trial: optuna.Trial, metric: str) -> None:
            super().__init__(config)
            self.trial, self.metric = trial, metric

        def log(self, record: dict) -> None:
            super().log(record)
            if record.get("event") != "eval" or self.metric not in record:
                return
            self.trial.report(float(record[self.metric]), int(record["step"]))
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"{self.metric} {record[self.metric]:.4f} at step {record['step']}")

    return TrialTrainer


def trial_overrides(space: SearchSpace, values: dict, shared: list[str], output_dir: str, metric: str) -> list[str]:
    """The ``--set`` overrides of one trial: the shared ones, its values, its output folder and the metric."""
    return [*shared, *(f"{key}={value}" for key, value in values.items()), f"run.output_dir={output_dir}",
            f"eval.metric={metric}"]  # fmt: skip


def check_space(config_path: str, space: SearchSpace, shared: list[str]) -> str:
    """Fail before the study starts when a searched key or value is no valid config; the metric to maximize."""
    from bertapprox_hf.training import load_config

    base = load_config(config_path, shared)
    for name, param in space.params.items():
        load_config(config_path, [*shared, f"{name}={param.example()}"])
    return space.metric or base.eval.metric


def make_objective(args: argparse.Namespace, space: SearchSpace, metric: str, out: Path):
    from bertapprox_hf.training import load_config
    from bertapprox_hf.training.trainer import latest_checkpoint

    def objective(trial) -> float:
        # a retry of a killed trial has its values and its folder: its training continues from its checkpoint
        output_dir = trial.user_attrs.get("output_dir") or str(out / "trials" / f"trial_{trial.number:04d}")
        trial.set_user_attr("output_dir", output_dir)
        values = {name: param.suggest(trial) for name, param in space.params.items()}
        config = load_config(args.config, trial_overrides(space, values, args.set, output_dir, metric))
        trainer = trial_trainer_class()(config, trial, metric)
        if not (latest_checkpoint(output_dir) and trainer.resume()):
            trainer.start_fresh()
        try:
            report = trainer.train()
        finally:
            if not args.keep_checkpoints:
                shutil.rmtree(os.path.join(output_dir, "checkpoints"), ignore_errors=True)
        trial.set_user_attr("steps", report["steps"])
        trial.set_user_attr("best_step", report["best_step"])
        trial.set_user_attr("train_seconds", report["train_seconds"])
        return float(trainer.state.best_metric)

    return objective


def open_study(args: argparse.Namespace, space: SearchSpace, out: Path):
    """The study in ``OUT/study.db`` (created, or loaded to continue), with heartbeats and retries of killed
    trials."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retries
    storage = RDBStorage(
        f"sqlite:///{(out / STUDY_FILE).resolve()}",
        heartbeat_interval=args.heartbeat,
        grace_period=2 * args.heartbeat,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
    )
    return optuna.create_study(
        storage=storage,
        study_name=args.study,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=max(2, space.startup_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=space.warmup_steps),
    )


def finished_trials(study) -> list:
    return [t for t in study.trials if t.state.name in FINISHED]


def run_study(args: argparse.Namespace) -> dict:
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    space = load_space(args.space)
    metric = check_space(args.config, space, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    study = open_study(args, space, out)
    study.set_user_attr("metric", metric)
    study.set_user_attr("config", os.path.abspath(args.config))
    running = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    if running:  # a killed earlier run: wait until their heartbeats are stale, then they are failed and retried
        time.sleep(args.heartbeat * 2 + 1)
        fail_stale_trials(study)
    done = len(finished_trials(study))
    if done:
        print(f"continuing study {args.study!r}: {done} of {args.trials} trials finished", flush=True)
    remaining = args.trials - done
    if remaining > 0:
        pending = sum(t.state == TrialState.WAITING for t in study.trials)  # retries of killed trials
        optuna.logging.set_verbosity(optuna.logging.INFO)
        study.optimize(
            make_objective(args, space, metric, out),
            n_trials=remaining + pending,
            callbacks=[MaxTrialsCallback(args.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))],
            gc_after_trial=True,
        )
    return write_outputs(study, args, space, metric, out)


# --- outputs -----------------------------------------------------------------------------------
def best_config(study, args: argparse.Namespace, metric: str, out: Path) -> dict:
    """The config file with the shared overrides and the best trial's values, as a nested mapping; its ``base``
    is the searched config's path relative to ``out`` (where it is written), so the pair can move together."""
    from bertapprox_hf.training.config import parse_scalar

    values: dict = {"base": os.path.relpath(os.path.abspath(args.config), os.path.abspath(out))}
    items = [item.split("=", 1) for item in args.set] + [[k, v] for k, v in study.best_trial.params.items()]
    for key, value in items:
        cursor = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = parse_scalar(value) if isinstance(value, str) else value
    values.setdefault("eval", {})["metric"] = metric
    return values


def trial_record(trial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "intermediate": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
        "seconds": trial.duration.total_seconds() if trial.duration else None,
        **{key: trial.user_attrs[key] for key in ("steps", "best_step", "output_dir") if key in trial.user_attrs},
        **({"retry_of": trial.system_attrs.get("failed_trial")} if "failed_trial" in trial.system_attrs else {}),
    }


def write_plots(study, out: Path) -> list[str]:
    """Optuna's history, importances and intermediate-values plots as PNG (those that can be drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    written = []
    for name, draw in (
        ("history", plots.plot_optimization_history),
        ("importances", plots.plot_param_importances),
        ("intermediate", plots.plot_intermediate_values),
    ):
        try:
            axis = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few trials for importances
            print(f"{PROG}: no {name} plot: {error}", file=sys.stderr)
            plt.close("all")
            continue
        figure = axis.figure if hasattr(axis, "figure") else axis.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(out / f"{name}.png", dpi=110)
        plt.close("all")
        written.append(f"{name}.png")
    return written


def write_outputs(study, args: argparse.Namespace, space: SearchSpace, metric: str, out: Path) -> dict:
    import yaml

    from .provenance import provenance
    from .reporting import markdown_table, write_results

    trials = [trial_record(t) for t in study.trials]
    finished = finished_trials(study)
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    results = {
        "study": args.study,
        "metric": metric,
        "direction": "maximize",
        "space": {
            name: {k: v for k, v in vars(p).items() if v not in (None, [], False)} for name, p in space.params.items()
        },  # fmt: skip
        "trials": trials,
        "finished": len(finished),
        "pruned": len(finished) - len(complete),
        **provenance(PROG, args.argv),
    }
    if complete:
        best = study.best_trial
        results["best"] = {"number": best.number, "value": best.value, "params": best.params}
        header = f"# best trial {best.number} of study {args.study}: {metric} = {best.value:.5f}\n"
        (out / "best.yaml").write_text(header + yaml.safe_dump(best_config(study, args, metric, out), sort_keys=False))
        try:
            from optuna.importance import get_param_importances

            results["importances"] = get_param_importances(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            pass
    results["plots"] = write_plots(study, out) if complete else []
    write_results(out, "study", results)
    names = list(space.params)
    rows = [[str(t["number"]), t["state"], "–" if t["value"] is None else f"{t['value']:.5f}", str(t.get("steps", "–")),
             *(str(t["params"].get(n, "–")) for n in names)] for t in trials]  # fmt: skip
    lines = [f"# Study {args.study}", "", f"Maximizing `{metric}`. Command: `{results['command']}`", ""]
    lines += [markdown_table(["trial", "state", metric, "steps", *names], rows)]
    if "best" in results:
        lines += [f"Best: trial {results['best']['number']}, {metric} = {results['best']['value']:.5f}; "
                  "config in `best.yaml`.", ""]  # fmt: skip
    if results.get("importances"):
        lines += ["Importances: " + ", ".join(f"`{k}` {v:.2f}" for k, v in results["importances"].items()), ""]
    lines += [f"![{name}]({name})" for name in results["plots"]]
    (out / "study.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config (YAML), as train.py takes it")
    parser.add_argument("--space", required=True, help="search space (YAML; see benchmarks/hpo_space.py)")
    parser.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials to reach")
    parser.add_argument("--out", default="results/hpo", help="study folder: study.db, trials/, best.yaml, plots")
    parser.add_argument("--study", default=None, help="study name (default: the space file's name)")
    parser.add_argument(
        "--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="overrides every trial shares"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    parser.add_argument("--heartbeat", type=int, default=30, help="seconds between a trial's heartbeats (default 30)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each trial's checkpoints when it ends")
    return parser


def main(argv: list[str] | None = None) -> int:
    from bertapprox_hf.training.config import ConfigError

    args = build_parser().parse_args(argv)
    args.argv = argv
    args.study = args.study or Path(args.space).stem
    if args.trials < 1 or args.heartbeat < 1:
        print(f"{PROG}: error: --trials and --heartbeat must be positive", file=sys.stderr)
        return 2
    try:
        run_study(args)
    except (ConfigError, SpaceError, FileNotFoundError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
