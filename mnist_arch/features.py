"""What one recorded forward pass shows, for the engine (`checks`) to judge: which required features ran (batch
norm and dropout from the calls, `gap` and `fc` from the classifier head, `head`), what came close to one that
did not, what produced the output, and which convolutions go into no batch norm.

Presence is judged by what runs, recorded with a `TorchFunctionMode` (`trace.record_calls`): functional calls
(`F.dropout`, `F.batch_norm`, `x.mean((2, 3))`) count as well as modules (see `checks` for why the recording
is at the function level).
"""

from __future__ import annotations

from typing import Any

from mnist_arch.check_messages import FEATURE_WORDS, MESSAGES
from mnist_arch.head import HEAD_FEATURES, Head, judge_head
from mnist_arch.spec import FEATURES
from mnist_arch.trace import CONV_CALLS, Call, first_tensor

_DROPOUT_CALLS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                  "feature_alpha_dropout", "feature_dropout"}


def _is_dropout(call: Call) -> bool:
    if call.name not in _DROPOUT_CALLS:
        return False
    p = call.arg(1, "p", 0.5)
    training = call.arg(2, "training", call.kwargs.get("train", True))
    return bool(training) and isinstance(p, (int, float)) and p > 0


_FEATURE_TESTS = {
    "batchnorm": lambda c: c.name == "batch_norm",
    "dropout": _is_dropout,
}

_OTHER_NORMS = {"group_norm", "instance_norm", "layer_norm", "local_response_norm", "rms_norm", "normalize"}


def near_miss(feature: str, calls: list[Call]) -> str:
    """'; the closest that ran: ...' for a required batchnorm or dropout that is missing, naming what did run
    and why it does not count ('' when nothing came close). `gap` and `fc` say what the head does instead
    (`mnist_arch.head`)."""
    misses: list[str] = []
    for call in calls:
        if feature == "dropout" and call.name in _DROPOUT_CALLS and not _is_dropout(call):
            misses.append(MESSAGES["require+near_miss.dropout"].format(call=call.name, p=call.arg(1, "p", 0.5))
                          + ("" if call.arg(2, "training", True) else MESSAGES["require+near_miss.eval"]))
        elif feature == "batchnorm" and call.name in _OTHER_NORMS:
            misses.append(MESSAGES["require+near_miss.batchnorm"].format(call=call.name))
    unique = list(dict.fromkeys(misses))
    return MESSAGES["require+near_miss"].format(misses="; ".join(unique[:3])) if unique else ""


def features_present(calls: list[Call], out: Any = None, head: Head | None = None) -> dict[str, list[str]]:
    """For each feature, the calls that showed it, e.g. {'dropout': ['dropout2d(p=0.15)']}; `gap` and `fc`
    from the head of the pass that returned `out` (`mnist_arch.head`)."""
    found: dict[str, list[str]] = {f: [] for f in FEATURES}
    for call in calls:
        for feature, test in _FEATURE_TESTS.items():
            if test(call):
                detail = f"(p={call.arg(1, 'p', 0.5)})" if feature == "dropout" else ""
                found[feature].append(call.name + detail)
    found.update((head or judge_head(calls, out)).found)
    return found


def said(feature: str, calls: list[Call], head: Head) -> str:
    """What the pass shows about a required feature, in words: why it holds or why not."""
    if feature in HEAD_FEATURES:
        return head.said[feature]
    return MESSAGES["require.absent"].format(words=FEATURE_WORDS[feature], near_miss=near_miss(feature, calls))


def final_activation(calls: list[Call], out: Any) -> str:
    """'softmax', 'log_softmax' or 'logits': what produced the tensor the model returned."""
    target = first_tensor(out)
    for call in reversed(calls):
        if first_tensor(call.out) is target:
            return call.name if call.name in ("softmax", "log_softmax") else "logits"
    return "logits"


def convs_without_batchnorm(calls: list[Call]) -> int:
    """How many conv calls' outputs go into no batch_norm call."""
    normalised = {id(c.input) for c in calls if c.name == "batch_norm"}
    return sum(1 for c in calls if c.name in CONV_CALLS and id(c.out) not in normalised)


def summarise(items: list[str]) -> str:
    """'dropout2d(p=0.1) x2, dropout(p=0.5)': each item once, with how many times it ran."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())
