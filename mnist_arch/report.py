"""A compliance report (what `mnist_arch.checks.check_model` returns, plain data that crosses the worker's
pipe) and its renderings: a terminal table, JSON, or Markdown (for a pull-request comment or a GitHub job
summary). No torch here: the command line's own process never imports it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mnist_arch import __version__


@dataclass
class Check:
    id: str
    passed: bool
    measured: Any
    expected: Any
    message: str
    warning: bool = False  # a lint that is reported but does not fail the model

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "passed": self.passed, "measured": self.measured,
                "expected": self.expected, "message": self.message, "warning": self.warning}


@dataclass
class Report:
    name: str
    params: int
    trainable_params: int
    mult_adds: int | None
    checks: list[Check] = field(default_factory=list)
    final_activation: str | None = None  # what produced the output (not in the JSON contract)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "trainable_params": self.trainable_params,
                "mult_adds": self.mult_adds, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


def _verdict(check: Check) -> str:
    if check.warning:
        return "WARN"
    return "PASS" if check.passed else "FAIL"


def count_text(n: int | None) -> str:
    """A count with thousands separators, '-' when unknown (shared by every renderer)."""
    return "-" if n is None else f"{n:,}"


def to_json(reports: list[Report]) -> str:
    return json.dumps({"models": [r.to_dict() for r in reports], "mnist_arch_version": __version__}, indent=2)


def to_table(reports: list[Report]) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.name}: {'PASS' if r.passed else 'FAIL'}  params {count_text(r.params)} "
                     f"(trainable {count_text(r.trainable_params)})  mult-adds {count_text(r.mult_adds)}")
        for c in r.checks:
            lines.append(f"  {_verdict(c):4}  {c.id:32} {c.message}")
    failed = [r.name for r in reports if not r.passed]
    lines.append(f"{len(reports) - len(failed)} of {len(reports)} models pass"
                 + (f"; failing: {', '.join(failed)}" if failed else ""))
    return "\n".join(lines)


def md_cell(text: str) -> str:
    """Text made safe for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(reports: list[Report]) -> str:
    lines = [
        "## mnist-arch check",
        "",
        "| model | verdict | parameters | trainable | mult-adds | failed checks |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in reports:
        failed = [c.id for c in r.checks if not c.passed]
        lines.append(f"| `{r.name}` | {'✅ pass' if r.passed else '❌ fail'} | {count_text(r.params)} | "
                     f"{count_text(r.trainable_params)} | {count_text(r.mult_adds)} | "
                     f"{', '.join(failed) or '-'} |")
    lines += ["", f"<sub>Judged by mnist-arch {__version__}.</sub>"]
    for r in reports:
        lines += ["", f"<details><summary><code>{r.name}</code>: {len(r.checks)} checks</summary>", "",
                  "| check | verdict | message |", "| --- | --- | --- |"]
        lines += [f"| `{c.id}` | {_verdict(c)} | {md_cell(c.message)} |" for c in r.checks]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


FORMATS = {"table": to_table, "json": to_json, "markdown": to_markdown}
