"""The bertapprox command line: vocab build → model init → model info / encode."""

from __future__ import annotations

import json
import shutil
import subprocess

from bertapprox_hf.cli import main
from bertapprox_hf.pipeline.vocabulary import Vocabulary


def test_entry_point_is_installed():
    assert shutil.which("bertapprox"), "pip install -e . installs the bertapprox command"
    result = subprocess.run(["bertapprox", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "vocab" in result.stdout


def test_vocab_build_then_model_init(tiny_teacher_path, train_sample_files, tmp_path, capsys):
    vocab_dir, model_dir = tmp_path / "vocab", tmp_path / "model"
    code = main(
        ["vocab", "build", "--corpus", *train_sample_files[:2], "--teacher", tiny_teacher_path,
         "--out", str(vocab_dir), "--max-per-source", "100", "--min-count", "2", "--max-words", "50",
         "--max-ngrams", "20", "--max-skipgrams", "10", "--no-drop-stopword-edges"]
    )  # fmt: skip
    assert code == 0
    vocabulary = Vocabulary.load(str(vocab_dir))
    assert vocabulary.metadata["corpus"]["texts"] == 200
    assert vocabulary.metadata["settings"]["drop_stopword_edges"] is False
    assert not (vocab_dir / ".embedding-cache").exists()
    capsys.readouterr()

    assert main(["model", "init", "--vocab", str(vocab_dir), "--out", str(model_dir), "--num-heads", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["trainable_parameters"] > 0
    assert main(["model", "info", str(model_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entry_table"] == [len(vocabulary), 32]
    assert main(["encode", "--model", str(model_dir), "the bank rate"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["bag"][:2] == ["the", "bank"] and len(line["embedding"]) == 32


def test_errors_name_the_missing_file(tmp_path, capsys):
    assert main(["vocab", "info", str(tmp_path)]) == 2
    assert "vocabulary.safetensors" in capsys.readouterr().err
    code = main(["vocab", "build", "--corpus", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "v")])
    assert code == 2
    assert "nope.jsonl" in capsys.readouterr().err
