"""How a change moves the numbers: parameter counts and mult-adds of every registered architecture at a
git revision against the working tree, with the working tree's budget verdicts (`mnist-arch diff`).

The base side is built from a temporary `git worktree` of the revision (the user's files are never
touched) and judged by the revision's *own* code, `python -m mnist_arch.cli check --format json`, so a
base that declared different models or budgets is read as it was. The head side is this process's
registry, judged in-process. Both sides meet as the `check --format json` model entries.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_arch.errors import MnistArchError
from mnist_arch.report import count_text, md_cell

#: The checks that are budgets: a diff fails when one of them fails on the head side.
BUDGET_CHECKS = ("params.max", "params.exact", "mult_adds.max", "mult_adds.exact")

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
        same = all(self.base.get(k) == self.head.get(k) for k in ("params", "mult_adds"))
        return "unchanged" if same else "changed"

    def value(self, side: str, key: str) -> int | None:
        entry = self.base if side == "base" else self.head
        return None if entry is None else entry.get(key)

    def delta(self, key: str) -> int | None:
        """head - base for "params" or "mult_adds"; None when either side is unknown."""
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

        return {"name": self.name, "status": self.status, "params": numbers("params"),
                "mult_adds": numbers("mult_adds"), "within_budget": self.within_budget,
                "budgets": [{k: c.get(k) for k in ("id", "passed", "measured", "expected", "message")}
                            for c in self.budgets]}


@dataclass
class Diff:
    base_ref: str  # as the user wrote it, e.g. "origin/main"
    base_commit: str  # the full hash it resolved to
    models: list[ModelDiff]

    @property
    def passed(self) -> bool:
        return all(m.within_budget for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {"base": {"ref": self.base_ref, "commit": self.base_commit}, "head": HEAD_LABEL,
                "passed": self.passed, "models": [m.to_dict() for m in self.models]}


def compare(base_models: list[dict[str, Any]], head_models: list[dict[str, Any]]) -> list[ModelDiff]:
    """Pair the entries of both sides by name, sorted by name."""
    base = {m["name"]: m for m in base_models}
    head = {m["name"]: m for m in head_models}
    return [ModelDiff(name, base.get(name), head.get(name)) for name in sorted(base.keys() | head.keys())]


# ---------------------------------------------------------------------------------------------
# git


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise MnistArchError("git is not installed (or not on PATH); `diff` needs it to read the base "
                             "revision.") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


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


def _package_root_in(top: Path) -> Path:
    """Where this package sits inside the repository (e.g. "." or "src"), so that the base side
    imports the same folder of the base revision; "." when it is installed from elsewhere."""
    root = Path(__file__).resolve().parent.parent
    try:
        return root.relative_to(top.resolve())
    except ValueError:
        return Path(".")


def _start_base_check(tree: Path, package_root: Path) -> subprocess.Popen:
    env = dict(os.environ)
    path = str(tree / package_root)
    env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.Popen([sys.executable, "-m", "mnist_arch.cli", "check", "--format", "json"], cwd=tree,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _base_models(proc: subprocess.Popen, ref: str) -> list[dict[str, Any]]:
    out, err = proc.communicate()
    what = f"`mnist-arch check --format json` at {ref}"
    if proc.returncode not in (0, 1):  # 1: the base's own checks failed, which is fine here
        raise MnistArchError(f"{what} failed with exit code {proc.returncode}: "
                             f"{_one_line(err)[-2000:] or 'no message'}")
    try:
        models = json.loads(out)["models"]
        if not isinstance(models, list):
            raise TypeError
        return models
    except (ValueError, KeyError, TypeError):
        raise MnistArchError(f"{what} did not print the JSON report (exit code {proc.returncode}): "
                             f"{_one_line(err)[-2000:] or _one_line(out)[:500] or 'no output'}") from None


def head_models() -> list[dict[str, Any]]:
    """Every registered model of this process, judged against its declared spec."""
    from mnist_arch.registry import check_registered, list_models

    return [check_registered(name).to_dict() for name in list_models()]


def diff_against(ref: str, cwd: str | Path | None = None) -> Diff:
    """Compare revision `ref` of the repository holding `cwd` with this process's registry."""
    top = git_toplevel(cwd)
    commit = resolve_commit(top, ref)
    package_root = _package_root_in(top)
    with base_worktree(top, commit) as tree:
        if not (tree / package_root / "mnist_arch" / "__init__.py").is_file():
            raise MnistArchError(
                f"--base {ref!r} ({commit[:9]}) has no {(package_root / 'mnist_arch').as_posix()}/ package; "
                "`diff` compares two revisions of the repository that holds mnist_arch and its models."
            )
        proc = _start_base_check(tree, package_root)
        try:
            head = head_models()  # while the base side runs
            base = _base_models(proc, ref)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return Diff(ref, commit, compare(base, head))


# ---------------------------------------------------------------------------------------------
# Rendering


def _delta(m: ModelDiff, key: str) -> str:
    delta, pct = m.delta(key), m.delta_percent(key)
    if delta is None:
        return "-"
    return f"{delta:+,}" + ("" if pct is None else f" ({pct:+.2f}%)")


def _name(m: ModelDiff) -> str:
    return m.name if m.status in ("changed", "unchanged") else f"{m.name} ({m.status})"


def _broken(diff: Diff) -> list[tuple[str, dict[str, Any]]]:
    return [(m.name, c) for m in diff.models for c in m.budgets if not c.get("passed")]


def _title(diff: Diff) -> str:
    return f"{diff.base_ref} ({diff.base_commit[:9]}) -> {HEAD_LABEL}"


def to_json(diff: Diff) -> str:
    return json.dumps(diff.to_dict(), indent=2)


def to_table(diff: Diff) -> str:
    lines = [f"mnist-arch diff: {_title(diff)}"]
    for m in diff.models:
        budgets = "  ".join(f"{'PASS' if c.get('passed') else 'FAIL'} {c['id']}" for c in m.budgets)
        lines.append(f"{_name(m)}: params {count_text(m.value('base', 'params'))} -> "
                     f"{count_text(m.value('head', 'params'))} [{_delta(m, 'params')}]  mult-adds "
                     f"{count_text(m.value('base', 'mult_adds'))} -> {count_text(m.value('head', 'mult_adds'))} "
                     f"[{_delta(m, 'mult_adds')}]" + (f"  {budgets}" if budgets else ""))
        lines += [f"  FAIL  {c['id']:16} {c.get('message', '')}" for c in m.budgets if not c.get("passed")]
    broken = _broken(diff)
    lines.append(f"{len(broken)} budget(s) broken" if broken else "every model within its budgets")
    return "\n".join(lines)


def to_markdown(diff: Diff) -> str:
    lines = [
        f"## mnist-arch diff: `{diff.base_ref}` ({diff.base_commit[:9]}) → {HEAD_LABEL}",
        "",
        "| model | parameters | Δ parameters | mult-adds | Δ mult-adds | budgets |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for m in diff.models:
        budgets = " ".join(f"{'✅' if c.get('passed') else '❌'} `{c['id']}`" for c in m.budgets) or "-"
        name = f"`{m.name}`" + ("" if m.status in ("changed", "unchanged") else f" ({m.status})")
        lines.append(f"| {name} | {count_text(m.value('base', 'params'))} → {count_text(m.value('head', 'params'))} | "
                     f"{_delta(m, 'params')} | {count_text(m.value('base', 'mult_adds'))} → "
                     f"{count_text(m.value('head', 'mult_adds'))} | {_delta(m, 'mult_adds')} | {budgets} |")
    broken = _broken(diff)
    lines.append("")
    if broken:
        lines.append(f"❌ {len(broken)} budget(s) broken:")
        lines += [f"- `{name}` `{c['id']}`: {md_cell(c.get('message', ''))}" for name, c in broken]
    else:
        lines.append("✅ every model within its budgets")
    return "\n".join(lines) + "\n"


FORMATS = {"table": to_table, "json": to_json, "markdown": to_markdown}


# ---------------------------------------------------------------------------------------------
# The README's status badge


def badge_markdown(remote_url: str, workflow: str = "model_tests.yml") -> str:
    """The standard GitHub Actions badge for `workflow` of the repository behind `remote_url`
    (https://github.com/OWNER/REPO(.git) or git@github.com:OWNER/REPO(.git))."""
    match = re.search(r"github\.com[:/]+([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", remote_url.strip())
    if not match:
        raise MnistArchError(f"The git remote {remote_url.strip()!r} is not a GitHub repository; write the badge "
                             "by hand with your OWNER/REPOSITORY (see README).")
    owner_repo = f"{match.group(1)}/{match.group(2)}"
    url = f"https://github.com/{owner_repo}/actions/workflows/{workflow}"
    return f"[![Model Tests]({url}/badge.svg)]({url})"


def remote_badge(cwd: str | Path | None = None, remote: str = "origin") -> str:
    """The badge for the repository holding `cwd`, from its `remote`'s URL."""
    top = git_toplevel(cwd)
    proc = _git(["remote", "get-url", remote], top)
    if proc.returncode != 0:
        raise MnistArchError(f"{top} has no git remote named {remote!r}; add one (git remote add {remote} URL) "
                             "or write the badge by hand with your OWNER/REPOSITORY (see README).")
    return badge_markdown(proc.stdout)
