"""Indexers: Faiss (student-only and asymmetric) on a slice of TREC DL 2019, factories, errors, the
command line, and Pyserini's on-disk format searched by its own FaissSearcher.

The slice: every judged passage of three DL 2019 queries plus 300 random other passages of the
pool. The student is trained here in seconds (MSE to MiniLM embeddings of ~1.1k texts: the slice's
passages, as a deployment distils on its own collection, and 400 training queries; never the
evaluation queries or judgments).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bertapprox_hf.inference import Encoder
from bertapprox_hf.training.student import create_student
from indexers.base import DimensionMismatchError, SearchResults
from indexers.encoders import is_student_folder
from indexers.faiss_indexer import FaissIndexer
from indexers.java import JavaNotFoundError, find_java_home, parse_java_version
from indexers.runs import read_queries, read_trec, write_run

from .conftest import TRAIN, offline_hub_cache, read_texts

pytest.importorskip("faiss")

DL19 = "msmarco-passage-dl19"
NUM_QUERIES = 3
NUM_OTHERS = 300
STEPS = 200  # of distillation, batch 64
RELEVANT = 2  # TREC DL: grade ≥ 2 counts as relevant for MRR and recall


# --- data ---------------------------------------------------------------------------------------
class Slice:
    """The DL19 slice: records, queries, judgments, and the same as files."""

    def __init__(self, records, query_ids, query_texts, qrels, others, folder):
        self.records, self.query_ids, self.query_texts = records, query_ids, query_texts
        self.qrels, self.others = qrels, others
        self.corpus = folder / "corpus.jsonl"
        self.queries = folder / "queries.jsonl"
        with open(self.corpus, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        with open(self.queries, "w", encoding="utf-8") as handle:
            for query_id, text in zip(query_ids, query_texts, strict=True):
                handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.records]


@pytest.fixture(scope="module")
def dl19(shared_data, tmp_path_factory) -> Slice:
    folder = shared_data / DL19
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            query_id, doc_id, grade = line.split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(grade)
    # the three queries with the fewest judgments among those with at least 10 relevant passages
    eligible = [q for q, judged in qrels.items() if sum(g >= RELEVANT for g in judged.values()) >= 10]
    query_ids = sorted(eligible, key=lambda q: (len(qrels[q]), q))[:NUM_QUERIES]
    judged = {doc for q in query_ids for doc in qrels[q]}
    with open(folder / "corpus.jsonl", encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle]
    others = random.Random(0).sample([r for r in corpus if r["_id"] not in judged], NUM_OTHERS)
    records = [{"_id": r["_id"], "title": r["title"], "text": r["text"]} for r in corpus if r["_id"] in judged]
    records += [{"_id": r["_id"], "title": r["title"], "text": r["text"]} for r in others]
    ids, texts = read_queries(folder / "queries.jsonl")
    query_texts = [texts[ids.index(q)] for q in query_ids]
    return Slice(records, query_ids, query_texts, qrels, {r["_id"] for r in others}, tmp_path_factory.mktemp("dl19"))


@pytest.fixture(scope="module")
def teacher_index(minilm, dl19) -> FaissIndexer:
    """The slice encoded by the MiniLM teacher: the document side of the asymmetric mode."""
    return FaissIndexer.build(str(dl19.corpus), minilm, batch_size=64, show_progress_bar=False)


@pytest.fixture(scope="module")
def student(minilm, minilm_vocab, dl19, teacher_index):
    """A small student trained for a few hundred steps of MSE to the teacher's embeddings."""
    passages = teacher_index.index.reconstruct_n(0, teacher_index.index.ntotal)  # the teacher's own vectors
    queries = read_texts(TRAIN / "msmarco_queries.jsonl", 1900)[1500:]  # held out from the vocabulary's texts
    texts = dl19.texts + queries
    targets = torch.from_numpy(np.concatenate([passages, minilm.encode(queries, batch_size=128)]))

    torch.manual_seed(0)
    model = create_student(minilm_vocab, num_heads=4, intermediate_size=64)
    bags = model.get_tokenizer().encode_bags(texts, model.config.max_bag_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(STEPS):
        rows = torch.randint(0, len(texts), (64,), generator=generator)
        batch = [bags[i] for i in rows.tolist()]
        width = max(len(b) for b in batch + [[0]])
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, bag in enumerate(batch):
            ids[row, : len(bag)] = torch.tensor(bag, dtype=torch.long)
            mask[row, : len(bag)] = 1
        output = model(input_ids=ids, attention_mask=mask).pooler_output
        loss = ((output - targets[rows]) ** 2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5]), "the quick distillation did not learn"
    return model.eval()


@pytest.fixture(scope="module")
def student_encoder(student) -> Encoder:
    return Encoder.from_pretrained(student, device="cpu", cache_size=0)


@pytest.fixture(scope="module")
def tiny_student_dir(tiny_vocab, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-student")
    create_student(tiny_vocab, num_heads=2).save_pretrained(folder)
    return str(folder)


# --- ranking quality --------------------------------------------------------------------------------
def ranking_figures(results: SearchResults, dl19: Slice) -> dict:
    """MRR@10 and the mean rank of relevant vs random passages, per query (full rankings)."""
    figures = {"mrr@10": [], "relevant_rank": [], "random_rank": []}
    for query_id, ids in zip(dl19.query_ids, results.ids, strict=True):
        assert len(ids) == len(dl19.records) and len(set(ids)) == len(ids)
        relevant = [rank for rank, doc in enumerate(ids) if dl19.qrels[query_id].get(doc, 0) >= RELEVANT]
        figures["mrr@10"].append(1.0 / (relevant[0] + 1) if relevant[0] < 10 else 0.0)
        figures["relevant_rank"].append(float(np.mean(relevant)))
        figures["random_rank"].append(float(np.mean([r for r, doc in enumerate(ids) if doc in dl19.others])))
    return figures


def assert_ranks_relevant_first(results: SearchResults, dl19: Slice) -> dict:
    figures = ranking_figures(results, dl19)
    # random ranking: MRR@10 ≈ 0.07 here (10–19 relevant among ~700), relevant and random mean ranks equal
    assert np.mean(figures["mrr@10"]) >= 0.5, figures
    for relevant, other in zip(figures["relevant_rank"], figures["random_rank"], strict=True):
        assert relevant < 0.5 * other, figures
    return figures


def assert_sorted(results: SearchResults) -> None:
    for scores in results.scores:
        assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:], strict=False))


# --- Faiss ------------------------------------------------------------------------------------------
def test_student_index_build_save_load_search(dl19, student_encoder, tmp_path):
    index = FaissIndexer.build(str(dl19.corpus), student_encoder, batch_size=128, show_progress_bar=True)
    assert len(index) == len(dl19.records) and index.dim == 384 and index.similarity == "cosine"
    index.save(tmp_path / "index")
    assert {p.name for p in (tmp_path / "index").iterdir()} == {"index.faiss", "ids.json", "meta.json"}
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    assert meta["indexer"] == "faiss" and meta["dim"] == 384 and meta["similarity"] == "cosine"
    assert meta["factory"] == "Flat" and meta["documents"] == len(dl19.records)
    assert meta["document_encoder"]["kind"] == "student" and meta["build"]["documents"] == len(dl19.records)

    loaded = FaissIndexer.load(tmp_path / "index")
    results = loaded.search(dl19.query_texts, k=1000, query_encoder=student_encoder, query_ids=dl19.query_ids)
    assert results.query_ids == dl19.query_ids
    assert_sorted(results)
    assert_ranks_relevant_first(results, dl19)
    before = index.search(dl19.query_texts, k=1000, query_encoder=student_encoder)
    assert before.ids == results.ids
    # query embeddings in place of texts give the same ranking; one vector is one query
    vectors = student_encoder.encode(dl19.query_texts)
    assert loaded.search(vectors, k=1000).ids == results.ids
    assert loaded.search(vectors[0], k=5).ids == [results.ids[0][:5]]


def test_asymmetric_index_teacher_documents_student_queries(dl19, teacher_index, student_encoder, minilm):
    assert teacher_index.meta["document_encoder"]["kind"] == "teacher"
    assert teacher_index.dim == student_encoder.dim
    asymmetric = teacher_index.search(dl19.query_texts, k=1000, query_encoder=student_encoder)
    assert_sorted(asymmetric)
    assert_ranks_relevant_first(asymmetric, dl19)
    teacher_only = teacher_index.search(dl19.query_texts, k=1000, query_encoder=minilm)
    assert_ranks_relevant_first(teacher_only, dl19)


def test_hnsw_and_ivf_pq_build_and_search(dl19, student_encoder, tmp_path):
    exact = FaissIndexer.build(dl19.texts, student_encoder, show_progress_bar=False)
    truth = exact.search(dl19.query_texts, k=10, query_encoder=student_encoder).ids
    for factory, least_recall in (("HNSW32", 0.9), ("IVF16,PQ16", 0.5)):
        index = FaissIndexer.build(dl19.texts, student_encoder, factory=factory, show_progress_bar=False)
        results = index.search(dl19.query_texts, k=10, query_encoder=student_encoder)
        assert_sorted(results)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(results.ids, truth, strict=True)])
        assert recall >= least_recall, (factory, recall)
        index.save(tmp_path / factory)
        loaded = FaissIndexer.load(tmp_path / factory)
        assert loaded.factory == factory and len(loaded) == len(dl19.records)
        assert loaded.search(dl19.query_texts, k=10, query_encoder=student_encoder).ids == results.ids
        if factory.startswith("IVF"):
            assert loaded.meta["trained_on"] == len(dl19.records)


def test_training_waits_for_a_sample_then_adds_everything():
    rows = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    index = FaissIndexer.create(16, "dot", factory="IVF4,Flat", train_size=256)
    for start in range(0, 600, 100):
        index.add([f"d{i}" for i in range(start, start + 100)], rows[start : start + 100])
        assert len(index) == start + 100
    assert index.index.is_trained and index.meta["trained_on"] == 256
    index.finalize()
    assert index.index.ntotal == 600 and index.ids[:3] == ["d0", "d1", "d2"]
    with pytest.raises(ValueError, match="could not train"):
        small = FaissIndexer.create(16, "dot", factory="IVF64,Flat")
        small.add(["a", "b"], rows[:2])
        small.finalize()


def test_dot_similarity_keeps_raw_inner_products():
    rows = np.array([[3.0, 0.0], [1.0, 0.9], [0.0, 0.5]], dtype=np.float32)
    dot = FaissIndexer.create(2, "dot")
    dot.add(["a", "b", "c"], rows)
    results = dot.search(np.array([[1.0, 2.0]], dtype=np.float32), k=3)
    assert results.ids == [["a", "b", "c"]] and np.allclose(results.scores[0], [3.0, 2.8, 1.0])
    cosine = FaissIndexer.create(2, "cosine")
    cosine.add(["a", "b", "c"], rows)
    results = cosine.search(np.array([[1.0, 2.0]], dtype=np.float32), k=3)
    assert results.ids == [["b", "c", "a"]]
    assert np.allclose(results.scores[0], [2.8 / np.sqrt(5 * 1.81), 2 / np.sqrt(5), 1 / np.sqrt(5)])
    assert len(cosine.search(np.ones((1, 2)), k=50).ids[0]) == 3  # k larger than the index


def test_dim_mismatch_empty_and_bad_queries(teacher_index, tiny_student_dir, tmp_path):
    tiny = Encoder.from_pretrained(tiny_student_dir, device="cpu")  # 32-d, the index is 384-d
    with pytest.raises(DimensionMismatchError, match="32-dimensional.*384-dimensional"):
        teacher_index.search(["what is a cat"], query_encoder=tiny)
    with pytest.raises(DimensionMismatchError, match="32 dimensions but the index holds 384"):
        teacher_index.search(np.zeros((2, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        teacher_index.search([], query_encoder=tiny)
    with pytest.raises(ValueError, match="empty"):
        teacher_index.search(np.zeros((0, 384), dtype=np.float32))
    with pytest.raises(TypeError, match=r"queries\[1\] is NoneType"):
        teacher_index.search(["fine", None], query_encoder=tiny)
    with pytest.raises(TypeError, match=r"queries\[0\] is int"):
        teacher_index.search([1, 2], query_encoder=tiny)
    with pytest.raises(TypeError):
        teacher_index.search(None)
    with pytest.raises(ValueError, match="query_encoder"):
        teacher_index.search(["no encoder"])
    with pytest.raises(ValueError, match="k must be"):
        teacher_index.search(np.zeros((1, 384), dtype=np.float32), k=0)

    index = FaissIndexer.create(4)
    with pytest.raises(ValueError, match="2 ids for 1 embeddings"):
        index.add(["a", "b"], np.ones((1, 4)))
    with pytest.raises(TypeError, match=r"ids\[0\] is int"):
        index.add([7], np.ones((1, 4)))
    with pytest.raises(DimensionMismatchError):
        index.add(["a"], np.ones((1, 5)))
    with pytest.raises(ValueError, match="empty"):
        index.search(np.ones((1, 4)))
    with pytest.raises(ValueError, match="factory string"):
        FaissIndexer.create(384, factory="IVF16,PQ7")  # 384 is not a multiple of 7
    with pytest.raises(FileNotFoundError, match="index.faiss"):
        FaissIndexer.load(tmp_path)


def test_build_from_a_datasets_dataset(tiny_student_dir, dl19):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(dl19.records[:50])
    encoder = Encoder.from_pretrained(tiny_student_dir, device="cpu")
    index = FaissIndexer.build(dataset, encoder, batch_size=16, show_progress_bar=False)
    assert index.ids == [r["_id"] for r in dl19.records[:50]]
    assert index.search([dl19.records[3]["text"]], k=1, query_encoder=encoder).ids == [[dl19.records[3]["_id"]]]


# --- run files and the command line -------------------------------------------------------------------
def check_trec_run(path, query_ids, k) -> dict:
    run = read_trec(path)
    assert sorted(run) == sorted(query_ids)
    for rows in run.values():
        assert 0 < len(rows) <= k
        assert [rank for _, rank, _ in rows] == list(range(1, len(rows) + 1))
        scores = [score for _, _, score in rows]
        assert all(a >= b for a, b in zip(scores, scores[1:], strict=False))
    with open(path, encoding="utf-8") as handle:
        assert all(len(line.split()) == 6 and line.split()[1] == "Q0" for line in handle)
    return run


def test_cli_index_and_search(dl19, tiny_student_dir, tiny_teacher_path, minilm_path, tmp_path, capsys):
    from bertapprox_hf.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in dl19.records[:120]))
    out = tmp_path / "index"
    code = main(["index", "--model", tiny_student_dir, "--teacher", tiny_teacher_path, "--corpus", str(corpus),
                 "--out", str(out), "--factory", "HNSW32", "--batch-size", "32"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 120 and summary["asymmetric"] is True and summary["indexer"] == "faiss"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["document_encoder"]["kind"] == "teacher" and meta["query_encoder"]["kind"] == "student"

    run = tmp_path / "run.trec"
    assert main(["search", "--index", str(out), "--queries", str(dl19.queries), "--k", "7", "--output", str(run)]) == 0
    check_trec_run(run, dl19.query_ids, 7)
    as_json = tmp_path / "run.json"
    assert main(["search", "--index", str(out), "--model", tiny_student_dir, "--queries", str(dl19.queries),
                 "--output", str(as_json)]) == 0  # fmt: skip
    hits = json.loads(as_json.read_text())
    assert sorted(hits) == sorted(dl19.query_ids) and all(len(h) == 100 for h in hits.values())
    capsys.readouterr()

    code = main(["index", "--model", tiny_student_dir, "--teacher", minilm_path, "--corpus", str(corpus),
                 "--out", str(tmp_path / "bad")])  # fmt: skip
    assert code == 2 and "384-d embeddings but the model 32-d" in capsys.readouterr().err
    code = main(["index", "--indexer", "nope", "--model", tiny_student_dir, "--corpus", str(corpus), "--out", "x"])
    assert code == 2 and "no indexer named 'nope'" in capsys.readouterr().err


def test_run_files(tmp_path):
    results = SearchResults([["d1", "d2"], ["d3"]], [[2.0, 1.5], [0.25]])
    assert write_run(tmp_path / "r.trec", results, ["q1", "q2"], tag="mine") == "trec"
    assert (tmp_path / "r.trec").read_text().splitlines() == [
        "q1 Q0 d1 1 2.000000 mine",
        "q1 Q0 d2 2 1.500000 mine",
        "q2 Q0 d3 1 0.250000 mine",
    ]
    assert write_run(tmp_path / "r.json", results, ["q1", "q2"]) == "json"
    assert json.loads((tmp_path / "r.json").read_text()) == {"q1": {"d1": 2.0, "d2": 1.5}, "q2": {"d3": 0.25}}
    (tmp_path / "q.tsv").write_text("qid\ttext\n1\tfirst query\n2\tsecond\n")
    assert read_queries(tmp_path / "q.tsv") == (["1", "2"], ["first query", "second"])
    with pytest.raises(ValueError, match="one word"):
        write_run(tmp_path / "r.trec", results, ["q1", "q2"], tag="two words")


# --- Java for Pyserini --------------------------------------------------------------------------------
def fake_jdk(folder, version: str):
    folder.mkdir(parents=True)
    (folder / "release").write_text(f'IMPLEMENTOR="Test"\nJAVA_VERSION="{version}"\n')
    return folder


def test_java_finder_rejects_an_old_java_home(tmp_path, monkeypatch):
    old = fake_jdk(tmp_path / "jdk-17", "17.0.15")
    monkeypatch.setenv("JAVA_HOME", str(old))
    monkeypatch.delenv("BERTAPPROX_JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no java on PATH either
    with pytest.raises(JavaNotFoundError) as error:
        find_java_home(search_patterns=[])
    message = str(error.value)
    assert f"JAVA_HOME={old} is Java 17, too old" in message and "Java 21 or newer" in message
    assert "set JAVA_HOME" in message


def test_java_finder_picks_the_newest_qualifying_jdk(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_jdk(tmp_path / "old", "17")))
    fake_jdk(tmp_path / "jvm" / "jdk-11", "11.0.2")
    fake_jdk(tmp_path / "jvm" / "jdk-21", "21.0.1")
    newest = fake_jdk(tmp_path / "jvm" / "temurin-25", "25.0.3")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_java_home(search_patterns=[str(tmp_path / "jvm" / "*")]) == str(newest)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jvm" / "jdk-21"))
    assert find_java_home(search_patterns=[]) == str(tmp_path / "jvm" / "jdk-21")
    assert [parse_java_version(v) for v in ("1.8.0_292", "17.0.15", '"25"', "21")] == [8, 17, 25, 21]


# --- Pyserini ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pyserini_faiss():
    pytest.importorskip("pyserini")
    from indexers.pyserini_indexer import import_pyserini

    return import_pyserini()  # finds Java ≥ 21 (fails, not skips, without one) and starts the JVM


def test_pyserini_index_searched_by_faiss_searcher(pyserini_faiss, dl19, student_encoder, tmp_path):
    from pyserini.encode.optional import FaissRepresentationWriter

    from indexers.pyserini_indexer import PyseriniIndexer, PyseriniQueryEncoder

    records = [r for r in dl19.records if r["_id"] not in dl19.others][:100] + dl19.records[-100:]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    start = time.perf_counter()
    index = PyseriniIndexer.build(str(corpus), student_encoder, show_progress_bar=False)
    index.save(tmp_path / "pyserini")
    assert time.perf_counter() - start < 30
    assert (tmp_path / "pyserini" / "docid").read_text().split("\n")[:-1] == [r["_id"] for r in records]

    # the same vectors written by Pyserini's own writer give the same files
    vectors = index.index.reconstruct_n(0, len(records))
    writer = FaissRepresentationWriter(str(tmp_path / "theirs"), dimension=index.dim)
    with writer:
        writer.write({"id": [r["_id"] for r in records], "vector": vectors})
    for name in ("index", "docid"):
        assert (tmp_path / "theirs" / name).read_bytes() == (tmp_path / "pyserini" / name).read_bytes()

    searcher = pyserini_faiss.FaissSearcher(str(tmp_path / "pyserini"), PyseriniQueryEncoder(student_encoder, True))
    hits = searcher.batch_search(dl19.query_texts, dl19.query_ids, k=50)
    single = searcher.search(dl19.query_texts[0], k=50)
    assert [h.docid for h in single] == [h.docid for h in hits[dl19.query_ids[0]]]
    flat = FaissIndexer.build(str(corpus), student_encoder, show_progress_bar=False)
    expected = flat.search(dl19.query_texts, k=50, query_encoder=student_encoder)
    for query_id, ids, scores in zip(dl19.query_ids, expected.ids, expected.scores, strict=True):
        assert [h.docid for h in hits[query_id]] == ids
        assert np.allclose([h.score for h in hits[query_id]], scores, atol=1e-5)

    loaded = PyseriniIndexer.load(tmp_path / "pyserini")
    results = loaded.search(dl19.query_texts, k=50, query_encoder=student_encoder, query_ids=dl19.query_ids)
    assert results.ids == expected.ids
    write_run(tmp_path / "run.trec", results, tag="student")
    run = check_trec_run(tmp_path / "run.trec", dl19.query_ids, 50)
    assert [doc for doc, _, _ in run[dl19.query_ids[0]]] == expected.ids[0]


def test_pyserini_command_lines(pyserini_faiss, dl19, tiny_student_dir, tmp_path, capsys):
    from bertapprox_hf.cli import main as bertapprox
    from indexers import pyserini_encode, pyserini_search

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in dl19.records[:80]))
    index = tmp_path / "index"
    assert pyserini_encode.main(["--corpus", str(corpus), "--encoder", tiny_student_dir, "--index", str(index),
                                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["documents"] == 80
    assert sorted(p.name for p in index.iterdir()) == ["docid", "index", "meta.json"]
    run = tmp_path / "run.trec"
    assert pyserini_search.main(["--index", str(index), "--encoder", tiny_student_dir, "--topics", str(dl19.queries),
                                 "--output", str(run), "--hits", "20"]) == 0  # fmt: skip
    check_trec_run(run, dl19.query_ids, 20)
    marco = tmp_path / "run.tsv"
    assert pyserini_search.main(["--index", str(index), "--encoder", tiny_student_dir, "--topics", str(dl19.queries),
                                 "--output", str(marco), "--hits", "5", "--output-format", "msmarco"]) == 0  # fmt: skip
    assert all(len(line.split("\t")) == 3 for line in marco.read_text().splitlines())

    # the same through `bertapprox index/search --indexer pyserini`
    out = tmp_path / "via-cli"
    assert bertapprox(["index", "--indexer", "pyserini", "--model", tiny_student_dir, "--corpus", str(corpus),
                       "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "meta.json").read_text())["indexer"] == "pyserini"
    run2 = tmp_path / "run2.trec"
    assert bertapprox(["search", "--index", str(out), "--queries", str(dl19.queries), "--k", "20",
                       "--output", str(run2)]) == 0  # fmt: skip
    assert read_trec(run2) == read_trec(run)


def test_a_student_is_recognised_by_hub_id(tiny_student_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = offline_hub_cache(Path(tiny_student_dir), tmp_path / "hub-cache", "someone/student")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert is_student_folder("someone/student")
    assert not is_student_folder("someone/not-cached")  # cannot be fetched: left to the teacher loader
    assert not is_student_folder("./no/such/folder")
