"""bertapprox-hf: a tiny learned approximation of a BERT-family sentence encoder."""

from transformers import AutoConfig, AutoModel, AutoTokenizer

from .configuration_bertapprox import BertApproxConfig
from .inference import BatchingEncoder, Encoder
from .modeling_bertapprox import BertApproxModel
from .plugins.hookspecs import hookimpl
from .tokenization_bertapprox import BertApproxTokenizer

__version__ = "0.1.0"

# save_pretrained then writes auto_map and copies the remote-code files beside the weights.
BertApproxConfig.register_for_auto_class()
BertApproxModel.register_for_auto_class("AutoModel")
BertApproxTokenizer.register_for_auto_class("AutoTokenizer")
# In this process the Auto classes know the model without trust_remote_code.
AutoConfig.register(BertApproxConfig.model_type, BertApproxConfig, exist_ok=True)
AutoModel.register(BertApproxConfig, BertApproxModel, exist_ok=True)
AutoTokenizer.register(BertApproxConfig, slow_tokenizer_class=BertApproxTokenizer, exist_ok=True)

__all__ = [
    "BatchingEncoder",
    "BertApproxConfig",
    "BertApproxModel",
    "BertApproxTokenizer",
    "Encoder",
    "__version__",
    "hookimpl",
]
