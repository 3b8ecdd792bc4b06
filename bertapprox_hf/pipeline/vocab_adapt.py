"""Adapt a trained student's vocabulary to a new corpus, without retraining it.

    bertapprox vocab adapt --model STUDENT --corpus NEW_TEXTS.jsonl --out ADAPTED [--fine-tune-steps 200]

1. **Mine** the new corpus as :mod:`.vocab_builder` does (same counting, the same n-gram and skip-gram rules)
   and keep the frequent words, n-grams and skip-grams the student's vocabulary lacks.
2. **Check the teacher**: the student's table must hold the teacher's own embeddings of its entries (a sample of
   its word and n-gram entries is re-embedded; cosine ≥ 0.99), so a student of another teacher is refused.
3. **Embed** each new entry with the teacher and **append** it to the table: entry ids and rows of the old
   entries are unchanged. A table with two halves (contextual first, isolated second; :mod:`.contextual`) gets
   the isolated embedding in its second half and, in its first, the linear map from isolated to contextual rows
   fitted on the old entries (what the contextual table gives an entry it never saw).
4. **Initialise the per-entry trainable weights** of each new entry (pooling bias, low-rank adapter rows) as the
   similarity-weighted mean of its ``neighbours`` most similar old entries (cosine of the teacher embeddings).
5. Optionally **fine-tune** on the new texts that hold new entries: only the new entries' rows (table, bias,
   adapter) train, against the teacher's embeddings of those texts; every other weight stays as it was.

A text without any new entry therefore has the same bag and the same embedding as before. The adapted folder
loads like any other student and records what was added in ``adaptation.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..model.modeling_bertapprox import BertApproxModel
from ..model.tokenization_bertapprox import SKIP_MARKER, BertApproxTokenizer, entry_kind

#: state tensors with one row per vocabulary entry (the ones adaptation extends)
ENTRY_ROWS = ("entry_table.weight", "entry_adapter.weight", "pooling.entry_bias.weight", "entry_is_skipgram")
TEACHER_CHECK_ENTRIES = 48
TEACHER_CHECK_COSINE = 0.99
ADAPTATION_FILE = "adaptation.json"


@dataclass
class AdaptConfig:
    """What to add: at most ``max_words`` words, ``max_ngrams`` n-grams and ``max_skipgrams`` skip-grams seen at least
    ``min_count`` times (multi-word ones with NPMI ≥ ``min_npmi``), each initialised from ``neighbours`` old
    entries."""

    min_count: int = 3
    max_words: int = 5000
    max_ngrams: int = 5000
    max_skipgrams: int = 1000
    min_npmi: float = 0.25
    max_ngram: int = 3
    neighbours: int = 8
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("min_count", "max_ngram", "neighbours", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_words", "max_ngrams", "max_skipgrams"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


# --- mining -------------------------------------------------------------------------------------------
def mine_new_entries(
    texts: Sequence[str], tokenizer: BertApproxTokenizer, config: AdaptConfig
) -> list[tuple[str, int]]:
    """``(entry, count)`` of the frequent words, n-grams and skip-grams of ``texts`` that ``tokenizer`` lacks, words
    first, each kind by the vocabulary builder's ranking."""
    from ..model.text_normalization import split_words
    from ..model.tokenization_bertapprox import PIECE_PREFIX
    from .vocab_builder import NgramCounter, VocabularyConfig, select_multiword

    counting = VocabularyConfig(
        max_ngram=config.max_ngram,
        skipgram_max_gap=tokenizer.skipgram_max_gap,
        min_count=config.min_count,
        min_npmi=config.min_npmi,
    )
    counter = NgramCounter(counting)
    for text in texts:
        counter.add(split_words(text, tokenizer.do_lower_case, tokenizer.strip_accents))
    if counter.num_words == 0:
        raise ValueError("the new corpus has no words")
    known = tokenizer.bag_encoder.entry_to_id
    words = [
        (word, count)
        for word, count in counter.words.most_common()
        if count >= config.min_count and word not in known and word.isalnum() and not word.startswith(PIECE_PREFIX)
    ][: config.max_words]
    added = list(words)
    for counts, budget, skip in ((counter.ngrams, config.max_ngrams, False), (counter.skipgrams, config.max_skipgrams,
                                                                              True)):  # fmt: skip
        fresh = type(counts)({entry: c for entry, c in counts.items() if entry not in known})
        chosen = select_multiword(fresh, counter.words, counter.num_words, counting, budget, skip=skip)
        added += [(entry, count) for entry, count, _ in chosen]
    return added


# --- the teacher ------------------------------------------------------------------------------------
def table_halves(model: BertApproxModel) -> tuple[np.ndarray | None, np.ndarray]:
    """``(contextual half or None, isolated half)`` of the student's entry table (float32)."""
    table = model.entry_table.weight.detach().float().cpu().numpy()
    width = model.config.output_dim
    if table.shape[1] == width:
        return None, table
    if table.shape[1] == 2 * width:
        return table[:, :width], table[:, width:]
    raise ValueError(f"an entry table {table.shape[1]} wide for a {width}-d teacher: not a layout adaptation knows")


def check_teacher(model: BertApproxModel, teacher, isolated: np.ndarray) -> float:
    """The least cosine between the student's rows and the teacher's embeddings of a sample of its word and n-gram
    entries; raises ``ValueError`` when it is below :data:`TEACHER_CHECK_COSINE` or the widths differ."""
    if teacher.dim != model.config.output_dim:
        raise ValueError(
            f"the teacher embeds in {teacher.dim} dimensions but the student's teacher did in {model.config.output_dim}"
        )
    entries = model.get_tokenizer().bag_encoder.entries
    special = {model.get_tokenizer().unk_token, model.get_tokenizer().pad_token}
    candidates = [i for i, entry in enumerate(entries) if entry_kind(entry, special) in ("word", "ngram")]
    if not candidates:
        raise ValueError("the student has no word entries to check the teacher with")
    picked = [candidates[int(i)] for i in np.linspace(0, len(candidates) - 1, TEACHER_CHECK_ENTRIES)]
    picked = list(dict.fromkeys(picked))
    embedded = teacher.encode([entries[i] for i in picked], batch_size=64)
    rows = isolated[picked]
    cosine = np.sum(embedded * rows, axis=1) / np.maximum(
        np.linalg.norm(embedded, axis=1) * np.linalg.norm(rows, axis=1), 1e-12
    )
    worst = float(cosine.min())
    if worst < TEACHER_CHECK_COSINE:
        raise ValueError(
            f"the student's entry table does not hold this teacher's embeddings of its entries (cosine down to "
            f"{worst:.3f} on {len(picked)} entries): it was made with another teacher (the student records "
            f"{model.config.teacher!r}; give that one with --teacher)"
        )
    return worst


# --- new rows ---------------------------------------------------------------------------------------
def contextual_map(contextual: np.ndarray, isolated: np.ndarray) -> np.ndarray:
    """Least-squares linear map (with bias) from isolated rows to contextual rows, over the entries (row 0 aside)."""
    design = np.concatenate([isolated[1:], np.ones((len(isolated) - 1, 1), dtype=isolated.dtype)], axis=1)
    mapping, *_ = np.linalg.lstsq(design.astype(np.float64), contextual[1:].astype(np.float64), rcond=None)
    return mapping


def neighbour_weights(new: np.ndarray, old: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices [n, k], weights [n, k])`` of each new row's ``k`` most similar old rows (cosine; row 0 left out),
    the weights their positive cosines normalized to sum 1 (uniform when none is positive)."""
    unit_old = old / np.maximum(np.linalg.norm(old, axis=1, keepdims=True), 1e-12)
    unit_new = new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
    similarity = unit_new @ unit_old.T
    similarity[:, 0] = -np.inf  # [PAD]
    k = min(k, len(old) - 1)
    index = np.argsort(-similarity, axis=1)[:, :k]
    weights = np.clip(np.take_along_axis(similarity, index, axis=1), 0, None)
    totals = weights.sum(1, keepdims=True)
    weights = np.where(totals > 0, weights / np.where(totals > 0, totals, 1), 1.0 / k)
    return index, weights


def extended_model(
    model: BertApproxModel, entries: list[str], new_rows: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray]
) -> BertApproxModel:
    """A copy of ``model`` with ``len(new_rows)`` entries appended: table rows ``new_rows``, per-entry trainable rows
    the neighbour-weighted mean of the old entries' rows, skip-gram flags from the entry strings."""
    old_size = model.config.vocab_size
    config = model.config.__class__.from_dict({**model.config.to_dict(), "vocab_size": old_size + len(new_rows)})
    state = model.state_dict()
    unknown = [key for key, value in state.items() if value.dim() and value.shape[0] == old_size]
    unknown = [key for key in unknown if key not in ENTRY_ROWS]
    if unknown:
        raise ValueError(f"the student has per-entry weights adaptation does not know how to extend: {unknown}")
    index, weights = (torch.from_numpy(a) for a in neighbours)
    for key in ENTRY_ROWS:
        if key not in state:
            continue
        old = state[key]
        if key == "entry_table.weight":
            rows = torch.from_numpy(new_rows).to(old.dtype)
        elif key == "entry_is_skipgram":
            rows = torch.tensor([SKIP_MARKER in entry for entry in entries[old_size:]], dtype=old.dtype)
        else:
            rows = torch.einsum("nk,nkd->nd", weights.to(old.dtype), old[index])
        state[key] = torch.cat([old, rows])
    adapted = BertApproxModel(config)
    adapted.load_state_dict(state)
    adapted.entry_table.weight.requires_grad_(False)
    return adapted.eval()


def adapted_tokenizer(tokenizer: BertApproxTokenizer, entries: list[str]) -> BertApproxTokenizer:
    """The tokenizer with the same settings over ``entries`` (the old ones first, in their order)."""
    settings = {
        key: tokenizer.init_kwargs[key]
        for key in ("do_lower_case", "strip_accents", "skipgram_max_gap", "teacher_window", "wordpiece_entries")
        if key in tokenizer.init_kwargs
    }
    return BertApproxTokenizer(
        entries=entries, unk_token=tokenizer.unk_token, pad_token=tokenizer.pad_token, **settings
    )


# --- fine-tuning ------------------------------------------------------------------------------------
def fine_tune_new_entries(
    model: BertApproxModel,
    texts: list[str],
    targets: np.ndarray,
    old_size: int,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    show_progress_bar: bool = False,
) -> dict:
    """Train only the new entries' rows (table, pooling bias, adapter) on ``texts`` and their teacher ``targets``;
    every other weight, and the old entries' rows, come out as they went in. Returns the loss before and after."""
    from tqdm.auto import tqdm

    from ..model.tokenization_bertapprox import pad_bag_arrays
    from ..training.config import LossConfig
    from ..training.losses import distillation_loss

    if not texts:
        return {"texts": 0, "steps": 0}
    tokenizer = model.get_tokenizer()
    bags = tokenizer.encode_bags(texts, model.config.max_bag_size)
    target = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    trained = [model.entry_table.weight]
    trained += [p.weight for p in (model.pooling.entry_bias, model.entry_adapter) if p is not None]
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    saved_rows = [p.detach()[:old_size].clone() for p in trained]
    for param in model.parameters():
        param.requires_grad_(False)
    for param in trained:
        param.requires_grad_(True)
    optimizer = torch.optim.Adam(trained, lr=lr)
    generator = np.random.default_rng(seed)
    losses = LossConfig()

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        ids, mask = pad_bag_arrays([bags[i] for i in rows], tokenizer.pad_token_id)
        pooled = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).pooler_output
        return distillation_loss(pooled, target[rows], losses)[0]

    everything = np.arange(len(texts))
    model.eval()  # no dropout: the old entries' path must not change
    with torch.no_grad():
        before = float(batch_loss(everything))
    for _ in tqdm(range(steps), desc="Fine-tuning new entries", disable=not show_progress_bar):
        rows = generator.choice(everything, size=min(batch_size, len(texts)), replace=False)
        optimizer.zero_grad()
        batch_loss(rows).backward()
        for param in trained:
            param.grad[:old_size] = 0
        optimizer.step()
    with torch.no_grad():
        for param, rows in zip(trained, saved_rows, strict=True):
            param[:old_size] = rows  # exactly as before (Adam's update of a zero gradient is zero, but be sure)
        after = float(batch_loss(everything))
    for name, param in model.named_parameters():
        param.requires_grad_(frozen[name])
    return {"texts": len(texts), "steps": steps, "loss_before": before, "loss_after": after}


# --- the whole flow ---------------------------------------------------------------------------------
def adapt_student(
    model: BertApproxModel,
    teacher,
    texts: Sequence[str],
    config: AdaptConfig | None = None,
    fine_tune_steps: int = 0,
    fine_tune_lr: float = 1e-3,
    show_progress_bar: bool = False,
) -> tuple[BertApproxModel, dict]:
    """The adapted student and a record of what was added (see the module docstring)."""
    from .vocab_builder import VocabularyConfig, embed_entries

    config = config or AdaptConfig()
    texts = list(texts)
    tokenizer = model.get_tokenizer()
    contextual, isolated = table_halves(model)
    least_cosine = check_teacher(model, teacher, isolated)
    mined = mine_new_entries(texts, tokenizer, config)
    record = {"teacher": teacher.describe(), "teacher_check_cosine": round(least_cosine, 4), "settings": asdict(config),
              "old_entries": model.config.vocab_size, "corpus_texts": len(texts)}  # fmt: skip
    if not mined:
        return model, {**record, "new_entries": []}
    items = [(entry.replace(SKIP_MARKER, " "), None) for entry, _ in mined]
    embedding = VocabularyConfig(dtype="float32", batch_size=config.batch_size)
    vectors = embed_entries(teacher, items, embedding, show_progress_bar=show_progress_bar).astype(np.float32)
    if contextual is None:
        new_rows = vectors
    else:
        mapping = contextual_map(contextual, isolated)
        mapped = np.concatenate([vectors, np.ones((len(vectors), 1), dtype=np.float32)], axis=1) @ mapping
        new_rows = np.concatenate([mapped.astype(np.float32), vectors], axis=1)
    neighbours = neighbour_weights(vectors, isolated, config.neighbours)
    entries = list(tokenizer.bag_encoder.entries) + [entry for entry, _ in mined]
    adapted = extended_model(model, entries, new_rows, neighbours)
    adapted.set_tokenizer(adapted_tokenizer(tokenizer, entries))
    old_entries = tokenizer.bag_encoder.entries
    record["new_entries"] = [
        {"entry": entry, "count": count, "neighbours": [old_entries[j] for j in neighbours[0][i][:3]]}
        for i, (entry, count) in enumerate(mined)
    ]
    if fine_tune_steps:
        new_ids = set(range(model.config.vocab_size, len(entries)))
        bags = adapted.get_tokenizer().encode_bags(texts, adapted.config.max_bag_size)
        chosen = [text for text, bag in zip(texts, bags, strict=True) if new_ids.intersection(bag)]
        targets = teacher.encode(chosen, batch_size=64, show_progress_bar=show_progress_bar) if chosen else None
        record["fine_tune"] = fine_tune_new_entries(
            adapted, chosen, targets, model.config.vocab_size, fine_tune_steps, fine_tune_lr,
            show_progress_bar=show_progress_bar,
        )  # fmt: skip
    return adapted, record


def save_adapted(model: BertApproxModel, record: dict, out: str) -> None:
    """Save the adapted student (it loads like any other) with its ``adaptation.json``."""
    for stale in ("entries_sha256", "weights_dtype"):  # what a stripped folder recorded of the old entries
        if hasattr(model.config, stale):
            delattr(model.config, stale)
    model.save_pretrained(out)
    with open(os.path.join(out, ADAPTATION_FILE), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)


# --- command line -----------------------------------------------------------------------------------
def add_commands(subparsers) -> None:
    """Add ``adapt`` to the ``bertapprox vocab`` subcommands (its handler is the parser's ``handler`` default)."""
    parser = subparsers.add_parser(
        "adapt", help="append a new corpus's frequent words and n-grams to a trained student's vocabulary"
    )
    parser.add_argument("--model", required=True, help="trained student folder")
    parser.add_argument("--corpus", nargs="+", required=True, help="jsonl files (or folders of them) of new texts")
    parser.add_argument("--out", required=True, help="folder of the adapted student")
    parser.add_argument("--teacher", default=None, help="teacher folder (default: the one the student records)")
    parser.add_argument("--max-texts", type=int, default=None, help="texts of the corpus read at most")
    parser.add_argument("--fine-tune-steps", type=int, default=0, help="train the new entries' rows this many steps")
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3)
    parser.add_argument("--device", default=None, help="the teacher's device (default: cuda when available)")
    defaults = AdaptConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    parser.set_defaults(handler=run_adapt)


def run_adapt(args) -> int:
    from .corpus import expand_paths, iter_texts
    from .teacher import Teacher

    config = AdaptConfig(**{name: getattr(args, name) for name in asdict(AdaptConfig())})
    if args.fine_tune_steps < 0:
        raise ValueError("--fine-tune-steps must not be negative")
    expand_paths(args.corpus)  # fail on a missing corpus before loading anything
    model = BertApproxModel.from_pretrained(args.model).eval()
    teacher_path = args.teacher or model.config.teacher
    if not teacher_path:
        raise ValueError(f"{args.model} records no teacher: give it with --teacher")
    teacher = Teacher.from_pretrained(teacher_path, device=args.device)
    texts = list(iter_texts(args.corpus, max_records=args.max_texts))
    adapted, record = adapt_student(model, teacher, texts, config, args.fine_tune_steps, args.fine_tune_lr, True)
    record["corpus"] = list(args.corpus)
    save_adapted(adapted, record, args.out)
    summary = {k: v for k, v in record.items() if k not in ("new_entries", "settings", "teacher")}
    print(json.dumps({"out": args.out, "new_entries": len(record["new_entries"]), **summary}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bertapprox_hf.pipeline.vocab_adapt ARGS``: the same as ``bertapprox vocab adapt ARGS``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="bertapprox vocab")
    add_commands(parser.add_subparsers(dest="action", required=True))
    args = parser.parse_args(["adapt", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except (OSError, ValueError) as error:
        print(f"bertapprox vocab adapt: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
