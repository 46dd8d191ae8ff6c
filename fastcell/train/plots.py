"""PNG plots of a run's per-epoch history (losses, learning rate, validation mAP)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_history"]


def plot_history(history: list[dict], path: str | Path) -> Path:
    """Draw loss terms, learning rate and validation mAP against the epoch into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("loss", "box", "obj", "cls"):
        axes[0].plot(epochs, [r.get(key) for r in history], label=key)
    axes[0].set_title("training loss (per image)")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].plot(epochs, [r.get("lr") for r in history])
    axes[1].set_title("learning rate")
    val = [(r["epoch"], r) for r in history if "val_mAP50" in r]
    for key in sorted({k for _, r in val for k in r if k.startswith("val_")}):
        axes[2].plot([e for e, _ in val], [r.get(key) for _, r in val], label=key[4:], marker=".")
    axes[2].set_title("validation")
    axes[2].set_ylim(0, 1)
    if val:
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
