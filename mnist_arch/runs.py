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
    device: str = "cpu"  # "cpu" | "cuda"
    precision: str = "fp32"  # what it trained at here (mnist_arch.train.fit_recipe), not always the declared one
    setting: str = ""  # that choice in words, for every report
    min_accuracy: float | None = None  # the threshold of the recipe as it ran
    test_predictions: torch.Tensor | None = None  # for plots; not serialised

    @property
    def passed(self) -> bool:
        """What a passing training run is, for every face: the threshold reached and no collapse."""
        return self.min_accuracy is not None and self.test_accuracy >= self.min_accuracy and self.collapsed is None

    def verdict(self) -> str:
        """The run in one line: accuracy, threshold, where and at what it ran, and a collapse."""
        threshold = "no threshold" if self.min_accuracy is None else f"threshold {self.min_accuracy:.2%}"
        where = f"{self.threads} thread(s)" if self.device == "cpu" else self.device
        return (f"test accuracy {self.test_accuracy:.2%} after {self.epochs} epoch(s) in {self.seconds:.1f}s; "
                f"{threshold}; on {self.device}, {self.setting or self.precision}, {where}"
                + (f"; collapsed: {self.collapsed['share']:.1%} of the test predictions are class "
                   f"{self.collapsed['class']} (an MNIST class is about 10%)" if self.collapsed else ""))

    def to_dict(self) -> dict:
        return {"model": self.model, "recipe": self.recipe, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "test_accuracy": self.test_accuracy,
                "history": [asdict(e) for e in self.history], "collapsed": self.collapsed,
                "threads": self.threads, "device": self.device, "precision": self.precision,
                "setting": self.setting, "min_accuracy": self.min_accuracy, "passed": self.passed}


def runs_table(results: list[TrainResult], seeds: list[int], recipe: Recipe) -> str:
    """Markdown table of several seeds' runs against the recipe's threshold: the docs' tables of runs."""
    lines = ["| seed | test accuracy | epochs | seconds | device | precision | threads | collapsed |",
             "| ---: | ---: | ---: | ---: | --- | --- | ---: | --- |"]
    for seed, r in zip(seeds, results, strict=True):
        collapsed = f"class {r.collapsed['class']} ({r.collapsed['share']:.0%})" if r.collapsed else "-"
        threads = r.threads or "-"
        lines.append(f"| {seed} | {r.test_accuracy:.2%} | {r.epochs} | {r.seconds:.1f} | {r.device} | {r.precision} | "
                     f"{threads} | {collapsed} |")
    accuracies = [r.test_accuracy for r in results]
    worst = min(accuracies)
    threshold = results[0].min_accuracy if results[0].min_accuracy is not None else recipe.min_accuracy
    margin = (worst - threshold) * 100
    lines += ["", f"{results[0].model} `{results[0].recipe}` ({results[0].setting or results[0].precision}): worst "
              f"{worst:.2%}, mean {sum(accuracies) / len(accuracies):.2%}, best {max(accuracies):.2%} over "
              f"{len(results)} seeds; the rule gives {rule_threshold(accuracies):.1%}; declared threshold "
              f"{threshold:.2%} ({abs(margin):.2f} points {'below' if margin >= 0 else 'above'} the worst seed)."]
    return "\n".join(lines)


def rule_threshold(accuracies: list[float]) -> float:
    """The threshold rule (docs/training.md#how-a-threshold-is-set): the worst seed minus the spread
    between the best and the worst seed, at least 0.1 point, rounded down to 0.1 point. For runs that
    scatter normally, five seeds' worst lies about 1.2 standard deviations below their mean and their
    spread is about 2.3 deviations, so the threshold sits about 3.5 deviations below the mean: about
    one run in 4,000 would fall under it."""
    worst, spread = min(accuracies), max(accuracies) - min(accuracies)
    return math.floor((worst - max(0.001, spread)) * 1000 + 1e-6) / 1000
