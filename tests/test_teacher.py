"""Teacher: pooling read from sentence-transformers files, model inputs, batched encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DistilBertConfig, DistilBertModel

from bertapprox_hf.pipeline.precision import resolve_mixed_precision
from bertapprox_hf.pipeline.teacher import PoolingSpec, Teacher, read_pooling_spec

from .conftest import TRAIN, make_tiny_teacher_folder, read_texts


def test_minilm_pooling_is_read_from_its_files(minilm_path):
    assert read_pooling_spec(minilm_path) == PoolingSpec(mode="mean", normalize=True, max_length=256)


def test_cls_pooling_without_normalization(tmp_path):
    folder = make_tiny_teacher_folder(tmp_path / "cls", pooling="cls", normalize=False)
    teacher = Teacher.from_pretrained(str(folder), device="cpu")
    assert (teacher.pooling.mode, teacher.pooling.normalize, teacher.pooling.similarity) == ("cls", False, "dot")
    features = teacher.tokenizer(["the cat"], return_tensors="pt")
    with torch.no_grad():
        hidden = teacher.model(**features).last_hidden_state
    np.testing.assert_allclose(teacher.encode(["the cat"])[0], hidden[0, 0].numpy(), atol=1e-6)


def test_folder_without_sentence_transformers_files_defaults_to_mean(tmp_path, tiny_teacher_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    Teacher.from_pretrained(tiny_teacher_path).model.save_pretrained(folder)
    Teacher.from_pretrained(tiny_teacher_path).tokenizer.save_pretrained(folder)
    assert read_pooling_spec(str(folder)) == PoolingSpec("mean", False, 512)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Teacher.from_pretrained(str(tmp_path / "nowhere"))


def test_minilm_encode_equals_sentence_transformers(minilm, minilm_path):
    from sentence_transformers import SentenceTransformer

    texts = read_texts(TRAIN / "msmarco_queries.jsonl", 20) + read_texts(TRAIN / "msmarco_v2_passages.jsonl", 12)
    reference = SentenceTransformer(minilm_path, device="cpu").encode(texts, batch_size=7)
    ours = minilm.encode(texts, batch_size=5)
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_token_ids_path_equals_text_path(minilm):
    text = "the interest rate of the central bank"
    ids = minilm.tokenizer(text, add_special_tokens=False)["input_ids"]
    np.testing.assert_allclose(minilm.encode_token_ids([ids])[0], minilm.encode([text])[0], atol=1e-6)


def test_models_without_token_type_ids_get_only_what_they_accept(tiny_teacher):
    """DistilBERT's forward takes no token_type_ids; a BERT tokenizer still produces them."""
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=tiny_teacher.tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64
    )
    teacher = Teacher(DistilBertModel(config), tiny_teacher.tokenizer, PoolingSpec(), "tiny-distilbert", "cpu")
    assert "token_type_ids" in teacher.tokenizer(["the cat"])
    out = teacher.encode(["the cat", "new york city", ""])
    assert out.shape == (3, 32) and np.isfinite(out).all()


def test_encode_keeps_input_order_and_refuses_a_bare_string(tiny_teacher):
    texts = ["a", "the new york city bank rate", "cat", "what is the interest rate of the bank"]
    together = tiny_teacher.encode(texts, batch_size=2)
    one_by_one = np.stack([tiny_teacher.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    with pytest.raises(TypeError, match="list of strings"):
        tiny_teacher.encode("a text")


def test_bf16_autocast_stays_close_to_float32(minilm_path):
    texts = read_texts(TRAIN / "msmarco_queries.jsonl", 16) + read_texts(TRAIN / "msmarco_v2_passages.jsonl", 8)
    exact = Teacher.from_pretrained(minilm_path, device="cpu")
    fast = Teacher.from_pretrained(minilm_path, device="cpu", mixed_precision="bf16")
    assert (exact.describe()["mixed_precision"], fast.describe()["mixed_precision"]) == ("no", "bf16")
    a, b = exact.encode(texts), fast.encode(texts)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # autocast ran: the numbers moved ...
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999  # ... by little (about 1e-5 on 2,800 real texts: docs/training.md)
    states = dict(fast.token_states(texts[:3]))
    assert all(s.dtype == np.float32 and s.shape[1] == 384 for s in states.values())


def test_unknown_mixed_precision_is_refused(tiny_teacher_path):
    with pytest.raises(ValueError, match="mixed precision must be one of no, bf16, fp16, auto; got 'int8'"):
        Teacher.from_pretrained(tiny_teacher_path, device="cpu", mixed_precision="int8")


def test_auto_precision_is_float32_on_a_cpu(tiny_teacher_path):
    teacher = Teacher.from_pretrained(tiny_teacher_path, device="cpu", mixed_precision="auto")
    assert teacher.describe()["mixed_precision"] == "no" == resolve_mixed_precision("auto", "cpu")  # resolved
    assert resolve_mixed_precision("bf16", "cpu") == "bf16" and resolve_mixed_precision("fp16", "cuda") == "fp16"


def test_batches_hold_at_most_the_token_budget_and_give_the_same_embeddings(minilm_path):
    texts = read_texts(TRAIN / "msmarco_v2_passages.jsonl", 30) + read_texts(TRAIN / "msmarco_queries.jsonl", 40)
    texts.append("word " * 400)  # longer than the window: truncated, and alone in its batch
    one_by_one = Teacher.from_pretrained(minilm_path, device="cpu").encode(texts, batch_size=1)
    teacher = Teacher.from_pretrained(minilm_path, device="cpu", max_batch_tokens=300)
    encoded = dict(teacher.tokenizer(texts, truncation=True, max_length=teacher.pooling.max_length))
    batches = [(idx, features["input_ids"].shape) for idx, features in teacher._batches(encoded, 16, False)]
    assert sorted(i for idx, _ in batches for i in idx) == list(range(len(texts)))
    for idx, (rows, width) in batches:
        assert rows == len(idx) <= 16 and (rows * width <= 300 or rows == 1)
    assert batches[0][1] == (1, 256)
    assert max(rows for _, (rows, _) in batches) == 16, "short texts fill a batch up to batch_size"
    np.testing.assert_allclose(teacher.encode(texts, batch_size=16), one_by_one, atol=2e-6)


def test_a_text_embedding_pools_its_token_states(minilm):
    texts = read_texts(TRAIN / "msmarco_v2_passages.jsonl", 6) + ["", "a", "word " * 400]
    pooled = {index: minilm.pool_token_states(states) for index, states in minilm.token_states(texts)}
    np.testing.assert_allclose([pooled[i] for i in range(len(texts))], minilm.encode(texts), atol=2e-6)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
def test_a_bad_token_budget_or_batch_size_is_refused(tiny_teacher_path, bad):
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive integer"):
        Teacher.from_pretrained(tiny_teacher_path, device="cpu", max_batch_tokens=bad)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        Teacher.from_pretrained(tiny_teacher_path, device="cpu").encode(["a text"], batch_size=bad)


def test_no_texts_give_no_rows(tiny_teacher):
    assert tiny_teacher.encode([]).shape == (0, tiny_teacher.dim)
    assert list(tiny_teacher.token_states([])) == []
