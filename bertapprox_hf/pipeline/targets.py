"""Precomputed teacher targets: the teacher's embedding of every corpus record, stored once for training.

On-disk format (one folder)::

    manifest.json          {"format_version": 1, "teacher": Teacher.describe(), "shard_size": N,
                            "corpus": {...}, "dtype": "float16", "num_shards": S, "num_records": R}
    shard_00000.parquet    records 0 .. N-1
    shard_00001.parquet    records N .. 2N-1
    ...

Each shard is a parquet file written by `datasets` with the columns ``id`` (string), ``text`` (string) and
``embedding`` (list of float16, the teacher's dimension). Record ``k`` of the corpus stream (``iter_records``)
lies in shard ``k // shard_size``, so the shards in numeric order are the corpus in order; every shard but the
last holds exactly ``shard_size`` rows. The folder loads as one `datasets` dataset with :func:`load_targets`.

Writing and resuming:

* ``manifest.json`` is written first (without ``num_shards``/``num_records``), and completed by
  :func:`finalize_targets` once every shard is there: a manifest without ``num_records`` is an unfinished
  build, which :func:`load_targets` refuses. Once process 0 has read the whole corpus it adds
  ``expected_num_shards``/``expected_num_records``, which :func:`finalize_targets` checks and replaces.
* A shard is written to ``shard_XXXXX.parquet.tmp`` and then renamed, so a killed build never leaves a
  half-written shard under its final name; leftover ``*.tmp`` files are removed when the build finishes.
* On a rerun, a finished shard is reused (not re-encoded) only when it reads back whole and its rows have the
  ids and texts of that shard's corpus records; otherwise it is encoded again. Shards numbered past the end
  of the current corpus are removed.
* A folder whose manifest names another teacher (name, dimension, pooling, normalization, max length) or
  another shard size is refused with a ``ValueError``: embeddings of two teachers are never mixed. One made
  under another autocast precision is reused as it is (its manifest keeps its own), but never extended: a
  shard that has to be encoded raises ``ValueError``.
* ``reuse`` names finished targets folders of the same teacher and precision (``bertapprox vocab
  contextualize --save-targets`` writes one for the texts its teacher pass read): a record found there with the
  same id and text takes its embedding from there instead of from a second teacher pass.
* Data-parallel builds: shard ``s`` is encoded by process ``s % num_processes``. Every process streams the
  whole corpus (reading is cheap next to encoding) and encodes only its own shards; process 0 writes the
  manifest. With several processes, call :func:`finalize_targets` on one process after all have finished.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from .corpus import Record, expand_paths, iter_records
from .jsonio import read_json, write_json_atomic
from .teacher import Teacher

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DTYPE = "float16"
_SHARD_RE = re.compile(r"^shard_(\d{5,})\.parquet$")
# Teacher fields that must agree for two sets of embeddings to be interchangeable.
_COMPATIBLE_FIELDS = ("dim", "pooling", "normalize", "name_or_path")

logger = logging.getLogger(__name__)


def _features():
    from datasets import Features, Sequence, Value

    return Features({"id": Value("string"), "text": Value("string"), "embedding": Sequence(Value(DTYPE))})


def shard_path(out_dir: str, index: int) -> str:
    """Path of shard ``index`` in ``out_dir``."""
    return os.path.join(out_dir, f"shard_{index:05d}.parquet")


def list_shards(out_dir: str) -> dict[int, str]:
    """The finished shard files of ``out_dir`` by shard number (``*.tmp`` files are not shards)."""
    if not os.path.isdir(out_dir):
        return {}
    found = {}
    for name in os.listdir(out_dir):
        match = _SHARD_RE.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(out_dir, name)
    return dict(sorted(found.items()))


def read_manifest(out_dir: str) -> dict:
    """The manifest of a targets folder."""
    path = os.path.join(out_dir, MANIFEST)
    manifest = read_json(path, f"{MANIFEST} of a teacher-targets folder")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("teacher"), dict) or "shard_size" not in manifest:
        raise ValueError(f"{path} is corrupt (expected an object with 'teacher' and 'shard_size')")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {manifest.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    return manifest


def _teacher_name(name_or_path) -> str:
    """The model name of a Hub id or folder: its last component (the repository of a Hub cache snapshot)."""
    parts = [p for p in str(name_or_path).replace("\\", "/").split("/") if p]
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].split("--")[-1].lower()
    return parts[-1].lower() if parts else ""


# What a teacher record made before a field existed means by its absence.
_TEACHER_DEFAULTS = {"mixed_precision": "no"}


def _teacher_mismatches(a: dict, b: dict, keys: tuple[str, ...]) -> list[tuple[str, object, object]]:
    """The ``(key, a's value, b's value)`` of each key whose values differ."""
    found = []
    for key in keys:
        left, right = a.get(key, _TEACHER_DEFAULTS.get(key)), b.get(key, _TEACHER_DEFAULTS.get(key))
        same = _teacher_name(left) == _teacher_name(right) if key == "name_or_path" else left == right
        if not same:
            found.append((key, left, right))
    return found


def check_teacher_compatible(found_teacher: dict, expected_teacher: dict, where: str) -> None:
    """Raise ``ValueError`` when ``where`` (targets, a vocabulary) was made by a teacher other than ``expected``.

    ``dim``, ``pooling``, ``normalize`` and the model name must agree; ``name_or_path`` is compared by its last
    component, so the same model in two folders (or as a Hub id) matches.
    """
    mismatches = _teacher_mismatches(found_teacher, expected_teacher, _COMPATIBLE_FIELDS)
    if mismatches:
        details = "; ".join(
            f"{key} is {found!r} there but {expected!r} is expected" for key, found, expected in mismatches
        )
        raise ValueError(f"{where} was made by another teacher: {details}")


def _check_existing_manifest(out_dir: str, manifest: dict) -> str | None:
    """Refuse to add to a folder built with another teacher or shard size.

    Returns the folder's precision when it is the only difference, ``None`` otherwise: a folder is read in any
    precision, but only extended in its own (the caller refuses once a shard has to be encoded).
    """
    existing = read_manifest(out_dir)
    keys = ("dim", "pooling", "normalize", "max_length", "name_or_path")
    mismatches = _teacher_mismatches(existing["teacher"], manifest["teacher"], keys)
    if mismatches:
        details = "; ".join(
            f"teacher {key} is {found!r} there but {current!r} now" for key, found, current in mismatches
        )
        raise ValueError(
            f"{out_dir} holds targets of another teacher ({details}); use another output folder "
            "(embeddings of two teachers are never mixed)"
        )
    if existing["shard_size"] != manifest["shard_size"]:
        raise ValueError(
            f"{out_dir} was built with shard_size {existing['shard_size']} but shard_size "
            f"{manifest['shard_size']} was asked; use the same shard size or another output folder"
        )
    if _teacher_mismatches(existing["teacher"], manifest["teacher"], ("mixed_precision",)):
        return existing["teacher"].get("mixed_precision", _TEACHER_DEFAULTS["mixed_precision"])
    return None


def _describe_corpus(corpus, corpus_options: dict) -> dict:
    """Source files and reading options; other corpora (never consumed here) by their type."""
    paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else corpus
    if isinstance(paths, (list, tuple)) and paths and all(isinstance(p, (str, os.PathLike)) for p in paths):
        with contextlib.suppress(FileNotFoundError):
            return {"sources": expand_paths(paths), **corpus_options}
    return {"sources": [type(corpus).__name__], **corpus_options}


def _shards(records: Iterator[Record], shard_size: int) -> Iterator[tuple[int, list[Record]]]:
    shard: list[Record] = []
    index = 0
    for record in records:
        shard.append(record)
        if len(shard) == shard_size:
            yield index, shard
            shard, index = [], index + 1
    if shard:
        yield index, shard


def _shard_is_complete(path: str, records: list[Record], dim: int) -> bool:
    """True when the shard file reads back whole, with the ids and texts of ``records`` and ``dim`` values a row."""
    if not os.path.isfile(path):
        return False
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["id", "text", "embedding"])
    except Exception:  # truncated or otherwise unreadable: redo it
        return False
    if table.num_rows != len(records):
        return False
    if table.column("id").to_pylist() != [r["id"] for r in records]:
        return False
    if table.column("text").to_pylist() != [r["text"] for r in records]:
        return False
    lengths = pc.list_value_length(table.column("embedding"))
    return bool(pc.all(pc.equal(lengths, dim)).as_py())


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silence `datasets` progress bars (one per shard written) for the duration."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _reusable_embeddings(folders: Sequence[str], teacher: dict) -> dict[str, tuple[str, np.ndarray]]:
    """``id -> (text, float16 embedding)`` of every record of ``folders``, which must be finished builds of
    ``teacher`` in its precision."""
    found: dict[str, tuple[str, np.ndarray]] = {}
    for folder in folders:
        manifest = read_manifest(folder)
        keys = ("dim", "pooling", "normalize", "max_length", "name_or_path", "mixed_precision")
        mismatches = _teacher_mismatches(manifest["teacher"], teacher, keys)
        if mismatches:
            details = "; ".join(f"teacher {key} is {there!r} there but {now!r} here" for key, there, now in mismatches)
            raise ValueError(f"cannot reuse {folder}: it holds embeddings of another teacher or precision ({details})")
        ids, texts, embeddings = targets_columns(load_targets(folder))
        found.update((i, (text, row)) for i, text, row in zip(ids, texts, embeddings, strict=True))
    return found


def _embed_shard(
    records: list[Record], teacher: Teacher, batch_size: int, reusable: dict[str, tuple[str, np.ndarray]]
) -> tuple[np.ndarray, int]:
    """The shard's embeddings: each record found in ``reusable`` (same id and text) copied, the others encoded;
    and how many were copied."""
    embeddings = np.zeros((len(records), teacher.dim), dtype=np.float32)
    missing = []
    for row, record in enumerate(records):
        known = reusable.get(record["id"])
        if known is not None and known[0] == record["text"]:
            embeddings[row] = known[1]
        else:
            missing.append(row)
    if missing:
        embeddings[missing] = teacher.encode([records[row]["text"] for row in missing], batch_size=batch_size)
    return embeddings, len(records) - len(missing)


def _write_shard(path: str, records: list[Record], embeddings: np.ndarray) -> None:
    from datasets import Dataset

    half = embeddings.astype(np.float16)
    if not np.isfinite(half).all():
        raise ValueError(f"teacher embeddings overflow float16 in {os.path.basename(path)}")
    data = {"id": [r["id"] for r in records], "text": [r["text"] for r in records], "embedding": half}
    tmp = path + ".tmp"
    with _quiet_datasets():
        Dataset.from_dict(data, features=_features()).to_parquet(tmp)
    os.replace(tmp, path)


def build_targets(
    corpus,
    teacher: Teacher,
    out_dir: str,
    shard_size: int = 4096,
    batch_size: int = 256,
    process_index: int = 0,
    num_processes: int = 1,
    show_progress_bar: bool = True,
    corpus_description: dict | None = None,
    reuse: Sequence[str] = (),
    **corpus_options,
) -> dict:
    """Encode ``corpus`` with ``teacher`` into parquet shards in ``out_dir`` (resumable; see the module docstring).

    Args:
        corpus: anything :func:`~.corpus.iter_records` reads; ``corpus_options`` (``max_per_source``,
            ``max_records``, ``text_field``, ...) are passed to it.
        shard_size: records a shard.
        batch_size: texts a teacher batch holds at most.
        process_index, num_processes: this process's part of a data-parallel build (shard ``s`` goes to
            process ``s % num_processes``).
        corpus_description: recorded as the manifest's ``corpus`` (default: the source files and options).
        reuse: finished targets folders whose embeddings are copied for records with the same id and text.

    Returns:
        The manifest. With one process it is finished (``num_shards``, ``num_records``); with several, call
        :func:`finalize_targets` once every process has returned.
    """
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if not isinstance(num_processes, int) or num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"bad process_index {process_index!r} / num_processes {num_processes!r}")
    os.makedirs(out_dir, exist_ok=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "teacher": teacher.describe(),
        "shard_size": shard_size,
        "corpus": corpus_description if corpus_description is not None else _describe_corpus(corpus, corpus_options),
        "dtype": DTYPE,
    }
    # Shards are listed before the manifest is read: process 0 writes the manifest before any shard, so a
    # shard seen here without a manifest was left by something else.
    stray = list_shards(out_dir)
    folder_precision = None  # set when the folder was made in another precision: reused as it is, never extended
    if os.path.exists(os.path.join(out_dir, MANIFEST)):
        folder_precision = _check_existing_manifest(out_dir, manifest)
        if folder_precision is not None:
            asked_precision = manifest["teacher"]["mixed_precision"]
            manifest["teacher"] = {**manifest["teacher"], "mixed_precision": folder_precision}
    elif stray:
        raise ValueError(
            f"{out_dir} holds {len(stray)} shard files but no {MANIFEST}, so their teacher is unknown; "
            "remove them or use another output folder"
        )
    if process_index == 0:
        write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)  # unfinished until finalize_targets

    reusable = _reusable_embeddings(reuse, teacher.describe()) if reuse else {}
    encoded, reused, num_shards, num_records, copied = [], [], 0, 0, 0
    progress = tqdm(  # records of this process's shards (only process 0 shows it)
        desc="Teacher targets" + (f" (process 0 of {num_processes})" if num_processes > 1 else ""),
        unit="rec",
        total=corpus_options.get("max_records") if num_processes == 1 else None,
        disable=not show_progress_bar or process_index != 0,
    )
    with progress:
        for index, records in _shards(iter_records(corpus, **corpus_options), shard_size):
            num_shards, num_records = index + 1, num_records + len(records)
            if index % num_processes != process_index:
                continue
            path = shard_path(out_dir, index)
            if _shard_is_complete(path, records, teacher.dim):
                reused.append(index)
            else:
                if folder_precision is not None:
                    raise ValueError(
                        f"{out_dir} holds targets of another precision (teacher mixed_precision is "
                        f"{folder_precision!r} there but {asked_precision!r} now) and shard {index} must be encoded; "
                        "resume it in its own precision or use another output folder (a complete folder is read in "
                        "any precision)"
                    )
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path + ".tmp")
                embeddings, found = _embed_shard(records, teacher, batch_size, reusable)
                _write_shard(path, records, embeddings)
                encoded.append(index)
                copied += found
            progress.update(len(records))
            progress.set_postfix(encoded=len(encoded), reused=len(reused), copied=copied)
    if num_shards == 0:
        raise ValueError(f"the corpus has no records ({manifest['corpus']})")
    logger.info(
        "process %d/%d: encoded %d shards %s (%d records copied from %s), reused %d shards %s",
        process_index,
        num_processes,
        len(encoded),
        encoded,
        copied,
        list(reuse),
        len(reused),
        reused,
    )
    if process_index == 0:
        for index, path in list_shards(out_dir).items():
            if index >= num_shards:  # past the end of this corpus: no process writes it
                os.remove(path)
        # What finalize_targets must find once every process is done (a crashed process's last shard included).
        manifest.update(expected_num_shards=num_shards, expected_num_records=num_records)
        write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)
    if num_processes == 1:
        return finalize_targets(out_dir)
    return manifest


def write_targets(
    out_dir: str,
    records: Sequence[Record],
    embeddings: np.ndarray,
    teacher: Teacher,
    corpus_description: dict,
    shard_size: int = 4096,
) -> dict:
    """Write ``records`` (``id``, ``text``) and their teacher ``embeddings``, computed elsewhere, as a finished
    targets folder; returns the manifest. An existing folder is replaced only when this function wrote it: any
    other non-empty folder (a ``targets build`` among them) is refused."""
    if len(records) == 0 or embeddings.shape != (len(records), teacher.dim):
        raise ValueError(f"{len(records)} records need embeddings of shape ({len(records)}, {teacher.dim}), "
                         f"got {embeddings.shape}")  # fmt: skip
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        written_here = os.path.isfile(os.path.join(out_dir, MANIFEST)) and read_manifest(out_dir).get("precomputed")
        if not written_here:
            raise ValueError(f"{out_dir} is not empty and was not written by write_targets; use another folder")
    os.makedirs(out_dir, exist_ok=True)
    for path in list_shards(out_dir).values():
        os.remove(path)
    manifest = {
        "format_version": FORMAT_VERSION,
        "teacher": teacher.describe(),
        "shard_size": shard_size,
        "corpus": corpus_description,
        "dtype": DTYPE,
        "precomputed": True,  # embeddings computed by another pass (e.g. the contextual table's), not by a build
    }
    write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)  # unfinished until every shard is there
    for index, start in enumerate(range(0, len(records), shard_size)):
        end = start + shard_size
        _write_shard(shard_path(out_dir, index), list(records[start:end]), embeddings[start:end])
    return finalize_targets(out_dir)


def finalize_targets(out_dir: str) -> dict:
    """Check that shards 0..n-1 are all there, count their rows and complete the manifest; returns it.

    Call once, after every process of a build has finished. The counts must match what process 0 saw in
    the corpus (``expected_num_shards``/``expected_num_records``, replaced by ``num_shards``/``num_records``).
    Also removes leftover ``*.tmp`` files.
    """
    import pyarrow.parquet as pq

    manifest = read_manifest(out_dir)
    shards = list_shards(out_dir)
    expected_shards = manifest.get("expected_num_shards")
    last = max(shards, default=-1) if expected_shards is None else expected_shards - 1
    missing = sorted(set(range(last + 1)) - set(shards))
    if missing or not shards:
        raise ValueError(
            f"{out_dir}: shards are not all there (missing: {missing[:10] if shards else 'all'}); "
            "the build did not finish, run it again to complete it"
        )
    counts = [pq.read_metadata(path).num_rows for path in shards.values()]
    shard_size = manifest["shard_size"]
    bad = [i for i, n in enumerate(counts) if n > shard_size or (n != shard_size and i < len(counts) - 1)]
    expected_records = manifest.pop("expected_num_records", None)
    if bad or (expected_records is not None and sum(counts) != expected_records):
        raise ValueError(
            f"{out_dir}: shards {bad} do not hold {shard_size} rows or the total {sum(counts)} is not the "
            f"{expected_records} records of the corpus; run the build again"
        )
    manifest.pop("expected_num_shards", None)
    for tmp in glob.glob(os.path.join(out_dir, "*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    manifest.update(num_shards=len(shards), num_records=int(sum(counts)))
    write_json_atomic(os.path.join(out_dir, MANIFEST), manifest)
    return manifest


def load_targets(folders: str | Sequence[str], streaming: bool = False):
    """The targets of one folder, or of several read one after the other, as one `datasets` dataset.

    An ``IterableDataset`` when streaming; rows in corpus order. Columns: ``id``, ``text``, ``embedding``
    (float16 values). Refuses an unfinished build.
    """
    if isinstance(folders, (str, os.PathLike)):
        return _load_folder(os.fspath(folders), streaming)
    if not folders:
        raise ValueError("no targets folder given")
    from datasets import concatenate_datasets

    parts = [_load_folder(os.fspath(folder), streaming) for folder in folders]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _load_folder(out_dir: str, streaming: bool):
    from datasets import load_dataset

    manifest = read_manifest(out_dir)
    if "num_records" not in manifest or "num_shards" not in manifest:
        raise ValueError(
            f"{out_dir}: the targets build did not finish ({MANIFEST} has no num_records); run it again to complete it"
        )
    shards = list_shards(out_dir)
    if not shards:
        raise FileNotFoundError(f"no shard_*.parquet files in {out_dir}")
    if list(shards) != list(range(manifest["num_shards"])):
        raise ValueError(
            f"{out_dir}: {MANIFEST} lists {manifest['num_shards']} shards but shards {list(shards)[:10]}... are "
            "there; run the build again"
        )
    check_shards_readable(out_dir, shards)
    dataset = load_dataset("parquet", data_files=list(shards.values()), split="train", streaming=streaming)
    if not streaming and len(dataset) != manifest["num_records"]:
        raise ValueError(
            f"{out_dir}: {len(dataset)} rows in the shards but {manifest['num_records']} in {MANIFEST}; "
            "run the build again"
        )
    return dataset


def check_shards_readable(out_dir: str, shards: dict[int, str]) -> None:
    """Raise ``ValueError`` naming the first shard whose parquet footer cannot be read (a truncated or damaged
    file), with the command that repairs it."""
    import pyarrow.parquet as pq

    for path in shards.values():
        try:
            pq.read_metadata(path)
        except Exception as error:  # pyarrow raises its own error types for damaged files
            raise ValueError(
                f"{out_dir}: shard {os.path.basename(path)} is damaged ({error}); run the same `bertapprox targets "
                "build` command again: it re-encodes the damaged shard and keeps the others"
            ) from error


def targets_columns(dataset) -> tuple[list[str], list[str], np.ndarray]:
    """``(ids, texts, embeddings)`` of a loaded targets dataset, in memory (embeddings float16 [rows, dim]).

    Reads the columns whole through Arrow: indexing a `datasets` column one row at a time costs a
    fraction of a millisecond per row, minutes for a few hundred thousand rows.
    """
    table = dataset.with_format("arrow")
    column = table["embedding"]
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    embeddings = values.astype(np.float16, copy=False).reshape(len(column), -1) if len(column) else values
    return table["id"].to_pylist(), table["text"].to_pylist(), embeddings
