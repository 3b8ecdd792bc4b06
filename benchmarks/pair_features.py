"""Prototype, measured before it goes into the model: features of adjacent entry pairs.

    python -m benchmarks.pair_features --config configs/minilm.yaml --arm pairs --out results/pair-features \\
        --set optim.epochs=4 model.pooling_rounds=2

The student sees a bag: word order survives only inside its n-gram and skip-gram entries. This adds a
factorised bigram of the text's consecutive entries (the bag without its skip-grams, in text order):
pair ``(u, v)`` has the feature ``(A φ_u) ⊙ (B φ_v)``; the pairs are pooled with softmax weights from
their own scores, and a map ``C`` (zero at start, so training starts from the plain student) adds the
result to the pooled vector before ρ. ``A φ`` and ``B φ`` depend on one entry each, so inference could
keep them in tables: a pair costs a product and a dot product. ``--arm base`` trains the plain student in
the same loop (it reproduces ``train.py`` to the last digit), so the two arms compare directly.

It is a separate loop (plain PyTorch, one process) because the package's batches, tokenizer outputs,
``Encoder`` and export graphs do not carry pairs yet; see docs/training.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn as nn

from bertapprox_hf.student import create_student, teacher_dim
from bertapprox_hf.tokenization_bertapprox import pad_bag_arrays
from bertapprox_hf.training import load_config
from bertapprox_hf.training.data import Batcher, TargetData
from bertapprox_hf.training.losses import distillation_loss
from bertapprox_hf.training.metrics import fidelity
from bertapprox_hf.training.trainer import build_optimizer
from bertapprox_hf.vocabulary import Vocabulary


class PairPooling(nn.Module):
    """Pooled factorised bigram of consecutive entries, mapped to the student's pooled vector (zero at start)."""

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.left = nn.Linear(hidden, rank, bias=False)
        self.right = nn.Linear(hidden, rank, bias=False)
        self.score = nn.Linear(rank, 1)
        self.up = nn.Linear(rank, hidden, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, left: torch.Tensor, right: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pair = self.left(left) * self.right(right)  # [batch, pairs, rank]
        scores = self.score(pair).squeeze(-1).masked_fill(mask == 0, torch.finfo(pair.dtype).min)
        weights = torch.softmax(scores, dim=-1) * (mask.sum(-1, keepdim=True) > 0)  # a text without pairs: 0
        return self.up((weights.unsqueeze(-1) * pair).sum(1))


def consecutive_pairs(bag: list[int], skipgram_ids: set[int]) -> list[tuple[int, int]]:
    """Pairs of consecutive entries of a bag, skip-grams left out (the tokenizer inserts them after their word)."""
    units = [entry for entry in bag if entry not in skipgram_ids]
    return list(zip(units[:-1], units[1:], strict=True))


def pad_pairs(rows: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of each text padded with (0, 0) to [texts, pairs, 2] (at least one), and their mask."""
    width = max([len(pairs) for pairs in rows] + [1])
    values, mask = np.zeros((len(rows), width, 2), np.int64), np.zeros((len(rows), width), np.int64)
    for row, pairs in enumerate(rows):
        if pairs:
            values[row, : len(pairs)] = pairs
            mask[row, : len(pairs)] = 1
    return values, mask


class PairStudent(nn.Module):
    """A student and, for ``rank > 0``, its pair pooling: bags and pairs in, embeddings out."""

    def __init__(self, student, rank: int) -> None:
        super().__init__()
        self.student = student
        self.pairs = PairPooling(student.config.hidden_size, rank) if rank else None

    def forward(self, ids, mask, pair_ids, pair_mask) -> torch.Tensor:
        student = self.student
        every = torch.cat([ids.flatten(), pair_ids.flatten()])
        unique, inverse = torch.unique(every, return_inverse=True)
        phi = student._phi(unique)
        features = phi[inverse[: ids.numel()]].view(*ids.shape, -1)
        scores = student.pooling.scores(phi, unique)[inverse[: ids.numel()]].view(*ids.shape, -1)
        pooled, weights = student.pooling(features, scores, mask, return_weights=True)
        for block in student.context_blocks:
            features = block(features, pooled.unsqueeze(1))
            pooled = student.pooling.weighted_sum(features, weights)
        if self.pairs is not None:
            pair_features = phi[inverse[ids.numel() :]].view(*pair_ids.shape, -1)
            pooled = pooled + self.pairs(pair_features[:, :, 0], pair_features[:, :, 1], pair_mask)
        return student.embed_pooled(pooled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides (key=value)")
    parser.add_argument("--arm", choices=("base", "pairs"), required=True)
    parser.add_argument("--rank", type=int, default=0, help="pair feature width (default: the hidden size)")
    parser.add_argument("--out", required=True, help="folder: ARM.metrics.jsonl")
    args = parser.parse_args(argv)

    config = load_config(args.config, [*args.set, "data.pretokenize=false"])
    torch.manual_seed(config.run.seed)
    vocabulary = Vocabulary.load(config.data.vocab)
    architecture = asdict(config.model)
    architecture.pop("init_from")
    architecture["hidden_size"] = architecture["hidden_size"] or teacher_dim(vocabulary)
    student = create_student(vocabulary, **architecture)
    model = PairStudent(student, (args.rank or student.config.hidden_size) if args.arm == "pairs" else 0)
    tokenizer = student.get_tokenizer()
    data = TargetData(config.data, Batcher(tokenizer, student.config.max_bag_size))
    skipgram_ids = set(tokenizer.bag_encoder.skipgrams.values())
    wanted = np.concatenate([data.train_index, data.val_index])
    bags = dict(zip(wanted.tolist(), tokenizer.encode_bags([data.texts[i] for i in wanted]), strict=True))

    def inputs(records: np.ndarray) -> list[torch.Tensor]:
        ids, mask = pad_bag_arrays([bags[i] for i in records.tolist()])
        pairs, pair_mask = pad_pairs([consecutive_pairs(bags[i], skipgram_ids) for i in records.tolist()])
        return [torch.from_numpy(x) for x in (ids, mask, pairs, pair_mask)]

    params = [p for p in model.parameters() if p.requires_grad]
    optim = config.optim
    total = optim.max_steps or int(optim.epochs * data.batches_per_epoch(optim.batch_size, 1))
    optimizer, scheduler = build_optimizer(model, optim, total)
    val_texts, val_targets = data.validation()
    similarity = vocabulary.metadata.get("teacher", {}).get("similarity", "cosine")
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, f"{args.arm}.metrics.jsonl")
    started = time.time()

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            chunks = [model(*inputs(data.val_index[s : s + 256])) for s in range(0, len(data.val_index), 256)]
        model.train()
        row = {"step": step, "train_seconds": round(time.time() - started, 1)}
        row["trainable_parameters"] = sum(p.numel() for p in params)
        row.update(fidelity(torch.cat(chunks).numpy(), val_targets, val_texts, similarity))
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps({k: round(v, 4) for k, v in row.items() if k.startswith(("step", "cos", "spear"))}))

    from tqdm.auto import tqdm

    step, epoch = 0, 0
    with tqdm(total=total, desc=f"Training ({args.arm})") as progress:
        while step < total:
            for records in data.epoch_batches(epoch, optim.batch_size, config.run.seed):
                targets = torch.as_tensor(np.asarray(data.embeddings[records], dtype=np.float32))
                loss, _ = distillation_loss(model(*inputs(records)), targets, config.loss)
                optimizer.zero_grad()
                loss.backward()
                if optim.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                progress.update()
                if step % config.eval.every_steps == 0 or step == total:
                    evaluate(step)
                if step == total:
                    break
            epoch += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
