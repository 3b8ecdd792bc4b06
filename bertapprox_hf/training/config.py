"""Training configuration: nested dataclasses read from YAML, with ``--set key=value`` overrides.

Every key is documented on its field. Unknown keys, wrong types and missing files stop the run
with a message naming the key or the file. String values may use ``${ENV_VAR}`` and ``${ENV_VAR:-default}``.
A file may start from another one with ``base: other.yaml`` (a path relative to the file): its keys replace the
base's, section by section (a list, such as ``data.targets``, is replaced whole).

Two keys live beside the sections:

- ``sets``: named target sets, ``{name: folder or [folders]}``; an entry of ``data.targets`` that is a set's
  name stands for its folders, so each set is named once in a file.
- ``stages``: a recipe trained in several schedules, in order, each a mapping of keys that replace the file's
  (``name`` is required). A stage starts from the previous stage's best student (``model.init_from``) unless it
  names another, and writes to ``<run.output_dir>/<name>``. :func:`load_stages` reads them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from ..model.configuration_bertapprox import BertApproxConfig
from ..pipeline.precision import PRECISIONS


@dataclass
class DataConfig:
    vocab: str = ""  # vocabulary folder (bertapprox vocab build)
    # teacher targets folders (bertapprox targets build): one, or a list (YAML list or comma-separated) read as one
    targets: list[str] = field(default_factory=list)
    val_fraction: float = 0.02  # share of records held out for validation, chosen by a hash of their id
    max_val: int = 3000  # validation records used at most
    max_train: int = 0  # training records used at most (0: all)
    # drop training records that contain a validation text of at least this many words verbatim (0: keep all),
    # e.g. an article whose sentences are validation texts; not when streaming
    exclude_overlap: int = 0
    length_grouping: bool = True  # batch texts of similar length together (less padding; not when streaming)
    pretokenize: bool = True  # tokenize every text once before training (in parallel) instead of every epoch
    tokenize_workers: int = 0  # processes for that pass (0: one per CPU core; 1: none)
    streaming: bool = False  # stream the targets with datasets instead of loading them in memory
    shuffle_buffer: int = 10000  # buffer of the streaming shuffle


# The keys the vocabulary decides (create_student sets them from it), not the recipe.
VOCABULARY_KEYS = ("vocab_size", "embedding_dim", "output_dim", "normalize", "similarity", "teacher", "pad_token_id")


def _model_fields() -> list[tuple[str, type, Any]]:
    """The ``model:`` section's keys: :class:`BertApproxConfig`'s arguments (documented there) with its defaults,
    less those the vocabulary decides, plus ``init_from``. ``hidden_size`` 0 stands for the teacher's width."""
    parameters = inspect.signature(BertApproxConfig.__init__).parameters
    result = []
    for name, parameter in parameters.items():
        if name in ("self", "kwargs") or name in VOCABULARY_KEYS:
            continue
        default = 0 if name == "hidden_size" else parameter.default
        result.append((name, type(default), field(default=default)))
    # a saved student (folder) to start from instead of an untrained one, e.g. to fine-tune it on new texts or
    # train it a second schedule; same vocabulary, and the keys above must match it (pooling_rounds may be higher)
    result.append(("init_from", str, field(default="")))
    return result


ModelConfig = dataclasses.make_dataclass("ModelConfig", _model_fields())
ModelConfig.__doc__ = (
    """The student's architecture: the arguments of :class:`BertApproxConfig` (one schema), and ``init_from``."""
)


@dataclass
class LossConfig:
    mse: float = 1.0  # weight of the squared L2 distance to the teacher embedding
    cosine: float = 1.0  # weight of 1 - cosine to the teacher embedding
    relational: float = 0.0  # weight of the in-batch relational term
    relational_kind: str = "cross"  # "cross", "kl" or "pairwise" (see training/losses.py)
    temperature: float = 0.05  # softmax temperature of the relational term (on cosine scale)


@dataclass
class RankingConfig:
    """Ranking distillation (training/ranking.py): the student's query embedding scored against each query's
    candidates as the teacher ranks them. Off unless a weight is set; with ``candidates`` alone, validation adds
    the ranking view (``rank_*`` metrics) without training for it."""

    candidates: str = ""  # folder from `bertapprox candidates build` (same teacher and data.val_fraction)
    listwise: float = 0.0  # weight of the KL between the teacher's and the student's softmax over the batch's documents
    margin_mse: float = 0.0  # weight of margin-MSE between each query's first candidate and its others
    # "query": the student's query against the teacher's documents (asymmetric search); "both": also against the
    # student's own document embeddings (student-only search), the two terms averaged
    sides: str = "query"
    temperature: float = 0.05  # softmax temperature of the listwise term and scale of the margins (cosine scale)
    queries_per_batch: int = 32  # ranking queries per step, beside the batch of texts
    candidates_per_query: int = 4  # of each query's top-k: the teacher's first, and the rest drawn at random
    eval_queries: int = 300  # held-out queries of the validation's ranking view (0: none)


@dataclass
class OptimConfig:
    batch_size: int = 128  # texts per process and step (before accumulation)
    epochs: float = 3.0  # passes over the training records (fractions allowed)
    max_steps: int = 0  # stop after this many optimizer steps (0: from epochs)
    lr: float = 2e-3  # peak learning rate of AdamW
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # share of steps with a linear warm-up, then cosine decay to 0
    max_grad_norm: float = 1.0  # gradient clipping (0: off)
    grad_accum_steps: int = 1  # batches accumulated per optimizer step
    # exponential moving average of the weights, evaluated and saved instead of the live ones (0: off;
    # 0.999 averages over about the last 1,000 steps); training/averaging.py
    ema_decay: float = 0.0


@dataclass
class EvalConfig:
    every_steps: int = 500  # evaluate on the validation records every this many steps (and at the end)
    metric: str = "cosine_all"  # metric that picks the best model and drives early stopping
    patience: int = 0  # evaluations without improvement before stopping (0: never stop early)
    min_delta: float = 1e-4  # improvement smaller than this counts as none


@dataclass
class RunConfig:
    output_dir: str = "runs/bertapprox"  # where checkpoints, logs, plots and the best model go
    seed: int = 42
    # "no", "bf16", "fp16" or "auto" (bf16 on a GPU that has it, else no; bf16 on a CPU with AVX-512 BF16: 1.7x)
    mixed_precision: str = "auto"
    checkpoint_every: int = 500  # save a resumable checkpoint every this many steps
    keep_checkpoints: int = 2  # checkpoints kept on disk
    log_every: int = 50  # training loss logged every this many steps
    tensorboard: bool = True  # also write TensorBoard event files
    device: str = "auto"  # "auto", "cpu" or "cuda"


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


class ConfigError(ValueError):
    """A configuration problem, with the key or file it concerns in the message."""


_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_variables(text: str) -> str:
    """``${NAME}`` and ``${NAME:-default}`` replaced from the environment; an unset ``${NAME}`` stays as it is."""

    def value(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        return default if default is not None else match.group(0)

    return _VARIABLE.sub(value, text)


def parse_scalar(text: str) -> Any:
    """A --set value as YAML would read it, with numbers like 1e-3 read as numbers."""
    import yaml

    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _coerce_str_list(value: Any, key: str) -> list[str]:
    """A list of strings from a YAML list, one string, or a comma-separated --set value."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"config key '{key}' must be a string or a list of strings, got {value!r}")
    return [expand_variables(item) for item in value]


def _coerce(value: Any, kind: Any, key: str) -> Any:
    if typing.get_origin(kind) is list:
        return _coerce_str_list(value, key)
    if isinstance(value, str) and kind is not str:
        value = parse_scalar(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is str and isinstance(value, str):
        value = expand_variables(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _fill(section: Any, values: dict, prefix: str) -> None:
    hints = typing.get_type_hints(type(section))
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{path}' (known: {', '.join(sorted(names))})")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping")
            _fill(current, value, path + ".")
        else:
            setattr(section, key, _coerce(value, hints[key], path))


def _merge(base: dict, values: dict) -> dict:
    """``values`` over ``base``: mappings merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merge(merged[key], value)
        merged[key] = value
    return merged


def read_config_file(path: str, _seen: tuple[str, ...] = ()) -> dict:
    """The mapping a YAML config file holds, its ``base`` files merged under it."""
    import yaml

    if not os.path.isfile(path):
        where = f" (base of {_seen[-1]})" if _seen else ""
        raise ConfigError(f"config file not found: {path}{where}")
    real = os.path.realpath(path)
    if real in _seen:
        raise ConfigError(f"config files name each other as base: {' -> '.join((*_seen, real))}")
    with open(path, encoding="utf-8") as handle:
        try:
            values = yaml.safe_load(handle) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise ConfigError(f"config key 'base' in {path} must be a file name, got {base!r}")
    base_path = os.path.join(os.path.dirname(path), expand_variables(base))
    return _merge(read_config_file(base_path, (*_seen, real)), values)


def _apply_sets(values: dict) -> dict:
    """``values`` without its ``sets`` key, each set's name in ``data.targets`` replaced by its folders."""
    values = dict(values)
    sets = values.pop("sets", None) or {}
    if not isinstance(sets, dict):
        raise ConfigError("config key 'sets' must map set names to folders")
    targets = values.get("data", {}).get("targets") if isinstance(values.get("data"), dict) else None
    if targets is None or not sets:
        return values
    items = _coerce_str_list(targets, "data.targets") if isinstance(targets, str) else targets
    folders: list = []
    for item in items:
        if isinstance(item, str) and item in sets:
            folders.extend(_coerce_str_list(sets[item], f"sets.{item}"))
        else:
            folders.append(item)
    values["data"] = {**values["data"], "targets": folders}
    return values


def _override_values(overrides: list[str] | None) -> list[dict]:
    """``key.sub=value`` overrides as nested mappings, one each."""
    result = []
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, value = item.split("=", 1)
        nested: dict = {}
        cursor = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        result.append(nested)
    return result


def _build(values: dict, overrides: list[str] | None) -> TrainConfig:
    config = _build_unvalidated(values, overrides)
    validate(config)
    return config


def load_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (optional), apply ``key.sub=value`` overrides and validate the result.
    A file with ``stages`` is read with :func:`load_stages`."""
    values = read_config_file(path) if path else {}
    if "stages" in values:
        raise ConfigError(f"{path} is a recipe in stages: train it with train.py (or read it with load_stages)")
    return _build(values, overrides)


@dataclass
class Stage:
    """One schedule of a recipe: its name, output folder, and the config it trains (validated when built, so
    a stage may start from a student the one before has yet to train)."""

    name: str
    output_dir: str
    values: dict
    overrides: list[str]

    def config(self) -> TrainConfig:
        return _build(self.values, self.overrides)

    def finished(self) -> bool:
        """Whether this stage ran to its end (its report and best student are written)."""
        return os.path.isfile(os.path.join(self.output_dir, "report.json")) and os.path.isdir(
            os.path.join(self.output_dir, "best")
        )


def load_stages(path: str | None = None, overrides: list[str] | None = None) -> list[Stage]:
    """The stages of a recipe, in order: one for a file without ``stages``. Overrides apply to every stage."""
    values = read_config_file(path) if path else {}
    stages = values.pop("stages", None)
    if stages is None:
        output_dir = _build_unvalidated(values, overrides).run.output_dir
        return [Stage("", output_dir, values, list(overrides or []))]
    if not isinstance(stages, list) or not stages or not all(isinstance(stage, dict) for stage in stages):
        raise ConfigError(f"config key 'stages' in {path} must be a non-empty list of mappings")
    root = _build_unvalidated(values, overrides).run.output_dir
    result: list[Stage] = []
    for number, stage in enumerate(stages, 1):
        stage = dict(stage)
        name = stage.pop("name", None)
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
            raise ConfigError(f"stage {number} of {path} needs a 'name' (letters, digits, '.', '-', '_')")
        if name in {previous.name for previous in result}:
            raise ConfigError(f"stage name {name!r} is used twice in {path}")
        merged = _merge(values, stage)
        output_dir = os.path.join(root, name)
        run = {**merged.get("run", {}), "output_dir": output_dir}
        model = dict(merged.get("model", {}))
        if result and "init_from" not in stage.get("model", {}):
            model["init_from"] = os.path.join(result[-1].output_dir, "best")
        merged.update(run=run, model=model)
        # --set model.init_from / run.output_dir would break the chain: only the first stage takes them
        stage_overrides = [
            item for item in overrides or [] if not result or item.split("=", 1)[0].strip() not in CHAIN_KEYS
        ]
        result.append(Stage(name, output_dir, merged, stage_overrides))
    return result


CHAIN_KEYS = ("model.init_from", "run.output_dir")


def _build_unvalidated(values: dict, overrides: list[str] | None) -> TrainConfig:
    config = TrainConfig()
    _fill(config, _apply_sets(values), "")
    for nested in _override_values(overrides):
        _fill(config, nested, "")
    return config


def validate(config: TrainConfig) -> None:
    """Check values and files; raise :class:`ConfigError` naming the key or file."""
    if not config.data.vocab:
        raise ConfigError("config key 'data.vocab' is required")
    if not config.data.targets:
        raise ConfigError("config key 'data.targets' is required")
    folders = [("data.vocab", config.data.vocab)] + [("data.targets", folder) for folder in config.data.targets]
    if config.model.init_from:
        folders.append(("model.init_from", config.model.init_from))
    if config.ranking.candidates:
        folders.append(("ranking.candidates", config.ranking.candidates))
    for key, folder in folders:
        if not os.path.isdir(folder):
            raise ConfigError(f"{key}: folder not found: {folder}")
    checks = [
        ("data.val_fraction", 0 < config.data.val_fraction < 1),
        ("data.tokenize_workers", config.data.tokenize_workers >= 0),
        ("data.exclude_overlap", config.data.exclude_overlap >= 0),
        ("optim.batch_size", config.optim.batch_size >= 2),
        ("optim.lr", config.optim.lr > 0),
        ("optim.epochs", config.optim.epochs >= 0),
        ("optim.grad_accum_steps", config.optim.grad_accum_steps >= 1),
        ("optim.warmup_ratio", 0 <= config.optim.warmup_ratio < 1),
        ("optim.ema_decay", 0 <= config.optim.ema_decay < 1),
        ("eval.every_steps", config.eval.every_steps >= 1),
        ("run.checkpoint_every", config.run.checkpoint_every >= 1),
        ("run.keep_checkpoints", config.run.keep_checkpoints >= 1),
        ("loss.temperature", config.loss.temperature > 0),
        ("loss.relational_kind", config.loss.relational_kind in ("cross", "kl", "pairwise")),
        ("run.mixed_precision", config.run.mixed_precision in PRECISIONS),
        ("run.device", config.run.device in ("auto", "cpu", "cuda")),
        ("ranking.sides", config.ranking.sides in ("query", "both")),
        ("ranking.temperature", config.ranking.temperature > 0),
        ("ranking.queries_per_batch", config.ranking.queries_per_batch >= 1),
        ("ranking.candidates_per_query", config.ranking.candidates_per_query >= 2),
        ("ranking.eval_queries", config.ranking.eval_queries >= 0),
    ]
    for key, ok in checks:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(config, section), name)
            raise ConfigError(f"config key '{key}' has an invalid value: {value!r}")
    if config.data.exclude_overlap and config.data.streaming:
        raise ConfigError("config key 'data.exclude_overlap' needs the targets in memory (data.streaming: false)")
    if min(config.loss.mse, config.loss.cosine, config.loss.relational) < 0:
        raise ConfigError("loss weights must not be negative")
    ranking = config.ranking
    if min(ranking.listwise, ranking.margin_mse) < 0:
        raise ConfigError("config keys 'ranking.listwise' and 'ranking.margin_mse' must not be negative")
    if (ranking.listwise or ranking.margin_mse) and not ranking.candidates:
        raise ConfigError(
            "config key 'ranking.candidates' is required when ranking.listwise or ranking.margin_mse is set "
            "(a folder from `bertapprox candidates build`)"
        )
    if config.eval.metric.startswith("rank_") and not (ranking.candidates and ranking.eval_queries):
        raise ConfigError(
            f"config key 'eval.metric' is {config.eval.metric!r}, a ranking metric: it needs 'ranking.candidates' "
            "and 'ranking.eval_queries' > 0"
        )


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)
