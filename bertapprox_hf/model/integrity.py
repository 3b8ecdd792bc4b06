"""The integrity record of a saved student (``integrity.json``) and the checks made when a folder loads.

A damaged or mismatched folder would otherwise load and silently give other embeddings: a ``config.json`` whose
architecture keys changed, another student's ``model.safetensors`` of the same widths, an edited or permuted
``vocab.txt``, flipped bytes in a tensor (safetensors has no checksum), a NaN in a weight. ``save_pretrained``
writes :data:`RECORD_NAME` beside the weights::

    {"format": "bertapprox-integrity", "version": 1,
     "architecture": {"normalize": true, "pair_rank": 0, ...},          # config.json's keys that shape the output
     "files": {"model.safetensors": {"sha256", "bytes", "tensors": {name: sha256 of its bytes}},
               "vocab.txt": {"sha256", "entries", "entries_sha256", "entry_set_sha256", "chunks"}}}

and loading checks it (:func:`verify_folder`): a difference is an :class:`IntegrityError` that names the file and
what differs. Experts skip the check with ``verify_integrity=False`` or ``BERTAPPROX_VERIFY_INTEGRITY=0``. A folder
saved before the record existed loads with one warning.

Copied next to the model as remote code: imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections.abc import Iterable, Mapping

RECORD_NAME = "integrity.json"
FORMAT = "bertapprox-integrity"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "config.json"
ENV_SWITCH = "BERTAPPROX_VERIFY_INTEGRITY"
# The config keys that change what a folder computes; each must be in config.json with its saved value.
ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "embedding_dim",
    "hidden_size",
    "output_dim",
    "phi_layers",
    "rho_layers",
    "intermediate_size",
    "num_heads",
    "entry_bias",
    "pooling_rounds",
    "context_layers",
    "context_intermediate_size",
    "self_attention_layers",
    "self_attention_heads",
    "self_attention_width",
    "self_attention_intermediate_size",
    "entry_adapter_rank",
    "pair_rank",
    "normalize",
    "similarity",
    "max_bag_size",
    "pad_token_id",
)
CHUNK_LINES = 1000  # vocab.txt lines a chunk digest covers: a mismatch is located to one chunk
_BLOCK = 1 << 20


class IntegrityError(ValueError):
    """A saved model folder does not match its integrity record, or its weights cannot be trusted."""


def verification_enabled(flag: bool | None = None) -> bool:
    """Whether to check folders: ``flag`` when given, else the ``BERTAPPROX_VERIFY_INTEGRITY`` environment
    variable (``0``, ``false``, ``no`` or ``off`` switch the checks off), else on."""
    if flag is not None:
        return bool(flag)
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


# --- digests ------------------------------------------------------------------------------------
def sha256_file(path: str) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safetensors_tensor_digests(path: str) -> dict[str, dict]:
    """``{name: {"dtype", "shape", "sha256"}}`` of every tensor in a safetensors file, read from its own layout
    (an 8-byte header length, a JSON header of offsets, the data); a damaged layout raises :class:`IntegrityError`."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise IntegrityError(f"{path} is damaged: {size} bytes, too short for a safetensors file")
        (header_length,) = struct.unpack("<Q", start)
        if header_length > size - 8:
            raise IntegrityError(f"{path} is damaged: its header claims {header_length} bytes of {size}")
        try:
            header = json.loads(handle.read(header_length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise IntegrityError(f"{path} is damaged: unreadable safetensors header ({error})") from error
        data_start = 8 + header_length
        digests = {}
        for name, info in sorted(header.items()):
            if name == "__metadata__":
                continue
            try:
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as error:
                raise IntegrityError(f"{path} is damaged: tensor {name!r} has no valid data offsets") from error
            if not 0 <= begin <= end <= size - data_start:
                raise IntegrityError(f"{path} is damaged: tensor {name!r} lies outside the file")
            handle.seek(data_start + begin)
            digests[name] = {
                "dtype": info.get("dtype"),
                "shape": info.get("shape"),
                "sha256": _sha256(handle.read(end - begin)),
            }
    return digests


def read_vocab_lines(path: str) -> list[str]:
    """The entries of a one-entry-per-line vocabulary file; an error naming the file if it is not UTF-8."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = handle.read().split("\n")
    except UnicodeDecodeError as error:
        raise IntegrityError(f"vocabulary file {path} is not valid UTF-8: {error}") from error
    if entries and entries[-1] == "":
        entries.pop()
    return entries


def entries_digest(entries: Iterable[str]) -> str:
    """SHA-256 of the entries joined by newlines (the entries and their order)."""
    return _sha256("\n".join(entries).encode("utf-8"))


def _vocab_record(path: str) -> dict:
    entries = read_vocab_lines(path)
    chunks = [
        entries_digest(entries[start : start + CHUNK_LINES])[:16] for start in range(0, len(entries), CHUNK_LINES)
    ]
    return {
        "sha256": sha256_file(path),
        "entries": len(entries),
        "entries_sha256": entries_digest(entries),
        "entry_set_sha256": entries_digest(sorted(entries)),
        "chunks": chunks,
    }


def _weights_record(path: str) -> dict:
    tensors = safetensors_tensor_digests(path)
    return {
        "sha256": sha256_file(path),
        "bytes": os.path.getsize(path),
        "tensors": {name: info["sha256"] for name, info in tensors.items()},
    }


# --- writing ------------------------------------------------------------------------------------
def write_record(folder: str, config: Mapping) -> dict:
    """Write ``folder``'s integrity record from its weights, its vocabulary (when there) and ``config`` (the
    model's config as a dict); returns the record."""
    folder = os.fspath(folder)
    files: dict[str, dict] = {WEIGHTS_FILE: _weights_record(os.path.join(folder, WEIGHTS_FILE))}
    vocab = os.path.join(folder, VOCAB_FILE)
    if os.path.isfile(vocab):
        files[VOCAB_FILE] = _vocab_record(vocab)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": {key: config[key] for key in ARCHITECTURE_KEYS if key in config},
        "files": files,
    }
    path = os.path.join(folder, RECORD_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return record


# --- checking -----------------------------------------------------------------------------------
def read_record(folder: str) -> dict | None:
    """The folder's integrity record, ``None`` when it has none; a damaged record raises :class:`IntegrityError`."""
    path = os.path.join(folder, RECORD_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntegrityError(f"{path} is damaged: {error}") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("files"), dict):
        raise IntegrityError(f"{path} is not a bertapprox integrity record")
    if record.get("version") != VERSION:
        raise IntegrityError(f"{path}: integrity record version {record.get('version')!r} is not {VERSION}")
    return record


def _same(left, right) -> bool:
    return type(left) is type(right) and left == right


def _architecture_differences(folder: str, expected: Mapping) -> list[str]:
    path = os.path.join(folder, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntegrityError(f"{path} is damaged: {error}") from error
    found = []
    for key, value in expected.items():
        if key not in config:
            found.append(f"{key} is missing (saved as {value!r})")
        elif not _same(config[key], value):
            found.append(f"{key} is {config[key]!r} (saved as {value!r})")
    return found


def _weights_differences(path: str, expected: Mapping) -> list[str]:
    actual = {name: info["sha256"] for name, info in safetensors_tensor_digests(path).items()}
    recorded = expected.get("tensors", {})
    changed = sorted(name for name in set(actual) & set(recorded) if actual[name] != recorded[name])
    found = []
    if changed:
        found.append(f"{len(changed)} of {len(recorded)} tensors hold other values ({', '.join(changed[:6])}"
                     + (", ..." if len(changed) > 6 else "") + ")")  # fmt: skip
    if set(recorded) - set(actual):
        found.append(f"tensors missing: {', '.join(sorted(set(recorded) - set(actual))[:6])}")
    if set(actual) - set(recorded):
        found.append(f"unexpected tensors: {', '.join(sorted(set(actual) - set(recorded))[:6])}")
    return found or ["the file's bytes differ (its tensors are intact: the header or padding changed)"]


def _vocab_differences(path: str, expected: Mapping) -> list[str]:
    actual = _vocab_record(path)
    if actual["entries_sha256"] == expected.get("entries_sha256"):
        return []  # the same entries (the file differs only in its final newline)
    if actual["entries"] != expected.get("entries"):
        return [f"it has {actual['entries']} entries, the model was saved with {expected.get('entries')}"]
    if actual["entry_set_sha256"] == expected.get("entry_set_sha256"):
        return [f"the same {actual['entries']} entries in another order (each would get another entry's row)"]
    recorded = expected.get("chunks", [])
    bad = [i for i, (a, b) in enumerate(zip(actual["chunks"], recorded, strict=False)) if a != b]
    where = ", ".join(f"lines {i * CHUNK_LINES + 1}-{min((i + 1) * CHUNK_LINES, actual['entries'])}" for i in bad[:4])
    return [f"{actual['entries']} entries as saved, but other entries ({where or 'content changed'})"]


def verify_folder(folder: str) -> dict | None:
    """Check ``folder`` against its integrity record; returns the record (``None``, with one warning, for a folder
    saved before records existed). Raises :class:`IntegrityError` naming the file and the difference."""
    folder = os.fspath(folder)
    record = read_record(folder)
    if record is None:
        warnings.warn(
            f"{folder} has no {RECORD_NAME} (saved by an older version): its weights, vocabulary and config are not "
            "checked; save it again with save_pretrained to add the record",
            UserWarning,
            stacklevel=3,
        )
        return None
    problems = []
    architecture = _architecture_differences(folder, record.get("architecture", {}))
    if architecture:
        problems.append(f"{os.path.join(folder, CONFIG_FILE)}: " + "; ".join(architecture))
    weights = os.path.join(folder, WEIGHTS_FILE)
    expected = record["files"].get(WEIGHTS_FILE)
    if expected is not None and sha256_file(weights) != expected.get("sha256"):
        problems.append(f"{weights}: " + "; ".join(_weights_differences(weights, expected)))
    vocab = os.path.join(folder, VOCAB_FILE)
    expected = record["files"].get(VOCAB_FILE)
    if expected is not None:
        if not os.path.isfile(vocab):
            problems.append(f"{vocab} is missing (the model was saved with it)")
        elif sha256_file(vocab) != expected.get("sha256"):
            problems.extend(f"{vocab}: {text}" for text in _vocab_differences(vocab, expected))
    if problems:
        raise IntegrityError(
            "the model folder does not match its integrity record (it was changed or damaged after saving): "
            + " | ".join(problems)
            + f" (to load it anyway: verify_integrity=False or {ENV_SWITCH}=0)"
        )
    return record


def check_loading_info(folder: str, info: Mapping, allow_missing: bool = False) -> None:
    """Refuse weights that did not load as saved: transformers' report of missing, unexpected or mismatched keys
    (a missing weight would be freshly initialised). ``allow_missing``: parts added on purpose (a grown model)."""
    problems = []
    missing = sorted(info.get("missing_keys") or ())
    if missing and not allow_missing:
        problems.append(f"missing weights (they would be freshly initialised): {', '.join(missing[:8])}")
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        problems.append(f"unexpected weights (another architecture's?): {', '.join(unexpected[:8])}")
    mismatched = info.get("mismatched_keys") or ()
    if mismatched:
        problems.append(f"weights of another shape: {', '.join(str(m[0]) for m in list(mismatched)[:8])}")
    if problems:
        raise IntegrityError(
            f"{os.path.join(folder, WEIGHTS_FILE)} does not fit {os.path.join(folder, CONFIG_FILE)}: "
            + "; ".join(problems)
        )


def check_finite(named_tensors: Iterable, where: str) -> None:
    """Refuse NaN or infinite values in any floating tensor of ``named_tensors`` (``(name, tensor)`` pairs)."""
    bad = [name for name, tensor in named_tensors if tensor.is_floating_point() and not tensor.isfinite().all()]
    if bad:
        raise IntegrityError(f"{where} holds NaN or infinite values in {', '.join(bad[:8])}: the model is unusable")


def check_local_folder(path: str) -> bool:
    """True when ``path`` names a local model folder (with a ``config.json``); False for a Hub id. A local path
    that cannot be a model folder (missing, a symbolic-link loop or broken link, a file, no ``config.json``, a
    permission denied) raises an ``OSError`` that says so, instead of a Hub lookup or a "should have a model_type"
    message."""
    path = os.fspath(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"model folder {path} is a broken symbolic link") from None
        explicit = path.startswith(("/", "./", "../", "~")) or path.count("/") > 1 or (os.sep != "/" and os.sep in path)
        if explicit:
            raise FileNotFoundError(f"model folder not found: {path}") from None
        return False  # a Hub id
    except PermissionError:
        raise PermissionError(f"permission denied: cannot open the model folder {path}") from None
    except OSError as error:  # a symbolic-link loop, a name too long, ...
        raise OSError(error.errno, f"model folder {path} cannot be opened: {error.strerror}") from None
    if not os.path.isdir(path):
        raise NotADirectoryError(f"model path {path} is a file, not a model folder")
    config = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config):
        raise FileNotFoundError(f"not a saved model folder: {path} has no {CONFIG_FILE}")
    if not os.access(config, os.R_OK) or not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(f"permission denied: cannot read the model folder {path}")
    return True


def load_checked(load, path, args: tuple, kwargs: dict, verify_integrity: bool | None = None, check_folder=None):
    """``load(path, *args, output_loading_info=True, **kwargs)`` (transformers' ``from_pretrained``) with the
    checks of a local folder around it; returns ``(model, loading info)``.

    Before: the path is a model folder (:func:`check_local_folder`), ``check_folder(path)`` passes and the folder
    matches its record. After: no weight was missing (unless ``kwargs`` grow the architecture: parts added on
    purpose), unexpected or of another shape, and none is NaN or infinite. ``verify_integrity=False`` (or the
    environment switch) keeps only the first two checks."""
    import itertools

    verify = verification_enabled(verify_integrity)
    where = str(path)
    if isinstance(path, (str, os.PathLike)) and check_local_folder(os.fspath(path)):
        path = where = os.fspath(path)
        if check_folder is not None:
            check_folder(path)
        if verify:
            verify_folder(path)
    model, info = load(path, *args, output_loading_info=True, **kwargs)
    if verify:
        check_loading_info(where, info, allow_missing=any(key in kwargs for key in ARCHITECTURE_KEYS))
        tensors = itertools.chain(model.named_parameters(), model.named_buffers())
        check_finite(tensors, os.path.join(where, WEIGHTS_FILE))
    return model, info
