"""The benchmark modules: metrics against hand-computed values, the readers, each module end to end on
small slices of the shared data with the MiniLM teacher and a small student."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import beir, fidelity, msmarco, sts
from benchmarks.datasets import RetrievalData, load_msmarco_dev, read_collection_tsv, read_qrels_tsv, slice_data
from benchmarks.metrics import drop_identical_ids, retrieval_metrics, spearman

from .benchmark_fixtures import bench_cache, small_model2vec, student_dir  # noqa: F401 (fixtures)

RETRIEVAL_KEYS = {"dataset", "system", "ndcg@10", "mrr@10", "recall@100", "recall@1000", "pct_teacher_ndcg@10"}
ALL_SYSTEMS = ["teacher", "student", "asymmetric", "model2vec", "bm25"]


# --- metrics -----------------------------------------------------------------------------------------
QRELS = {
    "q1": {"d1": 3, "d2": 1, "d3": 2, "d9": 0},
    "q2": {"d4": 1},
    "q3": {"d5": 0},  # no relevant document: left out of every mean
}
RUN = {
    "q1": {"d2": 0.9, "d1": 0.8, "d5": 0.7, "d3": 0.6},
    "q2": {f"x{i}": 1.0 - i / 100 for i in range(10)} | {"d4": 0.5},  # d4 at rank 11
}


def test_metrics_match_hand_computed_values():
    dcg = 1 / math.log2(2) + 3 / math.log2(3) + 2 / math.log2(5)  # d2 (1), d1 (3), d5 (unjudged), d3 (2)
    ideal = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    ndcg_q1 = dcg / ideal  # 0.7884; q2: d4 is at rank 11, outside the top 10
    result = retrieval_metrics(QRELS, RUN, relevance_threshold=1, recall_k=(3, 100, 1000), num_docs=500)
    assert result["ndcg@10"] == pytest.approx((ndcg_q1 + 0) / 2)
    assert result["mrr@10"] == pytest.approx((1 + 0) / 2)  # q1: d2 (grade 1) first; q2: none in the top 10
    assert result["recall@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["recall@100"] == pytest.approx(1.0)  # d4 at rank 11 counts at 100
    assert result["recall@1000"] is None  # deeper than the corpus
    assert result["queries"] == 2 and result["queries_with_relevant"] == 2


def test_relevance_threshold_two_as_in_trec_dl():
    result = retrieval_metrics(QRELS, RUN, relevance_threshold=2, recall_k=(3,))
    assert result["ndcg@10"] == pytest.approx(0.7883774 / 2, abs=1e-6)  # nDCG keeps the graded labels
    assert result["mrr@10"] == pytest.approx(0.5)  # q1: d1 (grade 3) at rank 2; q2 has no grade ≥ 2
    assert result["recall@3"] == pytest.approx(0.5)  # q1: d1 of {d1, d3}
    assert result["queries_with_relevant"] == 1


def test_missing_query_scores_zero_and_identical_ids_are_dropped():
    result = retrieval_metrics(QRELS, {"q1": RUN["q1"]}, recall_k=(100,))
    assert result["mrr@10"] == pytest.approx(0.5) and result["recall@100"] == pytest.approx(0.5)
    assert drop_identical_ids({"q1": {"q1": 2.0, "d1": 1.0}}) == {"q1": {"d1": 1.0}}


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 3"):
        spearman([1, 2], [1, 2])


# --- readers -----------------------------------------------------------------------------------------
def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


STS_ROWS = [
    'main-news\tMSRpar\t2012\t0001\t3.500\tHe said "we will win and left\tHe said they would win',
    "main-captions\tMSRvid\t2012test\t0002\t5.000\tA man is playing a guitar.\tA man plays the guitar.\tsrc\tsrc2",
    "main-captions\tMSRvid\t2012test\t0003\t0.500\tA cat sleeps.\tA car drives on a road.",
]


def test_sts_reader_keeps_quotes_and_ignores_extra_columns(tmp_path):
    pairs = sts.read_sts(write_lines(tmp_path / "sts.csv", STS_ROWS))
    assert pairs[0].first == 'He said "we will win and left' and pairs[0].score == 3.5
    assert pairs[1].second == "A man plays the guitar." and pairs[1].score == 5.0
    assert [p.line for p in pairs] == [1, 2, 3]


def test_sts_reader_errors_name_file_and_line(tmp_path):
    bad_score = write_lines(tmp_path / "bad.csv", [STS_ROWS[0], "genre\tfile\t2012\t0004\tn/a\tA\tB"])
    with pytest.raises(ValueError, match=r"bad\.csv:2: the score 'n/a' is not a number"):
        sts.read_sts(bad_score)
    short = write_lines(tmp_path / "short.csv", [*STS_ROWS, "genre\tfile\t2012\t0005\t1.0\tonly one sentence"])
    with pytest.raises(ValueError, match=r"short\.csv:4: expected at least 7 tab-separated columns.*got 6"):
        sts.read_sts(short)
    with pytest.raises(FileNotFoundError, match=r"STS file not found: .*missing\.csv"):
        sts.read_sts(tmp_path / "missing.csv")


def test_sts_reader_on_the_real_file(shared_data):
    pairs = sts.read_sts(shared_data / "sts" / "stsb" / "sts-test.csv")
    assert len(pairs) == 1379 and all(0 <= p.score <= 5 for p in pairs)


@pytest.fixture
def msmarco_dev(tmp_path) -> Path:
    """A tiny MS MARCO dev layout: collection, queries and TREC qrels as tsv files."""
    write_lines(tmp_path / "collection.tsv", [
        "0\tParis is the capital and largest city of France.",
        "1\tThe mitochondria is the powerhouse of the cell.",
        "2\tBerlin is the capital of Germany.",
        "3\tPhotosynthesis turns light into chemical energy in plants.",
        "4\tThe Eiffel Tower stands in Paris.",
        "5\tA \"quoted\" passage with a tab-free text.",
    ])  # fmt: skip
    write_lines(
        tmp_path / "queries.dev.small.tsv", ["100\twhat is the capital of france", "200\thow do plants make energy"]
    )
    write_lines(tmp_path / "qrels.dev.small.tsv", ["100\t0\t0\t1", "200\t0\t3\t1"])
    return tmp_path


def test_msmarco_tsv_readers(msmarco_dev, tmp_path):
    collection = read_collection_tsv(msmarco_dev / "collection.tsv")
    assert len(collection) == 6 and collection["5"] == 'A "quoted" passage with a tab-free text.'
    assert read_qrels_tsv(msmarco_dev / "qrels.dev.small.tsv") == {"100": {"0": 1}, "200": {"3": 1}}
    beir_style = write_lines(tmp_path / "beir.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t2"])
    assert read_qrels_tsv(beir_style) == {"q1": {"d1": 2}}
    data = load_msmarco_dev(msmarco_dev)
    assert data.queries == {"100": "what is the capital of france", "200": "how do plants make energy"}
    sliced = load_msmarco_dev(msmarco_dev, max_docs=2)  # query 200's passage (3) is not read
    assert list(sliced.corpus) == ["0", "1"] and list(sliced.queries) == ["100"]
    broken = write_lines(tmp_path / "broken.tsv", ["0\tfine", "1\ttoo\tmany"])
    with pytest.raises(ValueError, match=r"broken\.tsv:2: expected 2 tab-separated columns, got 3"):
        read_collection_tsv(broken)
    with pytest.raises(FileNotFoundError, match="qrels file not found"):
        load_msmarco_dev(msmarco_dev, qrels=tmp_path / "nope.tsv")


def test_slice_keeps_queries_whose_relevant_documents_fit():
    corpus = {f"d{i}": f"text {i}" for i in range(20)}
    qrels = {"a": {"d15": 1, "d1": 0, "d9": 0}, "b": {"d16": 1, "d17": 1}, "c": {"d18": 2}}
    data = RetrievalData("toy", corpus, {q: q for q in qrels}, qrels)
    sliced = slice_data(data, max_docs=6, max_queries=2)
    assert list(sliced.queries) == ["a", "b"]
    assert len(sliced.corpus) == 6 and {"d15", "d16", "d17"} <= set(sliced.corpus)
    assert sliced.qrels["a"] == {"d15": 1, "d1": 0}  # d1: a filler document; d9: left out


def test_beir_download_fails_clearly_offline(monkeypatch, tmp_path):
    import requests

    from benchmarks.datasets import resolve_beir

    def offline(*args, **kwargs):
        raise requests.ConnectionError("Failed to resolve 'public.ukp.informatik.tu-darmstadt.de'")

    monkeypatch.setattr(requests, "head", offline)
    with pytest.raises(ConnectionError, match=r"cannot download BEIR dataset 'fiqa' .*Offline\?.*--dataset PATH"):
        resolve_beir("fiqa", data_dir=tmp_path, download_dir=tmp_path / "downloads")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        resolve_beir(str(tmp_path / "no" / "such"), data_dir=tmp_path, download_dir=tmp_path)


# --- the modules, end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def common(student_dir, minilm_path, bench_cache, small_model2vec):  # noqa: F811
    return ["--model", student_dir, "--teacher", minilm_path, "--cache-dir", str(bench_cache), "--no-progress"]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_beir_on_a_scifact_slice(common, shared_data, tmp_path, monkeypatch):
    argv = ["--dataset", str(shared_data / "beir" / "scifact"), "--max-docs", "40", "--max-queries", "10"]
    result = beir.main([*argv, *common, "--out", str(tmp_path), "--save-runs", "--ignore-identical-ids"])
    assert result == read_json(tmp_path / "beir.json")
    rows = {row["system"]: row for row in result["retrieval"]}
    assert list(rows) == ALL_SYSTEMS and result["skipped"] == []
    for row in rows.values():
        assert RETRIEVAL_KEYS <= set(row) and 0 <= row["ndcg@10"] <= 1 and 0 <= row["mrr@10"] <= 1
        assert row["recall@100"] is None and row["recall@1000"] is None  # deeper than the 40 documents
        assert row["timing_k"] == 10 and row["query_seconds"] > 0 and row["queries"] == 10
    assert rows["teacher"]["ndcg@10"] > 0.5 and rows["teacher"]["pct_teacher_ndcg@10"] == 100.0
    assert result["dataset"]["documents"] == 40 and result["dataset"]["queries"] == 10
    assert result["settings"]["ignore_identical_ids"] is True and result["settings"]["teacher_similarity"] == "cosine"
    assert {"machine", "versions"} <= set(result) and result["versions"]["beir"]
    assert (tmp_path / "runs" / "scifact.bm25.trec").is_file()

    # a rerun reads the teacher's document embeddings from the cache
    from bertapprox_hf.pipeline.teacher import Teacher

    sizes = []
    original = Teacher.encode
    monkeypatch.setattr(
        Teacher, "encode", lambda self, texts, **kw: sizes.append(len(texts)) or original(self, texts, **kw)
    )
    again = beir.main([*argv, *common, "--out", str(tmp_path / "again"), "--systems", "teacher", "asymmetric"])
    assert 40 not in sizes and [r["ndcg@10"] for r in again["retrieval"]] == [
        rows["teacher"]["ndcg@10"], rows["asymmetric"]["ndcg@10"]
    ]  # fmt: skip


def test_bm25_is_skipped_with_the_reason_without_java(common, shared_data, tmp_path, monkeypatch):
    import indexers.java

    def no_java(*args, **kwargs):
        raise indexers.java.JavaNotFoundError("Pyserini needs Java 21 or newer, and none was found")

    monkeypatch.setattr(indexers.java, "find_java_home", no_java)
    argv = ["--dataset", str(shared_data / "beir" / "scifact"), "--max-docs", "40", "--max-queries", "10"]
    result = beir.main([*argv, *common, "--out", str(tmp_path), "--systems", "teacher", "bm25"])
    assert [row["system"] for row in result["retrieval"]] == ["teacher"]
    assert result["skipped"] == [
        {"dataset": "scifact", "system": "bm25", "reason": "Pyserini needs Java 21 or newer, and none was found"}
    ]


def test_msmarco_dl19_uses_grade_two(common, shared_data, tmp_path):
    argv = ["--dataset", "dl19", "--data", str(shared_data / "msmarco-passage-dl19"), "--max-docs", "60"]
    result = msmarco.main([*argv, "--max-queries", "4", *common, "--out", str(tmp_path), "--systems", "teacher",
                           "asymmetric", "bm25"])  # fmt: skip
    assert read_json(tmp_path / "msmarco.json")["dataset"]["relevance_threshold"] == 2
    assert [row["system"] for row in result["retrieval"]] == ["teacher", "asymmetric", "bm25"]
    assert all(RETRIEVAL_KEYS <= set(row) and row["relevance_threshold"] == 2 for row in result["retrieval"])


def test_msmarco_dev_from_tsv_files(common, msmarco_dev, tmp_path):
    result = msmarco.main(["--dataset", "dev", "--data", str(msmarco_dev), *common, "--out", str(tmp_path / "out"),
                           "--systems", "teacher", "student"])  # fmt: skip
    teacher = result["retrieval"][0]
    assert teacher["system"] == "teacher" and teacher["mrr@10"] == 1.0 and teacher["queries"] == 2
    assert result["dataset"]["name"] == "msmarco-dev" and result["dataset"]["documents"] == 6


def test_sts_module(common, tmp_path):
    result = sts.main(["--max-pairs", "30", *common, "--out", str(tmp_path)])
    assert result == read_json(tmp_path / "sts.json")
    rows = {row["system"]: row for row in result["sts"]}
    assert list(rows) == ["teacher", "student", "asymmetric", "model2vec"]
    assert rows["teacher"]["spearman"] > 0.6 and all(-1 <= r["spearman"] <= 1 for r in rows.values())
    assert "bm25" in result["not_applicable"] and result["dataset"]["pairs"] == 30


def test_fidelity_from_texts(common, shared_data, tmp_path):
    dl19 = shared_data / "msmarco-passage-dl19"
    texts = ["--texts", str(dl19 / "queries.jsonl"), str(dl19 / "corpus.jsonl"), "--max-texts", "40"]
    result = fidelity.main([*texts, *common, "--out", str(tmp_path)])
    assert result == read_json(tmp_path / "fidelity.json") and result["texts"] == 40
    assert {"query", "all"} <= set(result["student"])
    for bucket in result["student"].values():
        assert {"count", "cosine", "cosine_p5", "cosine_p50", "cosine_p95", "spearman", "mse"} <= set(bucket)
        assert bucket["cosine_p5"] <= bucket["cosine_p50"] <= bucket["cosine_p95"] <= 1.0
    assert set(result["model2vec"]["all"]) == {"count", "spearman"}


def test_fidelity_from_a_targets_folder(common, minilm, tmp_path):
    from bertapprox_hf.pipeline.targets import build_targets

    texts = [f"text number {i} about the bank rate and the oil price" for i in range(60)]
    build_targets(texts, minilm, str(tmp_path / "targets"), shard_size=32, show_progress_bar=False)
    argv = ["--targets", str(tmp_path / "targets"), "--val-fraction", "0.3", "--systems", "student"]
    result = fidelity.main([*argv, *common, "--out", str(tmp_path / "out"), "--error-scales", "1", "0.5"])
    assert result["source"]["split"] == "validation" and 5 < result["texts"] < 40
    assert "model2vec" not in result and 0 < result["student"]["all"]["cosine"] <= 1
    unscaled, halved = result["error_scaling"]["all"]
    assert unscaled["cosine"] == pytest.approx(result["student"]["all"]["cosine"])
    assert unscaled["spearman"] == pytest.approx(result["student"]["all"]["spearman"])
    assert halved["scale"] == 0.5 and halved["cosine"] > unscaled["cosine"]
    with pytest.raises(ValueError, match="--error-scales must lie in"):
        fidelity.main([*argv, *common, "--out", str(tmp_path / "out"), "--error-scales", "0"])


def test_fidelity_word_order_reference(common, minilm, tmp_path):
    from bertapprox_hf.pipeline.targets import build_targets

    texts = [f"the {w} rate rose while oil prices fell in {p} markets" for w in ("bank", "tax", "growth")
             for p in ("asian", "european", "american", "african", "local")]  # fmt: skip
    build_targets(texts, minilm, str(tmp_path / "targets"), shard_size=32, show_progress_bar=False)
    argv = ["--targets", str(tmp_path / "targets"), "--val-fraction", "1", "--systems", "student"]
    out = tmp_path / "out"
    result = fidelity.main([*argv, *common, "--out", str(out), "--word-order", "1", "100", "--orders", "2"])
    shuffled, whole = result["word_order"]["all"]
    assert shuffled["chunk_words"] == 1 and shuffled["orders"] == 2 and whole["chunk_words"] == 100
    # a chunk longer than every text keeps it intact: the teacher's own embedding again
    assert whole["cosine"] == pytest.approx(1.0, abs=1e-4) and whole["spearman"] == pytest.approx(1.0, abs=1e-4)
    assert 0.5 < shuffled["cosine"] < 0.999 and shuffled["spearman"] < 0.99  # word order matters to the teacher
    assert (out / "word_order.png").stat().st_size > 0
    with pytest.raises(ValueError, match="--word-order and --orders must be at least 1"):
        fidelity.main([*argv, *common, "--out", str(out), "--word-order", "0"])


def test_shuffled_chunks_keep_each_chunk_in_order():
    import random

    from benchmarks.word_order import shuffled_chunks

    text = "one two three four five six seven"
    shuffled = shuffled_chunks(text, 3, random.Random(0))
    assert sorted(shuffled.split()) == sorted(text.split())
    chunks = {"one two three", "four five six", "seven"}
    assert all(chunk in shuffled for chunk in chunks) and shuffled != text
    assert shuffled == shuffled_chunks(text, 3, random.Random(0))  # the seed fixes the order
    assert shuffled_chunks(text, 7, random.Random(1)) == text and shuffled_chunks("", 2, random.Random(0)) == ""
    with pytest.raises(ValueError, match="chunk_words must be at least 1"):
        shuffled_chunks(text, 0, random.Random(0))


def test_benchmarks_are_offered_by_the_builtin_plugin(student_dir, minilm_path, bench_cache, tmp_path):  # noqa: F811
    from bertapprox_hf.plugins import PluginManager

    manager = PluginManager(entry_points=False)
    assert {"scifact", "dl19", "msmarco-dev", "stsb", "fidelity", "beir"} <= set(manager.benchmark_datasets())
    options = {"teacher": minilm_path, "max_pairs": 10, "systems": ["teacher", "student"],
               "cache_dir": str(bench_cache), "out": str(tmp_path), "no_progress": True}  # fmt: skip
    result = manager.run_benchmark("stsb", student_dir, options)
    assert [row["system"] for row in result["sts"]] == ["teacher", "student"]
    with pytest.raises(ValueError, match="invalid options"):
        manager.run_benchmark("beir", student_dir, {"out": str(tmp_path)})  # no dataset


def test_teacher_precision_compares_autocast_with_float32(tiny_teacher_path, shared_data, tmp_path):
    from benchmarks import teacher_precision

    out = tmp_path / "precision"
    results = teacher_precision.main(
        ["--teacher", tiny_teacher_path, "--queries", str(shared_data / "train" / "msmarco_queries.jsonl"),
         "--corpus", str(shared_data / "beir" / "scifact" / "corpus.jsonl"), "--max-queries", "40",
         "--max-passages", "12", "--batch-size", "16", "--precisions", "bf16", "--out", str(out)]
    )  # fmt: skip
    rows = {(r["texts"], r["precision"]): r for r in results["rows"]}
    assert set(rows) == {(s, p) for s in ("queries", "passages") for p in ("no", "bf16")}
    assert rows["queries", "no"]["count"] == 40 and rows["passages", "no"]["count"] == 12
    reference = rows["passages", "no"]
    assert (reference["speedup"], reference["cosine_min"], reference["pairwise_spearman"]) == pytest.approx((1, 1, 1))
    for name in ("queries", "passages"):
        fast = rows[name, "bf16"]
        assert 0.99 < fast["cosine_min"] < 1 - 1e-9 and 0.9 < fast["pairwise_spearman"] <= 1  # close, not equal
    assert json.loads((out / "teacher_precision.json").read_text())["rows"] == results["rows"]
    assert "| passages | bf16 | 12 |" in (out / "teacher_precision.md").read_text()
    assert (out / "teacher_precision.png").stat().st_size > 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.jsonl holds no texts"):
        teacher_precision.read_texts(str(empty), 5)


def test_teacher_batches_times_each_batch_shape_on_the_same_texts(tiny_teacher_path, train_sample_files, tmp_path):
    from benchmarks import teacher_batches

    out = tmp_path / "batches"
    results = teacher_batches.main(["--teacher", tiny_teacher_path, "--corpus", *train_sample_files[:2],
                                    "--max-per-source", "60", "--every", "3", "--settings", "16", "300t",
                                    "--out", str(out)])  # fmt: skip
    first, bounded = results["rows"]
    assert first["texts"] == bounded["texts"] == 40 and first["speedup"] == 1 and first["max_difference"] == 0
    assert bounded["batches_of"] == "300 tokens, ≤ 256 texts" and bounded["max_difference"] < 1e-5
    assert "| 16 texts | 40 |" in (out / "teacher_batches.md").read_text()
    assert (out / "teacher_batches.png").stat().st_size > 0
    for bad in ("0", "t", "-4t", "abc"):
        with pytest.raises(ValueError, match="positive number of texts"):
            teacher_batches.parse_setting(bad)
