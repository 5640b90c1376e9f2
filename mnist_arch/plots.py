"""PNG figures of a training run (matplotlib, no display needed): curves, confusion matrix, predictions."""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_arch.runs import TrainResult


def save_plots(result: TrainResult, test_images: torch.Tensor, test_labels: torch.Tensor,
               out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; works on CI machines without a display
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = [e.epoch for e in result.history]
    written = []

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [e.train_loss for e in result.history], "o-", label="train")
    ax_loss.plot(epochs, [e.test_loss for e in result.history], "o-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{result.model}: loss")
    ax_acc.plot(epochs, [100 * e.train_accuracy for e in result.history], "o-", label="train")
    ax_acc.plot(epochs, [100 * e.test_accuracy for e in result.history], "o-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{result.model}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    written.append(out / "curves.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    predictions, labels = result.test_predictions.cpu(), test_labels.cpu()
    k = int(labels.max()) + 1
    confusion = torch.bincount(labels * k + predictions, minlength=k * k).reshape(k, k)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(confusion.float().log1p().numpy(), cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if i == j else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(k), yticks=range(k),
           title=f"{result.model}: confusion ({100 * result.test_accuracy:.2f}% correct)")
    fig.tight_layout()
    written.append(out / "confusion.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    # The first 24 test images, then up to 24 mistakes (marked in red).
    mistakes = (predictions != labels).nonzero().flatten()[:24].tolist()
    shown = list(range(24)) + mistakes
    fig, axes = plt.subplots(6, 8, figsize=(10, 8))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown, strict=False):
        wrong = bool(predictions[i] != labels[i])
        ax.imshow(test_images[i].cpu().numpy(), cmap="gray")
        ax.set_title(f"{int(predictions[i])}" + (f" (true {int(labels[i])})" if wrong else ""),
                     color="red" if wrong else "black", fontsize=8)
    fig.suptitle(f"{result.model}: predictions; red = mistakes ({len(mistakes)} shown of "
                 f"{int((predictions != labels).sum())})")
    fig.tight_layout()
    written.append(out / "predictions.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written
