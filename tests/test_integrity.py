"""The integrity record: every damaged or mismatched model folder is refused with the file named, or loads with
the documented warning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bertapprox_hf import BertApproxModel
from bertapprox_hf.inference import Encoder
from bertapprox_hf.model.integrity import RECORD_NAME, IntegrityError, safetensors_tensor_digests

from .conftest import trained_student

TEXTS = ["what is the interest rate", "new york city", ""]


@pytest.fixture(scope="module")
def saved(tiny_vocab, tmp_path_factory):
    """A saved student (with its record) and, beside it, another student of the same widths."""
    root = tmp_path_factory.mktemp("integrity")
    trained_student(tiny_vocab).save_pretrained(root / "student")
    trained_student(tiny_vocab, noise=0.2).save_pretrained(root / "other")
    trained_student(tiny_vocab, pair_rank=4).save_pretrained(root / "with-pairs")
    return root


@pytest.fixture
def folder(saved, tmp_path):
    return shutil.copytree(saved / "student", tmp_path / "student")


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def vocab_lines(folder) -> list[str]:
    return (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]


def write_vocab(folder, lines) -> None:
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_save_pretrained_writes_a_record_that_loads_cleanly(folder):
    record = json.loads((folder / RECORD_NAME).read_text())
    assert record["architecture"]["normalize"] is True
    assert set(record["files"]) == {"model.safetensors", "vocab.txt"}
    assert record["files"]["vocab.txt"]["entries"] == len(vocab_lines(folder))
    assert set(record["files"]["model.safetensors"]["tensors"]) == set(load_file(folder / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a folder with its record
        model = BertApproxModel.from_pretrained(folder)
    assert not model.entry_table.weight.requires_grad
    loaded, info = BertApproxModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize(
    "key", ["normalize", "pair_rank", "context_layers", "self_attention_layers", "pooling_rounds", "entry_adapter_rank"]
)
@pytest.mark.parametrize("change", ["changed", "missing"])
def test_config_architecture_key_changed_or_missing_is_refused(folder, key, change):
    value = json.loads((folder / "config.json").read_text())[key]
    new = None if change == "missing" else (not value if isinstance(value, bool) else value + 1)
    edit_config(folder, **{key: new})
    with pytest.raises(IntegrityError, match=rf"config\.json: {key} is {'missing' if new is None else repr(new)}"):
        BertApproxModel.from_pretrained(folder)


def test_another_students_weights_of_the_same_widths_are_refused(saved, folder):
    shutil.copy(saved / "other" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model\.safetensors: \d+ of \d+ tensors hold other values"):
        BertApproxModel.from_pretrained(folder)


def test_another_architectures_weights_are_refused_even_without_a_record(saved, folder):
    shutil.copy(saved / "with-pairs" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(IntegrityError, match="unexpected tensors: entry_is_skipgram, pairs"):
        BertApproxModel.from_pretrained(folder)
    os.remove(folder / RECORD_NAME)  # an old folder: transformers' report becomes an error, not a stderr line
    with pytest.warns(UserWarning, match=RECORD_NAME), pytest.raises(IntegrityError, match="unexpected weights"):
        BertApproxModel.from_pretrained(folder)


def test_missing_weight_is_an_error_not_a_fresh_initialisation(folder):
    os.remove(folder / RECORD_NAME)
    tensors = load_file(folder / "model.safetensors")
    del tensors["rho.0.up.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning), pytest.raises(IntegrityError, match=r"missing weights.*rho\.0\.up\.weight"):
        BertApproxModel.from_pretrained(folder)


def test_vocab_line_edited_with_the_same_length_is_refused(folder):
    lines = vocab_lines(folder)
    lines[7] = "definitely not an entry"
    write_vocab(folder, lines)
    with pytest.raises(IntegrityError, match=r"vocab\.txt: \d+ entries as saved, but other entries \(lines 1-"):
        BertApproxModel.from_pretrained(folder)


@pytest.mark.parametrize("how", ["swapped", "permuted"])
def test_vocab_reordered_is_refused(folder, how):
    lines = vocab_lines(folder)
    if how == "swapped":
        lines[5], lines[6] = lines[6], lines[5]
    else:
        lines = [lines[0]] + list(np.random.default_rng(0).permutation(lines[1:]))
    write_vocab(folder, lines)
    with pytest.raises(IntegrityError, match=r"vocab\.txt: the same \d+ entries in another order"):
        BertApproxModel.from_pretrained(folder)


def test_another_students_vocab_of_the_same_length_is_refused(folder):
    lines = vocab_lines(folder)
    write_vocab(folder, lines[:2] + [f"other entry {i}" for i in range(len(lines) - 2)])
    with pytest.raises(IntegrityError, match=r"vocab\.txt: .*other entries"):
        BertApproxModel.from_pretrained(folder)


def test_flipped_bytes_in_a_tensor_are_refused_naming_the_tensor(folder):
    path = folder / "model.safetensors"
    digests = safetensors_tensor_digests(str(path))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # the last tensor's data (safetensors sorts tensors by name; the header comes first)
    path.write_bytes(bytes(data))
    changed = {name for name, info in safetensors_tensor_digests(str(path)).items() if info != digests[name]}
    assert len(changed) == 1
    with pytest.raises(IntegrityError, match=rf"1 of \d+ tensors hold other values \({changed.pop()}\)"):
        BertApproxModel.from_pretrained(folder)


def test_nan_weight_is_refused(tiny_vocab, tmp_path):
    model = trained_student(tiny_vocab)
    with torch.no_grad():
        model.rho[0].down.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path)  # the record matches: the check of the values refuses it
    with pytest.raises(IntegrityError, match=r"NaN or infinite values in rho\.0\.down\.weight"):
        BertApproxModel.from_pretrained(tmp_path)
    loaded = BertApproxModel.from_pretrained(tmp_path, verify_integrity=False)  # experts may still look at it
    assert loaded.rho[0].down.weight.isnan().any()


def test_old_folder_without_record_loads_with_one_warning(folder):
    reference = BertApproxModel.from_pretrained(folder).encode(TEXTS)
    os.remove(folder / RECORD_NAME)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BertApproxModel.from_pretrained(folder)
    ours = [w for w in caught if RECORD_NAME in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, UserWarning)
    np.testing.assert_array_equal(model.encode(TEXTS), reference)


def test_expert_override_by_argument_and_environment(folder, monkeypatch):
    edit_config(folder, normalize=False)
    with pytest.raises(IntegrityError, match="verify_integrity=False"):
        BertApproxModel.from_pretrained(folder)
    assert BertApproxModel.from_pretrained(folder, verify_integrity=False).config.normalize is False
    monkeypatch.setenv("BERTAPPROX_VERIFY_INTEGRITY", "0")
    assert BertApproxModel.from_pretrained(folder).config.normalize is False


def test_fast_encoder_checks_the_folder(folder):
    lines = vocab_lines(folder)
    lines[3], lines[4] = lines[4], lines[3]
    write_vocab(folder, lines)
    with pytest.raises(IntegrityError, match="vocab.txt"):
        Encoder.from_pretrained(folder, device="cpu")


def test_growing_a_saved_student_is_not_a_missing_weight(folder):
    model = BertApproxModel.from_pretrained(folder, pooling_rounds=2, context_layers=1)
    assert model.config.pooling_rounds == 2 and len(model.context_blocks) == 1


@pytest.mark.parametrize("damage", ["missing-config", "symlink-loop", "not-found"])
def test_unusable_local_paths_say_what_is_wrong(folder, tmp_path, damage):
    if damage == "missing-config":
        os.remove(folder / "config.json")
        path, message = folder, "has no config.json"
    elif damage == "symlink-loop":
        path = tmp_path / "loop"
        os.symlink(path, path)
        message = "Too many levels of symbolic links"
    else:
        path, message = tmp_path / "nowhere" / "student", "model folder not found"
    with pytest.raises(OSError, match=message):
        BertApproxModel.from_pretrained(path)


# Remote code in a fresh interpreter where bertapprox_hf cannot be imported: the copied integrity module checks.
REMOTE_LOADER = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "bertapprox_hf":
                raise ImportError("bertapprox_hf must not be imported here")
    sys.meta_path.insert(0, Block())
    from transformers import AutoModel
    try:
        AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    except ValueError as error:
        print(type(error).__name__, error)
    else:
        print("loaded")
    """
)


def test_auto_model_with_remote_code_checks_the_record(folder, tmp_path):
    assert (folder / "integrity.py").is_file()
    edit_config(folder, pooling_rounds=2)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOADER, str(folder)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("IntegrityError") and "config.json: pooling_rounds is 2 (saved as 1)" in last
