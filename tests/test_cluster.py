"""Encoding on a cluster: corpus partitions (every line read once), embeddings folders built into indexes in corpus
order (one index, Faiss shards, Pyserini's files), and a local Ray cluster's output against ``bertapprox index``:
the same ids in the same order, the same vectors, the same runs."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bertapprox_hf.pipeline.corpus import read_jsonl
from indexers.distributed import EncodePartitions, partition_file, plan_splits, read_split

from .conftest import SYNTHETIC_CORPUS

pytest.importorskip("faiss")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from indexers.embeddings import (  # noqa: E402
    build_index,
    build_sharded_index,
    iter_embeddings,
    write_manifest,
    write_pyserini_vectors,
)
from indexers.faiss_indexer import FaissIndexer  # noqa: E402
from indexers.faiss_shards import ShardedFaissIndexer  # noqa: E402


# --- partitions -----------------------------------------------------------------------------------
def test_partitions_read_every_line_once_as_the_jsonl_reader_does(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": f"d{i}", "title": "Tïtle" * (i % 3 > 0), "text": f"text {i} " + "é€😀 " * (i % 5)} for i in range(40)
    ]
    lines = [json.dumps(row, ensure_ascii=i % 2 == 0) for i, row in enumerate(rows)]
    text = "\n".join(lines[:10]) + "\n\n  \n" + "\r\n".join(lines[10:30]) + "\r\n" + "\n".join(lines[30:])  # no last \n
    corpus.write_bytes(text.encode("utf-8"))
    expected = list(read_jsonl(str(corpus)))
    for split_bytes in (1, 7, 64, 1000, 10**6):
        splits = plan_splits([str(corpus)], split_bytes)
        assert [s["split"] for s in splits] == list(range(len(splits)))
        read = [item for s in splits for item in read_split(s["path"], s["start"], s["end"])]
        assert [record for _, record in read] == expected, split_bytes
        offsets = [offset for offset, _ in read]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert len(plan_splits([str(corpus)], 10**6, min_splits=4)) == 4  # smaller partitions for enough of them


def test_partition_errors_name_the_file_and_byte(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n{"text": "no id"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl \(line at byte 25\): no 'id' field"):
        list(read_split(str(corpus), 0, 100))
    corpus.write_text('{"id": "a", "text": "x"}\n{bad\n')
    with pytest.raises(ValueError, match=r"line at byte 25\): not valid JSON"):
        list(read_split(str(corpus), 0, 100))
    corpus.write_bytes(b'{"id": "a", "text": "\xff"}\n')
    with pytest.raises(ValueError, match="not valid UTF-8"):
        list(read_split(str(corpus), 0, 100))
    corpus.write_text("")
    with pytest.raises(ValueError, match="empty"):
        plan_splits([str(corpus)], 100)


# --- embeddings folders, from any engine ---------------------------------------------------------------
def write_engine_output(folder, ids, matrix, splits_of, files=3, seed=0):
    """Shards as another engine might write them: rows shuffled across files, vectors as plain float lists."""
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    folder.mkdir()
    for number, rows in enumerate(np.array_split(order, files)):
        table = pa.table({
            "split": pa.array([splits_of[r] for r in rows], pa.int64()),
            "offset": pa.array([int(r) * 10 for r in rows], pa.int64()),
            "id": pa.array([ids[r] for r in rows], pa.string()),
            "embedding": pa.array([matrix[r].tolist() for r in rows], pa.list_(pa.float32())),
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{number}.parquet")
    encoder = {"kind": "test", "dim": matrix.shape[1], "similarity": "cosine"}
    splits = [{"path": "corpus.jsonl", "start": s, "end": s + 1} for s in sorted(set(splits_of))]
    write_manifest(folder, {"dim": matrix.shape[1], "similarity": "cosine", "document_encoder": encoder,
                            "query_encoder": {**encoder, "path": "student"}, "splits": splits,
                            "corpus": "corpus.jsonl", "documents": len(ids)})  # fmt: skip


def test_embeddings_build_indexes_in_corpus_order(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"doc{i}" for i in range(600)]
    matrix = rng.standard_normal((600, 16)).astype(np.float32)
    splits_of = [i // 50 for i in range(600)]  # 12 partitions of 50 documents
    write_engine_output(tmp_path / "emb", ids, matrix, splits_of)

    chunks = list(iter_embeddings(tmp_path / "emb", chunk_rows=120))
    assert [len(chunk[0]) for chunk in chunks] == [150, 150, 150, 150]
    assert sum((chunk[0] for chunk in chunks), []) == ids
    np.testing.assert_array_equal(np.concatenate([chunk[1] for chunk in chunks]), matrix)

    reference = FaissIndexer.create(16, "cosine")
    reference.add(ids, matrix)
    index = build_index(tmp_path / "emb", chunk_rows=100)
    assert index.ids == ids and index.meta["query_encoder"]["path"] == "student"
    np.testing.assert_array_equal(index.index.reconstruct_n(0, 600), reference.index.reconstruct_n(0, 600))

    queries = rng.standard_normal((5, 16)).astype(np.float32)
    expected = reference.search(queries, k=20)
    meta = build_sharded_index(tmp_path / "emb", tmp_path / "shards", 3)
    assert meta["shards"] == [200, 200, 200] and meta["indexer"] == "faiss-shards"
    shards = ShardedFaissIndexer.load(tmp_path / "shards")
    assert shards.ids == ids and shards.search(queries, k=20).ids == expected.ids
    with pytest.raises(ValueError, match="read-only"):
        shards.add(["x"], queries[:1])

    # IVF: trained once, every shard starts from the trained quantizer: the same hits as one IVF index
    ivf = FaissIndexer.create(16, "cosine", "IVF8,Flat", train_size=300, nprobe=2)
    ivf.add(ids, matrix)
    ivf.finalize()
    build_sharded_index(tmp_path / "emb", tmp_path / "ivf", 4, factory="IVF8,Flat", train_size=300)
    ivf_shards = ShardedFaissIndexer.load(tmp_path / "ivf", nprobe=2)
    assert ivf_shards.meta["trained_on"] == 300
    assert ivf_shards.search(queries, k=20).ids == ivf.search(queries, k=20).ids

    files = write_pyserini_vectors(tmp_path / "emb", tmp_path / "vectors")
    lines = [json.loads(line) for file in files for line in open(file, encoding="utf-8")]
    assert [line["id"] for line in lines] == ids
    np.testing.assert_allclose(np.array([line["vector"] for line in lines]), reference.index.reconstruct_n(0, 600))


def test_repeated_ids_are_refused_or_the_first_kept(tmp_path):
    ids = ["a", "b", "a", "c"]
    matrix = np.eye(4, dtype=np.float32)
    write_engine_output(tmp_path / "emb", ids, matrix, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="1 document ids occur more than once: 'a'"):
        build_index(tmp_path / "emb")
    index = build_index(tmp_path / "emb", dedupe_ids=True)
    assert index.ids == ["a", "b", "c"] and index.meta["build"]["duplicate_ids_dropped"] == 1
    with pytest.raises(ValueError, match="more than once"):
        build_sharded_index(tmp_path / "emb", tmp_path / "shards", 2)


# --- a local Ray cluster against bertapprox index ---------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the cluster path needs Ray Data: pip install 'bertapprox-hf[ray]'")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def student_dir(tiny_vocab, tmp_path_factory) -> str:
    """A small student of the tiny teacher, its weights off their initial values (as after training)."""
    from .conftest import trained_student

    folder = tmp_path_factory.mktemp("student")
    trained_student(tiny_vocab, num_heads=2, intermediate_size=32).save_pretrained(folder)
    return str(folder)


def test_ray_cluster_encoding_equals_bertapprox_index(ray_cluster, student_dir, tiny_teacher_path, tmp_path, capsys):
    from bertapprox_hf.cli import main
    from indexers.pyserini_indexer import PyseriniIndexer
    from indexers.runs import read_trec

    corpus = str(SYNTHETIC_CORPUS)  # four files, 1,350 documents
    queries = str(SYNTHETIC_CORPUS / "queries.jsonl")
    assert main(["index", "--model", student_dir, "--teacher", tiny_teacher_path, "--corpus", corpus,
                 "--out", str(tmp_path / "reference"), "--batch-size", "64"]) == 0  # fmt: skip
    code = main(["cluster", "encode", "--model", student_dir, "--teacher", tiny_teacher_path, "--corpus", corpus,
                 "--out", str(tmp_path / "emb"), "--split-mb", "0.05", "--workers", "2", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["documents"] == 1350 and summary["partitions"] >= 8 and summary["asymmetric"]
    assert main(["cluster", "index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "index")]) == 0
    assert main(["cluster", "index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "shards"),
                 "--shards", "3"]) == 0  # fmt: skip
    assert main(["cluster", "index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "pyserini"),
                 "--indexer", "pyserini"]) == 0  # fmt: skip

    reference, index = FaissIndexer.load(tmp_path / "reference"), FaissIndexer.load(tmp_path / "index")
    assert index.ids == reference.ids and len(index.ids) == 1350
    np.testing.assert_allclose(index.index.reconstruct_n(0, 1350), reference.index.reconstruct_n(0, 1350), atol=1e-6)
    assert PyseriniIndexer.load(tmp_path / "pyserini").ids == reference.ids
    assert (index.dim, index.similarity) == (reference.dim, reference.similarity)
    for key in ("document_encoder", "query_encoder", "factory", "normalized"):
        assert index.meta[key] == reference.meta[key], key
    assert index.meta["build"]["corpus"] == reference.meta["build"]["corpus"]

    runs = {}
    for name in ("reference", "index", "shards"):
        assert main(["search", "--index", str(tmp_path / name), "--queries", queries, "--k", "10",
                     "--output", str(tmp_path / f"{name}.trec")]) == 0  # fmt: skip
        runs[name] = read_trec(tmp_path / f"{name}.trec")
    for name in ("index", "shards"):
        for query, hits in runs["reference"].items():
            assert [doc for doc, _, _ in runs[name][query]] == [doc for doc, _, _ in hits], (name, query)
            assert np.allclose([s for _, _, s in runs[name][query]], [s for _, _, s in hits], atol=1e-5)

    code = main(["cluster", "encode", "--model", student_dir, "--corpus", corpus, "--out", str(tmp_path / "emb")])
    assert code == 2 and "exists and is not empty" in capsys.readouterr().err


def test_the_map_writes_a_shard_per_partition_and_reports_bad_input(student_dir, tmp_path):
    """The actors' callable class, run here: a partition's shard equals bertapprox index's reading of its lines; a
    bad line is reported as a one-line error (the driver raises it), and no partial file is left."""
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps({"id": f"d{i}", "text": f"new york city {i}"}) + "\n" for i in range(5)))
    bad.write_text('{"id": "a", "text": "x"}\n{bad\n')
    (tmp_path / "out").mkdir()
    encode = EncodePartitions(student_dir, str(tmp_path / "out"), batch_size=2, threads=1)
    batch = {"split": np.array([0, 1, 2]), "path": np.array([str(good), str(good), str(bad)], dtype=object),
             "start": np.array([0, 40, 0]), "end": np.array([40, good.stat().st_size, 100])}  # fmt: skip
    result = encode(batch)
    assert result["documents"].tolist() == [1, 4, -1] and result["error"][:2].tolist() == ["", ""]
    assert (
        result["error"][2]
        == f"{bad} (line at byte 25): not valid JSON (Expecting property name enclosed in double quotes)"
    )
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [partition_file(0), partition_file(1)]
    table = pq.read_table(tmp_path / "out" / partition_file(1))
    assert table.column("id").to_pylist() == ["d1", "d2", "d3", "d4"] and table.column("split").to_pylist() == [1] * 4
    expected = encode.encoder.encode([f"new york city {i}" for i in range(1, 5)])
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), expected, atol=1e-6)
