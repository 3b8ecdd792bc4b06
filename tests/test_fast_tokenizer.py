"""The compiled bag tokenizer gives exactly the pure-Python bags: every code point, odd Unicode, fuzzed texts,
real texts of every shared corpus; the fallback when it is missing; threads; bounded caches."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import pickle
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertapprox_hf.model import fast_bags, text_normalization
from bertapprox_hf.model.fast_bags import CompiledBagEncoder, load_extension
from bertapprox_hf.model.text_normalization import normalize_text, split_words
from bertapprox_hf.model.tokenization_bertapprox import BagEncoder, BertApproxTokenizer, load_entries
from bertapprox_hf.model.word_cache import WordCache

from .conftest import DATA, REPO, need_shared

DEMO_ENTRIES = REPO / "results" / "demo" / "student" / "entries.txt"
SAMPLE_TEXTS = Path(__file__).parent / "data" / "tokenizer_texts.jsonl"
SPECIAL = ("[PAD]", "[UNK]")
SMALL_ENTRIES = [
    "[PAD]", "[UNK]", "the", "new", "york", "city", "new york", "new york city", "york city", "is", "big",
    "a", "b", "apple", "big <skip> apple", "new <skip> city", "run", "##ning", "##s", "r", "##u", "##n", "cat",
    "!", "?", "cafe", "東", "京", "οδυσσεας", "σοφος", "ς", "ab", "##c", "a b c", "a b", "x", "##x", "##xx",
    "i̇stanbul", "ιστανμπουλ", "👍", "##🏽",
]  # fmt: skip
ODD_TEXTS = [
    "",
    " ",
    " \t\n\r\x0b\x0c \u3000\u2028\u2029\x85\xa0 ",
    "\x00\x01\x02\x1b[31mred\x1b[0m\x7f\ufffd\ue000\U000f0000",
    "\u200b\u200c\u200d\u2060\ufeff\u00ad",
    "東京都は日本の首都です。𠀀𪛖𫝀𫠝𬺰",
    "e\u0301\u0301\u0327 a\u0327\u0301 \u0301 \u0345\u0301\u0323 \u1100\u1161\u11a8 가각힣",
    "👍🏽👨‍👩‍👧🇫🇷1️⃣",
    "lone \ud800 surrogates \udfff\udbff here \ud83d",
    "ΣΣ ΑΣ ΑΣ' Α'Σ Α\u0301Σ ΑΣ\u0301Α Α.Σ.Α Σ ΣΑ \u0345Σ ΆΣ\u200dΑ Σ\U0001d173",
    "İI ǅǄǆ ẞß Ω K Å ﬀ ﬃ Ꭰ ꭰ",
    "x" * 100 + " " + "x" * 101 + " " + "a" * 5000,
    "a b c a b c a b new york city new big apple new a b apple",
    "!!!???...---'''",
    "\U0001d165\U0001d16d \U0001d16d\U0001d165 a\U0001d165\u0301\U0001d16d",
]


@pytest.fixture(scope="module")
def module():
    extension = load_extension()
    if extension is None:
        pytest.skip("the compiled tokenizer is not built (pip install -e . with a C++17 compiler)")
    return extension


def encoders(module, entries: list[str], **settings) -> tuple[BagEncoder, CompiledBagEncoder]:
    python = BagEncoder(entries, unk_token="[UNK]", special_tokens=SPECIAL, **settings)
    return python, CompiledBagEncoder(python, module)


@pytest.fixture(scope="module")
def demo_entries() -> list[str]:
    return load_entries(str(DEMO_ENTRIES))


@pytest.fixture(scope="module")
def windowed(module, demo_entries):
    """The demo student's vocabulary with the teacher's 256-token window."""
    return encoders(module, demo_entries, teacher_window=256, wordpiece_entries=29000)


@pytest.fixture(scope="module")
def unwindowed(module, demo_entries):
    return encoders(module, demo_entries)


def assert_same_bags(pair, texts: list[str], max_entries: int = 512) -> int:
    python, compiled = pair
    expected = [python.encode(text, max_entries) for text in texts]
    python.encode = python._marked_words = None  # the compiled path must not fall back on Python
    try:
        assert compiled.encode_batch(texts, max_entries, 1) == expected
        ids, offsets = compiled.encode_flat(texts, max_entries, 1)
        assert [ids[offsets[k] : offsets[k + 1]].tolist() for k in range(len(texts))] == expected
        for text, bag in zip(texts, expected, strict=True):
            assert compiled.encode(text, max_entries) == bag, text[:200]
    finally:
        del python.encode, python._marked_words
    return len(texts)


def sample_texts() -> list[str]:
    with open(SAMPLE_TEXTS, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


# --- normalization ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lowercase,strip_accents", [(True, None), (True, False), (False, True), (False, None)])
def test_every_code_point_normalizes_and_splits_as_in_python(module, lowercase, strip_accents):
    _, compiled = encoders(module, SMALL_ENTRIES, lowercase=lowercase, strip_accents=strip_accents)
    block = 4096
    for start in range(0, 0x110000, block):
        text = " ".join(chr(cp) for cp in range(start, start + block))
        assert compiled.normalize(text) == normalize_text(text, lowercase, strip_accents), hex(start)
        assert compiled.words(text) == split_words(text, lowercase, strip_accents), hex(start)


@pytest.mark.parametrize("text", ODD_TEXTS + sample_texts())
def test_context_rules_match_python(module, text):
    """Final sigma, canonical reordering across decompositions, Hangul, dropped characters between letters."""
    _, compiled = encoders(module, SMALL_ENTRIES)
    assert compiled.normalize(text) == normalize_text(text)
    assert compiled.words(text) == split_words(text)


def test_python_words_of_a_long_text_are_normalized_a_chunk_at_a_time(monkeypatch):
    seen = []
    original = text_normalization.normalize_text

    def recording(text, *args):
        seen.append(len(text))
        return original(text, *args)

    monkeypatch.setattr(text_normalization, "normalize_text", recording)
    text = "Word ΑΣ " * 150_000  # ~1.2 MB
    words = list(itertools.islice(text_normalization.iter_words(text), 10))
    assert words == ["word", "ας"] * 5
    assert max(seen) < 5000
    assert list(text_normalization.iter_words(text[:50_000])) == split_words(text[:50_000])


# --- bags ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_entries", [0, 1, 3, 17, 512])
def test_bags_of_odd_and_sample_texts_match_python(module, demo_entries, max_entries):
    texts = ODD_TEXTS + sample_texts()
    for entries in (SMALL_ENTRIES, demo_entries):
        for window in (0, 5, 16, 256):
            assert_same_bags(encoders(module, entries, teacher_window=window, wordpiece_entries=20), texts, max_entries)


def test_megabyte_texts_match_python(windowed, unwindowed):
    texts = [
        "the cat sat on the mat. " * 45_000,
        "x" * 1_000_000,
        "x" * 1_000_000 + " new york city is big",
        "東" * 1_000_000,
        "\u0301" * 500_000 + "a",
        "Σ" + "'" * 1_000_000 + "α",
    ]
    assert_same_bags(windowed, texts)
    assert_same_bags(unwindowed, texts)


def test_entries_longer_than_any_word_limit_still_match(module):
    long_word = "y" * 150
    entries = SMALL_ENTRIES + [long_word, f"{long_word} cat", "##" + "z" * 120]
    pair = encoders(module, entries, teacher_window=64)
    assert_same_bags(pair, [f"{long_word} cat", long_word + "y", "a" + "z" * 120, f"cat {long_word}"])


vocabulary_words = st.sampled_from(
    ["new", "york", "city", "big", "apple", "a", "b", "c", "cat", "cats", "running", "café", "ΣΟΦΟΣ", "東京", "x"]
)
separators = st.sampled_from([" ", "  ", "\t", "\n", ", ", ".", "'", "-", "\u200d", "\u0301 ", "", "\x00"])
word_salad = st.lists(st.tuples(vocabulary_words, separators), max_size=60).map(
    lambda parts: "".join(word + sep for word, sep in parts)
)
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(any_text, word_salad), window=st.sampled_from([0, 6, 20, 256]))
def test_fuzzed_texts_match_python(module, text, window):
    assert_same_bags(encoders(module, SMALL_ENTRIES, teacher_window=window, wordpiece_entries=10), [text])
    _, compiled = encoders(module, SMALL_ENTRIES)
    assert compiled.normalize(text) == normalize_text(text)


def read_corpus(path: Path, limit: int) -> list[str]:
    """The first ``limit`` texts of a shared corpus file (jsonl ``text``, or both sentences of an STS file)."""
    need_shared(path)
    if path.suffix == ".csv":
        with open(path, encoding="utf-8") as handle:
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            return list(itertools.islice((text for row in rows for text in row[5:7]), limit))
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in itertools.islice(handle, limit)]


CORPORA = [
    "train/msmarco_queries.jsonl",
    "train/msmarco_v2_passages.jsonl",
    "train/reuters21578_sentences.jsonl",
    "train/reuters21578_articles.jsonl",
    "train/wordnet30_glosses.jsonl",
    "train/senteval_sentences.jsonl",
    "msmarco-passage-dl19/corpus.jsonl",
    "msmarco-passage-dl19/queries.jsonl",
    "beir/scifact/corpus.jsonl",
    "beir/scifact/queries.jsonl",
    "sts/stsb/sts-train.csv",
    "sts/stsb/sts-dev.csv",
    "sts/stsb/sts-test.csv",
]


@pytest.mark.parametrize("corpus", CORPORA)
def test_real_texts_of_every_corpus_match_python(windowed, unwindowed, corpus):
    texts = read_corpus(DATA / corpus, 3000)
    assert texts
    assert_same_bags(windowed, texts)
    assert_same_bags(unwindowed, texts[:1000])


# --- the teacher's special tokens written in a text --------------------------------------------------------

SPECIAL_TEXTS = (
    [
        "[CLS]",
        "[CLS] new york city [SEP]",
        "new york [SEP] city is big [SEP][SEP] [PAD][PAD][PAD] a b c",
        "[cls] [Cls] [CLS [CLS] CLS] [ CLS ] [[CLS]] [CLS]] [[SEP]",
        "[MASK]ed [UNK]nown x[PAD]y new[SEP]york (new [SEP] york) '[CLS]' \"[MASK]\" [CLS]!? ![SEP]. ,[PAD],",
        "ΑΣ[CLS]ΑΣ Σ[SEP]Σ ΑΣ'[SEP] é[MASK]\u0301 [M\u200bASK] [MA\u0301SK] [\u00adCLS] [CLS]\u0301a",
        "東京[CLS]東京 👍[SEP]🏽 [UNK]👍 \U0001d165[PAD]\U0001d16d",
        "[CLS]" * 300,
        "[SEP] " * 200 + "new york city",
        "the cat sat " * 60 + "[CLS] [SEP] [MASK] " * 40 + "new york city " * 60,
        "\x00[CLS]\x00 \ufffd[SEP]\ufffd \t[PAD]\n[MASK]\r[UNK]\x0b",
        "x" * 150 + "[CLS]" + "y" * 150 + "[SEP]",
    ]
    + [("ab " * 700)[:start] + "[CLS]" + " new york [SEP] city" * 3 for start in range(2040, 2056)]
    + [("ab " * 1400)[:start] + "[SEP][MASK] big apple" for start in range(4090, 4100)]
)


@pytest.mark.parametrize("max_entries", [0, 1, 3, 512])
def test_texts_with_special_tokens_match_python(module, demo_entries, max_entries):
    """A special token counts as one of the teacher's tokens (the window cut moves) and splits the text around it,
    in any position, next to punctuation, letters and other special tokens, in wrong casings (plain text)."""
    texts = SPECIAL_TEXTS + [text.replace("[CLS]", "[cls]") for text in SPECIAL_TEXTS]
    for entries in (SMALL_ENTRIES, demo_entries):
        for window in (0, 3, 4, 5, 8, 16, 256):
            pair = encoders(module, entries, teacher_window=window, wordpiece_entries=20)
            assert_same_bags(pair, texts, max_entries)


def test_special_tokens_move_the_window_cut(windowed):
    python, compiled = windowed
    plain, special = "[ cls ] " * 100 + "new york city", "[CLS] " * 100 + "new york city"
    assert compiled.encode(special, 512) == python.encode(special, 512)
    assert len(compiled.encode(special, 512)) > len(compiled.encode(plain, 512))  # 3 tokens each, against 1


def test_other_teachers_special_tokens_match_python(module, demo_entries):
    """Any list of special tokens: longest first at one position, tokens with spaces or non-ASCII characters,
    prefixes of each other, texts stored with 1, 2 or 4 bytes per character."""
    tokens = ["<s>", "</s>", "<mask>", "<mask> x", "[CLS]", "[CLS]X", " sp", "Σ>", "東京", "👍", ""]
    texts = SPECIAL_TEXTS + [
        "<s> new york </s> <mask> x <mask>x <mask> xx [CLS]X [CLS]x sp  sp Σ> ΑΣ> 東京都 👍👍",
        "a<s>b</s>c<mask>d sp sp<S></S>",
        "东京 東 京 東京東京 <mask>\U0001d165 x",
        "x" * 2045 + " sp sp" + "y" * 3000 + " sp",
    ]
    for entries in (SMALL_ENTRIES, demo_entries):
        for window in (0, 4, 9, 256):
            python = BagEncoder(
                entries, "[UNK]", SPECIAL, teacher_window=window, wordpiece_entries=20, teacher_special_tokens=tokens
            )
            assert_same_bags((python, CompiledBagEncoder(python, module)), texts)
            python = BagEncoder(entries, "[UNK]", SPECIAL, teacher_window=window, teacher_special_tokens=[])
            assert_same_bags((python, CompiledBagEncoder(python, module)), texts)


special_pieces = st.sampled_from(
    ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[cls]", "[CLS", "SEP]", "[", "]", "MASK", "[[", "]]"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.tuples(st.one_of(vocabulary_words, special_pieces), separators), max_size=60),
    window=st.sampled_from([0, 3, 5, 8, 20, 256]),
    max_entries=st.sampled_from([2, 512]),
)
def test_fuzzed_texts_with_special_tokens_match_python(module, parts, window, max_entries):
    text = "".join(word + sep for word, sep in parts)
    assert_same_bags(encoders(module, SMALL_ENTRIES, teacher_window=window, wordpiece_entries=10), [text], max_entries)


def test_flat_bags_equal_the_lists(windowed):
    python, compiled = windowed
    texts = (ODD_TEXTS + sample_texts() + SPECIAL_TEXTS) * 6
    assert sum(map(len, texts)) > 65536  # split over threads
    expected = compiled.encode_batch(texts, 512, 1)
    for threads in (1, 4):
        ids, offsets = compiled.encode_flat(texts, 512, threads)
        assert ids.dtype == "int32" and offsets.dtype == "int64" and ids.flags.writeable
        assert offsets[0] == 0 and offsets[-1] == len(ids) == sum(map(len, expected))
        assert [ids[offsets[k] : offsets[k + 1]].tolist() for k in range(len(texts))] == expected
    ids, offsets = compiled.encode_flat([], 512)
    assert len(ids) == 0 and offsets.tolist() == [0]
    ids, offsets = compiled.encode_flat(["", "new york"], 0)
    assert len(ids) == 0 and offsets.tolist() == [0, 0, 0]
    with pytest.raises(TypeError, match="item 1 is int"):
        compiled.encode_flat(["a", 3], 512)
    tokenizer = BertApproxTokenizer.from_entries(SMALL_ENTRIES, teacher_window=32)
    flat = tokenizer.encode_bags_flat(texts)
    slow = BertApproxTokenizer.from_entries(SMALL_ENTRIES, teacher_window=32)
    slow.compiled_encoder = None
    for got, want in zip(flat, slow.encode_bags_flat(texts), strict=True):
        assert got.dtype == want.dtype and got.tolist() == want.tolist()


# --- wiring, fallback, threads, memory ----------------------------------------------------------------------


def test_tokenizer_uses_the_compiled_path_and_falls_back_to_python(module, monkeypatch, caplog):
    texts = ODD_TEXTS + sample_texts()
    fast = BertApproxTokenizer.from_entries(SMALL_ENTRIES, teacher_window=32)
    assert fast.compiled_encoder is not None
    expected = [fast.bag_encoder.encode(text) for text in texts]
    assert fast.encode_bags(texts) == expected
    assert fast.tokenize(texts[3]) == [SMALL_ENTRIES[i] for i in expected[3]]

    monkeypatch.setenv(fast_bags.PURE_PYTHON_ENV, "1")
    assert BertApproxTokenizer.from_entries(SMALL_ENTRIES).compiled_encoder is None
    monkeypatch.delenv(fast_bags.PURE_PYTHON_ENV)

    monkeypatch.setitem(sys.modules, "bertapprox_hf._fastbag", None)  # the extension is not built
    monkeypatch.setattr(fast_bags, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=fast_bags.__name__):
        slow = BertApproxTokenizer.from_entries(SMALL_ENTRIES, teacher_window=32)
        again = BertApproxTokenizer.from_entries(SMALL_ENTRIES)
    assert slow.compiled_encoder is None and again.compiled_encoder is None
    assert [record.message for record in caplog.records].count(caplog.records[0].message) == 1
    assert "pure Python" in caplog.records[0].message
    assert slow.encode_bags(texts) == expected


def test_stale_extension_is_refused(module, monkeypatch, caplog):
    monkeypatch.setattr(fast_bags, "ALGORITHM_VERSION", fast_bags.ALGORITHM_VERSION + 1)
    monkeypatch.setattr(fast_bags, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=fast_bags.__name__):
        assert load_extension() is None
    assert "another version" in caplog.text


def test_saved_tokenizer_keeps_the_compiled_path(module, tmp_path):
    tokenizer = BertApproxTokenizer.from_entries(SMALL_ENTRIES, teacher_window=32)
    tokenizer.save_pretrained(tmp_path)
    loaded = BertApproxTokenizer.from_pretrained(tmp_path)
    assert loaded.compiled_encoder is not None
    texts = sample_texts()
    assert loaded.encode_bags(texts) == tokenizer.encode_bags(texts)


def test_copies_and_pickles_rebuild_the_compiled_encoder(module):
    tokenizer = BertApproxTokenizer.from_entries(SMALL_ENTRIES, teacher_window=32)
    texts = ODD_TEXTS + sample_texts()
    for other in (copy.deepcopy(tokenizer), pickle.loads(pickle.dumps(tokenizer))):
        assert other.compiled_encoder is not None
        assert other.encode_bags(texts) == tokenizer.encode_bags(texts)


def test_bad_input_gives_clear_errors(module, windowed):
    _, compiled = windowed
    with pytest.raises(TypeError, match="item 1 is int"):
        compiled.encode_batch(["a", 3], 512, 1)
    with pytest.raises(TypeError):
        compiled.encode_batch("not a list", 512, 1)
    with pytest.raises(ValueError, match="negative"):
        compiled.encode("a", -1)
    with pytest.raises(TypeError, match="item 0 is bytes"):
        BertApproxTokenizer.from_entries(SMALL_ENTRIES).encode_bags([b"bytes"])


def test_same_bags_from_eight_threads(windowed, unwindowed):
    texts = (ODD_TEXTS + sample_texts()) * 20
    python, compiled = windowed
    expected = [python.encode(text) for text in texts]
    results: list[list[list[int]] | None] = [None] * 8
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        barrier.wait()
        if index % 2:
            results[index] = compiled.encode_batch(texts, 512, 1 + index % 4)
        else:
            results[index] = [compiled.encode(text, 512) for text in texts]

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == expected for result in results)
    # one call, eight threads of its own, on a batch large enough to be split
    big = [text * 40 for text in texts]
    assert compiled.encode_batch(big, 512, 8) == [python.encode(text) for text in big]
    assert unwindowed[1].encode_batch(big, 512, 8) == [unwindowed[0].encode(text) for text in big]


def test_word_caches_stay_within_their_byte_budget():
    python = BagEncoder(SMALL_ENTRIES, unk_token="[UNK]", special_tokens=SPECIAL, teacher_window=64)
    budget = 256 << 10
    python._word_pieces = WordCache(python._word_pieces_uncached, python.max_chars_per_word, max_bytes=budget)
    python._teacher_token_count = WordCache(
        python._teacher_token_count_uncached, python.max_chars_per_word, max_bytes=budget
    )
    peak = 0
    for index in range(400):
        long_words = " ".join(f"{index}q{k}" + "z" * 90 for k in range(30))  # unique, just under the word limit
        junk = f"{index}" + "j" * 20_000  # unique, far over it
        python.encode(f"{long_words} {junk}")
        python.teacher_token_count(f"{long_words} {junk}")
        peak = max(peak, python._word_pieces.bytes_used, python._teacher_token_count.bytes_used)
    assert 0 < peak <= budget
    for cache in (python._word_pieces, python._teacher_token_count):
        assert all(len(word) <= python.max_chars_per_word for word in cache._memo)


def test_word_cache_default_budget_is_bytes_not_entries():
    calls = []
    cache = WordCache(lambda word: calls.append(word) or (1, 2, 3), max_word_chars=100, max_bytes=10_000)
    for k in range(1000):
        assert cache(f"w{k}" + "x" * 90) == (1, 2, 3)
    assert cache.bytes_used <= 10_000 and len(cache) < 50
    assert cache("w999" + "x" * 90) == (1, 2, 3) and len(calls) == 1000  # the newest is kept
    with pytest.raises(ValueError, match="max_bytes"):
        WordCache(len, max_word_chars=1, max_bytes=0)


def test_tables_made_with_another_regex_release_are_checked(module):
    class OtherRelease:
        Encoder = module.Encoder
        REGEX_VERSION = "0"

    assert fast_bags._tables_agree(OtherRelease())


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        line = next(line for line in handle if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident size from /proc")
def test_memory_stays_flat_under_unique_megabyte_words(windowed):
    python, compiled = windowed
    texts = [f"{k}" + "q" * 1_000_000 + f" new york {k}" for k in range(3)]
    assert compiled.encode_batch(texts, 512, 1) == [python.encode(text) for text in texts]
    before = resident_mb()
    for k in range(100):
        text = f"{k}" + chr(0x4E00 + k) * 50_000 + "z" * 950_000 + " the end"
        compiled.encode(text, 512)
        python.encode(text)
    assert resident_mb() - before < 64


def test_the_committed_unicode_tables_are_generated_from_the_python_normalization():
    """The C++ tables are derived from ``text_normalization``; a change there must regenerate them."""
    from bertapprox_hf.csrc import gen_unicode_tables

    assert gen_unicode_tables.HEADER.read_text(encoding="utf-8") == gen_unicode_tables.generate(), (
        "bertapprox_hf/csrc/unicode_tables.h is stale: run python bertapprox_hf/csrc/gen_unicode_tables.py"
    )
