"""scripts/gpu_bundle.py: the teacher and corpus travel to a GPU machine in one small folder and come back whole."""

from __future__ import annotations

import json
import subprocess
import tarfile

import numpy as np
import pytest
import torch
from safetensors.torch import load, load_file

from bertapprox_hf.pipeline.teacher import Teacher

from .conftest import REPO, load_script, make_tiny_teacher_folder


@pytest.fixture(scope="module")
def gpu_bundle():
    return load_script("gpu_bundle")


@pytest.fixture
def data_folder(gpu_bundle, train_sample_files, tmp_path):
    """The shared data layout, each corpus file holding real training texts (and odd Unicode)."""
    lines = [line for path in train_sample_files for line in open(path, encoding="utf-8")][:200]
    lines.append(json.dumps({"id": "odd", "text": "naïve café ☕ \u200b straße"}, ensure_ascii=False) + "\n")
    for index, name in enumerate(gpu_bundle.CORPUS_FILES):
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines[index::3]), encoding="utf-8")
    (tmp_path / "data" / "msmarco-passage-dl19" / "queries.jsonl").write_text('{"id": "q", "text": "never sent"}\n')
    return tmp_path / "data"


def test_pack_then_unpack_gives_the_data_and_a_float32_teacher(gpu_bundle, data_folder, tmp_path):
    source = make_tiny_teacher_folder(tmp_path / "all-tiny-teacher")
    written = gpu_bundle.pack(str(source), str(data_folder), str(tmp_path / "bundle"))
    assert written["teacher"] == "all-tiny-teacher" and 0 < written["mb"] < 1
    with tarfile.open(tmp_path / "bundle" / "bundle.tar.xz") as archive:
        packed = load(archive.extractfile("teacher/model.safetensors").read())
    assert {t.dtype for t in packed.values() if t.is_floating_point()} == {torch.float16}

    data, teacher = gpu_bundle.unpack(str(tmp_path / "bundle"), str(tmp_path / "there"))
    for name in gpu_bundle.CORPUS_FILES:
        assert (tmp_path / "there" / "data" / name).read_bytes() == (data_folder / name).read_bytes()
    assert not (tmp_path / "there" / "data" / "msmarco-passage-dl19" / "queries.jsonl").exists(), "documents only"
    assert teacher.endswith("all-tiny-teacher"), "the folder keeps the model's name (artifacts record it)"
    original, rebuilt = load_file(str(source / "model.safetensors")), load_file(f"{teacher}/model.safetensors")
    assert rebuilt.keys() == original.keys()
    for key, tensor in original.items():
        assert rebuilt[key].dtype == tensor.dtype
        torch.testing.assert_close(rebuilt[key], tensor.half().to(tensor.dtype), rtol=0, atol=0)

    texts = ["what is the interest rate", "naïve café ☕", ""]
    before = Teacher.from_pretrained(str(source), device="cpu").encode(texts)
    after = Teacher.from_pretrained(teacher, device="cpu").encode(texts)
    assert after.dtype == np.float32
    cosine = (before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    assert cosine.min() > 0.9999


def test_bad_input_is_refused(gpu_bundle, data_folder, tmp_path):
    source = make_tiny_teacher_folder(tmp_path / "teacher")
    with pytest.raises(ValueError, match="more than the 0.01 MiB"):
        gpu_bundle.pack(str(source), str(data_folder), str(tmp_path / "bundle"), limit_mb=0.01)
    gpu_bundle.pack(str(source), str(data_folder), str(tmp_path / "bundle"))
    manifest_path = tmp_path / "bundle" / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["train/msmarco_queries.jsonl"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="msmarco_queries.jsonl in .* does not match its checksum"):
        gpu_bundle.unpack(str(tmp_path / "bundle"), str(tmp_path / "there"))
    (data_folder / "beir" / "scifact" / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="lacks beir/scifact/corpus.jsonl"):
        gpu_bundle.pack(str(source), str(data_folder), str(tmp_path / "bundle"))
    with pytest.raises(FileNotFoundError, match="no bundle.json"):
        gpu_bundle.unpack(str(tmp_path / "nothing"), str(tmp_path / "there"))
    assert gpu_bundle.main(["pack", "--teacher", str(tmp_path / "no-teacher"), "--data", str(data_folder),
                            "--out", str(tmp_path / "b")]) == 1  # fmt: skip


def test_the_bundle_carries_the_makefiles_corpus(gpu_bundle, tmp_path, capsys):
    """The files `make vocab` reads are the ones that travel (and that gpu_session.sh reads there)."""
    plan = subprocess.run(["make", "-n", "-B", "vocab", f"WORK={tmp_path}", "TEACHER=t", "SHARED=/s"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    (build,) = [line for line in plan.splitlines() if line.startswith("bertapprox vocab build")]
    corpus = build.split("--corpus", 1)[1].split()
    assert corpus == [f"/s/data/{name}" for name in gpu_bundle.CORPUS_FILES]
    assert gpu_bundle.main(["corpus", "--data", "/s/data"]) == 0
    assert capsys.readouterr().out.split() == corpus, "gpu_session.sh reads the same list"
