"""ONNX and TorchScript exports: parity with PyTorch on real text, dynamic axes, the runtimes, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from bertapprox_hf.cli import main
from bertapprox_hf.export import OnnxStudent, TorchScriptStudent, export_model

from .conftest import TRAIN, read_texts, trained_student

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    """Real queries, passages, news sentences and glosses, plus an empty and a very long text."""
    texts = []
    for name in ("msmarco_queries", "msmarco_v2_passages", "reuters21578_sentences", "wordnet30_glosses"):
        texts += read_texts(TRAIN / f"{name}.jsonl", 20)
    return texts + ["", " ".join(texts[20:40]) * 3]


@pytest.fixture(scope="module")
def student(tiny_vocab, tmp_path_factory):
    """A small trained-like student, saved; returns (model, folder)."""
    # the graph repeats pooling per round, runs the context block on the gathered rows and adds the pairs
    model = trained_student(tiny_vocab, pooling_rounds=2, context_layers=1, pair_rank=8)
    with torch.no_grad():
        model.pooling.context_queries[0].proj.weight.normal_(0, 0.5)
        model.context_blocks[0].down.weight.normal_(0, 0.2)  # large enough to matter
        model.pairs.up.weight.normal_(0, 0.3)
    folder = tmp_path_factory.mktemp("student")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def onnx_folder(student, texts, tmp_path_factory):
    """The student exported through the CLI with the int8 variant, checked on real texts from a jsonl file."""
    _, folder = student
    out = tmp_path_factory.mktemp("onnx")
    texts_file = out.parent / "check_texts.jsonl"
    texts_file.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    assert (
        main(["export", "onnx", "--model", str(folder), "--out", str(out), "--int8", "--texts", str(texts_file)]) == 0
    )
    return out


def forward(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).pooler_output.numpy()


def random_batch(vocab_size: int, batch: int, bag: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random bags of ``batch`` × ``bag`` ids; with batch > 1, ragged masks (the last bag all padding)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch, bag), dtype=np.int64)
    mask = np.ones_like(ids)
    if batch > 1:
        mask = (np.arange(bag)[None, :] < rng.integers(1, bag + 1, size=batch)[:, None]).astype(np.int64)
        mask[-1] = 0
    return ids, mask


SHAPES = [(1, 1), (1, 512), (37, 1), (37, 512)]


def test_onnx_export_matches_pytorch_on_real_text_and_dynamic_axes(student, texts, onnx_folder):
    model, _ = student
    report = json.loads((onnx_folder / "export.json").read_text())
    assert report["passed"] and report["check"]["texts"] == len(texts)
    longest = max(len(bag) for bag in model.get_tokenizer().encode_bags(texts))
    assert report["check"]["bag_sizes"] == [0, longest]  # the empty text, and a huge one cut where the teacher stops
    assert longest < model.get_tokenizer().bag_encoder.teacher_window  # the tiny teacher reads 64 tokens
    assert set(report["check"]["max_abs_diff_shapes"]) == {"1x1", "1x512", "37x1", "37x512"}
    assert report["check"]["max_abs_diff"] <= TOLERANCE

    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert session.get_inputs()[0].shape == ["batch", "bag"]
    for batch, bag in SHAPES:
        ids, mask = random_batch(model.config.vocab_size, batch, bag)
        out = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        assert out.shape == (batch, model.config.output_dim)
        np.testing.assert_allclose(out, forward(model, ids, mask), atol=TOLERANCE, rtol=0)

    encoder = OnnxStudent.from_pretrained(onnx_folder)
    np.testing.assert_allclose(encoder.encode(texts), model.encode(texts), atol=TOLERANCE, rtol=0)


def test_onnx_int8_variant_reports_its_cosine_loss(student, texts, onnx_folder):
    model, _ = student
    report = json.loads((onnx_folder / "export.json").read_text())["int8"]
    assert report["nodes"] and report["vs_float32_onnx"]["texts"] == len(texts)
    quantized = OnnxStudent.from_pretrained(onnx_folder, dtype="int8").encode(texts)
    reference = OnnxStudent.from_pretrained(onnx_folder).encode(texts)
    nonzero = np.linalg.norm(reference, axis=1) > 0
    cosine = (quantized * reference).sum(1) / np.linalg.norm(quantized, axis=1) / np.linalg.norm(reference, axis=1)
    loss = 1 - cosine[nonzero]
    assert loss.mean() == pytest.approx(report["vs_float32_onnx"]["mean_cosine_loss"], abs=1e-6)
    assert 0 < loss.max() < 1e-2
    saved = (onnx_folder / "model.onnx").stat().st_size - (onnx_folder / "model_int8.onnx").stat().st_size
    table_bytes = model.config.vocab_size * model.config.hidden_size * 4  # the φ table in float32
    assert saved > 0.7 * table_bytes  # int8 codes: a quarter of the bytes, plus one scale per table
    # only the table is quantized: an embedding does not depend on its batch-mates
    single = np.stack([OnnxStudent.from_pretrained(onnx_folder, dtype="int8").encode(t) for t in texts[:5]])
    np.testing.assert_allclose(single, quantized[:5], atol=1e-6)


def test_onnx_folder_stands_alone_without_bertapprox(student, texts, onnx_folder, tmp_path):
    """The README's plain snippet (transformers + onnxruntime, bertapprox_hf unimportable) gives the same embeddings."""
    model, _ = student
    readme = (onnx_folder / "README.md").read_text()
    config = json.loads((onnx_folder / "config.json").read_text())
    assert "AutoModel" not in config["auto_map"] and "model.safetensors" not in os.listdir(onnx_folder)
    snippet = re.findall(r"```python\n(.*?)```", readme, re.S)[1]
    snippet = snippet.replace('"path/to/this/folder"', repr(str(onnx_folder)))
    sample = ["what is the interest rate of the bank?", "new york city"]
    script = (
        textwrap.dedent(
            """
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "bertapprox_hf":
                    raise ImportError("bertapprox_hf must not be imported here")
        sys.meta_path.insert(0, Block())
        """
        )
        + snippet
        + "\nprint(json.dumps(embeddings.tolist()))\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    embeddings = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(embeddings, model.encode(sample), atol=TOLERANCE, rtol=0)


def test_torchscript_export_loads_back_and_matches(student, texts, tmp_path):
    model, folder = student
    report = export_model("torchscript", folder, tmp_path / "ts", texts=texts)
    assert report["passed"] and report["check"]["max_abs_diff"] <= TOLERANCE
    module = torch.jit.load(str(tmp_path / "ts" / "model.pt"))
    for batch, bag in SHAPES:
        ids, mask = random_batch(model.config.vocab_size, batch, bag, seed=1)
        with torch.inference_mode():
            out = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        np.testing.assert_allclose(out, forward(model, ids, mask), atol=TOLERANCE, rtol=0)
    encoder = TorchScriptStudent.from_pretrained(tmp_path / "ts")
    np.testing.assert_allclose(encoder.encode(texts), model.encode(texts), atol=TOLERANCE, rtol=0)


def test_onnx_encoder_mirrors_encoder_api(student, texts, onnx_folder):
    model, _ = student
    encoder = OnnxStudent.from_pretrained(onnx_folder, num_threads=1)
    assert encoder.dim == encoder.get_sentence_embedding_dimension() == model.config.output_dim
    assert encoder.similarity == model.config.similarity
    one = encoder.encode(texts[0])
    assert one.shape == (model.config.output_dim,) and one.dtype == np.float32
    np.testing.assert_allclose(encoder.encode(texts, batch_size=1), encoder.encode(texts, batch_size=64), atol=1e-6)
    assert encoder.encode([]).shape == (0, model.config.output_dim)
    normalized = encoder.encode(texts[:3], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)
    assert isinstance(encoder.encode(texts[:2], convert_to_numpy=False), torch.Tensor)
    bags = model.get_tokenizer().encode_bags(texts)
    np.testing.assert_allclose(encoder.embed_bags(bags, batch_size=7), encoder.encode(texts), atol=1e-6)
    with pytest.raises(ValueError, match="bag 1"):
        encoder.embed_bags([[1, 2], [model.config.vocab_size]])
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode(None)


def test_onnx_encoder_loads_a_hub_repository(student, texts, onnx_folder, tmp_path, monkeypatch):
    """A Hub id resolves to the same folder layout (here from an offline Hub cache) and the same code."""
    from huggingface_hub import constants

    model, _ = student
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--bertapprox-test--tiny-onnx"
    shutil.copytree(onnx_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    encoder = OnnxStudent.from_pretrained("bertapprox-test/tiny-onnx")
    assert encoder.folder == str(repo / "snapshots" / commit)
    np.testing.assert_allclose(encoder.encode(texts), model.encode(texts), atol=TOLERANCE, rtol=0)
    with pytest.raises(OSError, match="neither a local folder nor a reachable Hub repository"):
        OnnxStudent.from_pretrained("bertapprox-test/not-there")


def test_bad_input_gives_clear_errors(student, tmp_path, capsys):
    _, folder = student
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model("tflite", folder, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        export_model("onnx", tmp_path / "missing", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="export folder not found"):
        OnnxStudent.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="model_int8.onnx not found"):
        os.makedirs(tmp_path / "empty")
        OnnxStudent.from_pretrained(tmp_path / "empty", dtype="int8")
    with pytest.raises(ValueError, match="dtype must be one of"):
        OnnxStudent.from_pretrained(tmp_path / "empty", dtype="float16")

    assert main(["export", "torchscript", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    texts_file = tmp_path / "bad.jsonl"
    texts_file.write_text('{"id": 1}\n')
    args = ["export", "onnx", "--model", str(folder), "--out", str(tmp_path / "o"), "--texts", str(texts_file)]
    assert main(args) == 2
    assert "bad.jsonl:1 has no string 'text' field" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "tflite", "--model", str(folder), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
