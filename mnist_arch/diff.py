"""How a change moves the numbers: parameters, trainable parameters, mult-adds and the verdict of every
declared model (mnist_arch.project: a repository's [tool.mnist-arch] table, or our registry) at a git
revision against the working tree, with the working tree's budget verdicts (`mnist-arch diff`).

The base side is built from a temporary `git worktree` of the revision (the user's files are never
touched) and judged by the revision's *own* table and code, `python -m mnist_arch.cli check --format json`
in the same folder of that worktree, so a base that declared different models or budgets is read as it
was. The head side is the working tree's project, judged in isolated workers (mnist_arch.isolate). Both
sides meet as the `check --format json` model entries.

The gate (`Diff.passed`, the exit code) judges the change, not the head alone: mnist_arch.gate (docs/gate.md).
The base side's worktree and check are mnist_arch.diff_base's; the renderings (table, JSON, Markdown)
mnist_arch.diff_render's.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_arch.diff_base import base_models, base_table, in_tree, package_root_in, start_base_check
from mnist_arch.errors import MnistArchError
from mnist_arch.gate import HEAD_LABEL, Gate, judge_gate
from mnist_arch.git import base_worktree, git_toplevel, resolve_commit

#: The checks that are budgets (shown per model; the gate treats every check alike).
BUDGET_CHECKS = ("params.max", "params.below", "params.exact", "mult_adds.max", "mult_adds.exact")
#: The numbers compared, as `check --format json` names them.
NUMBERS = ("params", "trainable_params", "mult_adds")


# ---------------------------------------------------------------------------------------------
# Comparing two lists of `check --format json` model entries


@dataclass
class ModelDiff:
    """One model on both sides; `base` or `head` is None when the model was added or removed."""

    name: str
    base: dict[str, Any] | None
    head: dict[str, Any] | None

    @property
    def status(self) -> str:
        if self.base is None:
            return "added"
        if self.head is None:
            return "removed"
        same = all(self.base.get(k) == self.head.get(k) for k in (*NUMBERS, "passed"))
        return "unchanged" if same else "changed"

    def value(self, side: str, key: str) -> Any:
        entry = self.base if side == "base" else self.head
        return None if entry is None else entry.get(key)

    def delta(self, key: str) -> int | None:
        """head - base for one of NUMBERS; None when either side is unknown."""
        base, head = self.value("base", key), self.value("head", key)
        return None if base is None or head is None else head - base

    def delta_percent(self, key: str) -> float | None:
        delta, base = self.delta(key), self.value("base", key)
        return None if delta is None or not base else 100.0 * delta / base

    @property
    def budgets(self) -> list[dict[str, Any]]:
        """The head side's budget checks (none for a removed model)."""
        checks = self.head.get("checks", []) if self.head else []
        return [c for c in checks if c.get("id") in BUDGET_CHECKS]

    @property
    def within_budget(self) -> bool:
        return all(c.get("passed") for c in self.budgets)

    def to_dict(self) -> dict[str, Any]:
        def numbers(key: str) -> dict[str, Any]:
            pct = self.delta_percent(key)
            return {"base": self.value("base", key), "head": self.value("head", key), "delta": self.delta(key),
                    "delta_percent": None if pct is None else round(pct, 4)}

        return {"name": self.name, "status": self.status, **{key: numbers(key) for key in NUMBERS},
                "passed": {"base": self.value("base", "passed"), "head": self.value("head", "passed")},
                "within_budget": self.within_budget,
                "budgets": [{k: c.get(k) for k in ("id", "passed", "measured", "expected", "message")}
                            for c in self.budgets]}


def compare(base_models: list[dict[str, Any]], head_models: list[dict[str, Any]]) -> list[ModelDiff]:
    """Pair the entries of both sides by name, sorted by name."""
    base = {m["name"]: m for m in base_models}
    head = {m["name"]: m for m in head_models}
    return [ModelDiff(name, base.get(name), head.get(name)) for name in sorted(base.keys() | head.keys())]



@dataclass
class Diff:
    base_ref: str  # as the user wrote it, e.g. "origin/main"
    base_commit: str  # the full hash it resolved to
    models: list[ModelDiff]
    note: str | None = None  # e.g. why the base side has no models
    allow_rule_changes: bool = False  # --allow-rule-changes: a rule change alone does not fail the gate

    @property
    def gate(self) -> Gate:
        return judge_gate(self.models, self.base_ref)

    @property
    def passed(self) -> bool:
        """The gate: no check newly failing or worse, and no rule change unless allowed."""
        gate = self.gate
        return not gate.newly_failing and not gate.worse and (self.allow_rule_changes or not gate.rule_changes)

    def to_dict(self) -> dict[str, Any]:
        return {"base": {"ref": self.base_ref, "commit": self.base_commit}, "head": HEAD_LABEL,
                "passed": self.passed, "allow_rule_changes": self.allow_rule_changes, **asdict(self.gate),
                "note": self.note, "models": [m.to_dict() for m in self.models]}


# ---------------------------------------------------------------------------------------------
# The two sides


def head_models(cwd: str | Path | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
    """Every declared model of the project holding `cwd` (mnist_arch.project), judged in isolated workers
    against its declared spec; a model that cannot be judged is an error naming it."""
    from mnist_arch.jobs import judge_all
    from mnist_arch.project import load_project

    project = load_project(cwd)
    results = judge_all(project, project.models, timeout=timeout)
    errors = [str(r) for r in results if isinstance(r, MnistArchError)]
    if errors:
        raise MnistArchError(" ".join(errors))
    return [r.to_dict() for r in results]


def diff_against(ref: str, cwd: str | Path | None = None, timeout: float | None = None,
                 allow_rule_changes: bool = False) -> Diff:
    """Compare the declared models of revision `ref` with those of the working tree, in the project that
    `cwd` belongs to. The base side is the revision's own table and code: `check --format json` run in
    the same folder of a temporary worktree, with the revision's own mnist_arch package when the
    repository holds one (ours), else this installed one (a user's repository). A base with neither a
    table nor the package declared no models: every model is added. `allow_rule_changes`: see `Diff`."""
    cwd = Path(cwd or Path.cwd()).resolve()
    top = git_toplevel(cwd)
    commit = resolve_commit(top, ref)
    package_root = package_root_in(top)
    with base_worktree(top, commit) as tree:
        folder = in_tree(tree, cwd.relative_to(top.resolve()))
        own = package_root is not None and (tree / package_root / "mnist_arch" / "__init__.py").is_file()
        if not own and base_table(folder, tree) is None:
            note = (f"{ref} has no [tool.mnist-arch] table and no mnist_arch package: it declared no models, "
                    "so every model is added")
            return Diff(ref, commit, compare([], head_models(cwd, timeout)), note, allow_rule_changes)
        package = tree / package_root if own else Path(__file__).resolve().parent.parent
        proc = start_base_check(folder, package, timeout)
        try:
            head = head_models(cwd, timeout)  # while the base side runs
            base, note = base_models(proc, ref)
        finally:  # stopped (a signal, Ctrl-C) or failed: the base check stops too, its workers with it
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
    return Diff(ref, commit, compare(base, head), note, allow_rule_changes)

