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
(:class:`PairPooling`, zero at start); their per-entry parts are precomputed too. With
``self_attention_layers`` > 0, Transformer encoder layers over each bag's φ vectors (no positions, zero at start)
let entries see each other before pooling (:class:`SelfAttentionBlock`, run per text). Everything after φ is the
shared pooling of :mod:`.pooling_bertapprox`, which inference and export run too.

Copied next to the model as remote code: imports only torch, transformers and sibling modules.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_bertapprox import BertApproxConfig
from .encoding_bertapprox import encode_texts
from .pooling_bertapprox import (
    AttentionPooling,
    BagPooling,
    ContextBlock,
    EntryTables,
    PairPooling,
    Readout,
    ResidualBlock,
    SelfAttentionBlock,
)

WEIGHTS_NAME = "model.safetensors"
TABLE_KEY = "entry_table.weight"


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
    def from_pretrained(cls, pretrained_model_name_or_path, *args, verify_integrity: bool | None = None, **kwargs):
        """Load as transformers does, after checking a local folder's weights and vocabulary sizes and its
        integrity record (:mod:`.integrity`; ``verify_integrity=False`` skips that and the weight checks); the
        entry table stays frozen."""
        from .integrity import load_checked

        wants_info = kwargs.pop("output_loading_info", False)
        path, load = pretrained_model_name_or_path, super().from_pretrained
        model, info = load_checked(load, path, args, kwargs, verify_integrity, check_model_folder)
        model.entry_table.weight.requires_grad_(False)  # loading gives it a fresh, trainable Parameter
        return (model, info) if wants_info else model


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
        self.pooling = AttentionPooling(
            config.vocab_size, config.hidden_size, config.num_heads, config.entry_bias, config.pooling_rounds
        )
        self.context_blocks = nn.ModuleList(
            ContextBlock(
                config.hidden_size, config.context_intermediate_size or config.intermediate_size, config.dropout
            )
            for _ in range(config.context_layers)
        )
        self.self_attention = nn.ModuleList(
            SelfAttentionBlock(
                config.hidden_size,
                config.self_attention_width or config.hidden_size,
                config.self_attention_heads or config.num_heads,
                config.self_attention_intermediate_size or config.intermediate_size,
                config.dropout,
            )
            for _ in range(config.self_attention_layers)
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

    # --- per-entry tables, then the shared pooling (pooling_bertapprox.py) ------------------------------
    def _phi(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.entry_table(ids).to(self.output_projection.weight.dtype)
        if self.entry_adapter is not None:  # a learned low-rank correction of each entry's embedding
            x = x + self.entry_adapter_up(self.entry_adapter(ids).to(x.dtype))
        if self.input_projection is not None:
            x = self.input_projection(x)
        return self.phi(x)

    def entry_tables(self, ids: torch.Tensor) -> EntryTables:
        """Everything that depends on one entry alone, for the entry ids ``ids`` [n] (row ``i`` for ``ids[i]``):
        φ, the first-round pooling scores, the first context block's first layer (not with self-attention: the
        block then sees φ + Δ) and the pair tables."""
        values = self._phi(ids)
        first = None
        if len(self.context_blocks) and not len(self.self_attention):
            first = self.context_blocks[0].entry_part(values)
        return EntryTables(
            values=values,
            scores=self.pooling.scores(values, ids).float(),
            context_first=first,
            pair_left=self.pairs.left(values) if self.pairs is not None else None,
            pair_right=self.pairs.right(values) if self.pairs is not None else None,
            is_skipgram=self.entry_is_skipgram[ids] if self.pairs is not None else None,
        )

    @torch.inference_mode()
    def vocabulary_tables(self, chunk_size: int = 8192) -> EntryTables:
        """:meth:`entry_tables` of every vocabulary entry (row = entry id), float32, computed in chunks in eval
        mode where the model lives: what inference and export precompute."""
        was_training = self.training
        self.eval()
        device = self.output_projection.weight.device
        parts = []
        try:
            for start in range(0, self.config.vocab_size, chunk_size):
                ids = torch.arange(start, min(start + chunk_size, self.config.vocab_size), device=device)
                parts.append(self.entry_tables(ids))
        finally:
            self.train(was_training)
        columns = []
        for column in zip(*parts, strict=True):
            if column[0] is None:
                columns.append(None)
            else:
                joined = torch.cat(column)
                columns.append(joined if joined.dtype == torch.bool else joined.float().contiguous())
        return EntryTables(*columns)

    def bag_pooling(self, fused: bool = False) -> BagPooling:
        """The shared pooling over this model's own modules (built per call: it holds no weights of its own)."""
        return BagPooling(
            self.config.num_heads,
            self.config.hidden_size // self.config.num_heads,
            self.pooling.context_queries,
            self.context_blocks,
            self.pairs,
            fused=fused,
            self_attention=self.self_attention,
            queries=self.pooling.queries,
        )

    def readout(self) -> Readout:
        """ρ over this model's own modules: the pooled vector to the sentence embedding."""
        return Readout(self.rho, self.output_projection, self.config.normalize)

    @torch.no_grad()
    def pooling_weights(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention pooling's weight of each entry of each bag, per head: [batch, bag, num_heads] (the last
        round's; the context blocks pool with the same weights, pair features have their own). Padding gets 0."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        unique_ids, rows = torch.unique(input_ids, return_inverse=True)
        return self.bag_pooling().last_weights(rows, attention_mask, self.entry_tables(unique_ids))

    def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """ρ and the optional L2 normalization: pooled vector to sentence embedding (float32)."""
        return self.readout()(pooled)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_entry_states: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """Embed bags of entry ids ([batch, bag]); ``pooler_output`` is the sentence embedding.

        ``last_hidden_state`` holds each entry's features: φ, or with ``output_entry_states`` φ updated by the
        self-attention and context blocks (then each block runs on every entry, which training does not need)."""
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a tensor of entry ids [batch, bag], got {type(input_ids).__name__}")
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a tensor [batch, bag], got {type(attention_mask).__name__}")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer entry ids, got {input_ids.dtype}")
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
        if attention_mask.numel() and ((attention_mask != 0) & (attention_mask != 1)).any():
            raise ValueError("attention_mask must hold 0 (padding) and 1 (entry) only")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), the vocabulary size")
        # the per-entry tables of the batch's distinct ids; the bags then index their rows
        unique_ids, rows = torch.unique(input_ids, return_inverse=True)
        tables = self.entry_tables(unique_ids)
        pooled, states = self.bag_pooling()(rows, attention_mask, tables, entry_states=output_entry_states)
        embedding = self.embed_pooled(pooled)
        features = states if states is not None else tables.values[rows]
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
        if kwargs.get("is_main_process", True):
            from .integrity import write_record

            write_record(str(save_directory), self.config.to_dict())

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
        from .tokenization_bertapprox import pad_bag_arrays

        tokenizer = self.get_tokenizer()
        device = self.output_projection.weight.device

        def embed_batch(bags: list) -> torch.Tensor:
            ids, mask = pad_bag_arrays(bags)
            ids, mask = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
            return self(input_ids=ids, attention_mask=mask, return_dict=True).pooler_output

        was_training = self.training
        self.eval()
        try:
            return encode_texts(
                texts,
                lambda batch: tokenizer.encode_bags(batch, self.config.max_bag_size),
                embed_batch,
                self.config.output_dim,
                batch_size=batch_size,
                convert_to_numpy=convert_to_numpy,
                normalize_embeddings=normalize_embeddings,
                show_progress_bar=show_progress_bar,
                device=device,
            )
        finally:
            self.train(was_training)


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
        from .integrity import read_vocab_lines

        count = len(read_vocab_lines(vocab_file))  # a file that is not UTF-8 is named
        if count != rows:
            raise ValueError(f"{vocab_file} has {count} entries but the entry table in {weights} has {rows} rows")
