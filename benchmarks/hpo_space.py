"""The search space of a hyperparameter study (:mod:`benchmarks.hpo`), read from YAML.

    metric: cosine_all          # validation metric the trials maximize (default: the config's eval.metric)
    pruner:                     # median pruning of weak trials on that metric (optional)
      startup_trials: 2         # trials that run to the end before any is pruned
      warmup_steps: 0           # steps of each trial before it may be pruned
    params:                     # any training-config key (bertapprox_hf/training/config.py)
      optim.lr: {low: 3.0e-4, high: 1.0e-2, log: true}         # a float range (log scale)
      model.intermediate_size: {low: 256, high: 1024, step: 256}  # an integer range (integer bounds)
      loss.relational: {choices: [0.0, 0.05, 0.1]}           # one of a list

A range is integer when both bounds (and the step, if any) are integers; ``type: float`` forces a float range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

PARAM_KEYS = {"low", "high", "log", "step", "choices", "type"}


class SpaceError(ValueError):
    """A problem in a search-space file, naming the key."""


@dataclass
class Param:
    """One searched key: a float or integer range, or a list of choices."""

    name: str
    kind: str  # "float", "int" or "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list = field(default_factory=list)

    def suggest(self, trial) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def example(self) -> Any:
        """A value of the space (its first choice or its low bound), to check the key before a study starts."""
        return self.choices[0] if self.kind == "categorical" else self.low


@dataclass
class SearchSpace:
    params: dict[str, Param]
    metric: str | None = None
    startup_trials: int = 2
    warmup_steps: int = 0


def parse_param(name: str, spec: Any) -> Param:
    """One entry of ``params``."""
    if not isinstance(spec, dict):
        raise SpaceError(f"params.{name} must be a mapping (low/high or choices), got {spec!r}")
    unknown = set(spec) - PARAM_KEYS
    if unknown:
        raise SpaceError(f"params.{name}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(PARAM_KEYS))})")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"params.{name}.choices must be a non-empty list")
        if not all(isinstance(c, (bool, int, float, str)) for c in choices):
            raise SpaceError(f"params.{name}.choices must be numbers, booleans or strings")
        return Param(name, "categorical", choices=choices)
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"params.{name} needs low and high, or choices")
    low, high, step = spec["low"], spec["high"], spec.get("step")
    for key, value in (("low", low), ("high", high), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SpaceError(f"params.{name}.{key} must be a number, got {value!r}")
    if low >= high:
        raise SpaceError(f"params.{name}: low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"params.{name}: a log range needs low > 0")
    if log and step is not None:
        raise SpaceError(f"params.{name}: a log range takes no step")
    integral = all(isinstance(v, int) for v in (low, high, step) if v is not None)
    kind = spec.get("type") or ("int" if integral else "float")
    if kind not in ("int", "float"):
        raise SpaceError(f"params.{name}.type must be int or float, got {kind!r}")
    if kind == "int" and not integral:
        raise SpaceError(f"params.{name}: an int range needs integer low, high and step")
    return Param(name, kind, low, high, log, step)


def load_space(path: str) -> SearchSpace:
    """Read and check a search-space file."""
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"search-space file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise SpaceError(f"search-space file {path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise SpaceError(f"search-space file {path} must hold a mapping")
    unknown = set(values) - {"metric", "pruner", "params"}
    if unknown:
        raise SpaceError(f"{path}: unknown keys {sorted(unknown)} (known: metric, pruner, params)")
    params = values.get("params")
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"{path}: 'params' must map at least one config key to its range")
    pruner = values.get("pruner") or {}
    if not isinstance(pruner, dict) or set(pruner) - {"startup_trials", "warmup_steps"}:
        raise SpaceError(f"{path}: 'pruner' takes startup_trials and warmup_steps")
    for key in ("startup_trials", "warmup_steps"):
        value = pruner.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SpaceError(f"{path}: pruner.{key} must be a non-negative integer, got {value!r}")
    metric = values.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise SpaceError(f"{path}: 'metric' must be a metric name such as cosine_all")
    return SearchSpace(
        params={str(name): parse_param(str(name), spec) for name, spec in params.items()},
        metric=metric,
        startup_trials=pruner.get("startup_trials", 2),
        warmup_steps=pruner.get("warmup_steps", 0),
    )
