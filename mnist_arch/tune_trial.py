"""One trial of `mnist-arch tune` (docs/tune.md): its score, why it is pruned at once (a loss that is not a number,
predictions collapsed onto one class). Its worker runs `remote.trial`, which says when the run failed in a way no
recipe can fix. Nothing here imports torch.

The score (`score`, minimised): a trial that meets the rule scores the epoch its K-in-a-row streak ends, minus
the lowest accuracy of that streak (so 9 epochs at 99.45% beat 9 at 99.41%, and any 8 beat any 9); one that
does not scores `epochs + 2` minus the best accuracy it held for K epochs in a row: always worse than a passing
one, and better the closer it came. Fewest epochs first, because the rule says "within N": a recipe that passes
in 9 leaves 6 epochs for an unlucky seed, and costs less to run again."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mnist_arch.runs import Epoch, judge_rule

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Score:
    value: float  # minimised (the module's docstring)
    passed: bool
    epoch: int | None  # the epoch the rule was met in
    held: float  # the best accuracy held for `consecutive` epochs in a row
    reason: str


def score(history: Sequence[Epoch], threshold: float, epochs: int, consecutive: int,
          collapsed: dict | None = None) -> Score:
    """A finished trial's objective value, from its epochs and the rule (`runs.judge_rule`)."""
    verdict = judge_rule(history, threshold, epochs, consecutive, collapsed)
    accuracies = [e.test_accuracy for e in history[:epochs]]
    width = max(1, min(consecutive, len(accuracies)))
    held = max((min(accuracies[i:i + width]) for i in range(len(accuracies) - width + 1)), default=0.0)
    if verdict.passed:
        streak = [e.test_accuracy for e in history if e.epoch in verdict.held]
        return Score(verdict.held[-1] - min(streak), True, verdict.held[-1], min(streak), verdict.reason)
    return Score(epochs + 2 - held, False, None, held, verdict.reason)


def prune_reason(epoch: Epoch) -> str | None:
    """Why a trial stops at once after this epoch, whatever the pruner says: no later epoch can help."""
    if not (math.isfinite(epoch.train_loss) and math.isfinite(epoch.test_loss)):
        return (f"the loss is not a number in epoch {epoch.epoch} (train loss {epoch.train_loss}, test loss "
                f"{epoch.test_loss}): the weights are lost")
    if epoch.collapsed:
        return (f"collapsed in epoch {epoch.epoch}: {epoch.collapsed['share']:.1%} of the test predictions are "
                f"class {epoch.collapsed['class']} (an MNIST class is about 10%)")
    return None



class Pruned(Exception):
    """Raised in the parent, from a trial's epoch note, to stop its worker at once; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
