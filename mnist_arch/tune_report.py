"""What a `mnist-arch tune` study leaves, as a student reads it (docs/tune.md, "The result"): the outcome of its
trials (the best one that met the rule, or why none did: near chance, not met), the best recipe as the rule
table to paste, the trials as a markdown table (and, through `Outcome.to_dict`, JSON), and the verdict line.
Nothing here imports torch, nor Optuna: a trial is whatever Optuna's `FrozenTrial` has."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnist_arch.work import Declared

#: A best accuracy at or below this is "near chance": MNIST's largest class is 11.35% of the test set.
CHANCE = 0.2


@dataclass
class Outcome:
    """What a study leaves: every trial, the best passing one's table, and its seeds' verdicts."""

    model: str
    study: str
    storage: str
    rule: dict[str, Any]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best trial that met the rule (a row of `trials`)
    best_accuracy: float  # the best test accuracy of any trial, pruned ones too
    seeds: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""  # the best recipe as the TOML table to paste
    interrupted: bool = False
    stop: BaseException | None = None  # what interrupted it (Ctrl-C, a stop signal), for the face to end with

    @property
    def near_chance(self) -> bool:
        return bool(self.trials) and self.best_accuracy <= CHANCE

    @property
    def passed(self) -> bool:
        return self.best is not None and not self.near_chance

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "near_chance": self.near_chance, "passed": self.passed}


def outcome_of(trials: list, model: Declared, study: str, where: str, rule: dict[str, Any]) -> Outcome:
    """The outcome of a study's trials (Optuna's frozen trials, in any order), before its seeds run again."""
    rows = [trial_row(t) for t in sorted(trials, key=lambda t: t.number)]
    passed = [r for r in rows if r["passed"] and r["state"] == "COMPLETE"]
    best = min(passed, key=lambda r: r["value"]) if passed else None
    best_accuracy = max((r["best_accuracy"] for r in rows if r["best_accuracy"] is not None), default=0.0)
    # A --model PATH.py:ATTR has no table yet: the name `mnist-arch init` would give it (ATTR in lower case).
    name = model.name.rpartition(":")[2].lower() if model.source.startswith("--model") else model.name
    table = render_table(name, best["table"]) if best else ""
    return Outcome(model.name, study, where, rule, rows, best, best_accuracy, table=table)


def trial_row(t) -> dict[str, Any]:
    """A trial as the trials table and the JSON report show it."""
    accuracies = t.user_attrs.get("accuracies") or []
    finite = [a for a in accuracies if isinstance(a, (int, float)) and math.isfinite(a)]
    return {"number": t.number, "state": t.state.name, "value": t.value,
            "epochs": len(accuracies), "best_accuracy": max(finite) if finite else None,
            "passed": bool(t.user_attrs.get("passed")), "passed_epoch": t.user_attrs.get("passed_epoch"),
            "reason": t.user_attrs.get("reason", ""), "table": t.user_attrs.get("table") or {},
            "seconds": ((t.datetime_complete - t.datetime_start).total_seconds()
                        if t.datetime_start and t.datetime_complete else None)}



def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


_ORDER = ("threshold", "epochs", "consecutive", "seed")


def table_lines(fields: Mapping[str, Any]) -> list[str]:
    keys = [k for k in _ORDER if k in fields] + [k for k in fields if k not in _ORDER]
    return [f"{key} = {toml_value(fields[key])}" for key in keys]


def render_table(name: str, fields: Mapping[str, Any]) -> str:
    """The rule table to paste into pyproject.toml."""
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
    return "\n".join([f"[tool.mnist-arch.models.{key}.rule]", *table_lines(fields)])


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def trials_table(outcome: Outcome) -> str:
    """Markdown: one row per trial, then the verdict."""
    lines = ["| trial | state | epochs | best accuracy | rule met in | optimizer | lr | schedule | batch | rotation | "
             "why |", "| ---: | --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | --- |"]
    for r in outcome.trials:
        t = r["table"]
        best = f"{r['best_accuracy']:.2%}" if r["best_accuracy"] is not None else "-"
        lines.append(f"| {r['number']} | {r['state'].lower()} | {r['epochs']} | {best} | "
                     f"{r['passed_epoch'] or '-'} | {t.get('optimizer', '-')} | {t.get('lr', '-')} | "
                     f"{t.get('schedule', 'none') if t else '-'} | {t.get('batch_size', '-')} | "
                     f"{t.get('rotation', 0) if t else '-'} | {_cell(r['reason'])[:160]} |")
    return "\n".join(lines + ["", verdict(outcome)])


def verdict(outcome: Outcome) -> str:
    rule = outcome.rule
    words = (f"{rule['threshold']:.2%} held for {rule['consecutive']} epoch(s) in a row within {rule['epochs']}")
    finished = sum(r["state"] in ("COMPLETE", "PRUNED") for r in outcome.trials)
    if outcome.near_chance:
        return (f"**NEAR CHANCE**: {outcome.model}: the best of {finished} finished trials reached "
                f"{outcome.best_accuracy:.2%} (chance is about 10%, the largest class 11.35%): the network never "
                "trained under any recipe tried. Check the model (its output, its loss, a frozen or detached "
                "layer) before searching further.")
    if outcome.best is None:
        return (f"**NOT MET**: no trial of {finished} met {words}; the best accuracy was "
                f"{outcome.best_accuracy:.2%}. Run more trials (--trials), widen the space ([...tune] table), or "
                "change the model.")
    seeds = ""
    if outcome.seeds:
        ran = [s for s in outcome.seeds if not s.get("error")]
        met = sum(s["passed"] for s in ran)
        seeds = (f"; seeds {', '.join(str(s['seed']) for s in outcome.seeds)} again: {met} of {len(ran)} met the "
                 "rule")
        if len(ran) < len(outcome.seeds):
            seeds += (f" ({len(outcome.seeds) - len(ran)} could not run: "
                      f"{', '.join(str(s['seed']) for s in outcome.seeds if s.get('error'))}; the same command runs "
                      "them again)")
    return (f"**MET**: trial {outcome.best['number']} met the rule ({words}): "
            f"{outcome.best['reason'].removeprefix('passed: ')}{seeds}.")

