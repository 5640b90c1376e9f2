"""What a training run leaves behind (the records that cross the worker's pipe) and the docs' tables of
several seeds' runs with the threshold rule. No torch here: the command line's own process never imports it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from mnist_arch.spec import Recipe


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
    threads: int = 0  # CPU threads the run used (0 on a GPU)
    test_predictions: torch.Tensor | None = None  # for plots; not serialised

    def to_dict(self) -> dict:
        return {"model": self.model, "recipe": self.recipe, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "test_accuracy": self.test_accuracy,
                "history": [asdict(e) for e in self.history], "collapsed": self.collapsed,
                "threads": self.threads}


def runs_table(results: list[TrainResult], seeds: list[int], recipe: Recipe) -> str:
    """Markdown table of several seeds' runs against the recipe's threshold: the docs' tables of runs."""
    lines = ["| seed | test accuracy | epochs | seconds | threads | collapsed |",
             "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for seed, r in zip(seeds, results, strict=True):
        collapsed = f"class {r.collapsed['class']} ({r.collapsed['share']:.0%})" if r.collapsed else "-"
        threads = r.threads or "GPU"
        lines.append(f"| {seed} | {r.test_accuracy:.2%} | {r.epochs} | {r.seconds:.1f} | {threads} | {collapsed} |")
    accuracies = [r.test_accuracy for r in results]
    worst = min(accuracies)
    lines += ["", f"{results[0].model} `{results[0].recipe}`: worst {worst:.2%}, mean "
              f"{sum(accuracies) / len(accuracies):.2%}, best {max(accuracies):.2%} over {len(results)} seeds; "
              f"the rule gives {rule_threshold(accuracies):.1%}; declared threshold {recipe.min_accuracy:.2%} "
              f"({(worst - recipe.min_accuracy) * 100:+.2f} points below the worst seed)."]
    return "\n".join(lines)


def rule_threshold(accuracies: list[float]) -> float:
    """The threshold rule (docs/training.md#how-a-threshold-is-set): the worst seed minus the spread
    between the best and the worst seed, at least 0.1 point, rounded down to 0.1 point. For runs that
    scatter normally, five seeds' worst lies about 1.2 standard deviations below their mean and their
    spread is about 2.3 deviations, so the threshold sits about 3.5 deviations below the mean: about
    one run in 4,000 would fall under it."""
    worst, spread = min(accuracies), max(accuracies) - min(accuracies)
    return math.floor((worst - max(0.001, spread)) * 1000 + 1e-6) / 1000
