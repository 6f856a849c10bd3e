"""The pictures a run writes: training curves and the test confusion matrix (matplotlib Figures on the Agg canvas)."""

from __future__ import annotations

from pathlib import Path

import torch


def agg_figure(**kwargs):
    """A matplotlib Figure drawn by the Agg canvas; pyplot and its global backend are left as they are
    (a notebook keeps its own), and nothing needs closing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch (train, and val where validated) from metrics.jsonl records, as a PNG."""
    epochs = [h["epoch"] for h in history]
    fig = agg_figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if any("val_loss" in h for h in history):
        val = [h for h in history if "val_loss" in h]
        ax_loss.plot([h["epoch"] for h in val], [h["val_loss"] for h in val], marker="o", label="val")
        ax_acc.plot([h["epoch"] for h in val], [100 * h["val_top1"] for h in val], marker="o", label="val clip top-1")
    ax_acc.plot(epochs, [100 * h["train_top1"] for h in history], marker="o", label="train top-1")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path) -> None:
    """A (num_classes, num_classes) count matrix, rows normalised, as a PNG (counts shown up to 25 classes)."""
    n = len(classes)
    rows = confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)
    size = min(4 + 0.35 * n, 40)
    fig = agg_figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("video-level confusion (row-normalised)")
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        if n <= 25:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
