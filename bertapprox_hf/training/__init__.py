"""Distillation: configuration, data, losses, metrics and the accelerate training loop."""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "load_config", "train"]
