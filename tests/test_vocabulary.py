"""Vocabulary: built from real training texts with the real MiniLM teacher; storage and resume."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from bertapprox_hf.model.tokenization_bertapprox import SKIP_MARKER
from bertapprox_hf.pipeline import vocab_builder
from bertapprox_hf.pipeline.vocab_builder import NgramCounter, VocabularyConfig, embed_entries, npmi
from bertapprox_hf.pipeline.vocabulary import Vocabulary


def test_entries_of_all_kinds_are_present(minilm_vocab):
    kinds = minilm_vocab.kind_counts()
    assert kinds["special"] == 2
    assert kinds["wordpiece"] > 25000  # the teacher's WordPiece vocabulary, minus [unused] and specials
    assert kinds["word"] > 100 and kinds["ngram"] > 50 and kinds["skipgram"] > 10
    assert minilm_vocab.entries[:2] == ["[PAD]", "[UNK]"]
    assert "##ing" in minilm_vocab.entries
    assert "[unused1]" not in minilm_vocab.entries and "[CLS]" not in minilm_vocab.entries
    stats = minilm_vocab.metadata["stats"]
    assert stats["entries"] == len(minilm_vocab)
    assert minilm_vocab.metadata["teacher"]["dim"] == 384
    assert minilm_vocab.metadata["corpus"]["texts"] == 6000


def test_embeddings_equal_the_teacher_encoding_of_each_entry(minilm_vocab, minilm):
    kinds = minilm_vocab.kinds()
    entries = minilm_vocab.entries
    rng = np.random.default_rng(0)
    for kind in ("word", "ngram", "skipgram"):
        picks = rng.choice([i for i, k in enumerate(kinds) if k == kind], size=10, replace=False)
        texts = [entries[i].replace(SKIP_MARKER, " ") for i in picks]
        np.testing.assert_allclose(minilm_vocab.embeddings[picks], minilm.encode(texts), atol=1e-5)
    pieces = [i for i, k in enumerate(kinds) if k == "wordpiece"]
    picks = rng.choice(pieces, size=20, replace=False)
    ids = [[minilm.tokenizer.convert_tokens_to_ids(entries[i])] for i in picks]
    np.testing.assert_allclose(minilm_vocab.embeddings[picks], minilm.encode_token_ids(ids), atol=1e-5)
    # whole-word pieces embed like their text: a word is the same entry whichever way it came in
    the = entries.index("the")
    np.testing.assert_allclose(minilm_vocab.embeddings[the], minilm.encode(["the"])[0], atol=1e-5)
    assert not minilm_vocab.embeddings[0].any()  # [PAD]


def test_multiword_entries_are_cohesive_and_clean(minilm_vocab):
    kinds = minilm_vocab.kinds()
    multi = [e for e, k in zip(minilm_vocab.entries, kinds, strict=True) if k in ("ngram", "skipgram")]
    for entry in multi:
        words = entry.replace(SKIP_MARKER, " ").split()
        assert words[0].isalnum() and words[-1].isalnum(), entry
        assert words[0] not in {"the", "of", "and", "a"} and words[-1] not in {"the", "of", "and", "a"}, entry


def test_npmi_is_one_for_words_that_only_occur_together():
    from collections import Counter

    words = Counter({"hong": 10, "kong": 10, "the": 1000})
    assert npmi(10, ["hong", "kong"], words, 2000) == pytest.approx(1.0)
    assert npmi(10, ["the", "kong"], words, 2000) < 0.5


def test_ranking_ignores_last_bit_differences_of_the_score(monkeypatch):
    # Scores one ulp apart (what two C libraries' log may give) rank as a tie, broken by the text: a
    # vocabulary rebuilt on another machine has its entries in the same order.
    monkeypatch.setattr(
        vocab_builder, "npmi", lambda count, parts, *_: math.nextafter(0.5, 1.0) if parts[0] == "b" else 0.5
    )
    counter = Counter({"b x": 10, "a y": 10, "c z": 11})
    ranked = vocab_builder.select_multiword(counter, Counter(), 100, VocabularyConfig(min_count=1), 3, skip=False)
    assert [entry for entry, *_ in ranked] == ["c z", "a y", "b x"]


def test_counter_respects_orders_and_gaps():
    counter = NgramCounter(VocabularyConfig(max_ngram=2, skipgram_max_gap=1))
    counter.add(["new", "york", "city", "of", "dreams"])
    assert set(counter.ngrams) == {"new york", "york city"}
    assert set(counter.skipgrams) == {"new" + SKIP_MARKER + "city", "city" + SKIP_MARKER + "dreams"}


def test_save_and_load_round_trip(minilm_vocab, tmp_path):
    minilm_vocab.save(tmp_path)
    loaded = Vocabulary.load(tmp_path)
    assert loaded.entries == minilm_vocab.entries
    np.testing.assert_array_equal(loaded.embeddings, minilm_vocab.embeddings)
    np.testing.assert_array_equal(loaded.counts, minilm_vocab.counts)
    assert loaded.metadata["teacher"] == minilm_vocab.metadata["teacher"]
    assert loaded.kinds() == minilm_vocab.kinds()


def test_damaged_vocabulary_files_are_named(minilm_vocab, tmp_path):
    minilm_vocab.save(tmp_path)
    record = json.loads((tmp_path / "vocabulary.json").read_text())
    record["entries"] = record["entries"][:-1]
    (tmp_path / "vocabulary.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="vocabulary.json lists"):
        Vocabulary.load(tmp_path)
    (tmp_path / "vocabulary.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="vocabulary.safetensors"):
        Vocabulary.load(tmp_path)
    (tmp_path / "vocabulary.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocabulary.json"):
        Vocabulary.load(tmp_path)


def test_embedding_resumes_from_finished_chunks(tiny_teacher, tmp_path, monkeypatch):
    items = [(f"text {i} of the bank", None) for i in range(50)] + [("##s", (tiny_teacher.tokenizer.vocab["##s"],))]
    config = VocabularyConfig(chunk_size=16, dtype="float32")
    full = embed_entries(tiny_teacher, items, config, str(tmp_path), show_progress_bar=False)
    chunks = sorted(p.name for p in tmp_path.iterdir())
    assert chunks == [f"chunk_{i:05d}.safetensors" for i in range(4)]
    (tmp_path / chunks[2]).unlink()  # as if the build stopped while embedding chunk 2
    calls = []
    original = tiny_teacher.encode
    monkeypatch.setattr(tiny_teacher, "encode", lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw))
    resumed = embed_entries(tiny_teacher, items, config, str(tmp_path), show_progress_bar=False)
    np.testing.assert_array_equal(resumed, full)
    assert calls == [16]  # only the missing chunk was embedded again
    # a cache made with other entries is not reused
    changed = [("other " + text, ids) for text, ids in items]
    calls.clear()
    embed_entries(tiny_teacher, changed, config, str(tmp_path), show_progress_bar=False)
    assert sum(calls) == 50


def test_empty_corpus_is_refused(tiny_teacher):
    from bertapprox_hf.pipeline.vocab_builder import build_vocabulary

    with pytest.raises(ValueError, match="no words"):
        build_vocabulary(["", "   "], tiny_teacher, show_progress_bar=False)


def test_student_made_from_a_real_vocabulary_encodes_text(minilm_vocab, minilm):
    from bertapprox_hf.training.student import create_student

    model = create_student(minilm_vocab)
    assert model.config.normalize and model.config.similarity == "cosine"
    out = model.encode(["what is the interest rate", "", "new york city"])
    assert out.shape == (3, 384) and np.isfinite(out).all()
    # untrained = mean of entry embeddings, normalized: already closer to its own text's teacher embedding
    teacher = minilm.encode(["what is the interest rate", "new york city"])
    assert out[0] @ teacher[0] > out[0] @ teacher[1] and out[2] @ teacher[1] > out[2] @ teacher[0]
