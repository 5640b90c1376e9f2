"""How a change moves the numbers: parameters, trainable parameters, mult-adds and the verdict of every
declared model (mnist_arch.project: a repository's [tool.mnist-arch] table, or our registry) at a git
revision against the working tree, with the working tree's budget verdicts (`mnist-arch diff`).

The base side is built from a temporary `git worktree` of the revision (the user's files are never
touched) and judged by the revision's *own* table and code, `python -m mnist_arch.cli check --format json`
in the same folder of that worktree, so a base that declared different models or budgets is read as it
was. The head side is the working tree's project, judged in isolated workers (mnist_arch.isolate). Both
sides meet as the `check --format json` model entries.

The gate (`Diff.passed`, the exit code) judges the change, not the head alone (docs/gate.md): it fails on a
check that fails at the head and did not at the base (or on a model new at the head), on a check failing on
both sides that got worse, and on a rule change (a model removed, a rule dropped or a budget loosened in the
head's table) unless rule changes are allowed. A check failing on both sides and no worse is "still failing".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_arch.errors import MnistArchError
from mnist_arch.report import count_text, md_cell

#: The checks that are budgets (shown per model; the gate treats every check alike).
BUDGET_CHECKS = ("params.max", "params.below", "params.exact", "mult_adds.max", "mult_adds.exact")
#: Limits a measured number must stay at or under (`params.below`: under), and at or over: a failing one is
#: worse when it is further past its limit; a rule change when the head's limit is looser.
AT_MOST = ("params.max", "params.below", "mult_adds.max")
AT_LEAST = ("receptive_field.min",)
#: Declared exact numbers: a failing one is worse when it is further off (a new exact value is no rule change:
#: it is how a deliberate change of the model is declared).
EXACT = ("params.exact", "mult_adds.exact")
#: The numbers compared, as `check --format json` names them.
NUMBERS = ("params", "trainable_params", "mult_adds")

HEAD_LABEL = "working tree"


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


# ---------------------------------------------------------------------------------------------
# The gate: what the change did to each check


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


def _finding(model: str, check: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"model": model, **{k: check.get(k) for k in ("id", "measured", "expected", "message")}, **more}


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
                    "message": f"{check_id} (expected {_shown(expected)}) is checked at {ref} and not in the "
                               f"{HEAD_LABEL}"})
            elif check_id in head and _looser(check_id, expected, head[check_id].get("expected")):
                now = head[check_id].get("expected")
                gate.rule_changes.append({
                    "model": m.name, "change": "limit loosened", "id": check_id, "base": expected, "head": now,
                    "message": f"{check_id}: the limit is {_shown(expected)} at {ref} and {_shown(now)} in the "
                               f"{HEAD_LABEL}"})
    return gate


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
# git


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise MnistArchError("git is not installed (or not on PATH); `diff` needs it to read the base "
                             "revision.") from None


def _one_line(text: str) -> str:
    """Text as one line; a Python traceback as its last line, which says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return f"{lines[-1]} (the last line of a traceback)"
    return " ".join(" ".join(lines).split())


def git_toplevel(cwd: str | Path | None = None) -> Path:
    """The root of the git working tree holding `cwd`."""
    cwd = Path(cwd or Path.cwd())
    proc = _git(["rev-parse", "--show-toplevel"], cwd)
    if proc.returncode != 0:
        raise MnistArchError(f"{cwd} is not inside a git repository; run `mnist-arch diff` from the "
                             "repository whose models you want to compare.")
    return Path(proc.stdout.strip())


def resolve_commit(top: Path, ref: str) -> str:
    """The full hash of `ref`, or an error naming it."""
    proc = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], top)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise MnistArchError(
            f"--base {ref!r} is not a commit in {top}. Give a branch, tag or commit that exists there "
            f"(in CI, fetch it first, e.g. `git fetch origin main` and --base origin/main)."
        )
    return proc.stdout.strip()


@contextmanager
def base_worktree(top: Path, commit: str) -> Iterator[Path]:
    """A detached temporary worktree of `commit`, removed afterwards whatever happens."""
    scratch = Path(tempfile.mkdtemp(prefix="mnist-arch-diff-"))
    tree = scratch / "base"
    try:
        proc = _git(["worktree", "add", "--detach", str(tree), commit], top)
        if proc.returncode != 0:
            raise MnistArchError(f"git could not check out {commit[:12]} into a temporary worktree: "
                                 f"{_one_line(proc.stderr)}")
        yield tree
    finally:
        _git(["worktree", "remove", "--force", str(tree)], top)
        _git(["worktree", "prune"], top)
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The two sides


def _package_root_in(top: Path) -> Path | None:
    """Where this package sits inside the repository (e.g. "." or "src"), so that the base side imports
    the same folder of the base revision; None when it is installed from elsewhere (a user's repository)."""
    root = Path(__file__).resolve().parent.parent
    try:
        return root.relative_to(top.resolve())
    except ValueError:
        return None


def _in_tree(tree: Path, relative: Path) -> Path:
    """The folder `relative` of the base worktree, or its nearest ancestor that exists there (the
    table's search upwards then passes the same folders as it does in the working tree)."""
    folder = tree / relative
    while not folder.is_dir() and folder != tree:
        folder = folder.parent
    return folder


def _base_table(folder: Path, tree: Path) -> Path | None:
    """The pyproject.toml holding the base's [tool.mnist-arch] table, looked for upwards from `folder`
    as far as the worktree's top (an invalid table is the base check's to report)."""
    from mnist_arch.project import read_table

    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        try:
            if path.is_file() and read_table(path) is not None:
                return path
        except MnistArchError:
            return path
        if candidate == tree:
            break
    return None


def _start_base_check(folder: Path, package: Path, timeout: float | None) -> subprocess.Popen:
    """`python -m mnist_arch.cli check --format json` in `folder`, importing mnist_arch from `package`."""
    from mnist_arch.isolate import ends_with_this_thread

    env = dict(os.environ)
    env["PYTHONPATH"] = str(package) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "mnist_arch.cli", "check", "--format", "json"]
    if timeout is not None:  # else the base's own table's (or its code's default) limit
        command += ["--timeout", f"{timeout:g}"]
    # It is a child of ours, not a worker: on Linux it gets SIGTERM when this thread (waiting for it) or this
    # process ends, SIGKILL included, and stops as a stopped `check` does, with its own workers.
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ends_with_this_thread())


def _base_models(proc: subprocess.Popen, ref: str) -> tuple[list[dict[str, Any]], str | None]:
    """The base's model entries, and a note when some of its models could not be judged (its check
    exits 2 and still reports the others: a base that is broken is what a fix is compared with)."""
    out, err = proc.communicate()
    what = f"`mnist-arch check --format json` at {ref}"
    try:
        models = json.loads(out)["models"]
        if not isinstance(models, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        models = None
    if models is not None and proc.returncode in (0, 1):  # 1: the base's own checks failed, which is fine here
        return models, None
    if models is not None and proc.returncode == 2:
        return models, f"at {ref}, some models could not be judged: {_one_line(err)[:1000]}"
    if proc.returncode not in (0, 1):
        raise MnistArchError(f"{what} failed with exit code {proc.returncode}: "
                             f"{_one_line(err)[-2000:] or 'no message'}")
    raise MnistArchError(f"{what} did not print the JSON report (exit code {proc.returncode}): "
                         f"{_one_line(err)[-2000:] or _one_line(out)[:500] or 'no output'}")


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
    package_root = _package_root_in(top)
    with base_worktree(top, commit) as tree:
        folder = _in_tree(tree, cwd.relative_to(top.resolve()))
        own = package_root is not None and (tree / package_root / "mnist_arch" / "__init__.py").is_file()
        if not own and _base_table(folder, tree) is None:
            note = (f"{ref} has no [tool.mnist-arch] table and no mnist_arch package: it declared no models, "
                    "so every model is added")
            return Diff(ref, commit, compare([], head_models(cwd, timeout)), note, allow_rule_changes)
        package = tree / package_root if own else Path(__file__).resolve().parent.parent
        proc = _start_base_check(folder, package, timeout)
        try:
            head = head_models(cwd, timeout)  # while the base side runs
            base, note = _base_models(proc, ref)
        finally:  # stopped (a signal, Ctrl-C) or failed: the base check stops too, its workers with it
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
    return Diff(ref, commit, compare(base, head), note, allow_rule_changes)


# ---------------------------------------------------------------------------------------------
# Rendering


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


def _shown(value: Any) -> str:
    """A measured or expected value as text: counts with thousands separators, shapes as JSON."""
    if value is None:
        return "unknown"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value)


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
    was = (f" (at {ref}: measured {_shown(base['measured'])}, expected {_shown(base['expected'])})"
           if _moved(f) else "")
    return f"{f['id']}: measured {_shown(f['measured'])}, expected {_shown(f['expected'])}{was}: {f['message']}"


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
            return "-" if value is None else md_cell(_shown(value))

        return ["| model | change | check | base | head | message |", "| --- | --- | --- | --- | --- | --- |"] + [
            f"| `{f['model']}` | {f['change']} | {'`' + f['id'] + '`' if f['id'] else '-'} | {cell(f['base'])} | "
            f"{cell(f['head'])} | {md_cell(f['message'])} |" for f in findings]
    if key == "fixed":
        return [f"- `{f['model']}` `{f['id']}`: {md_cell(f['message'])}" for f in findings]
    rows = ["| model | check | measured | expected | message |", "| --- | --- | --- | --- | --- |"]
    for f in findings:
        base = f.get("base")
        measured, expected = md_cell(_shown(f["measured"])), md_cell(_shown(f["expected"]))
        if _moved(f):
            measured = f"{md_cell(_shown(base['measured']))} → {measured}"
            expected = f"{md_cell(_shown(base['expected']))} → {expected}"
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


# ---------------------------------------------------------------------------------------------
# The README's status badge


def badge_markdown(remote_url: str, workflow: str = "model_tests.yml") -> str:
    """The standard GitHub Actions badge for `workflow` of the repository behind `remote_url`
    (https://github.com/OWNER/REPO(.git) or git@github.com:OWNER/REPO(.git))."""
    match = re.search(r"github\.com[:/]+([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", remote_url.strip())
    if not match:
        placeholder = badge_markdown("https://github.com/OWNER/REPOSITORY", workflow)
        raise MnistArchError(f"The git remote {remote_url.strip()!r} is not a GitHub repository, and the badge shows a "
                             "GitHub Actions workflow: put this line in your README with OWNER/REPOSITORY replaced by "
                             f"your GitHub repository: {placeholder}")
    owner_repo = f"{match.group(1)}/{match.group(2)}"
    url = f"https://github.com/{owner_repo}/actions/workflows/{workflow}"
    return f"[![Model Tests]({url}/badge.svg)]({url})"


def remote_badge(cwd: str | Path | None = None, remote: str = "origin") -> str:
    """The badge for the repository holding `cwd`, from its `remote`'s URL."""
    top = git_toplevel(cwd)
    proc = _git(["remote", "get-url", remote], top)
    if proc.returncode != 0:
        raise MnistArchError(f"{top} has no git remote named {remote!r}; add your GitHub repository (git remote add "
                             f"{remote} https://github.com/OWNER/REPOSITORY.git) and run `mnist-arch badge` again, or "
                             "put this line in your README with OWNER/REPOSITORY replaced: "
                             f"{badge_markdown('https://github.com/OWNER/REPOSITORY')}")
    return badge_markdown(proc.stdout)
