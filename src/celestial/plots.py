"""Images and plots written by the pipeline, byte-stable across runs.

The preview grid uses Pillow only; matplotlib is imported lazily (prepare does not
need it) and PNGs are saved with the "Software" metadata removed and a fixed dpi,
so the same data always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PNG_METADATA = {"Software": None}  # matplotlib otherwise stamps its version in the file
DPI = 100


def save_image_grid(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    per_class: int = 8,
    scale: int = 3,
) -> None:
    """One row per class with its first `per_class` images (uint8 N x H x W x C), upscaled."""
    h, w = images.shape[1:3]
    grid = np.zeros((len(class_names) * h, per_class * w, 3), dtype=np.uint8)
    for row in range(len(class_names)):
        for col, idx in enumerate(np.flatnonzero(labels == row)[:per_class]):
            img = images[idx]
            grid[row * h : (row + 1) * h, col * w : (col + 1) * w] = (
                np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
            )
    out = Image.fromarray(grid, "RGB")
    out = out.resize((out.width * scale, out.height * scale), Image.Resampling.NEAREST)
    out.save(path, format="PNG")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    _pyplot().close(fig)


def plot_history(history: list[dict], path: str | Path) -> None:
    """Loss (train, validation) and validation accuracy per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(title="Loss", xlabel="epoch", ylabel="log loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_acc"] for h in history], "o-", color="tab:green")
    ax2.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    fig.tight_layout()
    _save(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """Counts, rows = true class, columns = predicted class."""
    plt = _pyplot()
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 1.0 + 0.6 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    top = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                int(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if cm[i, j] > top / 2 else "black",
            )
    fig.tight_layout()
    _save(fig, path)


def plot_predictions(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    count: int = 20,
) -> None:
    """A grid of test images titled 'predicted (true)', wrong ones in red, every class shown."""
    plt = _pyplot()
    picks = _preview_indices(y_true, count)
    images, y_true, y_pred = images[picks], y_true[picks], y_pred[picks]
    count = len(picks)
    cols = 5
    rows = max(1, -(-count // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows))
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if k >= count:
            continue
        img = images[k]
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ok = y_true[k] == y_pred[k]
        ax.set_title(
            f"{class_names[y_pred[k]]}\n({class_names[y_true[k]]})",
            fontsize=9,
            color="black" if ok else "red",
        )
    fig.tight_layout()
    _save(fig, path)


def _preview_indices(y_true: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` test images taken from each class in turn (the test set is sorted by
    class, so its first images would all be of one class)."""
    by_class = [np.flatnonzero(y_true == label) for label in np.unique(y_true)]
    picks: list[int] = []
    for rank in range(max((len(ix) for ix in by_class), default=0)):
        picks += [int(ix[rank]) for ix in by_class if rank < len(ix)]
    return picks[:count]
