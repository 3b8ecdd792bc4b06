"""Precisions of the fast encoder: names, what the CPU does fast, and int8 Linear layers for ρ."""

from __future__ import annotations

import torch
from torch import nn

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
    """A Linear layer with int8 weights (symmetric, per output channel) and int8 activations
    (symmetric, per row, computed on the fly): ``torch._int_mm`` then one float rescale.

    Unlike ``torch.ao``'s dynamic quantization (one activation scale per batch), each row is
    quantized on its own, so a text's embedding does not depend on the rest of its batch.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros_like(scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        codes = torch.round(x / scale).to(torch.int8)
        out = torch._int_mm(codes, self.weight_t).float() * (scale * self.weight_scale) + self.bias
        return out.reshape(*shape[:-1], out.shape[-1])


def quantize_linears(module: nn.Module) -> None:
    """Replace every ``nn.Linear`` inside ``module`` with an :class:`Int8Linear`."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantize_linears(child)
