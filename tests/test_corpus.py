"""Corpus readers: jsonl (with titles), datasets, lists; clear errors on bad lines."""

from __future__ import annotations

import json

import pytest

from bertapprox_hf.pipeline.corpus import iter_records, iter_texts


def test_beir_corpus_records_join_title_and_text(shared_data):
    records = list(iter_records(shared_data / "beir" / "scifact" / "corpus.jsonl", max_records=3))
    first = json.loads((shared_data / "beir" / "scifact" / "corpus.jsonl").open().readline())
    assert records[0]["id"] == first["_id"]
    assert records[0]["text"] == f"{first['title']} {first['text']}"


def test_max_per_source_balances_files(shared_data):
    files = [shared_data / "train" / "msmarco_queries.jsonl", shared_data / "train" / "senteval_sentences.jsonl"]
    ids = [r["id"] for r in iter_records(files, max_per_source=5)]
    assert len(ids) == 10 and len(set(ids)) == 10


def test_skip_per_source_continues_an_earlier_selection(shared_data):
    files = [shared_data / "train" / "msmarco_queries.jsonl", shared_data / "train" / "senteval_sentences.jsonl"]
    first = list(iter_records(files, max_per_source=5))
    more = list(iter_records(files, max_per_source=3, skip_per_source=5))
    both = list(iter_records(files, max_per_source=8))
    assert first[:5] + more[:3] + first[5:] + more[3:] == both
    assert [r["text"] for r in iter_records(["a", "b", "c"], skip_per_source=1)] == ["b", "c"]
    with pytest.raises(ValueError, match="skip_per_source"):
        list(iter_records(files, skip_per_source=-1))


def test_datasets_and_plain_lists_are_read():
    from datasets import Dataset

    dataset = Dataset.from_dict({"id": ["a", "b"], "text": ["one", "two"]})
    assert list(iter_records(dataset)) == [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]
    assert list(iter_texts(["x", "y"])) == ["x", "y"]
    with pytest.raises(TypeError, match="item 1"):
        list(iter_texts(["x", 3]))


def test_bad_lines_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_records(path))
    path.write_text('{"id": 1, "body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: no 'text' field"):
        list(iter_records(path))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        list(iter_records(tmp_path / "missing.jsonl"))
