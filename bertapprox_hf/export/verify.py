"""Check an exported graph against the PyTorch model: real text, and the extreme batch and bag sizes."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..model.modeling_bertapprox import BertApproxModel
from ..model.tokenization_bertapprox import pad_bag_arrays

TOLERANCE = 1e-5  # max |exported - PyTorch| over all embedding values, float32
SHAPES = ((1, 1), (1, 512), (37, 1), (37, 512))  # (batch, bag) runs that exercise the dynamic axes

# Used when no texts are given: queries, news and science sentences, a passage, an empty text,
# other scripts, and a text long enough to hit the 512-entry bag limit.
DEFAULT_TEXTS = [
    "what is the interest rate of the bank?",
    "how long does it take to boil an egg",
    "symptoms of vitamin d deficiency in adults",
    "new york city",
    "Oil prices rose on Tuesday after OPEC agreed to cut production by one million barrels a day.",
    "The company said its first-quarter net profit fell 12 pct to 45 mln dlrs, or 1.02 dlrs a share.",
    "Statins reduce the risk of major cardiovascular events in patients with type 2 diabetes.",
    "A cat sits on the mat while the dog sleeps by the fire.",
    "The Amazon rainforest covers much of the Amazon basin of South America. This basin encompasses seven "
    "million square kilometres, of which five and a half million square kilometres are covered by the "
    "rainforest. The region includes territory belonging to nine nations and 3,344 formally acknowledged "
    "indigenous territories. The majority of the forest, 60%, is in Brazil, followed by Peru with 13% and "
    "Colombia with 10%.",
    "",
    "😀 Привет, как дела? 東京は日本の首都です。",
    " ".join(["university school music game world house car people time day water health market"] * 60),
]


def read_texts(path: str, limit: int = 1000) -> list[str]:
    """Texts from a ``.jsonl`` file (its ``text`` fields) or a text file (one per line), at most ``limit``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"texts file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in itertools.islice(handle, limit)]
    if not path.endswith(".jsonl"):
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}:{number} has no string 'text' field")
        texts.append(record["text"])
    return texts


def model_run(model: BertApproxModel) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The PyTorch reference with the exported graph's signature: padded ids and mask → embeddings."""

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
            return model(input_ids=ids, attention_mask=mask).pooler_output.float().numpy()

    return run


def cosine_loss(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """1 − cosine of each row pair (0 where both rows are zero)."""
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    dots = (reference * candidate).sum(axis=1)
    return np.where(norms > 0, 1.0 - dots / np.maximum(norms, 1e-30), 0.0)


def run_batches(
    run: Callable[[np.ndarray, np.ndarray], np.ndarray], bags: Sequence[Sequence[int]], batch_size: int = 32
) -> np.ndarray:
    """Embeddings of ``bags`` through ``run``, padded ``batch_size`` at a time."""
    return np.concatenate([run(*pad_bag_arrays(bags[i : i + batch_size])) for i in range(0, len(bags), batch_size)])


def check_parity(
    model: BertApproxModel,
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    texts: Sequence[str] | None = None,
    seed: int = 0,
) -> dict:
    """Compare ``run`` with the model's ``forward`` on ``texts`` and on random bags of the :data:`SHAPES`.

    Returns ``max_abs_diff`` (over everything), ``max_abs_diff_texts``, ``max_abs_diff_shapes`` (per
    ``"batch x bag"``), ``worst_cosine_loss_texts`` and the number of texts and their bag sizes.
    """
    texts = list(DEFAULT_TEXTS if texts is None else texts)
    if not texts:
        raise ValueError("no texts to check the export on")
    reference = model_run(model)
    bags = model.get_tokenizer().encode_bags(texts, model.config.max_bag_size)
    expected, actual = run_batches(reference, bags), run_batches(run, bags)
    report = {
        "texts": len(texts),
        "bag_sizes": [min(len(b) for b in bags), max(len(b) for b in bags)],
        "max_abs_diff_texts": float(np.abs(expected - actual).max()),
        "worst_cosine_loss_texts": float(cosine_loss(expected, actual).max()),
        "max_abs_diff_shapes": {},
    }
    generator = np.random.default_rng(seed)
    for batch, bag in SHAPES:
        ids = generator.integers(1, model.config.vocab_size, size=(batch, bag), dtype=np.int64)
        mask = np.ones_like(ids)
        if batch > 1:  # ragged bags, and one bag that is all padding
            lengths = generator.integers(1, bag + 1, size=batch)
            mask = (np.arange(bag)[None, :] < lengths[:, None]).astype(np.int64)
            mask[-1] = 0
            ids[mask == 0] = 0
        diff = np.abs(reference(ids, mask) - run(ids, mask)).max()
        report["max_abs_diff_shapes"][f"{batch}x{bag}"] = float(diff)
    report["max_abs_diff"] = max(report["max_abs_diff_texts"], *report["max_abs_diff_shapes"].values())
    return report


def quantization_loss(
    reference_run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    quantized_run: Callable[[np.ndarray, np.ndarray], np.ndarray],
    bags: Sequence[Sequence[int]],
) -> dict:
    """Cosine loss (1 − cosine, mean and worst) and max abs diff of a quantized graph against float32."""
    expected, actual = run_batches(reference_run, bags), run_batches(quantized_run, bags)
    loss = cosine_loss(expected, actual)
    return {
        "texts": len(bags),
        "mean_cosine_loss": float(loss.mean()),
        "worst_cosine_loss": float(loss.max()),
        "max_abs_diff": float(np.abs(expected - actual).max()),
    }
