"""Bad input on the command line: one line ``bertapprox: error: ...`` and exit code 2 for every user error, a
defined result for records that are skipped or cleaned (and counted), a traceback only for bugs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from bertapprox_hf.cli import main
from bertapprox_hf.errors import UserError, run_main, unreadable_path_error
from bertapprox_hf.model.integrity import check_local_folder
from bertapprox_hf.pipeline.corpus import iter_records
from bertapprox_hf.pipeline.targets import build_targets, load_targets

from .conftest import REPO, trained_student

GOOD = [{"id": f"d{i}", "text": f"the bank raised its rate number {i}"} for i in range(6)]
BAD_RECORDS = [
    {"id": "n1", "text": None},
    {"id": "n2", "text": 42},
    {"id": "s1", "text": "broken \ud800 surrogate"},  # json.dumps writes it as an escape: valid JSON, invalid UTF-16
]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def one_error_line(capsys, code) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bertapprox: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def student_dir(tiny_vocab, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("bad-input-student")
    trained_student(tiny_vocab).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def dirty_corpus(tmp_path) -> str:
    return write_jsonl(tmp_path / "dirty.jsonl", GOOD[:3] + BAD_RECORDS + GOOD[3:])


# --- records skipped or cleaned, and counted -------------------------------------------------------------
def test_reader_skips_non_string_texts_and_cleans_lone_surrogates(dirty_corpus, caplog):
    with caplog.at_level(logging.WARNING, logger="bertapprox_hf.pipeline.corpus"):
        records = list(iter_records(dirty_corpus))
    assert [r["id"] for r in records] == [r["id"] for r in GOOD[:3]] + ["s1"] + [r["id"] for r in GOOD[3:]]
    assert records[3]["text"] == "broken \ufffd surrogate"
    assert "2 records skipped: text is not a string (line 4, 5)" in caplog.text
    assert "1 records cleaned: lone surrogates replaced by U+FFFD (line 6)" in caplog.text


def test_targets_build_reads_a_dirty_corpus(dirty_corpus, tiny_teacher_path, tmp_path, capsys, caplog):
    out = tmp_path / "targets"
    code = main(["targets", "build", "--corpus", dirty_corpus, "--teacher", tiny_teacher_path, "--out", str(out),
                 "--device", "cpu"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 records skipped" in caplog.text and "1 records cleaned" in caplog.text  # stderr outside pytest
    assert json.loads(captured.out.splitlines()[-1])["num_records"] == len(GOOD) + 1
    assert "broken \ufffd surrogate" in load_targets(str(out))["text"]


def test_vocab_build_reads_a_dirty_corpus(dirty_corpus, tiny_teacher_path, tmp_path, capsys, caplog):
    code = main(["vocab", "build", "--corpus", dirty_corpus, "--teacher", tiny_teacher_path, "--out",
                 str(tmp_path / "vocab"), "--min-count", "1", "--device", "cpu"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 records skipped" in caplog.text


def test_index_reads_a_dirty_corpus_and_refuses_duplicate_ids(student_dir, dirty_corpus, tmp_path, capsys, caplog):
    pytest.importorskip("faiss")
    out = tmp_path / "index"
    code = main(["index", "--model", student_dir, "--corpus", dirty_corpus, "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["documents"] == len(GOOD) + 1 and "2 records skipped" in caplog.text

    repeated = write_jsonl(tmp_path / "dup.jsonl", GOOD + [GOOD[1], GOOD[4], GOOD[1]])
    code = main(["index", "--model", student_dir, "--corpus", repeated, "--out", str(tmp_path / "i2")])
    line = one_error_line(capsys, code)
    assert "2 document ids occur more than once: 'd1', 'd4'" in line and "--dedupe-ids" in line
    assert not (tmp_path / "i2").exists()
    code = main(["index", "--model", student_dir, "--corpus", repeated, "--out", str(tmp_path / "i3"), "--dedupe-ids"])
    assert code == 0 and json.loads(capsys.readouterr().out)["documents"] == len(GOOD)
    assert json.loads((tmp_path / "i3" / "meta.json").read_text())["build"]["duplicate_ids_dropped"] == 3


def test_search_refuses_duplicate_query_ids_and_non_utf8_queries(student_dir, tmp_path, capsys):
    pytest.importorskip("faiss")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", GOOD)
    assert main(["index", "--model", student_dir, "--corpus", corpus, "--out", str(tmp_path / "index")]) == 0
    capsys.readouterr()
    queries = tmp_path / "queries.tsv"
    queries.write_text("q1\tbank rate\nq2\tinterest\nq1\tsomething else\n", encoding="utf-8")
    search = ["search", "--index", str(tmp_path / "index"), "--queries", str(queries)]
    line = one_error_line(capsys, main([*search, "--output", str(tmp_path / "run.trec")]))
    assert "queries.tsv: 1 query ids occur more than once: 'q1'" in line
    assert main([*search, "--output", str(tmp_path / "run.json"), "--dedupe-ids"]) == 0
    assert sorted(json.loads((tmp_path / "run.json").read_text())) == ["q1", "q2"]
    capsys.readouterr()
    queries.write_bytes("q1\tcaf\xe9\n".encode("latin-1"))
    line = one_error_line(capsys, main([*search, "--output", str(tmp_path / "run2.trec")]))
    assert "queries.tsv:1: not valid UTF-8" in line


# --- files that are missing, damaged, or not what they claim -------------------------------------------
def test_model_folder_without_config_or_a_link_loop_is_said_plainly(student_dir, tmp_path, capsys):
    folder = shutil.copytree(student_dir, tmp_path / "student")
    os.remove(folder / "config.json")
    line = one_error_line(capsys, main(["encode", "--model", str(folder), "hello"]))
    assert f"not a saved model folder: {folder} has no config.json" in line
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    line = one_error_line(capsys, main(["encode", "--model", str(loop), "hello"]))
    assert "Too many levels of symbolic links" in line and "model_type" not in line


def test_non_utf8_vocabulary_is_named(student_dir, tmp_path, capsys):
    folder = shutil.copytree(student_dir, tmp_path / "student")
    vocab = folder / "vocab.txt"
    vocab.write_bytes(vocab.read_bytes().replace(b"bank", b"b\xe9nk", 1))
    line = one_error_line(capsys, main(["encode", "--model", str(folder), "hello"]))
    assert f"vocabulary file {vocab} is not valid UTF-8" in line


def test_damaged_model_folder_is_one_line(student_dir, tmp_path, capsys):
    folder = shutil.copytree(student_dir, tmp_path / "student")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "normalize": False}))
    line = one_error_line(capsys, main(["model", "info", str(folder)]))
    assert "config.json: normalize is False (saved as True)" in line


def test_truncated_shard_is_named_and_targets_build_repairs_it(tiny_teacher, tiny_teacher_path, tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", GOOD * 3)
    out = tmp_path / "targets"
    build_targets(corpus, tiny_teacher, str(out), shard_size=5, show_progress_bar=False)
    shard = out / "shard_00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ValueError, match="shard shard_00001.parquet is damaged"):
        load_targets(str(out))
    code = main(["targets", "build", "--corpus", corpus, "--teacher", tiny_teacher_path, "--out", str(out),
                 "--shard-size", "5", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(load_targets(str(out))) == 18


def test_permission_denied_is_said_as_such(tmp_path, monkeypatch, capsys):
    path = tmp_path / "locked" / "corpus.jsonl"

    def denied(target, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(os, "stat", denied)
    error = unreadable_path_error(path, "corpus file")
    with pytest.raises(PermissionError, match="permission denied: cannot open the model folder"):
        check_local_folder(str(tmp_path / "locked" / "student"))
    monkeypatch.undo()
    assert isinstance(error, PermissionError) and str(error).startswith("permission denied: cannot read corpus file")
    if os.geteuid() != 0:  # root reads any file: the real case only runs as another user
        path.parent.mkdir()
        path.write_text("{}")
        path.chmod(0)
        line = one_error_line(capsys, main(["vocab", "build", "--corpus", str(path), "--out", str(tmp_path / "v")]))
        assert "ermission denied" in line


# --- the contract of run_main --------------------------------------------------------------------------
def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
    def raising(error):
        def run():
            raise error

        return run

    for error in (UserError("bad thing"), FileNotFoundError(2, "corpus file not found: x"), ValueError("a\nb")):
        assert run_main(raising(error)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bertapprox: error: ") and "Errno" not in err
    with pytest.raises(TypeError):
        run_main(raising(TypeError("a bug")))


def test_the_module_entry_point_exits_with_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "bertapprox_hf.cli", "encode", "--model", str(tmp_path / "nowhere"), "x"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"bertapprox: error: model folder not found: {tmp_path / 'nowhere'}"
