"""BertApproxConfig: the shape of a student model (copied next to the model as remote code)."""

from __future__ import annotations

from transformers import PretrainedConfig


class BertApproxConfig(PretrainedConfig):
    """Configuration of :class:`BertApproxModel`.

    Args:
        vocab_size: number of vocabulary entries (rows of the frozen entry table).
        embedding_dim: dimension of the entry table: the teacher's, or more for a table that holds two
            embeddings of each entry (:mod:`bertapprox_hf.pipeline.contextual`).
        hidden_size: width of φ and of the pooled vector; ``None`` means ``output_dim``.
        phi_layers: residual MLP blocks in φ (applied to each entry on its own).
        rho_layers: residual MLP blocks in ρ (applied to the pooled vector).
        intermediate_size: width inside each residual block.
        num_heads: attention-pooling heads; each has one learned query over its slice of φ.
        entry_bias: add a learned per-entry, per-head pooling score (a learned word weight).
        pooling_rounds: attention-pooling rounds. Each round after the first adds to every entry's
            previous score the dot product of its φ with queries computed from the previous round's pooled
            vector (a linear map, zero at start: a new round repeats the last), so the weights can depend
            on the whole text (1: one round).
        context_layers: blocks after pooling that update each entry's φ with the pooled vector of its
            text (a residual MLP on ``LN(φ) + U·pooled``, zero at start), each followed by pooling again with
            the last round's weights: interaction between entries, computed per text (0: none).
        context_intermediate_size: width inside those blocks (0: ``intermediate_size``).
        self_attention_layers: Transformer encoder layers over each bag's φ vectors before pooling (pre-LN,
            multi-head attention between the bag's entries with padding masked out, no positions, then a
            residual MLP; both branches zero at start): entries that see each other, computed per text (0: none).
        self_attention_heads: attention heads of those layers (0: ``num_heads``).
        self_attention_width: width of their queries, keys and values (0: ``hidden_size``); the attention's
            output is mapped back to ``hidden_size``.
        self_attention_intermediate_size: width inside their residual MLP (0: ``intermediate_size``).
        entry_adapter_rank: rank of a learned correction added to each entry's embedding
            (``vocab_size × rank + rank × embedding_dim`` parameters; 0: none).
        pair_rank: width of the features of consecutive entry pairs (word order beyond the n-grams): the
            bag's entries other than skip-grams, in text order, give pairs ``(u, v)`` with the feature
            ``(A·φ_u) ⊙ (B·φ_v)``; they are pooled with softmax weights of their own and mapped (zero at start)
            onto the pooled vector before ρ (``3·hidden·rank + rank + 1`` parameters; 0: none).
        dropout: dropout inside the residual blocks.
        output_dim: embedding size, the teacher's; ``None`` means ``embedding_dim``.
        normalize: L2-normalize the output, as the teacher does.
        similarity: ``"cosine"`` or ``"dot"``, the teacher's scoring function.
        teacher: Hub id or path of the teacher the entry table came from.
        max_bag_size: most entries a text is cut to (512).
    """

    model_type = "bertapprox"

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_dim: int = 768,
        hidden_size: int | None = None,
        phi_layers: int = 1,
        rho_layers: int = 1,
        intermediate_size: int = 1024,
        num_heads: int = 8,
        entry_bias: bool = True,
        pooling_rounds: int = 1,
        context_layers: int = 0,
        context_intermediate_size: int = 0,
        self_attention_layers: int = 0,
        self_attention_heads: int = 0,
        self_attention_width: int = 0,
        self_attention_intermediate_size: int = 0,
        entry_adapter_rank: int = 0,
        pair_rank: int = 0,
        dropout: float = 0.0,
        output_dim: int | None = None,
        normalize: bool = False,
        similarity: str = "dot",
        teacher: str | None = None,
        max_bag_size: int = 512,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        output_dim = embedding_dim if output_dim is None else output_dim
        hidden_size = output_dim if hidden_size is None else hidden_size
        for name, value in (
            ("vocab_size", vocab_size),
            ("embedding_dim", embedding_dim),
            ("hidden_size", hidden_size),
            ("intermediate_size", intermediate_size),
            ("num_heads", num_heads),
            ("pooling_rounds", pooling_rounds),
            ("output_dim", output_dim),
            ("max_bag_size", max_bag_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BertApproxConfig.{name} must be a positive integer, got {value!r}")
        for name, value in (
            ("phi_layers", phi_layers),
            ("rho_layers", rho_layers),
            ("entry_adapter_rank", entry_adapter_rank),
            ("pair_rank", pair_rank),
            ("context_layers", context_layers),
            ("context_intermediate_size", context_intermediate_size),
            ("self_attention_layers", self_attention_layers),
            ("self_attention_heads", self_attention_heads),
            ("self_attention_width", self_attention_width),
            ("self_attention_intermediate_size", self_attention_intermediate_size),
        ):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"BertApproxConfig.{name} must be a non-negative integer, got {value!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        attention_width, attention_heads = self_attention_width or hidden_size, self_attention_heads or num_heads
        if attention_width % attention_heads:
            raise ValueError(
                f"the self-attention width ({attention_width}) must be divisible by its heads ({attention_heads})"
            )
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.phi_layers = phi_layers
        self.rho_layers = rho_layers
        self.intermediate_size = intermediate_size
        self.num_heads = num_heads
        self.entry_bias = entry_bias
        self.pooling_rounds = pooling_rounds
        self.context_layers = context_layers
        self.context_intermediate_size = context_intermediate_size
        self.self_attention_layers = self_attention_layers
        self.self_attention_heads = self_attention_heads
        self.self_attention_width = self_attention_width
        self.self_attention_intermediate_size = self_attention_intermediate_size
        self.entry_adapter_rank = entry_adapter_rank
        self.pair_rank = pair_rank
        self.dropout = dropout
        self.output_dim = output_dim
        self.normalize = normalize
        self.similarity = similarity
        self.teacher = teacher
        self.max_bag_size = max_bag_size
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def projection_dim(self) -> int:
        """The embedding size (``output_dim``), under the name sentence-transformers reads for it."""
        return self.output_dim
