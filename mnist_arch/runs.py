"""What a training run leaves behind (the records that cross the worker's pipe) and the docs' tables of
several seeds' runs with the threshold rule. No torch here: the command line's own process never imports it."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
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
    collapsed: dict | None = None  # the epoch's test predictions collapsed onto one class (`train.detect_collapse`)


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
    seed: int = 0
    consecutive: int | None = None  # the rule tier's (Recipe.consecutive); None: judged on the last epoch
    max_epochs: int = 0  # the epochs the run could take: the rule's "within N"
    loss: str = ""  # the loss it trained with (the declared one, or the one its output called for)

    @property
    def rule(self) -> dict | None:
        """The rule the run was judged by (the rule tier), as the JSON report and the job's chart read it."""
        if self.consecutive is None:
            return None
        return {"threshold": self.min_accuracy, "epochs": self.max_epochs, "consecutive": self.consecutive}

    def judged(self) -> RuleVerdict | None:
        """The rule tier's verdict on this run (`judge_rule`); None for a run judged on its last epoch."""
        if self.consecutive is None or self.min_accuracy is None:
            return None
        return judge_rule(self.history, self.min_accuracy, self.max_epochs, self.consecutive, self.collapsed)

    @property
    def passed(self) -> bool:
        """What a passing training run is, for every face: the threshold reached and no collapse (for the rule
        tier: `judge_rule`)."""
        judged = self.judged()
        if judged is not None:
            return judged.passed
        return self.min_accuracy is not None and self.test_accuracy >= self.min_accuracy and self.collapsed is None

    def verdict(self) -> str:
        """The run in one line: accuracy, threshold, where and at what it ran, and a collapse."""
        judged = self.judged()
        where = f"{self.threads} thread(s)" if self.device == "cpu" else self.device
        if judged is not None:
            return (f"rule: {self.min_accuracy:.2%} in {self.consecutive} epoch(s) in a row within {self.max_epochs}, "
                    f"seed {self.seed}: {judged.reason}; {self.epochs} epoch(s) in {self.seconds:.1f}s on "
                    f"{self.device}, {self.setting or self.precision}, {where}")
        threshold = "no threshold" if self.min_accuracy is None else f"threshold {self.min_accuracy:.2%}"
        return (f"test accuracy {self.test_accuracy:.2%} after {self.epochs} epoch(s) in {self.seconds:.1f}s; "
                f"{threshold}; on {self.device}, {self.setting or self.precision}, {where}"
                + (f"; collapsed: {self.collapsed['share']:.1%} of the test predictions are class "
                   f"{self.collapsed['class']} (an MNIST class is about 10%)" if self.collapsed else ""))

    def to_dict(self) -> dict:
        return {"model": self.model, "recipe": self.recipe, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "test_accuracy": self.test_accuracy,
                "history": [asdict(e) for e in self.history], "collapsed": self.collapsed,
                "threads": self.threads, "device": self.device, "precision": self.precision,
                "setting": self.setting, "min_accuracy": self.min_accuracy, "passed": self.passed, "seed": self.seed,
                **self._rule_dict()}

    def _rule_dict(self) -> dict:
        judged = self.judged()
        if judged is None:
            return {}
        return {"rule": self.rule, "reason": judged.reason, "held": list(judged.held)}


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


# ---------------------------------------------------------------------------------------------
# The rule tier (docs/rule.md): a threshold held for K epochs in a row within N


@dataclass(frozen=True)
class RuleVerdict:
    """A rule run's verdict: `settled` once more epochs cannot change it (the trainer stops there)."""

    passed: bool
    settled: bool
    reason: str
    held: tuple[int, ...] = ()  # the epochs that held the threshold in a row, when it passed


def _collapse_words(collapsed: dict) -> str:
    return (f"collapsed: {collapsed['share']:.1%} of the test predictions are class {collapsed['class']} "
            "(an MNIST class is about 10%)")


def in_a_row(held: Iterable[bool]) -> list[int]:
    """For each epoch in order, how many epochs in a row up to and including it held the threshold (0 where it
    missed): the one count behind the rule's verdict, the epoch lines, the tables, tune and the chart."""
    counts: list[int] = []
    for ok in held:
        counts.append(counts[-1] + 1 if ok and counts else 1 if ok else 0)
    return counts


def judge_rule(history: Sequence[Epoch], threshold: float, epochs: int, consecutive: int,
               collapsed: dict | None = None) -> RuleVerdict:
    """The rule on a run's epochs so far: it passes as soon as `consecutive` epochs in a row reach `threshold`
    (test accuracy on all 10,000 test images) within the first `epochs`; it fails as soon as that can no
    longer happen in the epochs left, when a loss is not a number (NaN or infinite: the weights are lost),
    or when the run's last predictions collapsed onto one class (`collapsed`, from the trainer). Until then it
    is not settled. Pure: the trainer calls it after every epoch to know when to stop, every report to say why."""
    for e in history:
        if not (math.isfinite(e.train_loss) and math.isfinite(e.test_loss)):
            return RuleVerdict(False, True, f"the loss is not a number in epoch {e.epoch} (train loss {e.train_loss}, "
                                            f"test loss {e.test_loss}): the weights are lost, no later epoch can "
                                            "recover; a lower lr (or gradient clipping in the model) is the usual fix")
    judged = history[:epochs]
    counts = in_a_row(e.test_accuracy >= threshold for e in judged)
    if consecutive in counts:
        end = counts.index(consecutive) + 1
        streak = [e.epoch for e in judged[end - consecutive : end]]
        if collapsed:
            return RuleVerdict(False, True, _collapse_words(collapsed))
        accuracies = ", ".join(f"{x.test_accuracy:.2%}" for x in history if x.epoch in streak)
        span = f"epoch {streak[0]}" if consecutive == 1 else f"epochs {streak[0]}-{streak[-1]}"
        return RuleVerdict(True, True, f"passed: {span} reached {threshold:.2%} ({accuracies})", tuple(streak))
    ran, now = len(judged), (counts or [0])[-1]
    if now + epochs - ran >= consecutive:
        return RuleVerdict(False, False, f"running: {ran} of at most {epochs} epochs, {now} of "
                                         f"{consecutive} in a row at {threshold:.2%} so far")
    if collapsed:
        return RuleVerdict(False, True, _collapse_words(collapsed))
    reached = [e.epoch for e in history[:epochs] if e.test_accuracy >= threshold]
    best = max(history[:epochs], key=lambda e: e.test_accuracy, default=None)
    if best is None:
        return RuleVerdict(False, True, "failed: no epoch ran")
    stopped = (f"; stopped after epoch {ran}: {consecutive} in a row no longer fit in {epochs}" if ran < epochs
               else "")
    where = (f"reached in epoch(s) {', '.join(map(str, reached))} but never {consecutive} in a row" if reached
             else "never reached")
    return RuleVerdict(False, True, f"failed: {threshold:.2%} {where}; best {best.test_accuracy:.2%} in epoch "
                                    f"{best.epoch}{stopped}")


def duration(seconds: float) -> str:
    """Seconds in words a log reader takes in at a glance: 42 s, 3 min 05 s, 1 h 07 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02} min"


@dataclass(frozen=True)
class Estimate:
    """What a run will take, from its own first steps (`mnist_arch.train`): said before the bulk of it trains."""

    epochs: int
    steps_per_epoch: int
    step_seconds: float  # one training step, measured
    eval_seconds: float  # one evaluation of the whole test set, from one timed batch of it
    hardware: str  # "this CPU (AVX2)", "this GPU (...)"
    threads: int  # 0 on a GPU
    precision: str
    runs: int = 1  # runs of the same length, one after the other (seeds), that the estimate covers
    at_most: bool = False  # a rule run stops once its verdict is settled
    at_once: int = 1  # of those runs, how many run side by side (`jobs.train_runs`)

    @property
    def seconds(self) -> float:
        rounds = -(-self.runs // self.at_once)
        return rounds * self.epochs * (self.steps_per_epoch * self.step_seconds + self.eval_seconds)

    def line(self, name: str) -> str:
        runs = f"{self.runs} runs of {self.epochs}" if self.runs > 1 else f"{self.epochs}"
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        threads += f" each, {self.at_once} runs at once" if self.at_once > 1 else ""
        return (f"{name}: {runs} epoch{'s' if self.epochs != 1 else ''}, {'at most ' if self.at_most else ''}about "
                f"{duration(self.seconds)} on {self.hardware}{threads}, {self.precision} (estimate: "
                f"{self.step_seconds:.3f} s a step x {self.steps_per_epoch} steps + {self.eval_seconds:.1f} s of "
                "test evaluation an epoch)")


def epoch_line(name: str, history: Sequence[Epoch], epochs: int, threshold: float | None = None,
               consecutive: int | None = None) -> str:
    """The line a run prints as each epoch ends: accuracy, loss, elapsed, time left (and, for the rule tier,
    whether the epoch held the threshold)."""
    e = history[-1]
    elapsed = sum(x.seconds for x in history)
    left = elapsed / len(history) * max(0, epochs - len(history))
    line = (f"{name} epoch {e.epoch:3}  train loss {e.train_loss:.4f}  acc {e.train_accuracy:.2%}  test loss "
            f"{e.test_loss:.4f}  acc {e.test_accuracy:.2%}  lr {e.lr:.5f}  {e.seconds:.1f}s  elapsed "
            f"{duration(elapsed)}, {'at most ' if consecutive else ''}about {duration(left)} left")
    if consecutive is not None and threshold is not None:
        streak = in_a_row(x.test_accuracy >= threshold for x in history)[-1]
        line += f"  {'held' if streak else 'below'} {threshold:.2%} ({streak}/{consecutive} in a row)"
    return line


def rule_table(result: TrainResult) -> str:
    """A rule run as markdown: one row per epoch (which of them held the threshold), then the verdict."""
    judged = result.judged()
    assert judged is not None and result.min_accuracy is not None and result.consecutive is not None
    lines = ["| epoch | test accuracy | train loss | held? | seconds |", "| ---: | ---: | ---: | --- | ---: |"]
    counts = in_a_row(e.test_accuracy >= result.min_accuracy for e in result.history)
    for e, streak in zip(result.history, counts, strict=True):
        held = f"yes ({min(streak, result.consecutive)}/{result.consecutive})" if streak else "no"
        lines.append(f"| {e.epoch} | {e.test_accuracy:.2%} | {e.train_loss:.4f} | {held} | {e.seconds:.1f} |")
    lines += ["", f"**{'PASS' if result.passed else 'FAIL'}**: {result.model} {result.verdict()}."]
    return "\n".join(lines)


def available_cores() -> int:
    """The cores this process may train on: its CPU affinity, shared out among pytest-xdist workers, capped
    by OMP_NUM_THREADS where set (`machine.choose_threads` rule 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    available = cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        available = min(available, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, available)
