"""An exponential moving average of the trainable weights (Polyak averaging), for evaluation and saving.

The optimizer trains the live weights; after every optimizer step the average moves towards them by
``1 - decay`` (less at the start, so that early steps do not weigh as if they were many: the decay used at
update ``n`` is ``min(decay, (1 + n) / (10 + n))``). Evaluation, the best model and the exported student use
the average; checkpoints hold it beside accelerate's state, as safetensors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

AVERAGE_FILE = "weight_average.safetensors"


class WeightAverage:
    """The running average of a model's trainable parameters (float32 copies on the model's device)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {
            name: param.detach().float().clone() for name, param in model.named_parameters() if param.requires_grad
        }

    def _parameters(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        params = {name: param for name, param in model.named_parameters() if name in self.shadow}
        if params.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - params.keys())
            raise ValueError(f"the model lacks averaged parameters: {missing[:5]}")
        return params

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards the model's current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, param in self._parameters(model).items():
            self.shadow[name].lerp_(param.detach().float(), 1 - decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        params = self._parameters(model)
        live = {name: param.detach().clone() for name, param in params.items()}
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(live[name])

    def save(self, folder: str) -> None:
        """Write the average into a checkpoint folder (``AVERAGE_FILE``, with its update count)."""
        from safetensors.torch import save_file

        tensors = {name: value.contiguous().cpu() for name, value in self.shadow.items()}
        save_file(tensors, os.path.join(folder, AVERAGE_FILE), metadata={"updates": str(self.updates)})

    def load(self, folder: str) -> None:
        """Read the average a checkpoint holds; a checkpoint without one (or another model's) is refused."""
        from safetensors import SafetensorError, safe_open

        path = os.path.join(folder, AVERAGE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: the checkpoint was written without optim.ema_decay; resume with the same setting"
            )
        try:
            with safe_open(path, framework="pt") as handle:
                names, metadata = set(handle.keys()), handle.metadata() or {}
                if names != self.shadow.keys():
                    raise ValueError(f"{path} averages other parameters than this model's")
                if "updates" not in metadata:
                    raise ValueError(f"{path} does not say how many updates it holds: not a weight average")
                for name in names:
                    self.shadow[name].copy_(handle.get_tensor(name))
                self.updates = int(metadata["updates"])
        except (OSError, SafetensorError) as error:  # a truncated or garbled file
            raise ValueError(f"{path} cannot be read ({error}): the checkpoint is damaged") from error
