"""Crops of long texts: what they hold, that a rebuild makes the same ones, and where they go in the split."""

from __future__ import annotations

import pytest

from bertapprox_hf.pipeline.corpus import iter_records
from bertapprox_hf.pipeline.crops import CROP_MARK, crop_records, is_crop, source_id
from bertapprox_hf.training.data import is_training, is_validation

from .conftest import read_texts


def test_a_crop_is_a_run_of_at_least_half_of_the_words(shared_data):
    passages = read_texts(shared_data / "msmarco-passage-dl19" / "corpus.jsonl", 200)
    records = [{"id": f"p{n}", "text": text} for n, text in enumerate(passages)]
    crops = list(crop_records(records, crops_per_text=2, min_words=41))
    long_ones = [r for r in records if len(r["text"].split()) >= 41]
    assert len(crops) == 2 * len(long_ones) > 0
    by_id = {r["id"]: r["text"].split() for r in records}
    for crop in crops:
        words, cropped = by_id[source_id(crop["id"])], crop["text"].split()
        assert (len(words) + 1) // 2 <= len(cropped) < len(words)
        starts = [i for i in range(len(words) - len(cropped) + 1) if words[i : i + len(cropped)] == cropped]
        assert starts, crop["id"]
    assert len({c["text"] for c in crops}) > 0.95 * len(crops)  # two crops of a text differ
    assert crops == list(crop_records(records, crops_per_text=2, min_words=41))  # a rebuild makes the same


def test_first_crop_continues_an_earlier_set_of_crops(shared_data):
    passages = read_texts(shared_data / "beir" / "scifact" / "corpus.jsonl", 50)
    records = [{"id": f"d{n}", "text": text} for n, text in enumerate(passages)]
    earlier = list(crop_records(records, crops_per_text=1, min_words=41))
    later = list(crop_records(records, crops_per_text=2, min_words=41, first_crop=1))
    together = list(crop_records(records, crops_per_text=3, min_words=41))
    assert len(later) == 2 * len(earlier) > 0
    assert sorted(earlier + later, key=lambda c: c["id"]) == sorted(together, key=lambda c: c["id"])
    assert not {c["id"] for c in earlier} & {c["id"] for c in later}
    with pytest.raises(ValueError, match="first_crop"):
        list(crop_records(records, 1, 41, first_crop=-1))


def test_short_texts_give_no_crops_and_bad_settings_are_refused():
    records = [{"id": "q", "text": "what is a crop"}, {"id": "p", "text": " ".join(["word"] * 50)}]
    assert [c["id"] for c in crop_records(records, 1, 41)] == [f"p{CROP_MARK}0"]
    with pytest.raises(ValueError, match="crops_per_text"):
        list(crop_records(records, 0, 41))
    with pytest.raises(ValueError, match="min_words"):
        list(crop_records(records, 1, 1))


def test_corpus_reader_yields_crops_of_the_selected_texts(shared_data):
    corpus = shared_data / "beir" / "scifact" / "corpus.jsonl"
    texts = list(iter_records(str(corpus), max_per_source=20))
    crops = list(iter_records(str(corpus), max_per_source=20, crops_per_text=1))
    assert {source_id(c["id"]) for c in crops} == {r["id"] for r in texts if len(r["text"].split()) >= 41}
    with pytest.raises(ValueError, match="first_crop"):  # crop numbers without crops: refused, not ignored
        iter_records(str(corpus), max_per_source=20, first_crop=1)


def test_crops_follow_their_text_and_are_never_validation_texts():
    ids = [f"doc-{n}" for n in range(2000)]
    held_out = [i for i in ids if is_validation(i, 0.1)]
    assert 100 < len(held_out) < 300
    for record_id in ids:
        crop = f"{record_id}{CROP_MARK}0"
        assert is_crop(crop) and not is_crop(record_id)
        assert not is_validation(crop, 0.1)
        assert is_training(crop, 0.1) == is_training(record_id, 0.1) == (record_id not in held_out)
