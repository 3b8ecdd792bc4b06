"""BertApproxTokenizer: longest match, skip-grams, WordPiece fallback, caps and odd input."""

from __future__ import annotations

import pytest
import torch

from bertapprox_hf import BertApproxTokenizer
from bertapprox_hf.model.text_normalization import split_words
from bertapprox_hf.model.tokenization_bertapprox import MAX_BAG_SIZE

from .conftest import TRAIN, read_texts

ENTRIES = [
    "[PAD]", "[UNK]", "the", "new", "york", "city", "new york", "new york city", "york city", "is",
    "big", "a", "b", "c", "big <skip> apple", "apple", "run", "##ning", "##s", "r", "##u", "##n", "cat",
    "!", "?",
]  # fmt: skip


@pytest.fixture()
def tokenizer() -> BertApproxTokenizer:
    return BertApproxTokenizer.from_entries(ENTRIES)


def test_longest_match_prefers_the_longest_entry(tokenizer):
    assert tokenizer.tokenize("New York City is big") == ["new york city", "is", "big"]
    assert tokenizer.tokenize("new york is big") == ["new york", "is", "big"]
    assert tokenizer.tokenize("the york city") == ["the", "york city"]


def test_skipgrams_are_added_on_top_of_the_words(tokenizer):
    assert tokenizer.tokenize("big red apple") == ["big", "big <skip> apple", "[UNK]", "apple"]
    assert tokenizer.tokenize("big a b apple") == ["big", "big <skip> apple", "a", "b", "apple"]
    # three words between: beyond skipgram_max_gap=2
    assert "big <skip> apple" not in tokenizer.tokenize("big a b c apple")


def test_unknown_words_fall_back_to_pieces(tokenizer):
    assert tokenizer.tokenize("running cats") == ["run", "##ning", "cat", "##s"]
    assert tokenizer.tokenize("runs") == ["run", "##s"]
    assert tokenizer.tokenize("zzz") == ["[UNK]"]


def test_fallback_matches_the_teacher_wordpiece(minilm):
    """Words no longer entry covers are split exactly like the teacher splits them."""
    pieces = [t for t, _ in sorted(minilm.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    tokenizer = BertApproxTokenizer.from_entries(["[PAD]"] + [p for p in pieces if p != "[PAD]"])
    texts = read_texts(TRAIN / "msmarco_v2_passages.jsonl", 200)
    for text in texts:
        expected = minilm.tokenizer.tokenize(text)[:MAX_BAG_SIZE]
        assert tokenizer.tokenize(text) == expected


def test_normalization_matches_the_teacher(minilm, shared_data):
    normalizer = minilm.tokenizer.backend_tokenizer.normalizer
    pre_tokenizer = minilm.tokenizer.backend_tokenizer.pre_tokenizer
    texts = []
    for name in ("msmarco_queries", "reuters21578_sentences", "wordnet30_glosses", "msmarco_v2_passages"):
        texts += read_texts(shared_data / "train" / f"{name}.jsonl", 500)
    texts += ["Café naïve 東京タワー 😀 zero\u200bwidth soft\u00adhyphen \ue041private", "Ωμέγα Привет ١٢٣ हिन्दी"]
    for text in texts:
        expected = [word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        assert split_words(text) == expected


def test_teacher_token_count_equals_the_teachers(minilm, minilm_vocab, shared_data):
    """The student's tokenizer counts the teacher's tokens exactly, so it can stop where the teacher stops."""
    encoder = minilm_vocab.tokenizer().bag_encoder
    texts = read_texts(shared_data / "beir" / "scifact" / "corpus.jsonl", 100)
    texts += read_texts(TRAIN / "msmarco_v2_passages.jsonl", 200) + ["Café naïve 東京タワー 😀", "", "x" * 150]
    for text in texts:
        assert encoder.teacher_token_count(text) == len(minilm.tokenizer(text)["input_ids"]), text[:60]


def test_the_bag_covers_the_words_the_teacher_reads(minilm, minilm_vocab, shared_data, tmp_path):
    tokenizer = minilm_vocab.tokenizer()
    window = minilm.pooling.max_length
    assert tokenizer.bag_encoder.teacher_window == window == 256
    abstracts = read_texts(shared_data / "beir" / "scifact" / "corpus.jsonl", 20)
    long = " ".join(abstracts[:4])
    encoding = minilm.tokenizer(long, return_offsets_mapping=True)
    tokens, offsets = encoding.tokens(), encoding["offset_mapping"]
    assert len(tokens) > 2 * window
    unread = window - 1  # [CLS] and window - 2 tokens are read
    while tokens[unread].startswith("##"):  # a word the teacher reads in part is left out whole
        unread -= 1
    read = long[: offsets[unread][0]]
    assert tokenizer.encode_bags([long]) == tokenizer.encode_bags([read])
    whole = BertApproxTokenizer.from_entries(minilm_vocab.entries, teacher_window=0)
    assert len(whole.encode_bags([long])[0]) > len(whole.encode_bags([read])[0])
    for text in abstracts:  # short texts are read whole
        if len(minilm.tokenizer(text)["input_ids"]) <= window:
            assert tokenizer.encode_bags([text]) == whole.encode_bags([text])

    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    assert loaded.bag_encoder.teacher_window == window
    assert loaded.encode_bags([long]) == tokenizer.encode_bags([long])


def test_the_bag_is_capped_at_512(tokenizer):
    ids = tokenizer("a " * 2000)["input_ids"]
    assert len(ids) == MAX_BAG_SIZE
    assert len(tokenizer("a " * 2000, truncation=True, max_length=10)["input_ids"]) == 10


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \t\n  ",
        "😀🎉 🙂",
        "\x00\x01\x02\x7f\u200b",
        "Привет мир Ελληνικά 中文字符 العربية",
        "x" * 1_000_000,
        "new york " * 100_000,
        "\ud800 lone surrogate",
    ],
)
def test_odd_input_neither_crashes_nor_hangs(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert len(ids) <= MAX_BAG_SIZE
    assert all(0 <= i < tokenizer.vocab_size for i in ids)


def test_empty_and_whitespace_give_empty_bags(tokenizer):
    assert tokenizer("")["input_ids"] == []
    batch = tokenizer(["", "  ", "cat"], padding=True, return_tensors="pt")
    assert batch["attention_mask"].sum(1).tolist() == [0, 0, 1]


def test_batch_calls_pad_and_return_tensors(tokenizer):
    batch = tokenizer(["the cat", "new york city is big", ""], padding=True, return_tensors="pt")
    assert isinstance(batch["input_ids"], torch.Tensor)
    assert batch["input_ids"].shape == (3, 3)
    assert batch["input_ids"][0].tolist() == [2, 22, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [0, 0, 0]]
    # ragged bags still become one tensor
    assert tokenizer(["the", "the cat"], return_tensors="pt")["input_ids"].shape == (2, 2)
    assert tokenizer(["the"], padding="max_length", max_length=5)["input_ids"] == [[2, 0, 0, 0, 0]]


def test_non_string_items_are_refused(tokenizer):
    with pytest.raises(TypeError, match="item 1 is int"):
        tokenizer.encode_bags(["fine", 3])


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, trust_remote_code=True)
    text = "New York City runs big red apples!"
    assert loaded.tokenize(text) == tokenizer.tokenize(text)
    assert loaded.get_vocab() == tokenizer.get_vocab()


def test_missing_vocabulary_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertApproxTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
