"""Precisions of the fast encoder: names, what the CPU does fast, and int8 Linear layers for ρ."""

from __future__ import annotations

import torch
from torch import nn

# Worst cosine loss (1 − cosine) of the int8 Encoder's embeddings to float32 that the docs state and the tests check
# (tests/test_int8_bound.py); measure a student's with ``python -m benchmarks.student_precision --model M``.
INT8_LOSS_BOUND = 1e-3

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
}


def dtype_name(dtype: str | torch.dtype) -> str:
    """The name in :data:`DTYPES` of ``dtype`` (a name or a torch dtype), or a ``ValueError`` listing them."""
    for name, value in DTYPES.items():
        if dtype == name or dtype == value:
            return name
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def cpu_supports(dtype: torch.dtype) -> bool:
    """Whether the CPU has fast matrix multiplication in ``dtype`` (AVX512-BF16 / AMX-FP16)."""
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        pass
    return False


def has_fbgemm_byte_bag() -> bool:
    """Whether fbgemm's row-wise int8 ``embedding_bag`` is built into this torch."""
    try:
        torch.ops.quantized.embedding_bag_byte_rowwise_offsets  # noqa: B018 (raises when missing)
    except (AttributeError, RuntimeError):
        return False
    return True


def int8_matmul_is_fast() -> bool:
    """Whether this CPU has int8 dot-product instructions (AVX512-VNNI, AMX) for ``torch._int_mm``. Without
    them it runs a plain loop: int8 ρ measured 10–25× slower than float32 end to end on an AVX2 AMD EPYC."""
    try:
        return bool(torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def int_mm_works(device: torch.device) -> bool:
    """Whether ``torch._int_mm`` runs on ``device`` for the shapes ρ uses (it is CPU-fast, CUDA-picky)."""
    if device.type != "cpu":
        return False  # CUDA wants ≥ 17 rows; the GPU path keeps ρ in float
    try:
        a = torch.ones(1, 8, dtype=torch.int8)
        return bool(torch._int_mm(a, torch.ones(8, 8, dtype=torch.int8))[0, 0] == 8)
    except (AttributeError, RuntimeError):
        return False


class Int8Linear(nn.Module):
    """A Linear layer run as int8 × int8 → int32 (``torch._int_mm``), then one float rescale.

    * Weights: symmetric, one scale per output channel, with the diagonal ``W[i, i]`` kept apart in float32
      (``W·x = R·x + d ⊙ x``, only ``R`` quantized). ρ's output map is trained from the identity and stays near
      it: a row's scale is set by its diagonal entry (~1.6 in the demo student, the rest of a row ≤ 0.14 for
      most rows), so quantizing whole rows left the other entries ~11 of the 127 levels and cost ~7e-4 cosine
      on every text. Elsewhere a row's scale can only shrink, at the cost of one elementwise product.
    * Activations: asymmetric, one step and integer zero point per row, computed on the fly: the 256 levels
      span the row's own [min, max] (after the GELU, values lie in [-0.17, max]: twice the resolution of a
      symmetric range) and 0 stays exact (most of the GELU's outputs are near 0; a float offset instead
      measured 4× the error). The zero point's share, ``step·zero·Σ_k W[i, k]``, is added in float. No scale
      is shared between rows, so a text's embedding does not depend on the rest of its batch (``torch.ao``'s
      dynamic quantization takes one activation scale per batch).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float().clone()
        diagonal = weight.diagonal().clone()
        weight.diagonal().zero_()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        codes = torch.round(weight / scale[:, None]).to(torch.int8)
        self.register_buffer("weight_t", codes.t().contiguous())
        self.register_buffer("weight_scale", scale)
        # Σ_k W_q[i, k]·scale[i]: what the activations' zero point adds to output i, added back in forward
        self.register_buffer("weight_sums", codes.float().sum(dim=1) * scale)
        self.register_buffer("diagonal", diagonal)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros_like(scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)  # (torch.aminmax is slower)
        step = ((high - low) / 255.0).clamp_min_(1e-12)
        zero = torch.round(low / step).add_(128.0)  # x ≈ step·(code + zero), codes in [-128, 127]
        codes = (x / step).round_().sub_(zero).clamp_(-128, 127).to(torch.int8)
        offset = torch.addcmul(self.bias, step * zero, self.weight_sums)
        out = torch.addcmul(offset, torch._int_mm(codes, self.weight_t).float(), step * self.weight_scale)
        size = self.diagonal.shape[0]
        out[:, :size].addcmul_(x[:, :size], self.diagonal)
        return out.reshape(*shape[:-1], out.shape[-1])


def quantize_linears(module: nn.Module) -> None:
    """Replace every ``nn.Linear`` inside ``module`` with an :class:`Int8Linear`."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantize_linears(child)
