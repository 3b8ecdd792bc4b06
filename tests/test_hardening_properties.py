"""Property-based checks (hypothesis) of the hardened entry points: the teacher-window count, the corpus reader, the
integrity record, id de-duplication, the metrics log, decode and the CLI's error contract."""

from __future__ import annotations

import json
import shutil
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertapprox_hf import BertApproxModel
from bertapprox_hf.errors import run_main
from bertapprox_hf.model.tokenization_bertapprox import BagEncoder, BertApproxTokenizer
from bertapprox_hf.pipeline.corpus import iter_records
from bertapprox_hf.training.recovery import truncate_metrics_log
from indexers.runs import read_queries

from .conftest import trained_student

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# Pieces a hostile or unlucky text is made of: words, specials written out, CJK (the edge of the teacher's CJK
# ranges included), accents, punctuation, odd whitespace and control characters.
PIECES = st.sampled_from(
    ["the", "bank", "rate", "cls", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[cls]", "[", "]", "CLS",
     "漢", "字", "\U0002b81f", "\U0002b820", "\U0002b8ff", "\U0002b920", "\U00030000", "〇", "é", "e\u0301",
     "naïve", "İ", "ß", " ", "  ", "\t", "\n", "\u00a0", "\u200b", "\x00", "\ufffd", ".", ",", "!", "-", "'",
     "x" * 120, "😀", "1", "abc"]
)  # fmt: skip
TEXTS = st.lists(PIECES, max_size=25).map("".join) | st.text(alphabet=string.printable, max_size=60)


@pytest.fixture(scope="module")
def teacher_counter(tiny_teacher):
    return counter_over(tiny_teacher)


def counter_over(teacher):
    """A bag encoder over ``teacher``'s own WordPiece tokens (as a vocabulary holds them), and its tokenizer."""
    tokenizer = teacher.tokenizer
    special = set(tokenizer.all_special_tokens)
    pieces = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]) if t not in special]
    pieces = [t for t in pieces if not t.startswith("[unused")]
    encoder = BagEncoder(
        ["[PAD]", "[UNK]", *pieces], "[UNK]", special_tokens={"[PAD]", "[UNK]"}, teacher_window=64,
        wordpiece_entries=len(pieces), teacher_special_tokens=tokenizer.all_special_tokens,
    )  # fmt: skip
    return encoder, tokenizer


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES)
@given(text=TEXTS)
def test_teacher_window_count_agrees_with_the_teachers_tokenizer(teacher_counter, text):
    encoder, tokenizer = teacher_counter
    assert encoder.teacher_token_count(text) == len(tokenizer(text, truncation=False)["input_ids"])


@pytest.fixture(scope="module")
def minilm_counter(minilm):
    return counter_over(minilm)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(text=TEXTS)
def test_teacher_window_count_agrees_with_minilm(minilm_counter, text):
    encoder, tokenizer = minilm_counter
    assert encoder.teacher_token_count(text) == len(tokenizer(text, truncation=False)["input_ids"])


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(values=st.lists(JSON_VALUES, min_size=1, max_size=12))
def test_corpus_reader_yields_clean_strings_for_any_json_text(tmp_path, values):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": v}) + "\n" for i, v in enumerate(values)), encoding="utf-8")
    records = list(iter_records(str(path)))
    assert [r["id"] for r in records] == [str(i) for i, v in enumerate(values) if isinstance(v, str)]
    for record in records:
        record["text"].encode("utf-8")  # no lone surrogate is left: every tokenizer and parquet accepts it


@pytest.fixture(scope="module")
def saved_student(tiny_vocab, tmp_path_factory):
    folder = tmp_path_factory.mktemp("property-student")
    trained_student(tiny_vocab).save_pretrained(folder)
    return folder


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(position=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_flipped_byte_in_the_weights_is_refused(saved_student, tmp_path_factory, position, mask):
    folder = tmp_path_factory.mktemp("flip")
    shutil.copytree(saved_student, folder, dirs_exist_ok=True)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[int(position * len(data))] ^= mask
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors"):  # IntegrityError, or a header that does not parse
        BertApproxModel.from_pretrained(folder)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(ids=st.lists(st.sampled_from(["q1", "q2", "q3", "a b", "7"]), min_size=1, max_size=8))
def test_query_ids_are_unique_or_refused_by_name(tmp_path, ids):
    path = tmp_path / "queries.tsv"
    path.write_text("".join(f"{qid}\ttext {n}\n" for n, qid in enumerate(ids)), encoding="utf-8")
    first = list(dict.fromkeys(ids))
    kept_ids, texts = read_queries(path, dedupe=True)
    assert kept_ids == first and texts == [f"text {ids.index(qid)}" for qid in first]
    if len(first) == len(ids):
        assert read_queries(path)[0] == ids
    else:
        repeated = next(qid for n, qid in enumerate(ids) if qid in ids[:n])
        with pytest.raises(ValueError, match=repr(repeated)):
            read_queries(path)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(steps=st.lists(st.integers(0, 50), max_size=30), resume_at=st.integers(0, 50), torn=st.booleans())
def test_truncated_metrics_log_keeps_exactly_the_earlier_steps_in_order(tmp_path, steps, resume_at, torn):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"event": "train", "step": s}) + "\n" for s in steps) + ('{"st' if torn else ""))
    truncate_metrics_log(str(path), resume_at)
    kept = [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []
    assert kept == [s for s in steps if s <= resume_at]


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=6))
def test_decode_refuses_ids_outside_the_vocabulary(ids):
    tokenizer = BertApproxTokenizer.from_entries(["[PAD]", "[UNK]", "new", "york", "new york"])
    if all(0 <= i < 5 for i in ids):
        assert isinstance(tokenizer.decode(ids), str)
    else:
        with pytest.raises(ValueError, match=r"not an entry id: ids are integers in \[0, 5\)"):
            tokenizer.decode(ids)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(message=st.text(max_size=80), kind=st.sampled_from([ValueError, FileNotFoundError, PermissionError, OSError]))
def test_every_user_error_is_one_line_with_exit_code_2(capsys, message, kind):
    def fail() -> int:
        raise kind(message)

    assert run_main(fail) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertapprox: error: ") and err.count("\n") == 1
