"""A run's folder stays consistent across failures: the metrics log of a resumed run has no duplicate records, and a
save that fails on a full disk leaves no partial folder and says what happened."""

from __future__ import annotations

import errno
import json
import os

import pytest

from bertapprox_hf.model.modeling_bertapprox import BertApproxModel
from bertapprox_hf.training import Trainer
from bertapprox_hf.training.recovery import staged_folder, truncate_metrics_log

from .test_training import inputs, tiny_config  # noqa: F401 (the module's fixture, reused)


def read_log(path) -> list[tuple[str, int]]:
    return [(record["event"], record["step"]) for record in map(json.loads, path.read_text().splitlines())]


def test_resumed_run_logs_each_step_once(inputs, tmp_path):  # noqa: F811
    settings = ("optim.max_steps=12", "run.checkpoint_every=5", "eval.every_steps=6")
    interrupted = Trainer(tiny_config(inputs, tmp_path / "run", *settings))
    assert interrupted.train(stop_after=7) == {"stopped_at": 7}  # logged up to step 6, last checkpoint at 5
    assert ("train", 6) in read_log(tmp_path / "run" / "metrics.jsonl")
    resumed = Trainer(tiny_config(inputs, tmp_path / "run", *settings))
    assert resumed.resume() and resumed.state.step == 5
    resumed.train()
    log = read_log(tmp_path / "run" / "metrics.jsonl")
    assert len(log) == len(set(log)), log
    assert [step for event, step in log if event == "train"] == [2, 4, 6, 8, 10, 12]
    assert [step for event, step in log if event == "eval"] == [0, 6, 12]


def test_truncating_the_log_drops_later_steps_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "train", "step": step}) for step in (2, 4, 6, 8)]
    path.write_text("\n".join(lines) + '\n{"event": "tra')
    assert truncate_metrics_log(str(path), 4) == 3
    assert read_log(path) == [("train", 2), ("train", 4)]
    assert truncate_metrics_log(str(tmp_path / "none.jsonl"), 4) == 0


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("Error while serializing: IoError(StorageFull)")],
)
def test_full_disk_while_saving_the_best_model_leaves_no_partial_folder(inputs, tmp_path, monkeypatch, failure):  # noqa: F811
    def fill_the_disk(self, folder, *args, **kwargs):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
            handle.write("{")  # a partial write, then the disk is full
        raise failure

    trainer = Trainer(tiny_config(inputs, tmp_path / "run", "optim.max_steps=4"))
    monkeypatch.setattr(BertApproxModel, "save_pretrained", fill_the_disk)
    with pytest.raises(OSError, match="no space left on the device while writing the best model") as caught:
        trainer.train()
    assert "--resume" in str(caught.value)
    assert not (tmp_path / "run" / "best.tmp").exists()


def test_staged_folder_keeps_other_errors_as_they_are(tmp_path):
    tmp = tmp_path / "x.tmp"
    with pytest.raises(KeyError), staged_folder(str(tmp), "something"):
        tmp.mkdir()
        raise KeyError("a bug")
    assert not tmp.exists()
    with (
        pytest.raises(PermissionError, match="permission denied while writing something"),
        staged_folder(str(tmp), "something"),
    ):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
