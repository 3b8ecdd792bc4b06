"""The distillation loop, with accelerate: data-parallel, mixed precision, resumable.

Output folder layout::

    OUTPUT/metrics.jsonl        one JSON object per logged step and per evaluation
    OUTPUT/tensorboard/         the same, as TensorBoard events
    OUTPUT/checkpoints/step_N/  accelerate state: model, optimizer, scheduler, RNG, data position
    OUTPUT/checkpoints/step_N/weight_average.safetensors   the weight average (optim.ema_decay)
    OUTPUT/checkpoints/latest   name of the newest complete checkpoint (written last, atomically)
    OUTPUT/best/                the best model so far (save_pretrained; loads with AutoModel)
    OUTPUT/loss.png, validation.png, report.json
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch

from ..pipeline.contextual import check_table_split
from ..pipeline.jsonio import write_json_atomic
from ..pipeline.precision import resolve_mixed_precision
from ..pipeline.targets import check_teacher_compatible, read_manifest
from ..pipeline.vocabulary import Vocabulary
from .averaging import AVERAGE_FILE, WeightAverage
from .config import OptimConfig, TrainConfig, to_dict
from .data import Batcher, StreamingTargetData, TargetData
from .losses import distillation_loss
from .metrics import fidelity
from .ranking import RankingData, RankingValidation, ranking_loss, stack_inputs
from .recovery import staged_folder, truncate_metrics_log
from .student import create_student, load_student_to_train, teacher_dim

LATEST = "latest"


@dataclass
class TrainingState:
    """Progress saved with every checkpoint (accelerate's custom checkpoint object)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint folder, or None."""
    folder = os.path.join(output_dir, "checkpoints")
    pointer = os.path.join(folder, LATEST)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as handle:
            name = handle.read().strip()
        if name and os.path.isdir(os.path.join(folder, name)):
            return os.path.join(folder, name)
    if not os.path.isdir(folder):
        return None
    done = sorted(d for d in os.listdir(folder) if d.startswith("step_") and not d.endswith(".tmp"))
    return os.path.join(folder, done[-1]) if done else None


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, total_steps: int):
    """AdamW over the trainable parameters (no weight decay on biases, norms and per-entry scores) and its
    schedule: linear warm-up, then cosine decay to 0 at ``total_steps``."""
    from transformers import get_cosine_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 and "entry_bias" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=optim.lr,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(optim.warmup_ratio * total_steps), max(total_steps, 1))
    return optimizer, scheduler


class Trainer:
    """Trains a student on precomputed teacher targets as a :class:`TrainConfig` says."""

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import set_seed

        self.config = config
        cpu = config.run.device == "cpu" or not torch.cuda.is_available()
        # Several trainers may run in one process (experiments, tests): forget the previous one's
        # precision settings; the process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=resolve_mixed_precision(config.run.mixed_precision, "cpu" if cpu else "cuda"),
            gradient_accumulation_steps=config.optim.grad_accum_steps,
        )
        set_seed(config.run.seed)
        self.output_dir = config.run.output_dir
        os.makedirs(os.path.join(self.output_dir, "checkpoints"), exist_ok=True)

        vocabulary = Vocabulary.load(config.data.vocab)
        check_table_split(vocabulary, config.data.val_fraction, config.data.vocab)
        manifests = [read_manifest(folder) for folder in config.data.targets]
        for folder, manifest in zip(config.data.targets, manifests, strict=True):
            where = f"teacher targets in {folder}"
            check_teacher_compatible(manifest["teacher"], vocabulary.metadata.get("teacher", {}), where)
        self.teacher = vocabulary.metadata.get("teacher", {})
        architecture = asdict(config.model)
        init_from = architecture.pop("init_from")
        architecture["hidden_size"] = architecture["hidden_size"] or teacher_dim(vocabulary)
        if init_from:
            model = load_student_to_train(init_from, vocabulary, **architecture)
        else:
            model = create_student(vocabulary, **architecture)
        self.tokenizer = model.get_tokenizer()
        batcher = Batcher(self.tokenizer, model.config.max_bag_size)
        if config.data.streaming:
            self.data = StreamingTargetData(config.data, batcher, sum(int(m["num_records"]) for m in manifests))
        else:
            self.data = TargetData(config.data, batcher)
        self.val_texts, self.val_targets = self.data.validation()
        self.ranking = self.ranking_validation = None
        if config.ranking.candidates:
            self.ranking = RankingData(
                config.ranking,
                config.data.val_fraction,
                self.teacher,
                batcher,
                config.data.pretokenize,
                config.data.tokenize_workers,
            )
            self.ranking_validation = RankingValidation(self.ranking)

        world = self.accelerator.num_processes
        self.batches_per_epoch = self.data.batches_per_epoch(config.optim.batch_size, world)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"optim.batch_size={config.optim.batch_size} x {world} processes exceeds the training records"
            )
        micro_steps = int(config.optim.epochs * self.batches_per_epoch)
        self.total_steps = config.optim.max_steps or micro_steps // config.optim.grad_accum_steps

        optimizer, scheduler = build_optimizer(model, config.optim, self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.state = TrainingState()
        self.accelerator.register_for_checkpointing(self.state)
        decay = config.optim.ema_decay
        self.average = WeightAverage(self.accelerator.unwrap_model(self.model), decay) if decay else None
        self.writer = None

    # --- logging ------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        self.state.history.append(record)
        with open(os.path.join(self.output_dir, "metrics.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.run.tensorboard:
            if self.writer is None:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(self.output_dir, "tensorboard"))
            for key, value in record.items():
                if key not in ("step", "event") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])

    # --- evaluation and checkpoints -------------------------------------------------------------
    def evaluate(self) -> dict:
        """Fidelity of the current weights on the validation texts (every process computes it)."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        student = model.encode(self.val_texts, batch_size=256, convert_to_numpy=True)
        metrics = fidelity(student, self.val_targets, self.val_texts, self.teacher.get("similarity", "cosine"))
        if self.ranking_validation is not None:
            metrics.update(self.ranking_validation.evaluate(model))
        model.train(was_training)
        return metrics

    def save_best(self, metrics: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        folder = os.path.join(self.output_dir, "best")
        tmp = folder + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with staged_folder(tmp, "the best model"):  # a failed save (full disk) leaves no best.tmp behind
            self.accelerator.unwrap_model(self.model).save_pretrained(tmp)
            record = {"step": self.state.step, "metrics": metrics, "config": to_dict(self.config)}
            record["teacher"] = self.teacher
            with open(os.path.join(tmp, "training.json"), "w", encoding="utf-8") as handle:
                json.dump(record, handle, indent=1)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def save_checkpoint(self) -> None:
        """Write a checkpoint under a temporary name, rename it, then point ``latest`` at it."""
        folder = os.path.join(self.output_dir, "checkpoints")
        name = f"step_{self.state.step:08d}"
        tmp = os.path.join(folder, name + ".tmp")
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        with staged_folder(tmp, "a checkpoint"):
            self.accelerator.save_state(tmp, safe_serialization=True)
            if self.average is not None and self.accelerator.is_main_process:
                self.average.save(tmp)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            final = os.path.join(folder, name)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            with open(os.path.join(folder, LATEST + ".tmp"), "w", encoding="utf-8") as handle:
                handle.write(name)
            os.replace(os.path.join(folder, LATEST + ".tmp"), os.path.join(folder, LATEST))
            done = sorted(d for d in os.listdir(folder) if d.startswith("step_") and not d.endswith(".tmp"))
            for old in done[: -self.config.run.keep_checkpoints]:
                shutil.rmtree(os.path.join(folder, old), ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def start_fresh(self) -> None:
        """Forget the logs and checkpoints of an earlier run in the same output folder."""
        if self.accelerator.is_main_process:
            for name in ("metrics.jsonl", "tensorboard", "checkpoints", "report.json"):
                path = os.path.join(self.output_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
            os.makedirs(os.path.join(self.output_dir, "checkpoints"), exist_ok=True)
        self.accelerator.wait_for_everyone()

    def resume(self) -> bool:
        """Load the newest complete checkpoint, if there is one."""
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            return False
        self.accelerator.load_state(checkpoint)
        if self.average is not None:
            self.average.load(checkpoint)
        elif os.path.isfile(os.path.join(checkpoint, AVERAGE_FILE)):
            self.accelerator.print(f"{checkpoint} holds a weight average; optim.ema_decay is 0, so it is not used")
        if self.accelerator.is_main_process:  # the steps after the checkpoint are logged again
            truncate_metrics_log(os.path.join(self.output_dir, "metrics.jsonl"), self.state.step)
        self.accelerator.print(f"resumed from {checkpoint} at step {self.state.step}")
        return True

    # --- the loop -------------------------------------------------------------------------------
    def run_evaluation(self) -> bool:
        """Evaluate, log, keep the best model; True when early stopping says stop.

        With a weight average, the average is what is evaluated and saved; the live weights' figures are
        logged beside it as ``raw_*``."""
        raw, weights = {}, contextlib.nullcontext()
        if self.average is not None:
            raw = {f"raw_{key}": value for key, value in self.evaluate().items() if not key.startswith("count")}
            weights = self.average.applied(self.accelerator.unwrap_model(self.model))
        with weights:
            metrics = self.evaluate()
            self.log({"event": "eval", "step": self.state.step, **metrics, **raw})
            value = metrics.get(self.config.eval.metric)
            if value is None:
                raise ValueError(f"eval.metric '{self.config.eval.metric}' is not among {sorted(metrics)}")
            improved = value > self.state.best_metric + self.config.eval.min_delta
            if improved:
                self.state.best_metric, self.state.best_step, self.state.bad_evals = value, self.state.step, 0
                self.save_best(metrics)
        if not improved:
            self.state.bad_evals += 1
        patience = self.config.eval.patience
        return bool(patience) and self.state.bad_evals >= patience

    def step_loss(self, batch: dict, rank: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch: the embedding terms, plus the ranking terms on the ranking batch drawn beside
        it (one forward pass over both)."""
        config, device = self.config, self.accelerator.device
        inputs = [{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}]
        ranking = None
        if self.ranking is not None and self.ranking.training:
            ranking = self.ranking.batch((self.state.epoch, self.state.batch_in_epoch), config.run.seed, rank)
            inputs.append(ranking["queries"])
            if "documents" in ranking:
                inputs.append(ranking["documents"])
        if len(inputs) > 1:
            inputs = [stack_inputs(inputs, self.tokenizer.pad_token_id)]
        pooled = self.model(**{key: value.to(device) for key, value in inputs[0].items()}).pooler_output
        texts = len(batch["input_ids"])
        loss, parts = distillation_loss(pooled[:texts], batch["targets"].to(device), config.loss)
        if ranking is None:
            return loss, parts
        queries = len(ranking["teacher_queries"])
        documents = pooled[texts + queries :] if "documents" in ranking else None
        extra, extra_parts = ranking_loss(
            pooled[texts : texts + queries],
            ranking["teacher_queries"].to(device),
            ranking["teacher_documents"].to(device),
            ranking["own"].to(device),
            config.ranking,
            self.ranking.similarity,
            documents,
        )
        return loss + extra, {**parts, **extra_parts}

    def train(self, stop_after: int | None = None) -> dict:
        """Run to the end (or to ``stop_after`` steps, as if interrupted); return the report."""
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        if self.state.step == 0 and self.state.best_step < 0:
            stop = self.run_evaluation()  # the untrained model (the mean of its entries) is the first baseline
            if stop or self.total_steps == 0:
                return self.finish()
        progress = tqdm(
            total=self.total_steps, initial=self.state.step, desc="Training", disable=not accelerator.is_main_process
        )
        stopped_early = False
        started = time.time() - self.state.train_seconds
        rank, world = accelerator.process_index, accelerator.num_processes
        while self.state.step < self.total_steps and not stopped_early:
            for batch in self.data.batches(
                self.state.epoch, self.state.batch_in_epoch, config.optim.batch_size, config.run.seed, rank, world
            ):
                self.model.train()
                with accelerator.accumulate(self.model):
                    loss, parts = self.step_loss(batch, rank)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.optim.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), config.optim.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                self.state.batch_in_epoch += 1
                if not accelerator.sync_gradients:
                    continue
                self.state.step += 1
                if self.average is not None:
                    self.average.update(accelerator.unwrap_model(self.model))
                self.state.train_seconds = time.time() - started
                progress.update(1)
                if self.state.step % config.run.log_every == 0:
                    record = {"event": "train", "step": self.state.step, "loss": float(loss.detach())}
                    record.update({name: float(value) for name, value in parts.items()})
                    record["lr"] = self.scheduler.get_last_lr()[0]
                    record["seconds"] = round(time.time() - started, 3)  # after the loss sync: steps done
                    self.log(record)
                    progress.set_postfix(loss=f"{record['loss']:.4f}")
                done = self.state.step >= self.total_steps
                if self.state.step % config.eval.every_steps == 0 or done:
                    stopped_early = self.run_evaluation()
                if self.state.step % config.run.checkpoint_every == 0 or done or stopped_early:
                    self.save_checkpoint()
                if done or stopped_early or (stop_after is not None and self.state.step >= stop_after):
                    break
            else:
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                continue
            if stop_after is not None and self.state.step >= stop_after and self.state.step < self.total_steps:
                progress.close()
                return {"stopped_at": self.state.step}
        progress.close()
        return self.finish()

    def best_record(self) -> dict:
        """The evaluation record of the best step (main process; others keep no history)."""
        for record in reversed(self.state.history):
            if record.get("event") == "eval" and record.get("step") == self.state.best_step:
                return record
        return {}

    def finish(self) -> dict:
        """Plots and the report of the best model."""
        from .plots import plot_history

        report = {
            "train_seconds": round(self.state.train_seconds, 1),
            "steps": self.state.step,
            "best_step": self.state.best_step,
            "trainable_parameters": self.accelerator.unwrap_model(self.model).num_parameters(only_trainable=True),
            "model_dir": os.path.join(self.output_dir, "best"),
            "best": self.best_record(),
            "excluded_overlap": getattr(self.data, "excluded", 0),  # data.exclude_overlap
            "processes": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
        }
        if self.accelerator.is_main_process:
            plot_history(self.state.history, self.output_dir)
            write_json_atomic(os.path.join(self.output_dir, "report.json"), report)
            if self.writer is not None:
                self.writer.close()
        return report


def train(config: TrainConfig, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train a student as ``config`` says; with ``resume``, continue from the latest checkpoint."""
    trainer = Trainer(config)
    if not (resume and trainer.resume()):
        trainer.start_fresh()
    return trainer.train(stop_after=stop_after)
