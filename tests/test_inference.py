"""Encoder: the precomputed fast path equals the model, reduced precisions stay close, cache, threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import bertapprox_hf.inference.encoder as encoder_module
import bertapprox_hf.inference.tables as tables_module
from bertapprox_hf.inference import BatchingEncoder, Encoder
from bertapprox_hf.inference.precision import INT8_LOSS_BOUND, cpu_supports, int8_matmul_is_fast, int_mm_works

from .conftest import TRAIN, read_texts, trained_student

INT8_RHO = pytest.mark.skipif(not int_mm_works(torch.device("cpu")), reason="torch._int_mm does not run on this CPU")
ODD_TEXTS = ["", "   ", "😀 Привет", "new york city new york city", "the " * 700, "What is the interest rate?"]


def forward_bags(model, bags: list[list[int]]) -> np.ndarray:
    """The model's own forward on right-padded bags (padding slots hold random ids: the mask rules)."""
    width = max([len(b) for b in bags] + [1])
    ids = torch.randint(0, model.config.vocab_size, (len(bags), width))
    mask = torch.zeros(len(bags), width, dtype=torch.long)
    for row, bag in enumerate(bags):
        ids[row, : len(bag)] = torch.tensor(bag, dtype=torch.long)
        mask[row, : len(bag)] = 1
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).pooler_output.numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def tiny_student(tiny_vocab):
    # the adapter is part of the per-entry tables; a second pooling round re-weights the gathered rows,
    # a context block updates them with the pooled vector and pair features add word order
    model = trained_student(tiny_vocab, entry_adapter_rank=4, pooling_rounds=2, context_layers=1, pair_rank=8)
    with torch.no_grad():
        model.pooling.context_queries[0].proj.weight.normal_(0, 0.5)  # large enough to matter
        model.context_blocks[0].down.weight.normal_(0, 0.2)
        model.pairs.up.weight.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def tiny_encoder(tiny_student):
    return Encoder.from_pretrained(tiny_student, device="cpu")


@pytest.fixture(scope="module")
def minilm_student(minilm_vocab):
    return trained_student(minilm_vocab)


@pytest.fixture(scope="module")
def minilm_encoder(minilm_student):
    return Encoder.from_pretrained(minilm_student, cache_size=0)


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    queries = read_texts(TRAIN / "msmarco_queries.jsonl", 2100)[1800:]  # past what the vocabulary saw
    passages = read_texts(TRAIN / "msmarco_v2_passages.jsonl", 1700)[1600:]
    sentences = read_texts(TRAIN / "reuters21578_sentences.jsonl", 1700)[1600:]
    return queries + passages + sentences + ODD_TEXTS


# --- float32 equals the model ---------------------------------------------------------------------
def test_float32_equals_forward_on_random_bags(tiny_student, tiny_encoder):
    generator = np.random.default_rng(0)
    vocab = tiny_student.config.vocab_size
    bags = [
        [],
        [5],
        [5, 5, 5],
        [3, 4, 3],
        [],
        (list(range(1, vocab)) * 2)[:512],
        generator.integers(0, vocab, 512).tolist(),
    ]
    bags += [generator.integers(0, vocab, generator.integers(0, 40)).tolist() for _ in range(60)]
    bags += [[7] * 512, [0], [vocab - 1, 0, vocab - 1]]
    expected = forward_bags(tiny_student, bags)
    for batch_size in (1, 7, 64):
        got = tiny_encoder.embed_bags(bags, batch_size=batch_size)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_context_blocks_equal_the_model_in_chunks_and_when_stacked(tiny_vocab, tiny_student, monkeypatch):
    generator = np.random.default_rng(1)
    vocab = tiny_student.config.vocab_size
    bags = [[], [5], *[generator.integers(0, vocab, generator.integers(0, 60)).tolist() for _ in range(40)], []]
    # one block runs from its precomputed table, here in chunks of a few bags (a bag never splits)
    monkeypatch.setattr(encoder_module, "ENTRY_CHUNK", 50)
    chunked = Encoder.from_pretrained(tiny_student, device="cpu", cache_size=0)
    np.testing.assert_allclose(chunked.embed_bags(bags, batch_size=16), forward_bags(tiny_student, bags), atol=1e-5)
    # two blocks: the second sees the first's output, so both run on the gathered rows
    stacked = trained_student(tiny_vocab, pooling_rounds=2, context_layers=2)
    with torch.no_grad():
        for block in stacked.context_blocks:
            block.down.weight.normal_(0, 0.2)
    encoder = Encoder.from_pretrained(stacked, device="cpu", cache_size=0)
    expected = forward_bags(stacked, bags)
    np.testing.assert_allclose(encoder.embed_bags(bags, batch_size=16), expected, atol=1e-5)
    one = trained_student(tiny_vocab, pooling_rounds=2, context_layers=1)
    one.load_state_dict(stacked.state_dict(), strict=False)
    assert np.abs(forward_bags(one, bags) - expected).max() > 1e-3  # the second block mattered


def test_float32_equals_the_model_on_real_text(tiny_student, tiny_encoder, minilm_student, minilm_encoder, real_texts):
    for model, encoder in ((tiny_student, tiny_encoder), (minilm_student, minilm_encoder)):
        np.testing.assert_allclose(encoder.encode(real_texts), model.encode(real_texts), atol=1e-5, rtol=0)
        bags = model.get_tokenizer().encode_bags(real_texts[:50])
        np.testing.assert_allclose(encoder.embed_bags(bags), forward_bags(model, bags), atol=1e-5, rtol=0)


def test_flat_bags_give_the_embeddings_of_bag_lists(tiny_encoder, minilm_encoder, real_texts, monkeypatch):
    """The encoder reads the compiled tokenizer's flat arrays; bags as lists (pure Python, or a tokenizer without
    the flat API) give the same padded batches, so the same embeddings."""
    texts = real_texts + ["[CLS] new york [SEP] city", "x [MASK]! [unk] [UNK][PAD]"]
    for encoder in (tiny_encoder, minilm_encoder):
        tokenizer = encoder.tokenizer
        ids, offsets = tokenizer.encode_bags_flat(texts, encoder.max_bag_size)
        assert ids.dtype == np.int32 and offsets.dtype == np.int64 and len(offsets) == len(texts) + 1
        bags = tokenizer.encode_bags(texts, encoder.max_bag_size)
        assert [ids[offsets[k] : offsets[k + 1]].tolist() for k in range(len(texts))] == bags
        encoder.clear_cache()
        flat = encoder.encode(texts, batch_size=64)
        lists = encoder.embed_bags(bags, batch_size=64)
        np.testing.assert_allclose(flat, lists, atol=1e-6, rtol=0)
        with monkeypatch.context() as patch:
            patch.delattr(type(tokenizer), "encode_bags_flat")
            encoder.clear_cache()
            np.testing.assert_allclose(encoder.encode(texts, batch_size=64), flat, atol=1e-6, rtol=0)
        if tokenizer.compiled_encoder is not None:
            with monkeypatch.context() as patch:
                patch.setattr(tokenizer, "compiled_encoder", None)  # the pure-Python path's arrays
                assert np.array_equal(tokenizer.encode_bags_flat(texts, encoder.max_bag_size)[0], ids)
                encoder.clear_cache()
                np.testing.assert_allclose(encoder.encode(texts, batch_size=64), flat, atol=1e-6, rtol=0)


def test_empty_text_is_the_forward_of_an_empty_bag(tiny_student, tiny_encoder):
    empty = forward_bags(tiny_student, [[]])[0]
    np.testing.assert_allclose(tiny_encoder.encode(""), empty, atol=1e-6)
    assert np.abs(empty).sum() > 0  # ρ of the zero vector: defined, not zero


# --- reduced precision ----------------------------------------------------------------------------
# Cosine loss to float32 over 300 queries, 100 passages, 100 sentences and odd texts (this student: noise on its
# initial weights), mean / worst, measured on an AVX2 CPU (float16 and bfloat16 then keep ρ in float32):
# float16 ~1e-8 / 1.8e-7, bfloat16 2.7e-6 / 7.8e-6, int8 with its ρ in int8 8.4e-5 / 2.3e-4, with ρ in float32
# 9e-6 / 4.4e-5. tests/test_int8_bound.py checks int8 against its documented bound with a trained ρ.
@pytest.mark.parametrize(("dtype", "rho_dtype", "mean_bound", "min_bound"), [
    ("float16", None, 0.999999, 0.99999),
    ("bfloat16", None, 0.99997, 0.99995),
    ("int8", "float32", 0.99997, 0.9999),
    pytest.param("int8", "int8", 0.9998, 1 - INT8_LOSS_BOUND, marks=INT8_RHO),
])  # fmt: skip
def test_reduced_precision_stays_close_to_float32(
    minilm_student, minilm_encoder, real_texts, dtype, rho_dtype, mean_bound, min_bound
):
    reference = minilm_encoder.encode(real_texts)
    encoder = Encoder.from_pretrained(minilm_student, dtype=dtype, rho_dtype=rho_dtype, cache_size=0)
    got = encoder.encode(real_texts)
    assert got.dtype == np.float32
    similarity = cosine(got, reference)
    print(f"{encoder}: mean cosine loss {1 - similarity.mean():.2e}, worst {1 - similarity.min():.2e}")
    assert similarity.mean() >= mean_bound, (encoder, similarity.mean())
    assert similarity.min() >= min_bound, (encoder, similarity.min())


def test_int8_gpu_style_path_equals_the_fbgemm_path(tiny_student, monkeypatch):
    texts = ODD_TEXTS + ["bank rate of the united states", "the cat and the dog"]
    fbgemm = Encoder.from_pretrained(tiny_student, dtype="int8", cache_size=0)
    assert fbgemm.pooling.packed is not None
    monkeypatch.setattr(tables_module, "has_fbgemm_byte_bag", lambda: False)
    plain = Encoder.from_pretrained(tiny_student, dtype="int8", cache_size=0)
    assert plain.pooling.packed is None and plain.pooling.int8.dtype == torch.int8
    np.testing.assert_allclose(plain.encode(texts), fbgemm.encode(texts), atol=1e-5)


@pytest.mark.parametrize(("dtype", "rho_dtype"), [
    ("float32", None), ("float16", None), ("bfloat16", None), ("int8", "float32"),
    pytest.param("int8", "int8", marks=INT8_RHO),
])  # fmt: skip
def test_a_text_does_not_depend_on_its_batch(tiny_student, dtype, rho_dtype):
    texts = ODD_TEXTS + ["the bank said", "new york city interest rate market price oil company"] * 3
    encoder = Encoder.from_pretrained(tiny_student, dtype=dtype, rho_dtype=rho_dtype, cache_size=0)
    together = encoder.encode(texts, batch_size=64)
    alone = np.stack([encoder.encode(t) for t in texts])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_rho_precision_follows_the_device_or_the_caller(tiny_student):
    int8 = Encoder.from_pretrained(tiny_student, dtype="int8")
    assert int8.pooling.packed.dtype == torch.uint8
    # int8 ρ only where the CPU has int8 dot products: elsewhere torch._int_mm is a plain loop, 10× slower
    assert int8.rho_dtype == ("int8" if int8_matmul_is_fast() else "float32")
    if int_mm_works(torch.device("cpu")):
        assert Encoder.from_pretrained(tiny_student, dtype="int8", rho_dtype="int8").rho_dtype == "int8"
    assert Encoder.from_pretrained(tiny_student, dtype="float32").rho_dtype == "float32"
    forced = Encoder.from_pretrained(tiny_student, dtype="int8", rho_dtype="float32")
    assert forced.rho_dtype == "float32"
    for dtype in ("float16", "bfloat16"):
        expected = dtype if cpu_supports(getattr(torch, dtype)) else "float32"
        assert Encoder.from_pretrained(tiny_student, dtype=dtype).rho_dtype == expected
    with pytest.raises(ValueError, match="dtype"):
        Encoder.from_pretrained(tiny_student, dtype="int4")


# --- API ------------------------------------------------------------------------------------------
def test_shapes_options_and_properties(tiny_student, tiny_encoder):
    dim = tiny_student.config.output_dim
    assert tiny_encoder.dim == dim == tiny_encoder.get_sentence_embedding_dimension()
    assert tiny_encoder.similarity == tiny_student.config.similarity
    one = tiny_encoder.encode("new york city")
    assert one.shape == (dim,) and one.dtype == np.float32
    assert tiny_encoder.encode([]).shape == (0, dim)
    assert tiny_encoder.embed_bags([]).shape == (0, dim)
    normalized = tiny_encoder.encode(["the bank", "oil price"], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)
    tensor = tiny_encoder.encode(("the bank", "oil price"), convert_to_numpy=False, show_progress_bar=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, dim) and tensor.dtype == torch.float32


def test_bad_input_is_named(tiny_encoder):
    with pytest.raises(TypeError, match="None"):
        tiny_encoder.encode(None)
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        tiny_encoder.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        tiny_encoder.encode([None])
    with pytest.raises(TypeError):
        tiny_encoder.encode({"a": 1})
    with pytest.raises(ValueError, match="vocabulary size"):
        tiny_encoder.embed_bags([[1, 2], [tiny_encoder.vocab_size]])
    with pytest.raises(ValueError, match="bag 3 has ids outside"):
        tiny_encoder.embed_bags([[1], [], [2, 3], [4, -1]], batch_size=3)
    with pytest.raises(TypeError, match="bag 1 holds float"):
        tiny_encoder.embed_bags([[1, 2], [1.5]])
    with pytest.raises(TypeError, match="bag 2 is NoneType"):
        tiny_encoder.embed_bags([[1], [2], None])
    np.testing.assert_array_equal(
        tiny_encoder.embed_bags([np.array([3, 4]), (5,)]), tiny_encoder.embed_bags([[3, 4], [5]])
    )
    with pytest.raises(TypeError):
        Encoder.from_pretrained(42)


@pytest.mark.parametrize(
    ("batch_size", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("8", TypeError)]
)
def test_bad_batch_sizes_and_limits_are_named(tiny_encoder, tiny_student, batch_size, error):
    with pytest.raises(error, match="batch_size must be a positive integer"):
        tiny_encoder.encode(["the bank"], batch_size=batch_size)
    with pytest.raises(error, match="batch_size must be a positive integer"):
        tiny_encoder.embed_bags([[1, 2]], batch_size=batch_size)
    with pytest.raises(error, match="batch_size must be a positive integer"):
        tiny_student.encode(["the bank"], batch_size=batch_size)
    with pytest.raises(ValueError, match="cache_size must be a non-negative integer"):
        Encoder.from_pretrained(tiny_student, cache_size=-1)
    with pytest.raises(ValueError, match="cache_size must be a non-negative integer"):
        Encoder.from_pretrained(tiny_student, cache_size=1.5)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_batch": 0}, ValueError, "max_batch must be ≥ 1"),
        ({"max_batch": "4"}, TypeError, "max_batch must be a positive integer"),
        ({"max_wait_ms": -1}, ValueError, "max_wait_ms ≥ 0"),
        ({"max_wait_ms": "2"}, TypeError, "max_wait_ms must be a number"),
    ],
)
def test_batching_encoder_refuses_bad_limits(tiny_encoder, options, error, message):
    with pytest.raises(error, match=message):
        BatchingEncoder(tiny_encoder, **options)


def test_from_a_saved_folder_equals_in_memory(tiny_student, tiny_encoder, tmp_path):
    tiny_student.save_pretrained(tmp_path)
    loaded = Encoder.from_pretrained(tmp_path, device="cpu")
    texts = ODD_TEXTS + ["interest rate of the bank"]
    np.testing.assert_allclose(loaded.encode(texts), tiny_encoder.encode(texts), atol=1e-6)


def test_the_model_is_left_as_it_was(tiny_vocab):
    model = trained_student(tiny_vocab).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = Encoder.from_pretrained(model, cache_size=0)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    embedding = encoder.encode("the bank")
    with torch.no_grad():
        model.output_projection.weight.mul_(2)  # later training does not leak into the encoder
    np.testing.assert_array_equal(encoder.encode("the bank"), embedding)


# --- cache ----------------------------------------------------------------------------------------
def test_cache_counts_evicts_and_returns_copies(tiny_student, monkeypatch):
    encoder = Encoder.from_pretrained(tiny_student, cache_size=3)
    encoded = []
    original = encoder.readout  # every batch of texts ends there, whichever way its bags came
    monkeypatch.setattr(encoder, "readout", lambda pooled: encoded.append(len(pooled)) or original(pooled))
    first = encoder.encode(["a bank", "the cat", "a bank", "the dog"])
    assert encoded == [3]  # the duplicate went through the model once
    np.testing.assert_array_equal(first[0], first[2])
    assert encoder.cache_info() == {"hits": 0, "misses": 4, "size": 3, "maxsize": 3, "hit_rate": 0.0}
    first[:] = 0  # the caller's array is its own
    again = encoder.encode(["a bank", "the cat"])
    assert encoded == [3] and np.abs(again).sum() > 0
    encoder.encode(["oil price"])  # evicts the least recently used: "the dog"
    info = encoder.cache_info()
    assert (info["hits"], info["misses"], info["size"]) == (2, 5, 3) and info["hit_rate"] == pytest.approx(2 / 7)
    assert encoder.cache.texts() == ["a bank", "the cat", "oil price"]
    again[:] = 1
    fresh = Encoder.from_pretrained(tiny_student, cache_size=0)
    np.testing.assert_allclose(encoder.encode(["a bank", "the cat"]), fresh.encode(["a bank", "the cat"]), atol=1e-6)
    assert fresh.cache_info()["size"] == 0 and fresh.cache_info()["maxsize"] == 0
    encoder.clear_cache()
    assert encoder.cache_info()["size"] == 0
    with pytest.raises(ValueError, match="cache_size"):
        Encoder.from_pretrained(tiny_student, cache_size=-1)


# --- threads --------------------------------------------------------------------------------------
def test_encode_from_many_threads(tiny_student, real_texts):
    texts = real_texts[:150]
    reference = Encoder.from_pretrained(tiny_student, cache_size=0).encode(texts)
    encoder = Encoder.from_pretrained(tiny_student, cache_size=40)
    generator = np.random.default_rng(0)
    jobs = [generator.choice(len(texts), size=int(generator.integers(1, 30))) for _ in range(64)]

    def work(positions):
        return positions, encoder.encode([texts[i] for i in positions], batch_size=8)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for positions, rows in pool.map(work, jobs):
            np.testing.assert_allclose(rows, reference[positions], atol=1e-6, rtol=0)
    info = encoder.cache_info()
    assert info["size"] <= 40 and info["hits"] + info["misses"] == sum(len(j) for j in jobs)


def test_batching_encoder_under_concurrency(tiny_student, real_texts, monkeypatch):
    texts = real_texts[:120]
    reference = Encoder.from_pretrained(tiny_student, cache_size=0).encode(texts)
    encoder = Encoder.from_pretrained(tiny_student, cache_size=0)
    batch_sizes = []
    original = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda t, **kw: batch_sizes.append(len(t)) or original(t, **kw))
    with BatchingEncoder(encoder, max_batch=16, max_wait_ms=20) as batcher:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = list(pool.map(batcher.submit, texts))
        rows = np.stack([f.result(timeout=30) for f in futures])
        np.testing.assert_allclose(rows, reference, atol=1e-6)
        assert len(batch_sizes) < len(texts) and max(batch_sizes) <= 16
        np.testing.assert_allclose(batcher.encode("the bank", timeout=30), original("the bank"), atol=1e-6)
        with pytest.raises(TypeError):
            batcher.submit(None)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late")
    batcher.close()  # idempotent


def test_batching_encoder_finishes_pending_work_and_reports_errors(tiny_student, monkeypatch):
    encoder = Encoder.from_pretrained(tiny_student, cache_size=0)
    gate = threading.Event()
    original = encoder.encode

    def slow(texts, **kwargs):
        gate.wait(5)
        if "boom" in texts:
            raise RuntimeError("boom")
        return original(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", slow)
    batcher = BatchingEncoder(encoder, max_batch=4, max_wait_ms=1)
    futures = [batcher.submit(t) for t in ["the bank", "oil", "boom", "cat", "dog", "new york"]]
    gate.set()
    batcher.close()  # returns once every submitted text is done
    assert all(f.done() for f in futures)
    failed = [f for f in futures if f.exception() is not None]
    assert failed and all(str(f.exception()) == "boom" for f in failed)
    np.testing.assert_allclose(futures[-1].result(), original("new york"), atol=1e-6)


# --- GPU ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(
    ("dtype", "bound"), [("float32", 0.99999), ("float16", 0.9999), ("bfloat16", 0.999), ("int8", 0.995)]
)
def test_cuda_matches_cpu(tiny_student, real_texts, dtype, bound):
    reference = Encoder.from_pretrained(tiny_student, device="cpu", cache_size=0).encode(real_texts)
    encoder = Encoder.from_pretrained(tiny_student, device="cuda", dtype=dtype, cache_size=0)
    assert encoder.pooling.tables.scores.device.type == "cuda"
    got = encoder.encode(real_texts)
    assert cosine(got, reference).mean() >= bound
    assert encoder.encode(real_texts[:3], convert_to_numpy=False).device.type == "cuda"


def test_cache_is_bounded_in_bytes_and_skips_long_texts():
    """Untrusted text cannot fill the memory through the cache: a long text is never kept, and the texts and rows
    kept stay within the byte budget however many distinct texts stream through."""
    from bertapprox_hf.inference.cache import EmbeddingCache

    cache = EmbeddingCache(10_000, max_bytes=200_000, max_text_chars=1_000)
    row = np.ones(384, dtype=np.float32)
    cache.store(["x" * 5_000], row[None])
    assert cache.info()["size"] == 0 and cache.bytes == 0
    for start in range(0, 3_000, 100):
        texts = [f"{number} " + "word " * 150 for number in range(start, start + 100)]
        cache.store(texts, np.ones((100, 384), dtype=np.float32))
        assert cache.bytes <= 200_000
    kept = cache.texts()
    assert 0 < len(kept) < 3_000 and kept[-1].startswith("2999 ")  # the most recent are kept
    out = np.zeros((1, 384), dtype=np.float32)
    first, _ = cache.lookup([kept[-1]], out)
    assert not first and out[0, 0] == 1.0
    cache.clear()
    assert cache.bytes == 0 and cache.info()["size"] == 0
