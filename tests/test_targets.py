"""Precomputed teacher targets: parquet shards, resume after a kill, teacher checks, data-parallel builds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertapprox_hf.cli import main
from bertapprox_hf.pipeline.corpus import iter_records
from bertapprox_hf.pipeline.crops import CROP_MARK, source_id
from bertapprox_hf.pipeline.targets import (
    build_targets,
    check_teacher_compatible,
    finalize_targets,
    list_shards,
    load_targets,
    read_manifest,
    targets_columns,
    write_targets,
)
from bertapprox_hf.pipeline.teacher import Teacher

from .conftest import REPO, make_tiny_teacher_folder

MAX_PER_SOURCE = 60
SHARD_SIZE = 25  # 2 sources × 60 records → shards of 25, 25, 25, 25, 20


@pytest.fixture(scope="module")
def corpus(train_sample_files) -> list[str]:
    return train_sample_files[:2]


@pytest.fixture(scope="module")
def records(corpus) -> list[dict]:
    return list(iter_records(corpus, max_per_source=MAX_PER_SOURCE))


def build(corpus, teacher, out, **kwargs) -> dict:
    options = {"shard_size": SHARD_SIZE, "batch_size": 16, "show_progress_bar": False, "max_per_source": MAX_PER_SOURCE}
    return build_targets(corpus, teacher, str(out), **{**options, **kwargs})


@pytest.fixture(scope="module")
def built(corpus, tiny_teacher, tmp_path_factory) -> Path:
    """A finished single-process build (tests that change it work on a copy)."""
    out = tmp_path_factory.mktemp("targets") / "built"
    build(corpus, tiny_teacher, out)
    return out


@pytest.fixture
def copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "copy"))


def contents(dataset) -> tuple[list[str], list[str], np.ndarray]:
    rows = list(dataset)
    embeddings = np.array([row["embedding"] for row in rows], dtype=np.float32)
    return [row["id"] for row in rows], [row["text"] for row in rows], embeddings


def count_encode_calls(monkeypatch, teacher) -> list[list[str]]:
    """Record the texts of each ``teacher.encode`` call."""
    calls: list[list[str]] = []
    encode = teacher.encode

    def counting(texts, *args, **kwargs):
        calls.append(list(texts))
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(teacher, "encode", counting)
    return calls


def assert_same_targets(folder_a, folder_b) -> None:
    ids_a, texts_a, emb_a = contents(load_targets(str(folder_a)))
    ids_b, texts_b, emb_b = contents(load_targets(str(folder_b)))
    assert ids_a == ids_b and texts_a == texts_b
    np.testing.assert_allclose(emb_a, emb_b, atol=1e-3)


def test_build_and_load(built, records, tiny_teacher):
    manifest = read_manifest(str(built))
    assert manifest["format_version"] == 1 and manifest["dtype"] == "float16"
    assert manifest["teacher"] == tiny_teacher.describe()
    assert manifest["shard_size"] == SHARD_SIZE
    assert (manifest["num_shards"], manifest["num_records"]) == (5, 120)
    assert manifest["corpus"]["max_per_source"] == MAX_PER_SOURCE
    assert sorted(os.listdir(built)) == ["manifest.json"] + [f"shard_{i:05d}.parquet" for i in range(5)]

    dataset = load_targets(str(built))
    assert len(dataset) == 120
    assert dataset.features["embedding"].feature.dtype == "float16"
    ids, texts, embeddings = contents(dataset)
    assert ids == [r["id"] for r in records] and texts == [r["text"] for r in records]
    expected = tiny_teacher.encode(texts)
    np.testing.assert_allclose(embeddings, expected, atol=1e-3)

    streamed = load_targets(str(built), streaming=True)
    assert type(streamed).__name__ == "IterableDataset"
    s_ids, s_texts, s_embeddings = contents(streamed)
    assert s_ids == ids and s_texts == texts
    np.testing.assert_array_equal(s_embeddings, embeddings)

    # read whole (as training does): the same rows, also for a selection and for several folders
    c_ids, c_texts, c_embeddings = targets_columns(dataset)
    assert c_ids == ids and c_texts == texts and c_embeddings.dtype == np.float16
    np.testing.assert_array_equal(c_embeddings.astype(np.float32), embeddings)
    chosen = [7, 0, 119, 64]
    picked = targets_columns(dataset.select(chosen))
    assert picked[0] == [ids[i] for i in chosen] and picked[1] == [texts[i] for i in chosen]
    np.testing.assert_array_equal(picked[2].astype(np.float32), embeddings[chosen])
    twice = targets_columns(load_targets([str(built), str(built)]))
    assert twice[1] == texts + texts and twice[2].shape == (240, embeddings.shape[1])


def test_interrupted_build_resumes(copy, built, corpus, tiny_teacher, records, monkeypatch):
    os.remove(copy / "shard_00002.parquet")  # killed while shard 2 was being written
    (copy / "shard_00002.parquet.tmp").write_bytes(b"PAR1 half-written")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["num_shards"], manifest["num_records"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="did not finish"):
        load_targets(str(copy))

    calls = count_encode_calls(monkeypatch, tiny_teacher)
    manifest = build(corpus, tiny_teacher, copy)
    assert calls == [[r["text"] for r in records[50:75]]], "only the missing shard is encoded again"
    assert manifest["num_records"] == 120 and manifest == read_manifest(str(copy))
    assert not list(copy.glob("*.tmp"))
    assert_same_targets(copy, built)

    calls.clear()
    build(corpus, tiny_teacher, copy)  # all done: nothing to encode
    assert calls == []


def test_a_folder_made_before_mixed_precision_was_recorded_resumes(copy, corpus, tiny_teacher, monkeypatch):
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["teacher"]["mixed_precision"]  # the field's absence means float32
    (copy / "manifest.json").write_text(json.dumps(manifest))
    calls = count_encode_calls(monkeypatch, tiny_teacher)
    assert build(corpus, tiny_teacher, copy)["teacher"]["mixed_precision"] == "no"
    assert calls == []


def test_a_folder_is_reused_in_any_precision_but_extended_only_in_its_own(copy, corpus, tiny_teacher, records,
                                                                         monkeypatch):  # fmt: skip
    same_model_bf16 = Teacher(tiny_teacher.model, tiny_teacher.tokenizer, tiny_teacher.pooling,
                              tiny_teacher.name_or_path, "cpu", mixed_precision="bf16")  # fmt: skip
    calls = count_encode_calls(monkeypatch, same_model_bf16)
    manifest = build(corpus, same_model_bf16, copy)  # complete: nothing to encode, so nothing is mixed
    assert calls == [] and manifest["num_records"] == 120
    assert read_manifest(str(copy))["teacher"]["mixed_precision"] == "no", "the folder keeps its own precision"

    (copy / "shard_00002.parquet").unlink()
    with pytest.raises(ValueError, match="mixed_precision is 'no' there but 'bf16' now.*shard 2 must be encoded"):
        build(corpus, same_model_bf16, copy)  # one folder, one precision: resume with the one it was made with
    assert calls == [] and read_manifest(str(copy))["teacher"]["mixed_precision"] == "no"
    float32_calls = count_encode_calls(monkeypatch, tiny_teacher)
    assert build(corpus, tiny_teacher, copy)["num_records"] == 120
    assert float32_calls == [[r["text"] for r in records[50:75]]]


def test_corrupted_shard_is_redone(copy, built, corpus, tiny_teacher, records, monkeypatch):
    shard = copy / "shard_00001.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    calls = count_encode_calls(monkeypatch, tiny_teacher)
    build(corpus, tiny_teacher, copy)
    assert calls == [[r["text"] for r in records[25:50]]]
    assert_same_targets(copy, built)


def test_changed_corpus_redoes_only_changed_shards(copy, corpus, tiny_teacher, monkeypatch):
    calls = count_encode_calls(monkeypatch, tiny_teacher)
    manifest = build(corpus, tiny_teacher, copy, max_per_source=50)  # 100 records: shards 2 and 3 change
    assert len(calls) == 2
    assert (manifest["num_shards"], manifest["num_records"]) == (4, 100)
    assert not (copy / "shard_00004.parquet").exists(), "a shard past the end of the corpus is removed"
    ids, _, _ = contents(load_targets(str(copy)))
    assert ids == [r["id"] for r in iter_records(corpus, max_per_source=50)]


def test_other_teacher_or_shard_size_refused(copy, corpus, tiny_teacher, tmp_path):
    other = Teacher.from_pretrained(
        str(make_tiny_teacher_folder(tmp_path / "cls-teacher", pooling="cls", normalize=False)), device="cpu"
    )
    before = (copy / "manifest.json").read_text()
    with pytest.raises(ValueError, match="another teacher") as error:
        build(corpus, other, copy)
    for detail in ("pooling is 'mean' there but 'cls' now", "normalize is True there but False now", "cls-teacher"):
        assert detail in str(error.value)
    with pytest.raises(ValueError, match="shard_size 25 .* shard_size 30"):
        build(corpus, tiny_teacher, copy, shard_size=30)
    assert (copy / "manifest.json").read_text() == before

    stray = tmp_path / "stray"
    stray.mkdir()
    shutil.copy(copy / "shard_00000.parquet", stray)
    with pytest.raises(ValueError, match="no manifest.json"):
        build(corpus, tiny_teacher, stray)


def test_check_teacher_compatible():
    hub = {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384, "pooling": "mean", "normalize": True}
    check_teacher_compatible(hub, dict(hub), "t")
    for path in (
        "/home/me/.cache/bertapprox/teachers/all-MiniLM-L6-v2",
        "/hf/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
    ):
        check_teacher_compatible({**hub, "name_or_path": path}, hub, "t")
        check_teacher_compatible(hub, {**hub, "name_or_path": path + "/"}, "t")
    for key, value in (("dim", 768), ("pooling", "cls"), ("normalize", False), ("name_or_path", "x/all-mpnet-base-v2")):
        with pytest.raises(ValueError, match=rf"^teacher targets in /data/t was made by another teacher: .*{key} is"):
            check_teacher_compatible({**hub, key: value}, hub, "teacher targets in /data/t")
        with pytest.raises(ValueError) as error:
            check_teacher_compatible({**hub, key: value}, hub, "t")
        assert repr(value) in str(error.value) and repr(hub[key]) in str(error.value)
    check_teacher_compatible({**hub, "max_length": 128}, {**hub, "max_length": 256}, "t")  # truncation may differ


def test_data_parallel_split(built, corpus, tiny_teacher, tmp_path, monkeypatch):
    out = tmp_path / "parallel"
    calls = count_encode_calls(monkeypatch, tiny_teacher)
    manifest = build(corpus, tiny_teacher, out, process_index=0, num_processes=2)
    assert "num_records" not in manifest and len(calls) == 3  # shards 0, 2, 4
    with pytest.raises(ValueError, match="did not finish"):
        load_targets(str(out))
    with pytest.raises(ValueError, match=r"missing: \[1, 3\]"):
        finalize_targets(str(out))
    build(corpus, tiny_teacher, out, process_index=1, num_processes=2)
    assert len(calls) == 5
    manifest = finalize_targets(str(out))
    assert (manifest["num_shards"], manifest["num_records"]) == (5, 120)
    assert_same_targets(out, built)


def test_two_processes_with_torchrun(built, corpus, tiny_teacher_path, tmp_path):
    out = tmp_path / "torchrun"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "bertapprox_hf.cli", "targets", "build", "--corpus", *corpus, "--teacher", tiny_teacher_path,
        "--out", str(out), "--shard-size", str(SHARD_SIZE), "--max-per-source", str(MAX_PER_SOURCE),
        "--batch-size", "16",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # stuck (e.g. rendezvous): end torchrun and its workers
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    assert "process 0/2: encoded 3 shards [0, 2, 4]" in stderr
    assert "process 1/2: encoded 2 shards [1, 3]" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["num_records"] == 120
    manifest = read_manifest(str(out))
    assert (manifest["num_shards"], manifest["num_records"]) == (5, 120)
    assert_same_targets(out, built)


def test_load_errors(copy, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_targets(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_targets(str(tmp_path / "empty"))

    (tmp_path / "empty" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        read_manifest(str(tmp_path / "empty"))

    manifest = read_manifest(str(copy))
    shutil.copy(copy / "manifest.json", tmp_path / "empty" / "manifest.json")
    with pytest.raises(FileNotFoundError, match="no shard"):
        load_targets(str(tmp_path / "empty"))

    os.remove(copy / "shard_00003.parquet")
    with pytest.raises(ValueError, match="run the build again"):
        load_targets(str(copy))
    assert manifest["num_shards"] == 5


def test_cli_build_and_info(corpus, tiny_teacher_path, built, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        ["targets", "build", "--corpus", *corpus, "--teacher", tiny_teacher_path, "--out", str(out),
         "--shard-size", str(SHARD_SIZE), "--max-per-source", str(MAX_PER_SOURCE), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["num_records"] == 120
    assert_same_targets(out, built)
    assert main(["targets", "info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_shards"] == 5

    fast = tmp_path / "cli-bf16"
    code = main(
        ["targets", "build", "--corpus", *corpus, "--teacher", tiny_teacher_path, "--out", str(fast),
         "--max-per-source", "10", "--device", "cpu", "--mixed-precision", "bf16"]
    )  # fmt: skip
    assert code == 0 and read_manifest(str(fast))["teacher"]["mixed_precision"] == "bf16"
    capsys.readouterr()

    code = main(["targets", "build", "--corpus", str(tmp_path / "nope.jsonl"), "--teacher", "./no-teacher",
                 "--out", str(tmp_path / "x")])  # fmt: skip
    assert code == 2 and "nope.jsonl" in capsys.readouterr().err
    assert main(["targets", "info", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("first_crop", [0, 1])
def test_cli_builds_crops_of_the_long_texts(corpus, records, tiny_teacher_path, tmp_path, capsys, first_crop):
    out = tmp_path / "crops"
    code = main(
        ["targets", "build", "--corpus", *corpus, "--teacher", tiny_teacher_path, "--out", str(out),
         "--max-per-source", str(MAX_PER_SOURCE), "--crops", "2", "--crop-min-words", "20", "--device", "cpu",
         "--first-crop", str(first_crop)]
    )  # fmt: skip
    assert code == 0
    manifest = read_manifest(str(out))
    assert manifest["corpus"]["crops_per_text"] == 2 and manifest["corpus"]["crop_min_words"] == 20
    assert manifest["corpus"]["first_crop"] == first_crop
    long_ids = [r["id"] for r in records if len(r["text"].split()) >= 20]
    ids, texts, _ = targets_columns(load_targets(str(out)))
    assert long_ids and ids == [f"{i}{CROP_MARK}{n}" for i in long_ids for n in range(first_crop, first_crop + 2)]
    whole = {r["id"]: " ".join(r["text"].split()) for r in records}
    assert all(text in whole[source_id(i)] for i, text in zip(ids, texts, strict=True))


def test_reused_records_are_copied_and_only_the_others_encoded(built, corpus, records, tiny_teacher, tmp_path,
                                                               monkeypatch):  # fmt: skip
    sample = tmp_path / "sample"
    chosen = records[::3]
    embeddings = tiny_teacher.encode([r["text"] for r in chosen])
    write_targets(str(sample), chosen, embeddings, tiny_teacher, {"sample": "every third record"}, shard_size=10)
    assert read_manifest(str(sample))["num_records"] == len(chosen) and len(list_shards(str(sample))) > 1
    calls = count_encode_calls(monkeypatch, tiny_teacher)
    build(corpus, tiny_teacher, tmp_path / "reusing", reuse=[str(sample)])
    encoded = [text for call in calls for text in call]
    assert sorted(encoded) == sorted(r["text"] for r in records if r not in chosen)
    assert_same_targets(tmp_path / "reusing", built)


def test_a_reused_record_must_have_the_same_text(built, corpus, records, tiny_teacher, tmp_path, monkeypatch):
    sample = tmp_path / "sample"
    changed = [{"id": records[0]["id"], "text": records[0]["text"] + " changed"}]
    write_targets(str(sample), changed, tiny_teacher.encode(["something else"]), tiny_teacher, {})
    calls = count_encode_calls(monkeypatch, tiny_teacher)
    build(corpus, tiny_teacher, tmp_path / "reusing", reuse=[str(sample)])
    assert sum(len(call) for call in calls) == len(records)
    assert_same_targets(tmp_path / "reusing", built)


def test_reuse_of_another_teacher_or_precision_is_refused(corpus, records, tiny_teacher, tmp_path):
    sample = tmp_path / "sample"
    write_targets(str(sample), records[:4], tiny_teacher.encode([r["text"] for r in records[:4]]), tiny_teacher, {})
    bf16 = Teacher(tiny_teacher.model, tiny_teacher.tokenizer, tiny_teacher.pooling, tiny_teacher.name_or_path,
                   "cpu", mixed_precision="bf16")  # fmt: skip
    with pytest.raises(ValueError, match="cannot reuse .*mixed_precision is 'no' there but 'bf16' here"):
        build(corpus, bf16, tmp_path / "out", reuse=[str(sample)])
    unfinished = read_manifest(str(sample))
    del unfinished["num_records"]
    (sample / "manifest.json").write_text(json.dumps(unfinished))
    with pytest.raises(ValueError, match="did not finish"):
        build(corpus, tiny_teacher, tmp_path / "out2", reuse=[str(sample)])


def test_write_targets_replaces_only_a_folder_it_wrote(built, copy, records, tiny_teacher, tmp_path):
    rows = tiny_teacher.encode([r["text"] for r in records[:5]])
    sample = tmp_path / "sample"
    write_targets(str(sample), records[:5], rows, tiny_teacher, {}, shard_size=2)
    write_targets(str(sample), records[:3], rows[:3], tiny_teacher, {}, shard_size=2)  # a rerun replaces it
    assert read_manifest(str(sample))["num_records"] == 3 and len(list_shards(str(sample))) == 2
    before = sorted(os.listdir(copy))
    with pytest.raises(ValueError, match="not written by write_targets"):
        write_targets(str(copy), records[:3], rows[:3], tiny_teacher, {})
    assert sorted(os.listdir(copy)) == before
    assert_same_targets(copy, built)


def test_write_targets_refuses_embeddings_of_the_wrong_shape(records, tiny_teacher, tmp_path):
    with pytest.raises(ValueError, match="need embeddings of shape"):
        write_targets(str(tmp_path / "x"), records[:3], np.zeros((2, tiny_teacher.dim)), tiny_teacher, {})
    with pytest.raises(ValueError, match="need embeddings of shape"):
        write_targets(str(tmp_path / "x"), [], np.zeros((0, tiny_teacher.dim)), tiny_teacher, {})
