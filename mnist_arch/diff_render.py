"""`mnist-arch diff`'s renderings: a terminal table, JSON, and Markdown (the job summary and the pull-request
comment's diff section), the same words in each. No torch, no git: plain data from `mnist_arch.diff`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from mnist_arch.gate import HEAD_LABEL, shown
from mnist_arch.report import count_text, md_cell

if TYPE_CHECKING:
    from mnist_arch.diff import Diff, ModelDiff


def _delta(m: ModelDiff, key: str) -> str:
    delta, pct = m.delta(key), m.delta_percent(key)
    if delta is None:
        return "-"
    return f"{delta:+,}" + ("" if pct is None else f" ({pct:+.2f}%)")


def _sides(m: ModelDiff, key: str, arrow: str = "→") -> str:
    return f"{count_text(m.value('base', key))} {arrow} {count_text(m.value('head', key))}"


def _verdict(m: ModelDiff, side: str) -> str:
    passed = m.value(side, "passed")
    return "-" if passed is None else "pass" if passed else "fail"


def _name(m: ModelDiff) -> str:
    return m.name if m.status in ("changed", "unchanged") else f"{m.name} ({m.status})"


def _title(diff: Diff) -> str:
    return f"{diff.base_ref} ({diff.base_commit[:9]}) -> {HEAD_LABEL}"



def _summary(diff: Diff) -> str:
    """The gate's verdict in one line, the same words in every format."""
    gate, ref = diff.gate, diff.base_ref
    failing = [f"{len(gate.newly_failing)} check(s) newly failing"] if gate.newly_failing else []
    failing += [f"{len(gate.worse)} check(s) worse than at {ref}"] if gate.worse else []
    if gate.rule_changes and not diff.allow_rule_changes:
        failing.append(f"{len(gate.rule_changes)} rule change(s) (--allow-rule-changes accepts them)")
    more = [f"{len(gate.rule_changes)} rule change(s) allowed"] if gate.rule_changes and diff.allow_rule_changes else []
    more += [f"{len(gate.still_failing)} still failing as at {ref}, no worse"] if gate.still_failing else []
    more += [f"{len(gate.fixed)} fixed"] if gate.fixed else []
    verdict = ("FAIL: " + ", ".join(failing) if failing else
               "pass: no check newly failing or worse" + ("" if gate.rule_changes else ", no rule change"))
    return f"gate {verdict}" + (f" ({'; '.join(more)})" if more else "")


def _moved(f: dict[str, Any]) -> bool:
    """Whether a check failing on both sides measured or expected something else at the base."""
    base = f.get("base")
    return bool(base) and (base["measured"], base["expected"]) != (f["measured"], f["expected"])


def _check_text(f: dict[str, Any], ref: str) -> str:
    base = f.get("base")
    was = (f" (at {ref}: measured {shown(base['measured'])}, expected {shown(base['expected'])})"
           if _moved(f) else "")
    return f"{f['id']}: measured {shown(f['measured'])}, expected {shown(f['expected'])}{was}: {f['message']}"


#: The gate's lists, in the order every format shows them, with their labels.
_SECTIONS = (("rule_changes", "RULE CHANGE", "Rule changes"), ("newly_failing", "NEWLY FAILING", "Newly failing"),
             ("worse", "WORSE", "Worse than at the base"), ("still_failing", "STILL FAILING",
                                                             "Still failing, no worse than at the base"),
             ("fixed", "FIXED", "Fixed"))


def to_json(diff: Diff) -> str:
    return json.dumps(diff.to_dict(), indent=2)


def to_table(diff: Diff) -> str:
    lines = [f"mnist-arch diff: {_title(diff)}"] + ([f"note: {diff.note}"] if diff.note else [])
    gate = asdict(diff.gate)
    for m in diff.models:
        budgets = "  ".join(f"{'PASS' if c.get('passed') else 'FAIL'} {c['id']}" for c in m.budgets)
        lines.append(f"{_name(m)}: params {_sides(m, 'params', '->')} [{_delta(m, 'params')}]  trainable "
                     f"{_sides(m, 'trainable_params', '->')} [{_delta(m, 'trainable_params')}]  mult-adds "
                     f"{_sides(m, 'mult_adds', '->')} [{_delta(m, 'mult_adds')}]  verdict {_verdict(m, 'base')} -> "
                     f"{_verdict(m, 'head')}" + (f"  {budgets}" if budgets else ""))
        for key, label, _ in _SECTIONS:
            for f in gate[key]:
                if f["model"] == m.name:
                    text = f"{f['change']}: {f['message']}" if key == "rule_changes" else _check_text(f, diff.base_ref)
                    lines.append(f"  {label:13}  {text}")
    lines.append(_summary(diff))
    return "\n".join(lines)


def _md_rows(key: str, findings: list[dict[str, Any]]) -> list[str]:
    if key == "rule_changes":
        def cell(value: Any) -> str:
            return "-" if value is None else md_cell(shown(value))

        return ["| model | change | check | base | head | message |", "| --- | --- | --- | --- | --- | --- |"] + [
            f"| `{f['model']}` | {f['change']} | {'`' + f['id'] + '`' if f['id'] else '-'} | {cell(f['base'])} | "
            f"{cell(f['head'])} | {md_cell(f['message'])} |" for f in findings]
    if key == "fixed":
        return [f"- `{f['model']}` `{f['id']}`: {md_cell(f['message'])}" for f in findings]
    rows = ["| model | check | measured | expected | message |", "| --- | --- | --- | --- | --- |"]
    for f in findings:
        base = f.get("base")
        measured, expected = md_cell(shown(f["measured"])), md_cell(shown(f["expected"]))
        if _moved(f):
            measured = f"{md_cell(shown(base['measured']))} → {measured}"
            expected = f"{md_cell(shown(base['expected']))} → {expected}"
        rows.append(f"| `{f['model']}` | `{f['id']}` | {measured} | {expected} | {md_cell(f['message'])} |")
    return rows


def to_markdown(diff: Diff) -> str:
    lines = [f"## mnist-arch diff: `{diff.base_ref}` ({diff.base_commit[:9]}) → {HEAD_LABEL}", ""]
    if diff.note:
        lines += [f"Note: {md_cell(diff.note)}.", ""]  # as written: the note may start with a ref (origin/main)
    lines += [f"{'✅' if diff.passed else '❌'} **{md_cell(_summary(diff))}**", ""]
    lines += ["| model | parameters | Δ parameters | trainable | mult-adds | Δ mult-adds | verdict | budgets |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for m in diff.models:
        budgets = " ".join(f"{'✅' if c.get('passed') else '❌'} `{c['id']}`" for c in m.budgets) or "-"
        name = f"`{m.name}`" + ("" if m.status in ("changed", "unchanged") else f" ({m.status})")
        lines.append(f"| {name} | {_sides(m, 'params')} | {_delta(m, 'params')} | {_sides(m, 'trainable_params')} | "
                     f"{_sides(m, 'mult_adds')} | {_delta(m, 'mult_adds')} | {_verdict(m, 'base')} → "
                     f"{_verdict(m, 'head')} | {budgets} |")
    gate = asdict(diff.gate)
    for key, _, heading in _SECTIONS:
        if gate[key]:
            where = heading.replace("the base", f"`{diff.base_ref}`")
            lines += ["", f"### {where}", "", *_md_rows(key, gate[key])]
    return "\n".join(lines) + "\n"


FORMATS = {"table": to_table, "json": to_json, "markdown": to_markdown}
