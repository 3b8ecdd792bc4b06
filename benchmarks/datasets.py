"""Retrieval datasets: BEIR folders (local or downloaded), TREC DL 2019, the MS MARCO dev set from tsv files.

Every loader returns a :class:`RetrievalData`: documents (``title + " " + text`` when there is a title,
as :mod:`bertapprox_hf.pipeline.corpus` joins them), queries, graded qrels, the relevance threshold of its
convention, and the corpus file (its size and SHA-256 key the teacher-embedding cache).
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
DOWNLOAD_TIMEOUT_S = 20

#: datasets of the shared data folder: name → (folder under the data folder, relevance threshold)
SHARED_DATASETS = {
    "scifact": ("beir/scifact", 1),
    "dl19": ("msmarco-passage-dl19", 2),
}
MSMARCO_DEV_FILES = {
    "collection": "collection.tsv",
    "queries": "queries.dev.small.tsv",
    "qrels": "qrels.dev.small.tsv",
}


@dataclass
class RetrievalData:
    """A retrieval test collection held in memory."""

    name: str
    corpus: dict[str, str]  # doc id → text
    queries: dict[str, str]  # query id → text (only queries with judgments)
    qrels: dict[str, dict[str, int]]  # query id → {doc id: grade}
    relevance_threshold: int = 1
    corpus_file: str | None = None
    source: dict = field(default_factory=dict)  # where it came from and how it was sliced

    def describe(self) -> dict:
        """Counts and provenance, for a results file."""
        judgments = sum(len(docs) for docs in self.qrels.values())
        return {
            "name": self.name,
            "documents": len(self.corpus),
            "queries": len(self.queries),
            "judgments": judgments,
            "relevance_threshold": self.relevance_threshold,
            **self.source,
        }


def default_data_dir() -> Path:
    """``$BERTAPPROX_DATA``, else ``$BERTAPPROX_SHARED/data``, else ``../shared/data`` beside the repository."""
    if os.environ.get("BERTAPPROX_DATA"):
        return Path(os.environ["BERTAPPROX_DATA"])
    shared = Path(os.environ.get("BERTAPPROX_SHARED") or REPO_ROOT.parent / "shared")
    return shared / "data"


def document_text(doc: dict) -> str:
    """A BEIR document as one text: the title, a space, the text (the text alone without a title)."""
    text = doc.get("text") or ""
    title = doc.get("title")
    return f"{title} {text}" if isinstance(title, str) and title.strip() else text


# --- BEIR -----------------------------------------------------------------------------------------
def is_beir_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds ``corpus.jsonl``, ``queries.jsonl`` and a ``qrels/`` folder."""
    path = Path(path)
    return (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file() and (path / "qrels").is_dir()


def load_beir_folder(
    folder: str | os.PathLike, split: str = "test", name: str | None = None, relevance_threshold: int = 1
) -> RetrievalData:
    """A BEIR-format folder, read with BEIR's ``GenericDataLoader``."""
    from beir.datasets.data_loader import GenericDataLoader

    folder = Path(folder)
    if not is_beir_folder(folder):
        raise FileNotFoundError(
            f"not a BEIR dataset folder (needs corpus.jsonl, queries.jsonl and qrels/{split}.tsv): {folder}"
        )
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(f"no qrels for split {split!r} in {folder} (splits there: {', '.join(splits)})")
    corpus, queries, qrels = GenericDataLoader(data_folder=str(folder)).load(split=split)
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise ValueError(f"{qrels_file}: {len(missing)} judged queries are not in queries.jsonl (e.g. {missing[0]})")
    return RetrievalData(
        name=name or folder.name,
        corpus={doc_id: document_text(doc) for doc_id, doc in corpus.items()},
        queries={qid: queries[qid] for qid in qrels},
        qrels={qid: {doc: int(grade) for doc, grade in docs.items()} for qid, docs in qrels.items()},
        relevance_threshold=relevance_threshold,
        corpus_file=str(folder / "corpus.jsonl"),
        source={"path": str(folder.resolve()), "split": split},
    )


def download_beir(name: str, out_dir: str | os.PathLike) -> Path:
    """Download and unpack the BEIR dataset ``name`` into ``out_dir`` (once); its folder.

    Offline, or when the server refuses, raises ConnectionError saying so and how to use a local copy.
    """
    import requests
    from beir import util

    target = Path(out_dir) / name
    if is_beir_folder(target):
        return target
    url = BEIR_URL.format(name=name)
    advice = (
        f"download {url} elsewhere, unzip it and pass the folder (--dataset PATH), or run where the internet is "
        "reachable"
    )
    try:
        response = requests.head(url, timeout=DOWNLOAD_TIMEOUT_S, allow_redirects=True)
        response.raise_for_status()
    except requests.RequestException as error:
        raise ConnectionError(
            f"cannot download BEIR dataset {name!r} from {url}: {error}. Offline? {advice}"
        ) from error
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    zip_path = Path(out_dir) / f"{name}.zip"
    try:
        folder = Path(util.download_and_unzip(url, str(out_dir)))
    except Exception as error:  # network errors, a truncated zip
        zip_path.unlink(missing_ok=True)  # a partial download must not be unzipped next time
        raise ConnectionError(f"downloading BEIR dataset {name!r} from {url} failed: {error}. {advice}") from error
    if not is_beir_folder(folder):
        raise ValueError(f"{url} did not unpack into a BEIR dataset folder ({folder})")
    return folder


def resolve_beir(dataset: str, data_dir: str | os.PathLike | None, download_dir: str | os.PathLike) -> Path:
    """The folder of ``dataset``: a path to a BEIR folder, a name of the shared data folder
    (:data:`SHARED_DATASETS`, or ``beir/NAME`` there), else a BEIR dataset downloaded into ``download_dir``."""
    as_path = Path(dataset).expanduser()
    if as_path.exists():
        if not is_beir_folder(as_path):
            raise FileNotFoundError(f"{as_path} is not a BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
        return as_path
    if "/" in dataset or os.sep in dataset:
        raise FileNotFoundError(f"dataset folder not found: {dataset}")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    for candidate in (data_dir / SHARED_DATASETS.get(dataset, ("-", 1))[0], data_dir / "beir" / dataset):
        if is_beir_folder(candidate):
            return candidate
    return download_beir(dataset, download_dir)


def relevance_threshold_of(dataset: str) -> int:
    """The relevance threshold of a named dataset's convention (2 for TREC DL, else 1)."""
    return SHARED_DATASETS.get(dataset, (None, 1))[1]


# --- MS MARCO dev from tsv files ------------------------------------------------------------------
def _tsv_rows(path: str | os.PathLike, columns: tuple[int, ...], what: str) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a tab-separated file without quoting; a row with a column count not
    in ``columns`` raises an error naming the file and line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        for number, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) not in columns:
                expected = " or ".join(str(c) for c in columns)
                raise ValueError(f"{path}:{number}: expected {expected} tab-separated columns, got {len(fields)}")
            yield number, fields


def read_collection_tsv(path: str | os.PathLike, max_docs: int | None = None) -> dict[str, str]:
    """``{pid: passage}`` of an MS MARCO ``collection.tsv`` (``pid<TAB>passage``)."""
    rows = _tsv_rows(path, (2,), "collection")
    return {fields[0]: fields[1] for _, fields in itertools.islice(rows, max_docs)}


def read_qrels_tsv(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Qrels of a tsv file: TREC (``qid 0 docid grade``, tabs or spaces) or BEIR (``qid docid grade`` with
    a ``query-id`` header)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if number == 1 and fields[0].lower() in ("query-id", "qid", "query_id"):
                continue
            if len(fields) == 4:
                qid, doc, grade = fields[0], fields[2], fields[3]
            elif len(fields) == 3:
                qid, doc, grade = fields
            else:
                raise ValueError(f"{path}:{number}: expected 'qid 0 docid grade' or 'qid docid grade'")
            try:
                qrels.setdefault(qid, {})[doc] = int(grade)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: the grade {grade!r} is not an integer") from error
    if not qrels:
        raise ValueError(f"{path}: no judgments")
    return qrels


def load_msmarco_dev(
    folder: str | os.PathLike | None = None,
    collection: str | os.PathLike | None = None,
    queries: str | os.PathLike | None = None,
    qrels: str | os.PathLike | None = None,
    max_docs: int | None = None,
) -> RetrievalData:
    """The MS MARCO passage dev set from local files: ``collection.tsv``, ``queries.dev.small.tsv`` and
    ``qrels.dev.small.tsv`` in ``folder`` (or each path given). ``max_docs`` reads only the first passages
    (then only queries with a relevant passage among them are kept)."""
    from indexers.runs import read_queries

    paths = {"collection": collection, "queries": queries, "qrels": qrels}
    for key, default_name in MSMARCO_DEV_FILES.items():
        if paths[key] is None:
            if folder is None:
                raise ValueError(f"give the MS MARCO folder or the {key} file")
            paths[key] = os.path.join(folder, default_name)
    judgments = read_qrels_tsv(paths["qrels"])
    query_ids, texts = read_queries(paths["queries"])
    topics = dict(zip(query_ids, texts, strict=True))
    missing = [qid for qid in judgments if qid not in topics]
    if missing:
        raise ValueError(f"{paths['qrels']}: {len(missing)} judged queries are not in {paths['queries']}")
    corpus = read_collection_tsv(paths["collection"], max_docs)
    data = RetrievalData(
        name="msmarco-dev",
        corpus=corpus,
        queries={qid: topics[qid] for qid in judgments},
        qrels=judgments,
        relevance_threshold=1,
        corpus_file=os.path.abspath(paths["collection"]),
        source={key: os.path.abspath(value) for key, value in paths.items()},
    )
    return restrict_to_corpus(data) if max_docs is not None else data


# --- slices ---------------------------------------------------------------------------------------
def restrict_to_corpus(data: RetrievalData) -> RetrievalData:
    """Judgments of documents outside the corpus dropped, and queries left without a relevant document."""
    qrels = {}
    for qid, docs in data.qrels.items():
        kept = {doc: grade for doc, grade in docs.items() if doc in data.corpus}
        if any(grade >= data.relevance_threshold for grade in kept.values()):
            qrels[qid] = kept
    return replace(data, qrels=qrels, queries={qid: data.queries[qid] for qid in qrels})


def slice_data(data: RetrievalData, max_docs: int | None = None, max_queries: int | None = None) -> RetrievalData:
    """A small, deterministic slice: the first queries (file order, at most ``max_queries``) whose relevant
    documents fit in half of ``max_docs``, those documents, then the corpus's first other documents up to
    ``max_docs``.
    Judgments of documents left out are dropped; queries without a relevant document left are dropped."""
    if max_docs is None and max_queries is None:
        return data
    if max_docs is not None and max_docs < 1 or max_queries is not None and max_queries < 1:
        raise ValueError("max_docs and max_queries must be positive")
    budget = len(data.corpus) if max_docs is None else max_docs
    half = max(1, budget // 2)  # relevant documents fill at most half the slice; distractors the rest
    chosen: dict[str, None] = {}
    query_ids: list[str] = []
    for qid, docs in data.qrels.items():
        if max_queries is not None and len(query_ids) >= max_queries:
            break
        relevant = [doc for doc, grade in docs.items() if grade >= data.relevance_threshold and doc in data.corpus]
        new = [doc for doc in relevant if doc not in chosen]
        if not relevant or (query_ids and len(chosen) + len(new) > half):
            continue
        chosen.update(dict.fromkeys(new))
        query_ids.append(qid)
    for doc in data.corpus:
        if len(chosen) >= budget:
            break
        chosen.setdefault(doc, None)
    corpus = {doc: data.corpus[doc] for doc in data.corpus if doc in chosen}
    sliced = replace(
        data,
        corpus=corpus,
        queries={qid: data.queries[qid] for qid in query_ids},
        qrels={qid: data.qrels[qid] for qid in query_ids},
        source={**data.source, "slice": {"max_docs": max_docs, "max_queries": max_queries}},
    )
    return restrict_to_corpus(sliced)
