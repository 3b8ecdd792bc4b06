"""PNG plots of a training run: the loss curve and the validation metrics."""

from __future__ import annotations

import os


def plot_history(history: list[dict], output_dir: str) -> list[str]:
    """Write ``loss.png`` and ``validation.png`` from logged records; return the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    train = [r for r in history if r.get("event") == "train"]
    evals = [r for r in history if r.get("event") == "eval"]
    if train:
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = [r["step"] for r in train]
        for key in ("loss", "mse", "cosine", "relational"):
            if key in train[0]:
                ax.plot(steps, [r[key] for r in train], label=key)
        ax.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss")
        ax.legend()
        fig.tight_layout()
        written.append(os.path.join(output_dir, "loss.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if evals:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        steps = [r["step"] for r in evals]
        for metric, ax in zip(("cosine", "spearman"), axes, strict=True):
            for bucket in ("query", "sentence", "passage", "all"):
                key = f"{metric}_{bucket}"
                if all(key in r for r in evals):
                    ax.plot(steps, [r[key] for r in evals], marker="o", label=bucket)
            ax.set(xlabel="step", ylabel=metric, title=f"Validation {metric} to the teacher")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        written.append(os.path.join(output_dir, "validation.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written
