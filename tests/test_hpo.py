"""The hyperparameter study on the tiny teacher: trials, pruning, outputs, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from benchmarks.hpo import main
from benchmarks.hpo_space import SpaceError, load_space

from .conftest import REPO
from .research_fixtures import (  # noqa: F401 (fixtures)
    tiny_corpus_file,
    tiny_own_vocab,
    tiny_training_config,
    tiny_training_inputs,
)

SPACE = {
    "metric": "cosine_all",
    "pruner": {"startup_trials": 1, "warmup_steps": 0},
    "params": {
        "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "model.intermediate_size": {"choices": [16, 48]},
    },
}


def write_space(path, space=SPACE) -> str:
    path.write_text(yaml.safe_dump(space))
    return str(path)


def study_args(config: str, space: str, out, trials: int, *extra: str) -> list[str]:
    return ["--config", config, "--space", space, "--trials", str(trials), "--out", str(out), "--heartbeat", "1",
            *extra]  # fmt: skip


def test_a_tiny_study_writes_its_best_config_and_plots(tiny_training_inputs, tmp_path):  # noqa: F811
    from bertapprox_hf.training import load_config

    config = tiny_training_config(tiny_training_inputs, tmp_path / "train.yaml")
    out = tmp_path / "study"
    assert main(study_args(config, write_space(tmp_path / "space.yaml"), out, 3)) == 0
    results = json.loads((out / "study.json").read_text())
    assert results["finished"] == 3 and len(results["trials"]) == 3
    for trial in results["trials"]:
        assert trial["intermediate"], "each evaluation is reported"
        assert 1e-4 <= trial["params"]["optim.lr"] <= 1e-2 and trial["params"]["model.intermediate_size"] in (16, 48)
        if trial["state"] == "COMPLETE":
            log = [json.loads(line) for line in open(os.path.join(trial["output_dir"], "metrics.jsonl"))]
            best = max(r["cosine_all"] for r in log if r["event"] == "eval")
            assert trial["value"] == pytest.approx(best, abs=1e-4)  # eval.min_delta
    best = results["best"]
    assert best["value"] == max(t["value"] for t in results["trials"] if t["state"] == "COMPLETE")
    assert not os.path.isabs(yaml.safe_load((out / "best.yaml").read_text())["base"]), "it moves with its config"
    loaded = load_config(str(out / "best.yaml"))
    assert loaded.optim.lr == pytest.approx(best["params"]["optim.lr"])
    assert loaded.model.intermediate_size == best["params"]["model.intermediate_size"]
    assert loaded.optim.batch_size == 32  # the rest comes from the config file
    for name in ("history.png", "intermediate.png", "study.md"):
        assert (out / name).is_file(), name
    assert not any((out / "trials").glob("*/checkpoints")), "checkpoints are removed when a trial ends"
    # rerunning a finished study runs nothing more
    assert main(study_args(config, str(tmp_path / "space.yaml"), out, 3)) == 0
    assert len(json.loads((out / "study.json").read_text())["trials"]) == 3


def test_weak_trials_are_pruned(tiny_training_inputs, tmp_path):  # noqa: F811
    """A learning rate far too small stays near the untrained baseline: it is stopped below the median of the
    trial before it at the same step."""
    from benchmarks.hpo import build_parser, open_study

    config = tiny_training_config(tiny_training_inputs, tmp_path / "train.yaml", optim__epochs=2)
    space_file = write_space(tmp_path / "space.yaml", {"pruner": {"startup_trials": 1},
                             "params": {"optim.lr": {"choices": [0.01, 1.0e-9]}}})  # fmt: skip
    out = tmp_path / "study"
    out.mkdir()
    args = build_parser().parse_args(study_args(config, space_file, out, 2))
    args.study = "space"
    study = open_study(args, load_space(space_file), out)
    study.enqueue_trial({"optim.lr": 0.01})
    study.enqueue_trial({"optim.lr": 1.0e-9})
    assert main(study_args(config, space_file, out, 2)) == 0
    good, tiny = json.loads((out / "study.json").read_text())["trials"]
    assert good["state"] == "COMPLETE" and good["params"]["optim.lr"] == 0.01
    assert tiny["state"] == "PRUNED" and tiny["params"]["optim.lr"] == 1.0e-9
    assert len(tiny["intermediate"]) < len(good["intermediate"])


def test_the_study_resumes_after_a_kill(tiny_training_inputs, tmp_path):  # noqa: F811
    import optuna

    # trials of several seconds, so that the kill finds one running on any machine
    config = tiny_training_config(tiny_training_inputs, tmp_path / "train.yaml", optim__epochs=15)
    # no pruning: a pruned trial ends within a second, too soon for the kill to find it running
    space = write_space(tmp_path / "space.yaml", {**SPACE, "pruner": {"startup_trials": 10}})
    out = tmp_path / "study"
    command = [sys.executable, "-m", "benchmarks.hpo", *study_args(config, space, out, 4)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    optuna.storages.RDBStorage(storage)  # the tables made here: the two processes never both create them
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    before = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline and process.poll() is None:
            time.sleep(0.1)
            if not (out / "study.db").is_file():
                continue
            try:
                trials = optuna.load_study(study_name="space", storage=storage).trials
            except Exception:  # noqa: BLE001 - the study's tables are being created by the other process
                continue
            if not any(t.state.is_finished() for t in trials):
                continue
            process.send_signal(signal.SIGSTOP)  # frozen, so a trial seen running is still running when killed
            try:
                trials = optuna.load_study(study_name="space", storage=storage).trials
            except Exception:  # noqa: BLE001 - frozen while it held the database's lock: let it go on, look again
                process.send_signal(signal.SIGCONT)
                continue
            finished = [t for t in trials if t.state.is_finished()]
            running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
            if finished and running:
                before = {t.number: t.value for t in finished}
                process.send_signal(signal.SIGKILL)
                break
            process.send_signal(signal.SIGCONT)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert before is not None, f"the study did not get under way: {process.stderr.read().decode()[-2000:]}"
    killed = next(t for t in optuna.load_study(study_name="space", storage=storage).trials if t.state.name == "RUNNING")

    assert main(study_args(config, space, out, 4)) == 0
    results = json.loads((out / "study.json").read_text())
    by_number = {t["number"]: t for t in results["trials"]}
    for number, value in before.items():
        assert by_number[number]["value"] == value, "finished trials are kept as they were"
    assert by_number[killed.number]["state"] == "FAIL"
    retry = next(t for t in results["trials"] if t.get("retry_of") == killed.number)
    assert retry["params"] == killed.params and retry["output_dir"] == killed.user_attrs["output_dir"]
    assert retry["state"] in ("COMPLETE", "PRUNED")
    assert results["finished"] == 4


def test_bad_search_spaces_name_the_key(tmp_path):
    cases = [
        ({"params": {"optim.lr": {"low": 1, "high": 0.1}}}, "low"),
        ({"params": {"optim.lr": {"low": 0, "high": 1, "log": True}}}, "log range"),
        ({"params": {"optim.lr": [1, 2]}}, "params.optim.lr"),
        ({"params": {}}, "params"),
        ({"params": {"x": {"choices": []}}}, "choices"),
        ({"parms": {}}, "unknown keys"),
    ]
    for space, message in cases:
        with pytest.raises(SpaceError, match=message):
            load_space(write_space(tmp_path / "space.yaml", space))
    kinds = load_space(write_space(tmp_path / "space.yaml")).params
    assert kinds["optim.lr"].kind == "float" and kinds["model.intermediate_size"].kind == "categorical"


def test_an_unknown_config_key_stops_the_study_before_it_starts(tiny_training_inputs, tmp_path, capsys):  # noqa: F811
    config = tiny_training_config(tiny_training_inputs, tmp_path / "train.yaml")
    space = write_space(tmp_path / "space.yaml", {"params": {"optim.learning_rate": {"low": 0.1, "high": 1.0}}})
    assert main(study_args(config, space, tmp_path / "study", 2)) == 2
    assert "optim.learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "study" / "study.db").exists()


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks" / "hpo_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_search_space_names_real_config_keys(path):
    import dataclasses

    from bertapprox_hf.training.config import TrainConfig

    config = TrainConfig()
    for name in load_space(str(path)).params:
        section, key = name.split(".")
        assert key in {f.name for f in dataclasses.fields(getattr(config, section))}, name
