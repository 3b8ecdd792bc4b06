"""The int8 ``Encoder`` stays within its documented cosine loss to float32 (``INT8_LOSS_BOUND``, the figure of the
``Encoder`` docstring and docs/deployment.md) on real texts of every corpus, the synthetic corpus and fuzzed texts.

The students carry the trained weights of the demo student (``results/demo/student``: φ, pooling, ρ and its
output map, which is where int8 loses accuracy): a student with noise added to its initial weights does not have
a trained ρ's near-identity output map with its large diagonal. Its 768-d entry table (contextual and isolated
halves) is the MiniLM vocabulary's isolated embedding twice (real texts) or random unit rows (synthetic texts).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from benchmarks.student_precision import FUZZED, fuzzed_texts, loss_summary, read_corpora, words_of
from bertapprox_hf import BertApproxModel
from bertapprox_hf.inference import Encoder
from bertapprox_hf.inference.precision import INT8_LOSS_BOUND, Int8Linear, int_mm_works
from bertapprox_hf.model.configuration_bertapprox import BertApproxConfig
from bertapprox_hf.model.tokenization_bertapprox import load_entries
from bertapprox_hf.pipeline.vocabulary import Vocabulary

from .conftest import DATA, REPO, SYNTHETIC_CORPUS, need_shared, trained_student

DEMO = REPO / "results" / "demo" / "student"
INT8_RHO = pytest.mark.skipif(not int_mm_works(torch.device("cpu")), reason="torch._int_mm does not run on this CPU")


def demo_trained_student(vocabulary: Vocabulary) -> BertApproxModel:
    """A student of ``vocabulary`` (768-d entries) with the demo student's trained weights; each entry's pooling
    bias is the demo's where the demo has the entry, else 0."""
    settings = json.loads((DEMO / "config.json").read_text(encoding="utf-8"))
    for key in ("entries_sha256", "weights_dtype"):
        settings.pop(key)
    settings["vocab_size"] = len(vocabulary)
    model = BertApproxModel(BertApproxConfig.from_dict(settings))
    weights = {name: tensor.float() for name, tensor in load_file(str(DEMO / "weights.safetensors")).items()}
    position = {entry: row for row, entry in enumerate(load_entries(str(DEMO / "entries.txt")))}
    demo_bias = weights["pooling.entry_bias.weight"]
    bias = torch.zeros(len(vocabulary), demo_bias.shape[1])
    for row, entry in enumerate(vocabulary.entries):
        if entry in position:
            bias[row] = demo_bias[position[entry]]
    weights["pooling.entry_bias.weight"] = bias
    weights["entry_table.weight"] = torch.from_numpy(np.asarray(vocabulary.embeddings, dtype=np.float32))
    model.load_state_dict(weights, strict=True)
    model.set_tokenizer(vocabulary.tokenizer())
    return model.eval()


def with_table(vocabulary: Vocabulary, table: np.ndarray) -> Vocabulary:
    return Vocabulary(vocabulary.entries, table.astype(np.float32), vocabulary.counts, vocabulary.metadata)


def int8_losses(model: BertApproxModel, texts: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Per text set, the loss summary of the int8 ``Encoder`` with its ρ in int8 against float32."""
    reference = Encoder.from_pretrained(model, device="cpu", cache_size=0)
    int8 = Encoder.from_pretrained(model, device="cpu", dtype="int8", rho_dtype="int8", cache_size=0)
    return {name: loss_summary(reference.encode(sample), int8.encode(sample)) for name, sample in texts.items()}


@pytest.fixture(scope="module")
def synthetic_texts() -> dict[str, list[str]]:
    """The committed synthetic corpus, one set per file, and fuzzed texts of its words."""
    texts = {}
    for path in sorted(Path(SYNTHETIC_CORPUS).glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            texts[path.stem] = [json.loads(line)["text"] for line in handle]
    texts[FUZZED] = fuzzed_texts(words_of([t for sample in texts.values() for t in sample]), 600)
    return texts


@INT8_RHO
def test_int8_within_the_bound_on_the_synthetic_corpus_and_fuzzed_texts(tiny_vocab, synthetic_texts):
    rows = np.random.default_rng(0).standard_normal((len(tiny_vocab), 2, 384))
    rows /= np.linalg.norm(rows, axis=2, keepdims=True)
    rows[0] = 0  # the padding entry
    model = demo_trained_student(with_table(tiny_vocab, rows.reshape(len(tiny_vocab), 768)))
    losses = int8_losses(model, synthetic_texts)
    print({name: f"{loss['max']:.1e}" for name, loss in losses.items()})
    assert all(loss["max"] <= INT8_LOSS_BOUND for loss in losses.values()), losses


@INT8_RHO
def test_int8_within_the_bound_on_real_texts_of_every_corpus(minilm_vocab):
    need_shared(DATA)
    texts = read_corpora(DATA, 300)
    train = {path.stem for path in (DATA / "train").glob("*.jsonl")}
    assert train | {"dl19-corpus", "dl19-queries", "scifact-corpus", "scifact-queries", "stsb-test"} <= set(texts)
    texts[FUZZED] = fuzzed_texts(words_of([t for sample in texts.values() for t in sample]), 600)
    isolated = np.asarray(minilm_vocab.embeddings, dtype=np.float32)
    model = demo_trained_student(with_table(minilm_vocab, np.concatenate([isolated, isolated], axis=1)))
    losses = int8_losses(model, texts)
    print({name: f"{loss['max']:.1e}" for name, loss in losses.items()})
    assert all(loss["max"] <= INT8_LOSS_BOUND for loss in losses.values()), losses


@INT8_RHO
def test_int8_linear_keeps_a_near_identity_map_and_each_row_to_itself():
    torch.manual_seed(0)
    linear = nn.Linear(64, 64)
    with torch.no_grad():
        linear.weight.mul_(0.1).add_(torch.eye(64) * 1.6)  # a trained ρ's output map: a large diagonal
    quantized = Int8Linear(linear)
    x = torch.randn(40, 64)
    x[1] = 0  # an empty bag's row, a constant row, a non-negative sparse row (after a GELU)
    x[2] = 0.3
    x[3] = torch.relu(x[3]) * (torch.rand(64) < 0.1)
    with torch.inference_mode():
        exact, got = linear(x), quantized(x)
        alone = torch.cat([quantized(x[i : i + 1]) for i in range(len(x))])
    loss = 1 - torch.nn.functional.cosine_similarity(exact, got, dim=1)
    assert loss.max() < 2e-5, loss.max()
    np.testing.assert_allclose(got[:4].numpy(), exact[:4].numpy(), atol=2e-3)
    assert torch.equal(alone, got)  # no scale shared between rows
    rectangular = nn.Linear(48, 32)
    with torch.inference_mode():
        x = torch.randn(5, 48)
        np.testing.assert_allclose(Int8Linear(rectangular)(x).numpy(), rectangular(x).numpy(), atol=2e-2)


def test_the_benchmark_reports_each_corpus_and_the_fuzzed_texts(tiny_vocab, tmp_path):
    from benchmarks import student_precision

    (tmp_path / "data" / "train").mkdir(parents=True)
    for name in ("queries", "passages"):
        (tmp_path / "data" / "train" / f"{name}.jsonl").write_text(
            (Path(SYNTHETIC_CORPUS) / f"{name}.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
        )
    trained_student(tiny_vocab).save_pretrained(tmp_path / "student")
    assert fuzzed_texts(["a", "b"], 30, seed=1) == fuzzed_texts(["a", "b"], 30, seed=1)
    argv = ["--model", str(tmp_path / "student"), "--data", str(tmp_path / "data"), "--max-texts", "40"]
    argv += ["--fuzzed", "30", "--configs", "int8-rho-float32", "bfloat16", "--out", str(tmp_path / "out")]
    results = student_precision.main(argv)
    sets = {(row["config"], row["texts"]): row for row in results["loss"]}
    for config in ("int8-rho-float32", "bfloat16"):
        assert {key[1] for key in sets if key[0] == config} == {"queries", "passages", FUZZED, "all real texts"}
    assert sets["int8-rho-float32", "all real texts"]["count"] == 80
    assert all(0 <= row["mean"] <= row["p99_9"] <= row["max"] <= INT8_LOSS_BOUND for row in results["loss"])
    assert "| int8-rho-float32 | float32 | fuzzed | 30 |" in (tmp_path / "out" / "student_precision.md").read_text()
