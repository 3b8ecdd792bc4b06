"""BertApproxModel: a DeepSets student over a bag of frozen teacher entry embeddings.

    entry ids ──lookup──▶ E[ids] ──φ──▶ per-entry features ──attention pooling──▶ pooled ──ρ──▶ embedding

* E is the frozen entry table (one teacher embedding per vocabulary entry): data, not parameters;
  optionally corrected by a learned low-rank term (``entry_adapter_rank``), zero at start.
* φ is a residual MLP applied to each entry on its own.
* Attention pooling has ``num_heads`` learned queries; head h scores an entry by its query's dot
  product with the entry's slice of φ plus an optional learned per-entry bias, softmaxes the scores
  over the bag (padding masked out) and averages that slice. With ``pooling_rounds`` > 1, each further
  round adds to the previous round's scores the dot product of the entry's slice with queries computed
  from the previous round's pooled vector (a linear map, zero at start): the weights then depend on the
  whole text, and a new round starts as a repeat of the last one.
* ρ is a residual MLP on the pooled vector followed by a linear map into the teacher's space.

Residual branches start at zero, the queries at zero and the output map at the identity, so an
untrained model is the plain mean of the entry embeddings and training only adds to that baseline.
φ and the first round's pooling scores depend on one entry each, so both can be precomputed per entry.
With ``pair_rank`` > 0, features of consecutive entry pairs (word order) are pooled and added before ρ
(:class:`PairPooling`, zero at start); their per-entry parts are precomputed too.

Copied next to the model as remote code: imports only torch, transformers and sibling modules.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_bertapprox import BertApproxConfig

WEIGHTS_NAME = "model.safetensors"
TABLE_KEY = "entry_table.weight"


class ResidualBlock(nn.Module):
    """x + W₂·dropout(GELU(W₁·LayerNorm(x))), with W₂ zero-initialised (identity at start)."""

    def __init__(self, size: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(size)
        self.up = nn.Linear(size, inner)
        self.down = nn.Linear(inner, size)
        self.dropout = nn.Dropout(dropout)
        self.down.init_rule = "zero"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.dropout(F.gelu(self.up(self.norm(x)))))


class ContextQuery(nn.Module):
    """The queries of a further pooling round: a linear map of the previous round's pooled vector,
    ``[batch, hidden] -> [batch, heads, head_dim]``, scaled so that a dot product with an entry's slice is
    its score. Zero at start: the round then repeats the previous one."""

    def __init__(self, config: BertApproxConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.proj.init_rule = "zero"

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        queries = self.proj(pooled.to(self.proj.weight.dtype)) / math.sqrt(self.head_dim)
        return queries.unflatten(-1, (self.num_heads, self.head_dim))


class ContextBlock(ResidualBlock):
    """A residual block on each entry that also sees its text's pooled vector: ``x + W₂·GELU(W₁·(LN(x) + U·c))``.

    The one step where entries interact (through ``c``, the pooling of the whole bag), the equivariant
    layer of DeepSets; its φ then depends on the text, so it runs per bag at inference. W₂ starts at
    zero (identity at start)."""

    def __init__(self, size: int, inner: int, dropout: float) -> None:
        super().__init__(size, inner, dropout)
        self.context = nn.Linear(size, size, bias=False)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``x`` [..., hidden] entries, ``pooled`` their texts' pooled vectors, broadcastable to ``x``."""
        hidden = self.norm(x) + self.context(pooled)
        return x + self.down(self.dropout(F.gelu(self.up(hidden))))


class PairPooling(nn.Module):
    """Features of consecutive entry pairs, pooled and mapped onto the pooled vector (zero at start).

    Pair ``(u, v)`` has the feature ``(A·φ_u) ⊙ (B·φ_v)`` (``rank`` values); a text's pairs are averaged with
    softmax weights of a linear score of their own. ``A·φ`` and ``B·φ`` depend on one entry each (tables at
    inference), so a pair costs a product and a dot product. ``A``, ``B`` and the score keep torch's default
    initialisation, the map ``up`` starts at zero: a model with pairs starts as the model without.
    """

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.left = nn.Linear(hidden, rank, bias=False)
        self.right = nn.Linear(hidden, rank, bias=False)
        self.score = nn.Linear(rank, 1)
        self.up = nn.Linear(rank, hidden, bias=False)
        for layer in (self.left, self.right, self.score):
            layer.init_rule = "default"
        self.up.init_rule = "zero"
        self.mask_value = float(torch.finfo(torch.float32).min)  # a plain float: the module also runs scripted

    def forward(self, left: torch.Tensor, right: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``left``/``right`` [batch, pairs, rank] (``A·φ``, ``B·φ`` of each pair's entries), ``mask`` [batch, pairs]:
        [batch, hidden]; a text without pairs gets 0."""
        pair = left * right
        mask = mask.to(torch.bool)
        scores = self.score(pair).squeeze(-1).float().masked_fill(~mask, self.mask_value)
        weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)  # an all-padding row: 0
        return self.up(torch.einsum("bp,bpr->br", weights.to(pair.dtype), pair))


def consecutive_pairs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, is_skipgram: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of consecutive entry pairs in each bag: the entries other than skip-grams (which the tokenizer
    puts after their word), in bag order. Returns left and right positions and a mask, each [batch, bag - 1]."""
    width = input_ids.shape[1]
    units = (attention_mask > 0) & ~is_skipgram[input_ids]
    key = torch.arange(width, device=input_ids.device) + width * (~units).long()  # units first, in order
    order = torch.argsort(key, dim=1)
    valid = torch.gather(units, 1, order)
    return order[:, :-1], order[:, 1:], valid[:, 1:]


class AttentionPooling(nn.Module):
    """Multi-head pooling with one learned query per head and a padding mask, in ``pooling_rounds`` rounds."""

    def __init__(self, config: BertApproxConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.queries = nn.Parameter(torch.zeros(config.num_heads, self.head_dim))
        self.entry_bias = nn.Embedding(config.vocab_size, config.num_heads) if config.entry_bias else None
        self.context_queries = nn.ModuleList(ContextQuery(config) for _ in range(config.pooling_rounds - 1))

    def scores(self, features: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Unnormalized pooling score of each entry for each head: [..., num_heads]."""
        heads = features.unflatten(-1, (self.num_heads, self.head_dim))
        scores = torch.einsum("...hd,hd->...h", heads, self.queries.to(heads.dtype)) / math.sqrt(self.head_dim)
        if self.entry_bias is not None:
            scores = scores + self.entry_bias(input_ids).to(scores.dtype)
        return scores

    def forward(
        self, features: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pool [batch, bag, hidden] features with [batch, bag, heads] scores; empty bags pool to 0.
        With ``return_weights``, also the last round's pooling weights ([batch, bag, heads])."""
        mask = mask.unsqueeze(-1).to(torch.bool)
        heads = features.unflatten(-1, (self.num_heads, self.head_dim))
        scores = scores.float()
        weights = self._weights(scores, mask)
        pooled = self.weighted_sum(features, weights)
        for context in self.context_queries:  # each round refines the previous round's scores
            scores = scores + torch.einsum("bnhd,bhd->bnh", heads, context(pooled).to(heads.dtype)).float()
            weights = self._weights(scores, mask)
            pooled = self.weighted_sum(features, weights)
        return (pooled, weights) if return_weights else pooled

    def weighted_sum(self, features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ over the bag of each head's weight times that head's slice of the features: [batch, hidden]."""
        heads = features.unflatten(-1, (self.num_heads, self.head_dim))
        return torch.einsum("bnh,bnhd->bhd", weights.to(heads.dtype), heads).flatten(-2)

    @staticmethod
    def _weights(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax of the scores over each bag; an all-padding bag gets all-zero weights."""
        scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
        return torch.softmax(scores, dim=1) * mask


class BertApproxPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading checks shared by BertApprox models."""

    config_class = BertApproxConfig
    base_model_prefix = "bertapprox"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        # transformers visits leaf modules of custom code, so each leaf carries its own init rule.
        if isinstance(module, nn.Linear):
            rule = getattr(module, "init_rule", "normal")
            if rule == "zero":
                nn.init.zeros_(module.weight)
            elif rule == "identity":  # a wider input keeps its leading out_features dimensions
                nn.init.eye_(module.weight)
            elif rule == "default":  # torch's own initialisation
                module.reset_parameters()
                return
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.zeros_(module.weight)  # the entry table is data, filled from a vocabulary
        elif isinstance(module, AttentionPooling):
            nn.init.zeros_(module.queries)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load as transformers does, after checking a local folder's weights and vocabulary sizes; the entry
        table stays frozen."""
        if os.path.isdir(str(pretrained_model_name_or_path)):
            check_model_folder(str(pretrained_model_name_or_path))
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model.entry_table.weight.requires_grad_(False)  # loading gives it a fresh, trainable Parameter
        return model


class BertApproxModel(BertApproxPreTrainedModel):
    """The student: a bag of entry ids in, a sentence embedding in the teacher's space out."""

    def __init__(self, config: BertApproxConfig) -> None:
        super().__init__(config)
        self.entry_table = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.entry_table.weight.requires_grad_(False)
        rank = config.entry_adapter_rank
        self.entry_adapter = nn.Embedding(config.vocab_size, rank) if rank else None
        self.entry_adapter_up = nn.Linear(rank, config.embedding_dim, bias=False) if rank else None
        self.input_projection = (
            nn.Linear(config.embedding_dim, config.hidden_size) if config.embedding_dim != config.hidden_size else None
        )
        self.phi = nn.Sequential(
            *[
                ResidualBlock(config.hidden_size, config.intermediate_size, config.dropout)
                for _ in range(config.phi_layers)
            ]
        )
        self.pooling = AttentionPooling(config)
        self.context_blocks = nn.ModuleList(
            ContextBlock(
                config.hidden_size, config.context_intermediate_size or config.intermediate_size, config.dropout
            )
            for _ in range(config.context_layers)
        )
        self.rho = nn.Sequential(
            *[
                ResidualBlock(config.hidden_size, config.intermediate_size, config.dropout)
                for _ in range(config.rho_layers)
            ]
        )
        self.pairs = PairPooling(config.hidden_size, config.pair_rank) if config.pair_rank else None
        if config.pair_rank:  # which entries are skip-grams (left out of pairs): data, filled from a vocabulary
            self.register_buffer("entry_is_skipgram", torch.zeros(config.vocab_size, dtype=torch.bool))
        self.output_projection = nn.Linear(config.hidden_size, config.output_dim)
        self.output_projection.init_rule = "identity"
        if self.input_projection is not None:
            self.input_projection.init_rule = "identity"
        self._tokenizer = None
        self.post_init()

    # --- pieces, exposed so that per-entry work can be precomputed ------------------------------
    def _phi(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.entry_table(ids).to(self.output_projection.weight.dtype)
        if self.entry_adapter is not None:  # a learned low-rank correction of each entry's embedding
            x = x + self.entry_adapter_up(self.entry_adapter(ids).to(x.dtype))
        if self.input_projection is not None:
            x = self.input_projection(x)
        return self.phi(x)

    def entry_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """φ of each entry: [..., hidden_size]; depends on the entry alone (computed once per distinct id)."""
        unique_ids, inverse = torch.unique(input_ids, return_inverse=True)
        return self._phi(unique_ids)[inverse]

    def _pair_term(
        self, unique_features: torch.Tensor, inverse: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The pair features' contribution to the pooled vector: [batch, hidden]."""
        left, right, pair_mask = consecutive_pairs(input_ids, mask, self.entry_is_skipgram)
        left_table, right_table = self.pairs.left(unique_features), self.pairs.right(unique_features)
        left_rows = left_table[torch.gather(inverse, 1, left)]
        right_rows = right_table[torch.gather(inverse, 1, right)]
        return self.pairs(left_rows, right_rows, pair_mask)

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """ρ and the optional L2 normalization: pooled vector to sentence embedding."""
        out = self.output_projection(self.rho(pooled))
        if self.config.normalize:
            out = F.normalize(out, dim=-1)
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """Embed bags of entry ids ([batch, bag]); ``pooler_output`` is the sentence embedding."""
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
            attention_mask = None if attention_mask is None else attention_mask.unsqueeze(0)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, bag], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), the vocabulary size")
        # φ and the scores depend on one entry each: compute them once per distinct id, then gather.
        unique_ids, inverse = torch.unique(input_ids, return_inverse=True)
        unique_features = self._phi(unique_ids)
        features = unique_features[inverse]
        scores = self.pooling.scores(unique_features, unique_ids)[inverse]
        pooled, weights = self.pooling(features, scores, attention_mask, return_weights=True)
        for block in self.context_blocks:  # entries see the text; pooled again with the same weights
            features = block(features, pooled.unsqueeze(1))
            pooled = self.pooling.weighted_sum(features, weights)
        if self.pairs is not None:
            pooled = pooled + self._pair_term(unique_features, inverse, input_ids, attention_mask)
        embedding = self.embed_pooled(pooled)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return features, embedding
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=embedding)

    # --- convenience ----------------------------------------------------------------------------
    def set_tokenizer(self, tokenizer) -> None:
        """Attach the tokenizer that :meth:`encode` uses."""
        if tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} entries but the model's table has {self.config.vocab_size}"
            )
        self._tokenizer = tokenizer

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """Save config, weights and remote code, the attached tokenizer's files and the sentence-transformers files."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._tokenizer is not None:
            self._tokenizer.save_pretrained(save_directory)
        write_sentence_transformers_files(str(save_directory), self.config)

    def get_tokenizer(self):
        """The attached tokenizer, else the one saved beside the model."""
        if self._tokenizer is None:
            from .tokenization_bertapprox import BertApproxTokenizer

            if not self.name_or_path:
                raise ValueError("no tokenizer attached: call set_tokenizer() or load the model from a folder")
            self.set_tokenizer(BertApproxTokenizer.from_pretrained(self.name_or_path))
        return self._tokenizer

    @torch.inference_mode()
    def encode(
        self,
        texts: str | list[str],
        batch_size: int = 64,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts like sentence-transformers' ``encode``: a [n, dim] float32 matrix (or one row)."""
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        tokenizer = self.get_tokenizer()
        bags = tokenizer.encode_bags(texts, self.config.max_bag_size)
        order = sorted(range(len(bags)), key=lambda i: len(bags[i]))
        device = self.output_projection.weight.device
        chunks = []
        starts = range(0, len(order), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Encoding", unit="batch")
        was_training = self.training
        self.eval()
        for start in starts:
            batch = [bags[i] for i in order[start : start + batch_size]]
            width = max([len(b) for b in batch] + [1])
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, bag in enumerate(batch):
                ids[row, : len(bag)] = torch.tensor(bag, dtype=torch.long)
                mask[row, : len(bag)] = 1
            out = self(input_ids=ids.to(device), attention_mask=mask.to(device)).pooler_output
            chunks.append(out.float())
        self.train(was_training)
        dim = self.config.output_dim
        result = torch.cat(chunks) if chunks else torch.zeros(0, dim, device=device)
        result = result[torch.argsort(torch.tensor(order, device=device))] if order else result
        if normalize_embeddings:
            result = F.normalize(result, dim=-1)
        if convert_to_numpy:
            result = result.cpu().numpy()
        return result[0] if single else result


def write_sentence_transformers_files(folder: str, config: BertApproxConfig) -> None:
    """Make ``folder`` load with ``SentenceTransformer(folder, trust_remote_code=True)``.

    One sentence-transformers ``Transformer`` module over the whole folder: it loads this model and
    its tokenizer through the Auto classes, tokenizes with bags of at most ``max_bag_size`` entries
    and takes ``pooler_output`` (already normalized when the teacher's embeddings are) as the
    sentence embedding. No pooling module: the model pools itself.
    """
    import json

    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}
        ],
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}},
            "module_output_name": "sentence_embedding",
            "processing_kwargs": {"text": {"max_length": config.max_bag_size}},
        },
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer",
            "similarity_fn_name": config.similarity,
            "prompts": {},
            "default_prompt_name": None,
        },
    }
    for name, content in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)


def check_model_folder(folder: str) -> None:
    """Fail with a message naming the file when a saved model's weights or vocabulary do not fit."""
    import json

    from safetensors import safe_open

    weights = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"model weights not found: {weights}")
    try:
        with safe_open(weights, framework="pt") as handle:
            if TABLE_KEY not in handle.keys():
                raise ValueError(f"{weights} has no '{TABLE_KEY}' tensor: not a BertApprox model")
            rows, dim = handle.get_slice(TABLE_KEY).get_shape()
    except ValueError:
        raise
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"cannot read model weights {weights}: {error}") from error
    config_file = os.path.join(folder, "config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
        expected = (config.get("vocab_size"), config.get("embedding_dim"))
        if expected != (rows, dim):
            raise ValueError(
                f"{weights} holds a {rows}x{dim} entry table but {config_file} says "
                f"vocab_size={expected[0]}, embedding_dim={expected[1]}"
            )
    vocab_file = os.path.join(folder, "vocab.txt")
    if os.path.isfile(vocab_file):
        with open(vocab_file, encoding="utf-8") as handle:
            entries = handle.read().split("\n")
        count = len(entries) - (entries[-1] == "")
        if count != rows:
            raise ValueError(f"{vocab_file} has {count} entries but the entry table in {weights} has {rows} rows")
