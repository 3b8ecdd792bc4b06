"""Make an untrained student from a vocabulary: its entry table, tokenizer and teacher settings."""

from __future__ import annotations

import numpy as np
import torch

from ..model.configuration_bertapprox import BertApproxConfig
from ..model.modeling_bertapprox import BertApproxModel
from ..pipeline.vocabulary import Vocabulary


def teacher_dim(vocabulary: Vocabulary) -> int:
    """The teacher's embedding size: the student's output (a table may be wider, holding two embeddings)."""
    return int(vocabulary.metadata.get("teacher", {}).get("dim") or vocabulary.dim)


def create_student(vocabulary: Vocabulary, **config_overrides) -> BertApproxModel:
    """A :class:`BertApproxModel` whose frozen table is the vocabulary's embeddings.

    Normalization and similarity follow the teacher recorded in the vocabulary; any
    :class:`BertApproxConfig` argument can be overridden. The vocabulary's tokenizer is attached,
    so ``encode`` works and ``save_pretrained`` writes the tokenizer files too.
    """
    teacher = vocabulary.metadata.get("teacher", {})
    settings = {
        "vocab_size": len(vocabulary),
        "embedding_dim": vocabulary.dim,
        "output_dim": teacher_dim(vocabulary),
        "normalize": bool(teacher.get("normalize", False)),
        "similarity": teacher.get("similarity", "dot"),
        "teacher": teacher.get("name_or_path"),
    }
    settings.update(config_overrides)
    model = BertApproxModel(BertApproxConfig(**settings))
    with torch.no_grad():
        model.entry_table.weight.copy_(torch.from_numpy(np.asarray(vocabulary.embeddings, dtype=np.float32)))
    mark_skipgrams(model, vocabulary)
    model.set_tokenizer(vocabulary.tokenizer())
    return model


def mark_skipgrams(model: BertApproxModel, vocabulary: Vocabulary) -> None:
    """Fill a pair model's ``entry_is_skipgram`` from the vocabulary (pairs leave skip-grams out)."""
    if model.config.pair_rank:
        flags = torch.tensor([kind == "skipgram" for kind in vocabulary.kinds()], dtype=torch.bool)
        model.entry_is_skipgram.copy_(flags.to(model.entry_is_skipgram.device))


def load_student_to_train(path: str, vocabulary: Vocabulary, **expected_config) -> BertApproxModel:
    """A saved student to train further (fine-tuning, a second schedule) on ``vocabulary``'s targets.

    Refuses, naming the setting, a student whose entries or entry table differ from the vocabulary's
    or whose architecture differs from ``expected_config`` (``BertApproxConfig`` arguments). The exceptions
    are the parts that start at zero: ``pooling_rounds``, ``context_layers`` and ``self_attention_layers`` may
    exceed the saved student's (with any ``context_intermediate_size``, or self-attention widths, when it had no
    such block) and ``pair_rank`` may be set for a student without pairs, so the model starts as the saved
    student.
    """
    import os

    from ..model.tokenization_bertapprox import load_entries

    vocab_file = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"model.init_from: no saved student in {path} (missing {vocab_file})")
    if load_entries(vocab_file) != vocabulary.entries:
        raise ValueError(f"model.init_from: the entries of {path} differ from those of the vocabulary (data.vocab)")
    saved_config = BertApproxConfig.from_pretrained(path)
    if saved_config.pair_rank and expected_config.get("pair_rank", saved_config.pair_rank) != saved_config.pair_rank:
        raise ValueError(
            f"model.pair_rank is {expected_config['pair_rank']} but the student in {path} (model.init_from) has "
            f"{saved_config.pair_rank}: pairs can be added to a student without them, not resized"
        )
    growable = {}
    for key, what in (
        ("pooling_rounds", "rounds"),
        ("context_layers", "context blocks"),
        ("self_attention_layers", "self-attention layers"),
        ("pair_rank", "pairs"),
    ):
        value = expected_config.get(key, getattr(saved_config, key))
        if value < getattr(saved_config, key):
            raise ValueError(
                f"model.{key} is {value} but the student in {path} (model.init_from) has "
                f"{getattr(saved_config, key)}: {what} can be added, not removed"
            )
        growable[key] = value
    if not saved_config.context_layers and "context_intermediate_size" in expected_config:
        growable["context_intermediate_size"] = expected_config["context_intermediate_size"]
    if not saved_config.self_attention_layers:
        for key in ("self_attention_heads", "self_attention_width", "self_attention_intermediate_size"):
            if key in expected_config:
                growable[key] = expected_config[key]
    model = BertApproxModel.from_pretrained(path, **growable)
    for key, value in expected_config.items():
        saved = getattr(model.config, key)
        if saved != value:
            raise ValueError(f"model.{key} is {value!r} but the student in {path} (model.init_from) has {saved!r}")
    table = np.asarray(vocabulary.embeddings, dtype=np.float32)
    if not np.allclose(model.entry_table.weight.detach().numpy(), table, atol=1e-3):
        raise ValueError(f"model.init_from: the entry table of {path} differs from the vocabulary's embeddings")
    if not saved_config.pair_rank:
        mark_skipgrams(model, vocabulary)  # pairs added now (a saved pair model holds its own flags)
    model.set_tokenizer(vocabulary.tokenizer())
    return model
