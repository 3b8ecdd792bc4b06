"""Saving and loading through the Auto classes, in a process that cannot import bertapprox_hf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from bertapprox_hf import BertApproxModel

from .conftest import trained_student

TEXTS = ["What is the interest rate of the bank?", "new york city", "", "😀 Привет"]

# Run in a fresh interpreter: bertapprox_hf is made unimportable, so only the copied remote code runs.
LOADER = textwrap.dedent(
    """
    import json, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "bertapprox_hf":
                raise ImportError("bertapprox_hf must not be imported here")
    sys.meta_path.insert(0, Block())
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    folder, texts = sys.argv[1], json.loads(sys.argv[2])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    out = model(**batch).pooler_output
    print(json.dumps({
        "config": type(config).__name__, "model": type(model).__name__, "tokenizer": type(tokenizer).__name__,
        "module": type(model).__module__, "bags": [tokenizer.tokenize(t) for t in texts],
        "embeddings": out.tolist(), "encode": model.encode(texts).tolist(),
    }))
    """
)


def run_loader(folder, texts, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), json.dumps(texts)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_round_trip_through_auto_classes_in_a_fresh_process(tiny_vocab, tmp_path):
    model = trained_student(tiny_vocab)
    folder = tmp_path / "student"
    model.save_pretrained(folder)
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= files
    assert {"configuration_bertapprox.py", "modeling_bertapprox.py", "tokenization_bertapprox.py"} <= files
    assert {"text_normalization.py", "fast_bags.py", "word_cache.py"} <= files
    assert {"text_normalization.py", "pooling_bertapprox.py", "encoding_bertapprox.py"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_bertapprox.BertApproxModel"
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "tokenization_bertapprox.BertApproxTokenizer"

    loaded = run_loader(folder, TEXTS, tmp_path)
    assert (loaded["config"], loaded["model"], loaded["tokenizer"]) == (
        "BertApproxConfig", "BertApproxModel", "BertApproxTokenizer",
    )  # fmt: skip
    assert not loaded["module"].startswith("bertapprox_hf")
    tokenizer = model.get_tokenizer()
    assert loaded["bags"] == [tokenizer.tokenize(t) for t in TEXTS]
    before = model.encode(TEXTS)
    np.testing.assert_allclose(np.array(loaded["embeddings"]), before, atol=1e-6)
    np.testing.assert_allclose(np.array(loaded["encode"]), before, atol=1e-6)


@pytest.mark.parametrize("pair_rank", [0, 8])
def test_model_from_pretrained_in_process_equals_the_original(tiny_vocab, tmp_path, pair_rank):
    model = trained_student(tiny_vocab, pair_rank=pair_rank)
    model.save_pretrained(tmp_path)
    loaded = BertApproxModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.encode(TEXTS), model.encode(TEXTS))
    if pair_rank:  # the skip-gram flags travel in the weights file
        assert loaded.entry_is_skipgram.tolist() == [kind == "skipgram" for kind in tiny_vocab.kinds()]
        assert loaded.entry_is_skipgram.any()


def test_missing_weights_file_is_named(tiny_vocab, tmp_path):
    trained_student(tiny_vocab).save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        BertApproxModel.from_pretrained(tmp_path)


def test_corrupt_weights_file_is_named(tiny_vocab, tmp_path):
    trained_student(tiny_vocab).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors"):
        BertApproxModel.from_pretrained(tmp_path)


def test_vocabulary_and_table_size_mismatch_is_named(tiny_vocab, tmp_path):
    trained_student(tiny_vocab).save_pretrained(tmp_path)
    with open(tmp_path / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("one more entry\n")
    with pytest.raises(ValueError, match="vocab.txt"):
        BertApproxModel.from_pretrained(tmp_path)


def test_table_and_config_mismatch_is_named(tiny_vocab, tmp_path):
    trained_student(tiny_vocab).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["entry_table.weight"] = tensors["entry_table.weight"][:-3].contiguous()
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="config.json"):
        BertApproxModel.from_pretrained(tmp_path)
