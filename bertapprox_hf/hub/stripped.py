"""A student without its entry table: ship a few MB, restore the complete student from a locally built vocabulary.

The entry table is data (the teacher's embedding of each vocabulary entry): whoever builds the same vocabulary
has it, so a trained student travels as its trainable weights alone. Folder written by :func:`strip_student`::

    weights.safetensors   every weight but the entry table (float16 or float32)
    config.json           the student's config, plus ``entries_sha256`` and ``weights_dtype``
    entries.txt           the vocabulary entries the student was trained with, one a line
    check.json            texts and the original student's embeddings of them (float32), and the tolerance
    training.json         the training record, when the student has one

:func:`restore_student` rebuilds the student from that folder and a vocabulary folder, refuses a vocabulary
with other entries (the same entries in another order are accepted: per-entry weights follow), and checks
that the restored student embeds the check texts as the original did (cosine ≥ ``min_cosine`` for each).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np

from ..model.tokenization_bertapprox import load_entries

TABLE_KEY = "entry_table.weight"
WEIGHTS = "weights.safetensors"
ENTRIES = "entries.txt"
CHECK = "check.json"
# The check's default texts: queries, a sentence, a passage, odd input.
CHECK_TEXTS = (
    "what is the interest rate",
    "how long does it take to boil an egg",
    "new york city",
    "The central bank raised its key rate by a quarter point on Tuesday, citing persistent inflation.",
    "Photosynthesis converts light energy into chemical energy stored in glucose; chlorophyll absorbs mostly "
    "blue and red light, and the oxygen released comes from water molecules split in the process.",
    "naïve café ☕ — 東京",
    "",
)
# Float16 weights and a vocabulary rebuilt in another precision move embeddings by ~1e-4 cosine, not more.
MIN_COSINE = 0.999


def entries_digest(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()


def strip_student(
    model_dir: str, out_dir: str, dtype: str = "float16", texts: tuple[str, ...] | list[str] = CHECK_TEXTS
) -> dict:
    """Write ``model_dir``'s student without its entry table into ``out_dir``; returns a summary."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    path = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"not a saved student (no model.safetensors): {model_dir}")
    weights = load_file(path)
    if TABLE_KEY not in weights:
        raise ValueError(f"{path} holds no entry table ({TABLE_KEY}): not a bertapprox student")
    weights.pop(TABLE_KEY)
    cast = getattr(torch, dtype)
    weights = {name: (t.to(cast) if t.is_floating_point() else t).contiguous() for name, t in weights.items()}
    entries = load_entries(os.path.join(model_dir, "vocab.txt"))
    os.makedirs(out_dir, exist_ok=True)
    save_file(weights, os.path.join(out_dir, WEIGHTS))
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    config.update(entries_sha256=entries_digest(entries), weights_dtype=dtype)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1)
    with open(os.path.join(out_dir, ENTRIES), "w", encoding="utf-8") as handle:
        handle.write("\n".join(entries) + "\n")
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    reference = model.encode(list(texts), convert_to_numpy=True).astype(np.float32)
    check = {"texts": list(texts), "embeddings": reference.tolist(), "min_cosine": MIN_COSINE}
    with open(os.path.join(out_dir, CHECK), "w", encoding="utf-8") as handle:
        json.dump(check, handle)
    if os.path.isfile(os.path.join(model_dir, "training.json")):
        shutil.copy(os.path.join(model_dir, "training.json"), os.path.join(out_dir, "training.json"))
    size = sum(os.path.getsize(os.path.join(out_dir, name)) for name in os.listdir(out_dir))
    return {"out": out_dir, "bytes": size, "dtype": dtype, "tensors": len(weights), "entries": len(entries)}


def _entry_order(trained: list[str], vocab_entries: list[str], vocab_dir: str) -> np.ndarray | None:
    """For each entry of the vocabulary, its row in the training order (None: the same order)."""
    if trained == vocab_entries:
        return None
    position = {entry: index for index, entry in enumerate(trained)}
    if len(trained) != len(vocab_entries) or any(entry not in position for entry in vocab_entries):
        missing = [entry for entry in trained if entry not in set(vocab_entries)][:5]
        raise ValueError(
            f"{vocab_dir} does not hold the entries this student was trained with ({len(vocab_entries)} entries "
            f"there, {len(trained)} trained; missing e.g. {missing}); build the vocabulary with the same command"
        )
    return np.array([position[entry] for entry in vocab_entries])


def restore_student(stripped_dir: str, vocab_dir: str, out_dir: str) -> dict:
    """A complete student folder from :func:`strip_student`'s folder and a vocabulary; returns the check's result.

    Raises ``ValueError`` when the vocabulary holds other entries or the restored student's embeddings of the
    check texts differ from the original's by more than the tolerance (the folder is then not written).
    """
    import torch
    from safetensors.torch import load_file

    from ..model.configuration_bertapprox import BertApproxConfig
    from ..model.modeling_bertapprox import BertApproxModel
    from ..pipeline.vocabulary import Vocabulary

    with open(os.path.join(stripped_dir, "config.json"), encoding="utf-8") as handle:
        settings = json.load(handle)
    expected = settings.pop("entries_sha256", None)
    settings.pop("weights_dtype", None)
    trained = load_entries(os.path.join(stripped_dir, ENTRIES))
    if expected is None or entries_digest(trained) != expected:
        raise ValueError(f"{stripped_dir}: {ENTRIES} does not match the entries_sha256 of its config.json")
    vocabulary = Vocabulary.load(vocab_dir)
    order = _entry_order(trained, list(vocabulary.entries), vocab_dir)
    config = BertApproxConfig.from_dict(settings)
    if vocabulary.embeddings.shape[1] != config.embedding_dim:
        raise ValueError(
            f"{vocab_dir} holds {vocabulary.embeddings.shape[1]}-d entries, the student {config.embedding_dim}-d"
        )
    model = BertApproxModel(config)
    weights = {name: t.float() if t.is_floating_point() else t for name, t in load_file(
        os.path.join(stripped_dir, WEIGHTS)).items()}  # fmt: skip
    if order is not None:
        index = torch.from_numpy(order)
        for name, tensor in weights.items():
            if tensor.dim() and tensor.shape[0] == config.vocab_size:
                weights[name] = tensor[index].contiguous()
    weights[TABLE_KEY] = torch.from_numpy(vocabulary.embeddings.astype(np.float32))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{stripped_dir}: weights do not fit its config: missing {missing}, unexpected {unexpected}")
    model.set_tokenizer(vocabulary.tokenizer())
    model.eval()
    with open(os.path.join(stripped_dir, CHECK), encoding="utf-8") as handle:
        check = json.load(handle)
    reference = np.asarray(check["embeddings"], dtype=np.float32)
    restored = model.encode(check["texts"], convert_to_numpy=True).astype(np.float32)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(restored, axis=1)
    cosines = np.where(norms > 0, (reference * restored).sum(1) / np.maximum(norms, 1e-12), 1.0)
    result = {
        "out": out_dir,
        "check_texts": len(check["texts"]),
        "min_cosine": round(float(cosines.min()), 6),
        "max_abs_diff": float(np.abs(reference - restored).max()),
        "reordered_entries": order is not None,
    }
    if cosines.min() < check["min_cosine"]:
        worst = check["texts"][int(cosines.argmin())]
        raise ValueError(
            f"the restored student is not the one that was stripped: cosine {cosines.min():.4f} to its embedding of "
            f"{worst!r} (at least {check['min_cosine']} expected); was the vocabulary built from other data?"
        )
    model.save_pretrained(out_dir)
    if os.path.isfile(os.path.join(stripped_dir, "training.json")):
        shutil.copy(os.path.join(stripped_dir, "training.json"), os.path.join(out_dir, "training.json"))
    return result
