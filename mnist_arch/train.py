"""One training loop for every recipe: data on the device, augmentation per batch, history per epoch.

The whole dataset lives on the training device as uint8 tensors (see `mnist_arch.data`); a batch is an
index into it, converted, augmented and normalised on the device. There is no DataLoader and no
per-sample Python, which is where the reference repositories spend most of their time on a CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from mnist_arch.data import MNIST, normalize, random_affine
from mnist_arch.errors import MnistArchError
from mnist_arch.spec import Recipe

#: A prediction share above this on one class is reported as a collapse. A trained MNIST classifier
#: puts 9-12% of the test set on each class; an untrained or collapsed one puts most on one.
COLLAPSE_SHARE = 0.5


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    model: str
    recipe: str
    epochs: int
    seconds: float
    test_accuracy: float
    history: list[Epoch] = field(default_factory=list)
    collapsed: dict | None = None
    test_predictions: torch.Tensor | None = None  # for plots; not serialised

    def to_dict(self) -> dict:
        return {"model": self.model, "recipe": self.recipe, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "test_accuracy": self.test_accuracy,
                "history": [asdict(e) for e in self.history], "collapsed": self.collapsed}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU. Asking for CUDA without it is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MnistArchError(f"Unknown device {device!r}; use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MnistArchError(
            f"Device {device!r} was asked for, but this PyTorch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu, or --device auto to take CUDA only where it exists."
        )
    if dev.type not in ("cpu", "cuda"):
        raise MnistArchError(f"Device {device!r} is not supported; use auto, cpu or cuda.")
    return dev


def detect_collapse(predictions: torch.Tensor, num_classes: int = 10) -> dict | None:
    """{'class': k, 'share': s} when more than COLLAPSE_SHARE of the predictions are class k."""
    counts = torch.bincount(predictions.flatten().cpu(), minlength=num_classes)
    share, cls = (counts.max().item() / max(1, predictions.numel())), int(counts.argmax())
    return {"class": cls, "share": round(share, 4)} if share > COLLAPSE_SHARE else None


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "adagrad": torch.optim.Adagrad}


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer not in OPTIMIZERS:
        raise MnistArchError(f"Recipe optimizer {recipe.optimizer!r} is not one of {', '.join(OPTIMIZERS)}.")
    return OPTIMIZERS[recipe.optimizer](model.parameters(), lr=recipe.lr, **recipe.optimizer_kwargs)


def _scheduler(optimizer, recipe: Recipe, epochs: int, steps_per_epoch: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **recipe.schedule_kwargs)
    if recipe.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **recipe.schedule_kwargs)
    if recipe.schedule is None:
        return None
    raise MnistArchError(f"Recipe schedule {recipe.schedule!r} is not onecycle, plateau or none.")


def compute_loss(recipe: Recipe, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    output = output.float()
    if recipe.loss == "cross_entropy":
        return F.cross_entropy(output, target, label_smoothing=recipe.label_smoothing)
    if recipe.loss == "nll":
        return F.nll_loss(output, target)
    raise MnistArchError(f"Recipe loss {recipe.loss!r} is not cross_entropy or nll.")


def _autocast(recipe: Recipe, device: torch.device):
    enabled = recipe.precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _inputs(images_u8: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    mean, std = recipe.normalize or (0.0, 1.0)
    return normalize(images_u8, mean, std).unsqueeze(1)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe,
             batch_size: int = 1000) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predictions) on uint8 images, in eval mode, at the recipe's precision
    (a bf16 recipe is judged as it runs, under bf16 autocast)."""
    model.eval()
    device = images.device
    total_loss, predictions = 0.0, []
    for i in range(0, len(images), batch_size):
        with _autocast(recipe, device):
            out = model(_inputs(images[i : i + batch_size], recipe))
        total_loss += compute_loss(recipe, out, labels[i : i + batch_size]).item() * len(out)
        predictions.append(out.argmax(1))
    predictions = torch.cat(predictions)
    return total_loss / len(images), (predictions == labels).float().mean().item(), predictions


def train_model(model: nn.Module, recipe: Recipe, data: MNIST, *, name: str = "model", recipe_name: str = "",
                epochs: int | None = None, seed: int = 0, device: str | torch.device = "cpu",
                time_budget: float | None = None, progress: bool = True) -> TrainResult:
    """Train `model` with `recipe` on `data` (already on `device`) and evaluate on the test set.

    `seed` fixes shuffling, augmentation and dropout. For a repeatable run, also seed before building
    the model (`torch.manual_seed(seed)`), as `mnist-arch train` does, so the initial weights repeat.
    """
    device = torch.device(device)
    epochs = epochs or recipe.epochs
    torch.manual_seed(seed)  # the model's own randomness (dropout masks)
    generator = torch.Generator(device=device).manual_seed(seed)  # shuffling and augmentation

    model = model.to(device)
    train_x, train_y = data.train_images, data.train_labels
    if recipe.train_subset:
        train_x, train_y = train_x[: recipe.train_subset], train_y[: recipe.train_subset]
    steps_per_epoch = math.ceil(len(train_x) / recipe.batch_size)
    optimizer = make_optimizer(model, recipe)
    scheduler = _scheduler(optimizer, recipe, epochs, steps_per_epoch)
    fill = -recipe.normalize[0] / recipe.normalize[1] if recipe.normalize else 0.0

    result = TrainResult(name, recipe_name, 0, 0.0, 0.0)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x), generator=generator, device=device)
        # Sums stay on the device so the loop never waits for it; read once per epoch.
        seen, correct, loss_sum = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} {epoch}/{epochs}", disable=not progress, leave=False)
        for step in bar:
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x, y = _inputs(train_x[idx], recipe), train_y[idx]
            if recipe.augment is not None:
                x = random_affine(x, recipe.augment, generator, fill=fill)
            with _autocast(recipe, device):
                out = model(x)
            loss = compute_loss(recipe, out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
                scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{correct.item() / seen:.2%}",
                                lr=f"{optimizer.param_groups[0]['lr']:.5f}")
            if time_budget is not None and time.perf_counter() - start > time_budget:
                break
        test_loss, test_acc, predictions = evaluate(model, data.test_images, data.test_labels, recipe)
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(test_loss)
        result.history.append(Epoch(epoch, loss_sum.item() / seen, correct.item() / seen, test_loss,
                                    test_acc, lr, time.perf_counter() - epoch_start))
        if progress:
            tqdm.write(f"{name} epoch {epoch}/{epochs}: train loss {result.history[-1].train_loss:.4f}, "
                       f"test loss {test_loss:.4f}, test accuracy {test_acc:.2%}, lr {lr:.5f}")
        result.epochs, result.test_accuracy, result.test_predictions = epoch, test_acc, predictions
        if time_budget is not None and time.perf_counter() - start > time_budget:
            break
    result.seconds = time.perf_counter() - start
    result.collapsed = detect_collapse(result.test_predictions, int(data.test_labels.max()) + 1)
    return result


def _plain(value):
    """Spec/recipe values as lists, dicts and scalars, so a checkpoint loads with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    return value


def save_checkpoint(path, model: nn.Module, spec, result: TrainResult) -> None:
    """Weights, the declared spec and the run's metrics in one file."""
    torch.save({"model": result.model, "recipe": result.recipe, "state_dict": model.state_dict(),
                "spec": _plain(spec), "metrics": result.to_dict()}, path)


def load_checkpoint(path) -> dict:
    """The dict `save_checkpoint` wrote, read with weights_only=True (no code runs while loading)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MnistArchError(f"Checkpoint {path} does not exist.") from None
    except Exception as exc:  # a foreign or truncated file: pickle, zip and torch each raise their own
        raise MnistArchError(f"Checkpoint {path} cannot be read as a mnist-arch checkpoint: "
                             f"{type(exc).__name__}: {exc}".split("\n")[0]) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "model" not in checkpoint:
        raise MnistArchError(f"Checkpoint {path} is not one `mnist-arch train --save` wrote (no model name "
                             "and state_dict).")
    return checkpoint


def runs_table(results: list[TrainResult], seeds: list[int], recipe: Recipe) -> str:
    """Markdown table of several seeds' runs against the recipe's threshold: the docs' tables of runs."""
    lines = ["| seed | test accuracy | epochs | seconds | collapsed |", "| ---: | ---: | ---: | ---: | --- |"]
    for seed, r in zip(seeds, results, strict=True):
        collapsed = f"class {r.collapsed['class']} ({r.collapsed['share']:.0%})" if r.collapsed else "-"
        lines.append(f"| {seed} | {r.test_accuracy:.2%} | {r.epochs} | {r.seconds:.1f} | {collapsed} |")
    accuracies = [r.test_accuracy for r in results]
    worst = min(accuracies)
    lines += ["", f"{results[0].model} `{results[0].recipe}`: worst {worst:.2%}, mean "
              f"{sum(accuracies) / len(accuracies):.2%}, best {max(accuracies):.2%} over {len(results)} seeds; "
              f"the rule gives {rule_threshold(accuracies):.1%}; declared threshold {recipe.min_accuracy:.2%} "
              f"({(worst - recipe.min_accuracy) * 100:+.2f} points below the worst seed)."]
    return "\n".join(lines)


def rule_threshold(accuracies: list[float]) -> float:
    """The quick tier's threshold rule (docs/training.md): the worst seed minus twice the spread between
    the best and the worst seed, at least 0.2 points, rounded down to 0.1 point."""
    worst, spread = min(accuracies), max(accuracies) - min(accuracies)
    return math.floor((worst - max(0.002, 2 * spread)) * 1000 + 1e-6) / 1000
