"""What several command groups share: the teacher's precision option and data-parallel building."""

from __future__ import annotations

import os
from collections.abc import Callable


def add_teacher_pass_options(parser) -> None:
    """How a teacher pass runs: ``--mixed-precision`` (its forward pass under autocast) and
    ``--max-batch-tokens``; :func:`load_teacher` reads them."""
    from ..pipeline.precision import PRECISIONS

    parser.add_argument(
        "--mixed-precision",
        choices=PRECISIONS,
        default="no",
        help="run the teacher under autocast: bf16 is 1.8-2.2x as fast on a CPU with AVX-512 BF16, embeddings "
        "within 1e-4 cosine of float32's; auto: bf16 on a GPU that has it, else no (default: no, float32)",
    )
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="padded tokens a teacher batch holds at most (default: 2048 on a CPU, where it is fastest, 65536 on "
        "an accelerator)",
    )


def load_teacher(args, name_or_path: str, device: str | None):
    """The teacher ``name_or_path`` on ``device``, run as :func:`add_teacher_pass_options`' flags say."""
    from ..pipeline.teacher import Teacher

    return Teacher.from_pretrained(
        name_or_path, device=device, mixed_precision=args.mixed_precision, max_batch_tokens=args.max_batch_tokens
    )


def distributed_state(device: str | None):
    """accelerate's ``PartialState`` (one per process under torchrun / accelerate launch), or None without it."""
    try:
        from accelerate import PartialState
    except ImportError:
        return None
    import torch

    # Without cpu=True, accelerate treats torchrun processes on a machine without an accelerator as unrelated
    # single processes (which would all write the same shards).
    accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    state = PartialState(cpu=device == "cpu" or (device is None and not accelerator))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise ValueError(
            f"{launched} processes were launched but accelerate set up {state.num_processes} "
            f"({state.distributed_type}); pass --device cpu or launch on a machine with one accelerator a process"
        )
    return state


def build_on_every_process(state, build: Callable[[], dict], finalize: Callable[[], dict]) -> dict:
    """Run ``build`` in this process; with several processes, ``finalize`` on process 0 once all have built.
    Returns the manifest (complete on process 0)."""
    several = state is not None and state.num_processes > 1
    try:
        manifest = build()
        if several:
            state.wait_for_everyone()
            if state.process_index == 0:
                manifest = finalize()
            state.wait_for_everyone()
    finally:
        if several:
            state.destroy_process_group()
    return manifest
