"""Self-attention between a bag's entries (``self_attention_layers``): one code path for the model, the fast
``Encoder`` and the ONNX/TorchScript exports; masking, no positions, the budget, saving, training."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bertapprox_hf.inference.encoder as encoder_module
from bertapprox_hf import BertApproxConfig, BertApproxModel, Encoder
from bertapprox_hf.export import export_model
from bertapprox_hf.export.graph import BagEmbeddingGraph
from bertapprox_hf.export.onnx_export import save_onnx_graph
from bertapprox_hf.model.integrity import IntegrityError
from bertapprox_hf.model.pooling_bertapprox import SelfAttentionBlock

from .conftest import TRAIN, read_texts, trained_student
from .test_export import SHAPES, forward, random_batch
from .test_inference import forward_bags
from .test_training import inputs, tiny_config  # noqa: F401 (inputs: the module fixture of the tiny run)

TOLERANCE = 1e-5
ATTENTION = {"self_attention_layers": 2, "self_attention_heads": 2, "self_attention_width": 16}


def with_attention(vocabulary, **config) -> BertApproxModel:
    """A trained-like student with self-attention whose attention and MLP branches matter (they start at zero)."""
    model = trained_student(vocabulary, **{**ATTENTION, **config})
    with torch.no_grad():
        for block in model.self_attention:
            block.qkv.weight.normal_(0, 0.3)
            block.out.weight.normal_(0, 0.2)
            block.mlp.down.weight.normal_(0, 0.2)
        if model.pairs is not None:
            model.pairs.up.weight.normal_(0, 0.3)
        for block in model.context_blocks:
            block.down.weight.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def student(tiny_vocab, tmp_path_factory):
    """Self-attention with every other lever (rounds, a context block, pairs, an adapter), saved: (model, folder)."""
    model = with_attention(tiny_vocab, entry_adapter_rank=4, pooling_rounds=2, context_layers=1, pair_rank=8)
    folder = tmp_path_factory.mktemp("self-attention-student")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def bags(student) -> list[list[int]]:
    model, _ = student
    generator = np.random.default_rng(0)
    vocab = model.config.vocab_size
    return [
        [],
        [5],
        [5, 5, 5],
        generator.integers(0, vocab, 512).tolist(),
        *[generator.integers(0, vocab, generator.integers(0, 60)).tolist() for _ in range(40)],
        [],
    ]


def test_self_attention_matters_and_starts_as_the_identity(tiny_vocab, student, bags):
    model, _ = student
    without = trained_student(tiny_vocab, entry_adapter_rank=4, pooling_rounds=2, context_layers=1, pair_rank=8)
    without.load_state_dict(model.state_dict(), strict=False)
    assert np.abs(forward_bags(without, bags[1:-1]) - forward_bags(model, bags[1:-1])).max() > 1e-2
    fresh = BertApproxModel(BertApproxConfig(**{**without.config.to_dict(), **ATTENTION})).eval()
    fresh.load_state_dict(without.state_dict(), strict=False)  # the layers keep their zero output maps
    np.testing.assert_allclose(forward_bags(fresh, bags), forward_bags(without, bags), atol=1e-6, rtol=0)


def test_encoder_equals_forward(student, bags, monkeypatch):
    model, _ = student
    expected = forward_bags(model, bags)
    encoder = Encoder.from_pretrained(model, device="cpu", cache_size=0)
    for batch_size in (1, 16, 64):
        np.testing.assert_allclose(encoder.embed_bags(bags, batch_size=batch_size), expected, atol=TOLERANCE, rtol=0)
    monkeypatch.setattr(encoder_module, "ENTRY_CHUNK", 50)  # a few bags a step: a bag never splits
    chunked = Encoder.from_pretrained(model, device="cpu", cache_size=0)
    np.testing.assert_allclose(chunked.embed_bags(bags, batch_size=16), expected, atol=TOLERANCE, rtol=0)
    texts = read_texts(TRAIN / "msmarco_queries.jsonl", 40) + ["", "new york city " * 40]
    np.testing.assert_allclose(encoder.encode(texts), model.encode(texts), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(("dtype", "worst"), [("float16", 1e-5), ("bfloat16", 1e-3), ("int8", 1e-2)])
def test_reduced_precisions_stay_close(student, bags, dtype, worst):
    model, _ = student
    reduced = Encoder.from_pretrained(model, device="cpu", dtype=dtype, cache_size=0).embed_bags(bags[1:-1])
    expected = forward_bags(model, bags[1:-1])
    cosine = (reduced * expected).sum(1) / np.linalg.norm(reduced, axis=1) / np.linalg.norm(expected, axis=1)
    assert 1 - cosine.min() < worst


def test_torchscript_and_onnx_graphs_equal_forward(student, tmp_path):
    import onnxruntime as ort

    model, _ = student
    graph = BagEmbeddingGraph(model)
    scripted = torch.jit.script(graph)
    save_onnx_graph(graph, str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch, bag in [*SHAPES, (5, 40)]:
        ids, mask = random_batch(model.config.vocab_size, batch, bag, seed=batch + bag)
        expected = forward(model, ids, mask)
        with torch.inference_mode():
            np.testing.assert_allclose(scripted(torch.from_numpy(ids), torch.from_numpy(mask)).numpy(), expected,
                                       atol=TOLERANCE, rtol=0)  # fmt: skip
        onnx = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        np.testing.assert_allclose(onnx, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exports_of_the_saved_folder_pass_their_check(student, tmp_path, kind):
    _, folder = student
    texts = read_texts(TRAIN / "msmarco_v2_passages.jsonl", 10) + [""]
    report = export_model(kind, folder, tmp_path / kind, texts=texts)
    assert report["passed"] and report["check"]["max_abs_diff"] <= TOLERANCE


def test_save_and_load_round_trip_and_integrity(student, bags, tmp_path):
    model, folder = student
    loaded = BertApproxModel.from_pretrained(folder)
    assert len(loaded.self_attention) == 2 and loaded.config.self_attention_width == 16
    np.testing.assert_allclose(forward_bags(loaded, bags), forward_bags(model, bags), atol=1e-6, rtol=0)
    record = json.loads((folder / "integrity.json").read_text())["architecture"]
    assert {key: record[key] for key in ATTENTION} == ATTENTION
    assert record["self_attention_intermediate_size"] == 0
    config = json.loads((folder / "config.json").read_text())
    for key, value in (("self_attention_layers", 1), ("self_attention_width", None)):
        edited = shutil.copytree(folder, tmp_path / f"{key}-{value}")
        changed = {k: v for k, v in config.items() if k != key or value is not None}
        if value is not None:
            changed[key] = value
        (edited / "config.json").write_text(json.dumps(changed))
        with pytest.raises(IntegrityError, match=rf"{key} is {'missing' if value is None else value}"):
            BertApproxModel.from_pretrained(edited)


def test_legacy_student_loads_without_self_attention():
    from .test_legacy_student import LEGACY

    model = BertApproxModel.from_pretrained(str(LEGACY))
    assert model.config.self_attention_layers == 0 and len(model.self_attention) == 0


# --- masking and the absence of positions ---------------------------------------------------------------
@pytest.fixture(scope="module")
def set_model() -> BertApproxModel:
    """Random weights everywhere (no pairs: they read word order on purpose), two attention layers."""
    torch.manual_seed(0)
    config = BertApproxConfig(
        vocab_size=50, embedding_dim=24, num_heads=4, intermediate_size=32, pooling_rounds=2, context_layers=1,
        entry_adapter_rank=3, **ATTENTION,
    )  # fmt: skip
    model = BertApproxModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.3)
    return model


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bag=st.lists(st.integers(0, 49), min_size=0, max_size=30),
    padding=st.lists(st.integers(0, 49), min_size=0, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_permuting_and_padding_the_bag_change_nothing(set_model, bag, padding, seed):
    """A bag is a set: any order of its entries, any padding (whatever ids it holds), the same embedding."""
    width = len(bag) + len(padding)
    ids = torch.tensor([bag + padding], dtype=torch.long).reshape(1, width)
    mask = torch.tensor([[1] * len(bag) + [0] * len(padding)], dtype=torch.long).reshape(1, width)
    order = torch.randperm(width, generator=torch.Generator().manual_seed(seed))  # padding moves inside too
    with torch.inference_mode():
        base = set_model(input_ids=ids[:, : len(bag)], attention_mask=mask[:, : len(bag)]).pooler_output
        shuffled = set_model(input_ids=ids[:, order], attention_mask=mask[:, order]).pooler_output
        empty = set_model(input_ids=torch.zeros(1, 1, dtype=torch.long), attention_mask=torch.zeros(1, 1)).pooler_output
    torch.testing.assert_close(shuffled, base, atol=1e-5, rtol=0)
    if not bag:  # the empty bag: ρ of a zero pooled vector, as without self-attention
        torch.testing.assert_close(base, set_model.readout()(torch.zeros(1, 24)).detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(shuffled, empty, atol=1e-6, rtol=0)


def test_padding_keys_get_no_attention():
    torch.manual_seed(0)
    block = SelfAttentionBlock(size=12, width=8, heads=2, inner=16, dropout=0.0).eval()
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0, 0.5)
    x = torch.randn(2, 5, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool).unsqueeze(-1)
    out = block(x, mask)
    other = x.clone()
    other[:, 3:] = torch.randn(2, 2, 12) * 100  # what padding rows hold does not reach the entries
    torch.testing.assert_close(block(other, mask)[0, :3], out[0, :3])
    assert torch.isfinite(out).all()


# --- the parameter budget and the config ----------------------------------------------------------------
def layer_size(hidden: int, width: int, inner: int) -> int:
    """Parameters of one layer: LayerNorm, q/k/v, the output map, then the MLP block (LayerNorm, up, down)."""
    attention = 2 * hidden + (hidden * 3 * width + 3 * width) + (width * hidden + hidden)
    return attention + 2 * hidden + (hidden * inner + inner) + (inner * hidden + hidden)


def test_parameter_count_and_the_demo_budget():
    def trainable(vocab_size: int = 1000, **overrides) -> int:
        config = BertApproxConfig(vocab_size=vocab_size, embedding_dim=768, hidden_size=384, num_heads=8,
                                  intermediate_size=1024, **overrides)  # fmt: skip
        return sum(p.numel() for p in BertApproxModel(config).parameters() if p.requires_grad)

    plain = trainable()
    one = trainable(self_attention_layers=1, self_attention_intermediate_size=512)
    assert one == plain + layer_size(384, 384, 512)
    narrow = trainable(self_attention_layers=2, self_attention_width=128, self_attention_heads=4)
    assert narrow == plain + 2 * layer_size(384, 128, 1024)
    # the demo recipe's widths and the shipped demo student's 69,525 entries (the pooling bias grows with them), one
    # layer as in experiments/configs/selfattn.yaml: within the 1-5M budget
    demo = plain + (69525 - 1000) * 8
    assert 1_000_000 < demo + layer_size(384, 384, 512) < 5_000_000


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"self_attention_layers": -1}, "self_attention_layers"),
        ({"self_attention_layers": 1, "self_attention_width": 10, "self_attention_heads": 4}, "divisible"),
        ({"self_attention_layers": 1, "self_attention_heads": 5}, "divisible"),  # 24 wide by default
    ],
)
def test_bad_settings_are_refused(settings_, message):
    with pytest.raises(ValueError, match=message):
        BertApproxConfig(vocab_size=10, embedding_dim=24, num_heads=4, **settings_)


# --- training ---------------------------------------------------------------------------------------
def test_training_config_accepts_the_keys_and_a_step_trains_the_layer(inputs, tmp_path):  # noqa: F811
    from bertapprox_hf.training import Trainer

    keys = ("model.self_attention_layers=1", "model.self_attention_heads=2", "model.self_attention_width=16",
            "model.self_attention_intermediate_size=24")  # fmt: skip
    # in bf16 autocast: the attention's mask and softmax hold there too
    config = tiny_config(inputs, tmp_path / "run", *keys, "optim.max_steps=3", "eval.every_steps=3",
                         "run.mixed_precision=bf16")  # fmt: skip
    assert config.model.self_attention_layers == 1 and config.model.self_attention_width == 16
    trainer = Trainer(config)
    block = trainer.accelerator.unwrap_model(trainer.model).self_attention[0]
    assert block.out.weight.abs().sum() == 0 and block.mlp.up.out_features == 24
    report = trainer.train()
    assert report["steps"] == 3 and report["mixed_precision"] == "bf16" and block.out.weight.abs().sum() > 0
    assert all(math.isfinite(value) for value in report["best"].values() if isinstance(value, float))
    loaded = BertApproxModel.from_pretrained(tmp_path / "run" / "best")
    assert loaded.config.self_attention_layers == 1


def test_a_saved_student_grows_self_attention_from_zero(inputs, tmp_path):  # noqa: F811
    from bertapprox_hf.training import Trainer

    plain = Trainer(tiny_config(inputs, tmp_path / "plain", "optim.max_steps=2", "eval.every_steps=2"))
    report = plain.train()
    grown = Trainer(tiny_config(inputs, tmp_path / "grown", f"model.init_from={tmp_path / 'plain' / 'best'}",
                                "model.self_attention_layers=1", "model.self_attention_width=16",
                                "optim.max_steps=2", "eval.every_steps=2"))  # fmt: skip
    assert len(grown.accelerator.unwrap_model(grown.model).self_attention) == 1
    assert grown.evaluate()["cosine_all"] == pytest.approx(report["best"]["cosine_all"], abs=1e-5)
    grown.train()
    with pytest.raises(ValueError, match="self-attention layers can be added, not removed"):
        Trainer(tiny_config(inputs, tmp_path / "fewer", f"model.init_from={tmp_path / 'grown' / 'best'}"))


def test_the_comparison_recipes_are_the_demo_with_one_lever(tmp_path, monkeypatch):
    """experiments/configs/selfattn.yaml and context.yaml: the demo recipe's data and schedule, one lever added."""
    from .conftest import REPO
    from .test_training import load_shipped_recipe

    monkeypatch.setenv("BERTAPPROX_WORK", str(tmp_path))
    monkeypatch.delenv("TEACHER_NAME", raising=False)
    (demo,) = load_shipped_recipe(str(REPO / "configs" / "demo.yaml"), tmp_path)
    added = {
        "selfattn": {"self_attention_layers": 1, "self_attention_heads": 8, "self_attention_width": 384,
                     "self_attention_intermediate_size": 512},
        "context": {"context_layers": 1},
    }  # fmt: skip
    for name, keys in added.items():
        (config,) = load_shipped_recipe(str(REPO / "experiments" / "configs" / f"{name}.yaml"), tmp_path)
        assert config.data == demo.data and config.optim == demo.optim and config.loss == demo.loss
        differs = {k: v for k, v in vars(config.model).items() if vars(demo.model)[k] != v}
        assert differs == keys and config.run.output_dir != demo.run.output_dir


def test_the_cost_benchmark_runs(tmp_path):
    from benchmarks.bag_cost import main

    args = ["--vocab-size", "300", "--embedding-dim", "32", "--hidden-size", "32", "--bag-sizes", "2", "9",
            "--batch-size", "4", "--batches", "1", "--repeats", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "bag_cost.json").read_text())
    assert result["bag_sizes"] == [2, 9] and set(result["us_per_bag"][0]) == {"plain", "context", "selfattn"}
    assert result["trainable_parameters"]["selfattn"] > result["trainable_parameters"]["plain"]
    assert "| 9 |" in (tmp_path / "bag_cost.md").read_text()
