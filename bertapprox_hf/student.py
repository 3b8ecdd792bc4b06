"""Make an untrained student from a vocabulary: its entry table, tokenizer and teacher settings."""

from __future__ import annotations

import numpy as np
import torch

from .configuration_bertapprox import BertApproxConfig
from .modeling_bertapprox import BertApproxModel
from .vocabulary import Vocabulary


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
        "normalize": bool(teacher.get("normalize", False)),
        "similarity": teacher.get("similarity", "dot"),
        "teacher": teacher.get("name_or_path"),
    }
    settings.update(config_overrides)
    model = BertApproxModel(BertApproxConfig(**settings))
    with torch.no_grad():
        model.entry_table.weight.copy_(torch.from_numpy(np.asarray(vocabulary.embeddings, dtype=np.float32)))
    model.set_tokenizer(vocabulary.tokenizer())
    return model
