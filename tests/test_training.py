"""Distillation end to end on a tiny random teacher and real texts: learning, resume, data parallel."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bertapprox_hf.pipeline.crops import is_crop
from bertapprox_hf.pipeline.targets import build_targets
from bertapprox_hf.pipeline.vocabulary import Vocabulary
from bertapprox_hf.training import Trainer, load_config
from bertapprox_hf.training.config import ConfigError, load_stages, to_dict
from bertapprox_hf.training.data import is_training, records_containing

from .conftest import REPO, TRAIN, need_shared, read_texts


@pytest.fixture(scope="module")
def inputs(tiny_teacher, tiny_vocab, train_sample_files, tmp_path_factory) -> dict:
    """A vocabulary folder and a targets folder (600 real texts) of the tiny teacher."""
    root = tmp_path_factory.mktemp("training-inputs")
    tiny_vocab.save(str(root / "vocab"))
    build_targets(
        train_sample_files, tiny_teacher, str(root / "targets"), shard_size=256, show_progress_bar=False,
        max_per_source=150,
    )  # fmt: skip
    return {"vocab": str(root / "vocab"), "targets": str(root / "targets"), "root": root}


def tiny_config(inputs, output_dir, *overrides: str):
    return load_config(
        None,
        [
            f"data.vocab={inputs['vocab']}",
            f"data.targets={inputs['targets']}",
            "data.val_fraction=0.1",
            f"run.output_dir={output_dir}",
            "run.device=cpu",
            "run.log_every=2",
            "run.tensorboard=true",
            "model.num_heads=4",
            "model.intermediate_size=64",
            "optim.batch_size=32",
            "optim.lr=0.003",
            "eval.every_steps=10",
            "run.checkpoint_every=10",
            *overrides,
        ],
    )


def test_training_lowers_validation_loss_and_saves_a_loadable_model(inputs, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(inputs, out, "optim.epochs=6", "loss.relational=0.1"))
    report = trainer.train()
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == report["steps"] > 0
    assert evals[-1]["mse_all"] < 0.8 * evals[0]["mse_all"]
    assert max(e["cosine_all"] for e in evals) > evals[0]["cosine_all"]
    assert report["best"]["cosine_all"] >= max(e["cosine_all"] for e in evals) - 1e-4  # eval.min_delta
    for name in ("loss.png", "validation.png", "report.json", "best/model.safetensors", "best/training.json"):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())

    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(out / "best", trust_remote_code=True)
    texts = trainer.val_texts[:20]
    best = json.loads((out / "best" / "training.json").read_text())
    assert best["step"] == report["best_step"]
    if report["best_step"] == report["steps"]:
        current = trainer.accelerator.unwrap_model(trainer.model).encode(texts)
        np.testing.assert_allclose(loaded.encode(texts), current, atol=1e-5)


@pytest.mark.parametrize("average", ["optim.ema_decay=0", "optim.ema_decay=0.9"])
def test_resumed_run_ends_with_the_same_weights(inputs, tmp_path, average, capsys):
    settings = ("optim.max_steps=12", "run.checkpoint_every=5", "eval.every_steps=6", "model.dropout=0.1", average)
    straight = Trainer(tiny_config(inputs, tmp_path / "straight", *settings))
    straight.train()

    interrupted = Trainer(tiny_config(inputs, tmp_path / "resumed", *settings))
    assert interrupted.train(stop_after=7) == {"stopped_at": 7}  # last checkpoint at step 5
    # a checkpoint being written when the run was killed is ignored
    (tmp_path / "resumed" / "checkpoints" / "step_00000010.tmp").mkdir()
    resumed = Trainer(tiny_config(inputs, tmp_path / "resumed", *settings))
    assert resumed.resume() and resumed.state.step == 5
    resumed.train()
    a = straight.accelerator.unwrap_model(straight.model).state_dict()
    b = resumed.accelerator.unwrap_model(resumed.model).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    if straight.average is not None:  # the average, what is evaluated and saved, resumes too
        for key, value in straight.average.shadow.items():
            torch.testing.assert_close(value, resumed.average.shadow[key], rtol=0, atol=1e-6, msg=key)
        without = Trainer(tiny_config(inputs, tmp_path / "resumed", *settings, "optim.ema_decay=0"))
        assert without.resume(), "a checkpoint with an average resumes without one too"
        assert "holds a weight average" in capsys.readouterr().out


def test_the_weight_average_is_evaluated_and_saved(inputs, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(inputs, out, "optim.epochs=3", "optim.ema_decay=0.8", "eval.every_steps=1000"))
    trainer.train()
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in evals if e["event"] == "eval"][-1]
    assert last["raw_cosine_all"] != last["cosine_all"]  # the live weights, logged beside the average
    model = trainer.accelerator.unwrap_model(trainer.model)
    with trainer.average.applied(model):
        averaged = model.encode(trainer.val_texts[:20])
    live = model.encode(trainer.val_texts[:20])
    from transformers import AutoModel

    best = json.loads((out / "best" / "training.json").read_text())
    assert best["step"] == trainer.state.step  # evaluated at steps 0 and 51 only
    loaded = AutoModel.from_pretrained(out / "best", trust_remote_code=True).encode(trainer.val_texts[:20])
    np.testing.assert_allclose(loaded, averaged, atol=1e-5)
    assert np.abs(loaded - live).max() > 1e-4


def test_a_saved_student_trains_further_with_init_from(inputs, tmp_path):
    first = Trainer(tiny_config(inputs, tmp_path / "first", "optim.max_steps=12", "eval.every_steps=12"))
    report = first.train()
    settings = (f"model.init_from={tmp_path / 'first' / 'best'}", "optim.max_steps=6", "eval.every_steps=6")
    second = Trainer(tiny_config(inputs, tmp_path / "second", *settings))
    start = second.evaluate()  # before any step: the saved student, not an untrained one
    assert start["cosine_all"] == pytest.approx(report["best"]["cosine_all"], abs=1e-5)
    table = second.accelerator.unwrap_model(second.model).entry_table.weight.detach().clone()
    again = second.train()
    assert again["steps"] == 6 and again["trainable_parameters"] == report["trainable_parameters"]
    torch.testing.assert_close(second.accelerator.unwrap_model(second.model).entry_table.weight, table)  # frozen

    with pytest.raises(ValueError, match=r"model.phi_layers is 2 but the student in .* has 1"):
        Trainer(tiny_config(inputs, tmp_path / "deeper", *settings, "model.phi_layers=2"))

    # a pooling round can be added: it starts at zero, so training starts from the saved student's metrics
    rounds = Trainer(tiny_config(inputs, tmp_path / "rounds", *settings, "model.pooling_rounds=2"))
    context = rounds.accelerator.unwrap_model(rounds.model).pooling.context_queries
    assert len(context) == 1 and context[0].proj.weight.abs().sum() == 0
    assert rounds.evaluate()["cosine_all"] == pytest.approx(report["best"]["cosine_all"], abs=1e-5)
    hidden = rounds.accelerator.unwrap_model(rounds.model).config.hidden_size
    grown = rounds.train()
    assert grown["trainable_parameters"] == report["trainable_parameters"] + hidden * hidden
    assert context[0].proj.weight.abs().sum() > 0  # and it trains
    with pytest.raises(ValueError, match="rounds can be added, not removed"):
        Trainer(tiny_config(inputs, tmp_path / "fewer", f"model.init_from={tmp_path / 'rounds' / 'best'}"))

    # so can a context block, of its own width: zero at start too
    added = ("model.context_layers=1", "model.context_intermediate_size=16")
    blocks = Trainer(tiny_config(inputs, tmp_path / "context", *settings, *added))
    assert blocks.evaluate()["cosine_all"] == pytest.approx(report["best"]["cosine_all"], abs=1e-5)
    block = blocks.accelerator.unwrap_model(blocks.model).context_blocks[0]
    assert block.up.out_features == 16 and block.down.weight.abs().sum() == 0
    blocks.train()
    assert block.down.weight.abs().sum() > 0  # and it trains
    with pytest.raises(ValueError, match="context blocks can be added, not removed"):
        Trainer(tiny_config(inputs, tmp_path / "fewer", f"model.init_from={tmp_path / 'context' / 'best'}"))

    # and pair features: their map starts at zero, the skip-gram flags come from the vocabulary
    paired = Trainer(tiny_config(inputs, tmp_path / "pairs", *settings, "model.pair_rank=8"))
    assert paired.evaluate()["cosine_all"] == pytest.approx(report["best"]["cosine_all"], abs=1e-5)
    model = paired.accelerator.unwrap_model(paired.model)
    skipgrams = [kind == "skipgram" for kind in Vocabulary.load(inputs["vocab"]).kinds()]
    assert model.entry_is_skipgram.tolist() == skipgrams and any(skipgrams)
    paired.train()
    assert model.pairs.up.weight.abs().sum() > 0  # and they train
    with pytest.raises(ValueError, match="pairs can be added to a student without them, not resized"):
        Trainer(tiny_config(inputs, tmp_path / "resized", f"model.init_from={tmp_path / 'pairs' / 'best'}",
                            "model.pair_rank=4"))  # fmt: skip
    with pytest.raises(ConfigError, match="model.init_from: folder not found: /nowhere"):
        tiny_config(inputs, tmp_path / "none", "model.init_from=/nowhere")


def test_records_holding_a_validation_text_are_found():
    texts = [
        "The dry period means the temporao will be late this year.",  # a validation sentence
        "Showers continued. The dry period means the temporao will be late this year. Arrivals rose.",
        "The dry period means the temporao will be early this year.",  # differs in one word
        "the dry period means the temporao will be late this year.",  # case differs
        "Late this year.",
    ]
    assert records_containing(texts, np.arange(1, 5), [texts[0]], 8).tolist() == [1]
    assert records_containing(texts, np.arange(1, 5), [texts[4]], 8).tolist() == []  # too short a probe
    assert records_containing(texts, np.arange(1, 5), ["late this year."], 3).tolist() == [1, 3]


def test_exclude_overlap_keeps_articles_of_validation_sentences_out_of_training(inputs, tiny_teacher, tmp_path):
    """Whole Reuters articles and their own sentences in one corpus: a validation sentence's article must go."""
    articles = read_texts(TRAIN / "reuters21578_articles.jsonl", 60)
    sentences = read_texts(TRAIN / "reuters21578_sentences.jsonl", 400)
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for number, text in enumerate(sentences + articles):
            handle.write(json.dumps({"id": f"r{number}", "text": text}) + "\n")
    build_targets([str(corpus)], tiny_teacher, str(tmp_path / "targets"), show_progress_bar=False)
    settings = (f"data.targets={tmp_path / 'targets'}", "data.val_fraction=0.2", "optim.max_steps=1")
    plain = Trainer(tiny_config(inputs, tmp_path / "plain", *settings)).data
    val = [plain.texts[i] for i in plain.val_index if len(plain.texts[i].split()) >= 8]
    leaking = {i for i in plain.train_index if any(v in plain.texts[i] for v in val)}
    assert leaking and all(plain.texts[i] in articles for i in leaking)

    strict = Trainer(tiny_config(inputs, tmp_path / "strict", *settings, "data.exclude_overlap=8")).data
    assert strict.excluded == len(leaking) and not leaking & set(strict.train_index.tolist())
    assert len(strict.train_index) + strict.excluded == len(plain.train_index)


def test_two_process_data_parallel_run_on_cpu(inputs, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29513",
        str(REPO / "train.py"), "--set", f"data.vocab={inputs['vocab']}", "--set", f"data.targets={inputs['targets']}",
        "--set", f"run.output_dir={out}", "--set", "run.device=cpu", "--set", "optim.max_steps=6",
        "--set", "optim.batch_size=16", "eval.every_steps=3", "data.val_fraction=0.1",  # one --set, several keys
        "--set", "model.num_heads=4",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 6
    assert json.loads((out / "best" / "training.json").read_text())["config"]["eval"]["every_steps"] == 3
    assert sorted(os.listdir(out / "best")).count("model.safetensors") == 1


def test_bf16_mixed_precision_runs_on_cpu(inputs, tmp_path):
    report = Trainer(tiny_config(inputs, tmp_path / "bf16", "run.mixed_precision=bf16", "optim.max_steps=4")).train()
    assert report["mixed_precision"] == "bf16" and report["steps"] == 4


def test_untrained_baseline_needs_no_steps(inputs, tmp_path):
    overrides = ("optim.epochs=0", "model.phi_layers=0", "model.rho_layers=0", "model.entry_bias=false")
    report = Trainer(tiny_config(inputs, tmp_path / "mean", *overrides)).train()
    assert report["steps"] == 0 and report["best_step"] == 0 and report["trainable_parameters"] > 0


def test_teacher_mismatch_between_targets_and_vocabulary_is_refused(inputs, tmp_path):
    record = json.loads((inputs["root"] / "vocab" / "vocabulary.json").read_text())
    record["teacher"]["name_or_path"] = "sentence-transformers/all-mpnet-base-v2"
    other = tmp_path / "vocab"
    other.mkdir()
    (other / "vocabulary.json").write_text(json.dumps(record))
    os.symlink(inputs["root"] / "vocab" / "vocabulary.safetensors", other / "vocabulary.safetensors")
    with pytest.raises(ValueError, match="name_or_path"):
        Trainer(load_config(None, [f"data.vocab={other}", f"data.targets={inputs['targets']}"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
        (["optim.batch_size=big"], "'optim.batch_size' must be int"),
        (["data.vocab=/nowhere/vocab"], "/nowhere/vocab"),
        (["loss.relational_kind=cosine"], "loss.relational_kind"),
        (["data.exclude_overlap=8", "data.streaming=true"], "data.exclude_overlap"),
    ],
)
def test_bad_configuration_names_the_key_or_file(inputs, overrides, message):
    base = [f"data.vocab={inputs['vocab']}", f"data.targets={inputs['targets']}"]
    with pytest.raises(ConfigError, match=message):
        load_config(None, base + overrides)


def test_bad_config_file_is_reported_by_train_py(inputs, tmp_path, capsys):
    sys.path.insert(0, str(REPO))
    from train import main

    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  vocab: {inputs['vocab']}\n  targets: {inputs['targets']}\noptim:\n  epoks: 3\n")
    assert main(["--config", str(config)]) == 2
    assert "unknown config key 'optim.epoks'" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_a_config_starts_from_its_base_file(inputs, tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text(
        f"data: {{vocab: {inputs['vocab']}, targets: [{inputs['targets']}, {inputs['targets']}], max_val: 50}}\n"
        "optim: {epochs: 5, lr: 0.01}\n"
    )
    (tmp_path / "schedule.yaml").write_text(
        f"base: recipes/base.yaml\ndata: {{targets: [{inputs['targets']}]}}\noptim: {{lr: 0.001}}\n"
    )
    config = load_config(str(tmp_path / "schedule.yaml"), ["optim.batch_size=8"])
    assert config.data.targets == [inputs["targets"]]  # a list is replaced whole
    assert config.data.max_val == 50 and config.optim.epochs == 5.0  # kept from the base
    assert config.optim.lr == 0.001 and config.optim.batch_size == 8  # the file, then --set

    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml \(base of .*orphan.yaml\)"):
        load_config(str(tmp_path / "orphan.yaml"))
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="name each other as base"):
        load_config(str(tmp_path / "a.yaml"))
    (tmp_path / "odd.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(ConfigError, match="'base'.*must be a file name"):
        load_config(str(tmp_path / "odd.yaml"))


def test_streaming_targets_train_too(inputs, tmp_path):
    report = Trainer(tiny_config(inputs, tmp_path / "stream", "data.streaming=true", "optim.max_steps=6")).train()
    assert report["steps"] == 6 and report["best"]["count_all"] > 3


def test_early_stopping_ends_a_run_that_stops_improving(inputs, tmp_path):
    settings = ("optim.lr=1e-9", "optim.epochs=20", "eval.every_steps=2", "eval.patience=2", "eval.min_delta=0.01")
    report = Trainer(tiny_config(inputs, tmp_path / "early", *settings)).train()
    assert report["steps"] == 4 and report["best_step"] == 0  # two evaluations without improvement


def test_several_targets_folders_are_read_as_one(inputs, tiny_teacher, tmp_path):
    texts = read_texts(TRAIN / "wordnet30_glosses.jsonl", 300)[200:]
    build_targets(texts, tiny_teacher, str(tmp_path / "extra"), shard_size=64, show_progress_bar=False)
    both = f"data.targets={inputs['targets']}, {tmp_path / 'extra'}"
    config = tiny_config(inputs, tmp_path / "both", both, "optim.max_steps=2")
    assert config.data.targets == [inputs["targets"], str(tmp_path / "extra")]
    single = Trainer(tiny_config(inputs, tmp_path / "one", "optim.max_steps=2"))
    trainer = Trainer(config)
    assert len(trainer.data.texts) == len(single.data.texts) + len(texts)
    assert trainer.data.texts[-1] == texts[-1]
    assert trainer.train()["steps"] == 2
    streamed = Trainer(tiny_config(inputs, tmp_path / "stream", both, "data.streaming=true", "optim.max_steps=2"))
    assert streamed.train()["steps"] == 2
    with pytest.raises(ConfigError, match="nowhere"):
        tiny_config(inputs, tmp_path / "bad", f"data.targets={inputs['targets']},/nowhere/targets")


def test_pretokenized_batches_equal_batches_tokenized_on_the_fly(inputs, tmp_path):
    on_the_fly = Trainer(tiny_config(inputs, tmp_path / "fly", "data.pretokenize=false", "optim.max_steps=2"))
    pretokenized = Trainer(tiny_config(inputs, tmp_path / "pre", "data.tokenize_workers=2", "optim.max_steps=2"))
    assert on_the_fly.data.bags is None and len(pretokenized.data.bags) == len(pretokenized.data.train_index)
    pairs = zip(on_the_fly.data.batches(1, 0, 32, 7, 0, 1), pretokenized.data.batches(1, 0, 32, 7, 0, 1), strict=True)
    count = 0
    for expected, got in pairs:
        for key in ("input_ids", "attention_mask", "targets"):
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)
        count += 1
    assert count == on_the_fly.data.batches_per_epoch(32, 1) > 3
    # an empty text gives one padding slot, as the tokenizer pads it
    batch = pretokenized.data.batcher.from_bags([np.array([], dtype=np.int32)], [[0.0]])
    assert batch["input_ids"].shape == (1, 1) and batch["attention_mask"].sum() == 0


def test_training_speed_benchmark_reads_throughput_from_the_runs_log(inputs, tmp_path):
    from benchmarks import training_speed

    config = tmp_path / "recipe.yaml"
    config.write_text(
        f"data: {{vocab: {inputs['vocab']}, targets: {inputs['targets']}, val_fraction: 0.1}}\n"
        "model: {num_heads: 4, intermediate_size: 64}\noptim: {batch_size: 16}\n"
    )
    argv = ["--config", str(config), "--setups", "cpu:no", "cpu:bf16", "--steps", "6", "--log-every", "2"]
    results = training_speed.main([*argv, "--set", "optim.lr=0.001", "--out", str(tmp_path / "speed")])
    rows = results["setups"]
    assert [(r["device"], r["mixed_precision"]) for r in rows] == [("cpu", "no"), ("cpu", "bf16")]
    for row in rows:
        assert row["steps"] == 6 and row["measured_steps"] == 4 and row["batch_size"] == 16
        assert row["texts_per_second"] == pytest.approx(16 * row["steps_per_second"]) and row["steps_per_second"] > 0
    saved = json.loads((tmp_path / "speed" / "training_speed.json").read_text())
    assert saved["setups"] == rows and (tmp_path / "speed" / "cpu-bf16" / "report.json").is_file()
    with pytest.raises(ValueError, match="tpu:no"):
        training_speed.parse_setup("tpu:no")
    with pytest.raises(ValueError, match="fewer than two"):
        training_speed.throughput([{"event": "train", "step": 2, "seconds": 1.0}], 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_on_cuda_in_bf16(inputs, tmp_path):
    trainer = Trainer(tiny_config(inputs, tmp_path / "cuda", "run.device=cuda", "optim.max_steps=20"))
    assert trainer.accelerator.device.type == "cuda" and trainer.accelerator.mixed_precision == "bf16"  # auto
    report = trainer.train()
    evals = [r for r in trainer.state.history if r["event"] == "eval"]
    assert report["steps"] == 20 and evals[-1]["mse_all"] < evals[0]["mse_all"]
    assert (tmp_path / "cuda" / "best" / "model.safetensors").is_file()


def load_shipped_recipe(path, work) -> list:
    """The stages' configs of a recipe of configs/ with ``BERTAPPROX_WORK=work``, the folders they name made
    (empty) as they come up, and each stage's best student made as if the stage before had run."""
    configs = []
    for stage in load_stages(path):
        for _ in range(10):
            try:
                configs.append(stage.config())
                break
            except ConfigError as error:
                folder = str(error).partition("folder not found: ")[2]
                assert folder.startswith(str(work)), error  # anything but a missing folder is a broken recipe
                os.makedirs(folder)
        else:
            raise AssertionError(f"{path} names more than 10 missing folders")
    return configs


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_recipe_is_a_valid_config(path, tmp_path, monkeypatch):
    """Each recipe in configs/ names only known keys with valid values (its folders made empty here); a recipe
    in stages trains each from the one before, on the same vocabulary, never losing a target set."""
    monkeypatch.setenv("BERTAPPROX_WORK", str(tmp_path))
    monkeypatch.delenv("TEACHER_NAME", raising=False)
    configs = load_shipped_recipe(path, tmp_path)
    assert all(c.data.vocab.startswith(str(tmp_path)) and c.data.targets for c in configs)
    assert not configs[0].model.init_from  # the first stage trains from scratch
    for before, after in itertools.pairwise(configs):
        assert after.model.init_from == os.path.join(before.run.output_dir, "best")
        assert after.data.vocab == before.data.vocab and set(before.data.targets) <= set(after.data.targets)
        assert os.path.dirname(after.run.output_dir) == os.path.dirname(before.run.output_dir)


def test_stages_named_sets_and_variable_defaults(tmp_path, monkeypatch):
    """``sets`` name target folders once, ``${VAR:-default}`` falls back, ``stages`` chain; --set reaches every
    stage but model.init_from only the first; a finished stage is recognised."""
    monkeypatch.setenv("BERTAPPROX_WORK", str(tmp_path))
    monkeypatch.delenv("BERTAPPROX_TEST_NAME", raising=False)
    for name in ("vocab", "a-x", "b-x"):
        os.makedirs(tmp_path / name)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "sets:\n  a: ${BERTAPPROX_WORK}/a-${BERTAPPROX_TEST_NAME:-x}\n  b: ['${BERTAPPROX_WORK}/b-x']\n"
        "data: {vocab: '${BERTAPPROX_WORK}/vocab', targets: [a]}\n"
        "run: {output_dir: '${BERTAPPROX_WORK}/run'}\n"
        "stages:\n  - name: one\n  - name: two\n    data: {targets: [a, b]}\n    optim: {lr: 0.0005}\n"
    )
    stages = load_stages(str(recipe), ["optim.epochs=2", f"model.init_from={tmp_path / 'vocab'}"])
    assert [stage.name for stage in stages] == ["one", "two"]
    first = stages[0].config()
    assert first.data.targets == [str(tmp_path / "a-x")] and first.model.init_from == str(tmp_path / "vocab")
    assert first.run.output_dir == str(tmp_path / "run" / "one") and first.optim.epochs == 2
    with pytest.raises(ConfigError, match="model.init_from: folder not found: .*one/best"):
        stages[1].config()  # the first stage has not run yet
    os.makedirs(tmp_path / "run" / "one" / "best")
    assert not stages[0].finished()
    (tmp_path / "run" / "one" / "report.json").write_text("{}")
    assert stages[0].finished()
    second = stages[1].config()
    assert second.data.targets == [str(tmp_path / "a-x"), str(tmp_path / "b-x")]
    assert (second.optim.lr, second.optim.epochs) == (0.0005, 2)
    with pytest.raises(ConfigError, match="recipe in stages"):
        load_config(str(recipe))
    recipe.write_text("data: {vocab: x}\nstages:\n  - optim: {lr: 1}\n")
    with pytest.raises(ConfigError, match="stage 1 .* needs a 'name'"):
        load_stages(str(recipe))


def test_crops_join_training_and_leave_the_validation_texts_as_they_were(inputs, tiny_teacher, tmp_path):
    need_shared(TRAIN / "msmarco_v2_passages.jsonl")
    passages = str(TRAIN / "msmarco_v2_passages.jsonl")
    build_targets(
        [passages], tiny_teacher, str(tmp_path / "crops"), shard_size=256, show_progress_bar=False,
        max_per_source=300, crops_per_text=1,
    )  # fmt: skip
    both = f"data.targets={inputs['targets']},{tmp_path / 'crops'}"
    plain = Trainer(tiny_config(inputs, tmp_path / "plain", "optim.max_steps=1")).data
    data = Trainer(tiny_config(inputs, tmp_path / "both", both, "optim.max_steps=1")).data
    assert data.validation()[0] == plain.validation()[0]
    crops = [i for i, record_id in enumerate(data.record_ids) if is_crop(record_id)]
    kept = [i for i in crops if is_training(data.record_ids[i], 0.1)]
    assert 0 < len(kept) < len(crops)  # crops of held-out passages are left out
    assert set(data.train_index.tolist()) == set(plain.train_index.tolist()) | set(kept)
    assert Trainer(tiny_config(inputs, tmp_path / "run", both, "optim.max_steps=2")).train()["steps"] == 2


@pytest.mark.parametrize(
    "recipe, chain",
    [
        ("configs/demo.yaml", ["minilm-contextual.yaml"]),
        ("configs/best.yaml", [f"minilm-full-pairs{part}.yaml" for part in ("", "-second", "-crops")]),
    ],
)
def test_each_recipe_trains_what_its_experiment_chain_trained(recipe, chain, tmp_path, monkeypatch):
    """The product recipes are the experiment configs their figures came from, stage for stage: every key equal
    but the folders a chain names by hand (output_dir, and init_from, which a stage takes from the one before)."""
    monkeypatch.setenv("BERTAPPROX_WORK", str(tmp_path))
    monkeypatch.delenv("TEACHER_NAME", raising=False)
    stages = load_stages(str(REPO / recipe))
    for stage in stages:  # the folders every stage and chain config reads must exist for validation
        os.makedirs(os.path.join(stage.output_dir, "best"), exist_ok=True)
    for name in ("vocab-contextual", "vocab-contextual-demotexts", "targets", "targets-more", "targets-rest",
                 "targets-crops", "targets-crops-rest", "run-full-pairs", "run-full-pairs-second"):  # fmt: skip
        os.makedirs(tmp_path / f"{name}-all-MiniLM-L6-v2" / "best", exist_ok=True)

    def comparable(config) -> dict:
        values = to_dict(config)
        values["run"].pop("output_dir")
        values["model"].pop("init_from")
        return values

    for stage, old in zip(stages, chain, strict=True):
        assert comparable(stage.config()) == comparable(load_config(str(REPO / "experiments" / "configs" / old)))
