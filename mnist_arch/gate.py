"""The pull-request gate's judgement (docs/gate.md): what a change did to each check of each declared model,
base against head. It fails on a check that fails at the head and did not at the base (or on a model new at the
head), on a check failing on both sides that got worse, and on a rule change (a model removed, a rule dropped or a
budget loosened in the head's table) unless rule changes are allowed. A check failing on both sides and no worse
is "still failing". Plain data in, plain data out: `mnist_arch.diff` pairs the models, this module judges them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnist_arch.diff import ModelDiff

#: Limits a measured number must stay at or under (`params.below`: under), and at or over: a failing one is
#: worse when it is further past its limit; a rule change when the head's limit is looser.
AT_MOST = ("params.max", "params.below", "mult_adds.max")
AT_LEAST = ("receptive_field.min",)
#: Declared exact numbers: a failing one is worse when it is further off (a new exact value is no rule change:
#: it is how a deliberate change of the model is declared).
EXACT = ("params.exact", "mult_adds.exact")
#: The head side's name in every message and rendering.
HEAD_LABEL = "working tree"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_rule(check_id: str) -> bool:
    """A check that runs because the table declares it, so that its absence at the head means the rule was
    dropped; `params.stable` and the lints show up only when the model does something."""
    return check_id != "params.stable" and not check_id.startswith("lint.")


def shortfall(check: dict[str, Any]) -> float | None:
    """How far a failing check is from passing, where that is a number: past its limit (AT_MOST, AT_LEAST),
    off its value (EXACT), convolutions without batch norm (`batchnorm_after_every_conv`). None where it is
    not a number (a required feature ran or did not; a shape; an unknown count)."""
    check_id, measured, expected = check.get("id"), check.get("measured"), check.get("expected")
    if check_id == "batchnorm_after_every_conv" and isinstance(measured, str):
        normalised, _, convs = measured.partition("/")
        return int(convs) - int(normalised) if normalised.isdigit() and convs.isdigit() else None
    if not (_number(measured) and _number(expected)):
        return None
    if check_id in AT_MOST:
        return measured - expected
    if check_id in AT_LEAST:
        return expected - measured
    if check_id in EXACT:
        return abs(measured - expected)
    return None


def _looser(check_id: str, base: Any, head: Any) -> bool:
    if not (_number(base) and _number(head)):
        return False
    return head > base if check_id in AT_MOST else head < base if check_id in AT_LEAST else False



def _finding(model: str, check: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A check as the gate lists it: its model, id, measured, expected and message (the head's), and the base's
    measured, expected and message under `base` where both sides failed."""
    finding = {"model": model, **{k: check.get(k) for k in ("id", "measured", "expected", "message")}}
    return finding if base is None else {**finding, "base": base}


def shown(value: Any) -> str:
    """A measured or expected value as text: counts with thousands separators, shapes as JSON."""
    if value is None:
        return "unknown"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class Gate:
    """What the change did to the checks; every entry names its model and check (`id`, `measured`,
    `expected`, `message`: the head's, with the base's under `base` where both sides failed)."""

    newly_failing: list[dict[str, Any]]  # fails at the head; passed, or did not run, at the base
    worse: list[dict[str, Any]]  # fails on both sides, further from passing at the head (`shortfall`)
    still_failing: list[dict[str, Any]]  # fails on both sides, no worse
    fixed: list[dict[str, Any]]  # failed at the base, passes at the head
    rule_changes: list[dict[str, Any]]  # a model removed, a rule dropped or a limit loosened at the head


def judge_gate(models: list[ModelDiff], ref: str) -> Gate:
    """Sort every failing check of the head, and every rule of the base the head no longer holds."""
    gate = Gate([], [], [], [], [])
    for m in models:
        if m.head is None:
            count = len((m.base or {}).get("checks", []))
            gate.rule_changes.append({"model": m.name, "change": "model removed", "id": None, "base": None,
                                      "head": None, "message": f"{m.name} is declared at {ref} and not in the "
                                      f"{HEAD_LABEL}: its {count} checks no longer run"})
            continue
        base = {c.get("id"): c for c in (m.base or {}).get("checks", [])}
        head = {c.get("id"): c for c in m.head.get("checks", [])}
        for check_id, check in head.items():
            was = base.get(check_id)
            if check.get("passed"):
                if was is not None and not was.get("passed") and check.get("warning"):  # lint_errors no longer names it
                    gate.rule_changes.append({
                        "model": m.name, "change": "error made a warning", "id": check_id, "base": "error",
                        "head": "warning", "message": f"{check_id} fails as an error at {ref} and is only a warning "
                                                     f"in the {HEAD_LABEL} (lint_errors)"})
                elif was is not None and not was.get("passed"):
                    gate.fixed.append(_finding(m.name, check))
            elif was is None or was.get("passed"):
                gate.newly_failing.append(_finding(m.name, check))
            else:
                before, now = shortfall(was), shortfall(check)
                worse = before is not None and now is not None and now > before
                (gate.worse if worse else gate.still_failing).append(_finding(
                    m.name, check, base={k: was.get(k) for k in ("measured", "expected", "message")}))
        for check_id, was in base.items():
            expected = was.get("expected")
            if check_id not in head and _is_rule(check_id):
                gate.rule_changes.append({
                    "model": m.name, "change": "rule dropped", "id": check_id, "base": expected, "head": None,
                    "message": f"{check_id} (expected {shown(expected)}) is checked at {ref} and not in the "
                               f"{HEAD_LABEL}"})
            elif check_id in head and _looser(check_id, expected, head[check_id].get("expected")):
                now = head[check_id].get("expected")
                gate.rule_changes.append({
                    "model": m.name, "change": "limit loosened", "id": check_id, "base": expected, "head": now,
                    "message": f"{check_id}: the limit is {shown(expected)} at {ref} and {shown(now)} in the "
                               f"{HEAD_LABEL}"})
    return gate

