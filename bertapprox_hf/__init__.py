"""bertapprox-hf: a tiny learned approximation of a BERT-family sentence encoder.

The public names load on first use (``from bertapprox_hf import Encoder``); importing the package registers the
student with transformers' Auto classes. Plugin authors mark their hooks with ``from bertapprox_hf import hookimpl``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel, AutoTokenizer

from .model.configuration_bertapprox import BertApproxConfig
from .model.modeling_bertapprox import BertApproxModel
from .model.tokenization_bertapprox import BertApproxTokenizer
from .plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from .inference import BatchingEncoder, Encoder, TextEncoder

__version__ = "0.1.0"

# save_pretrained then writes auto_map and copies the remote-code files beside the weights.
BertApproxConfig.register_for_auto_class()
BertApproxModel.register_for_auto_class("AutoModel")
BertApproxTokenizer.register_for_auto_class("AutoTokenizer")
# In this process the Auto classes know the model without trust_remote_code.
AutoConfig.register(BertApproxConfig.model_type, BertApproxConfig, exist_ok=True)
AutoModel.register(BertApproxConfig, BertApproxModel, exist_ok=True)
AutoTokenizer.register(BertApproxConfig, slow_tokenizer_class=BertApproxTokenizer, exist_ok=True)

_LAZY = {"BatchingEncoder": ".inference", "Encoder": ".inference", "TextEncoder": ".inference"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "BatchingEncoder",
    "BertApproxConfig",
    "BertApproxModel",
    "BertApproxTokenizer",
    "Encoder",
    "TextEncoder",
    "__version__",
    "hookimpl",
]
