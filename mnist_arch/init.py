"""`mnist-arch init`: declare a model in pyproject.toml and write the two GitHub workflows that judge it.

`init_project` adds a `[tool.mnist-arch]` table to the folder's pyproject.toml (creating the file, or
appending to it without changing a byte of what is there) and writes, at the top of the git repository,

- `.github/workflows/model_tests.yml`: pytest, the job summary (`check`, and `diff` on pull requests),
  the benchmarks, and on pull requests the report as an artifact;
- `.github/workflows/model_rule.yml`: the course's accuracy rule, weekly, on request and on pull requests
  labelled `accuracy-rule` (a workflow of its own, so that model_tests.yml never runs with its check skipped);
- `.github/workflows/model_tests_comment.yml`: posts both reports as one sticky comment, from a
  `workflow_run` that never runs the pull request's code (so it works for pull requests from forks).

The workflow gets mnist-arch from this repository's GitHub Action pinned by commit (`--action OWNER/REPO@REF`,
or the GitHub commit a git URL installed here) or with pip (`--requirement SPEC`, or this version when it came
from a package index); init refuses to guess otherwise. `--min-accuracy auto` trains five seeds first and
writes the threshold rule's answer (mnist_arch.runs.rule_threshold). Workflows already in .github/workflows
that run tests are named in a note, never changed.

`--rule-threshold` (with `--rule-epochs`, `--rule-consecutive`) declares the course's rule: a [...rule] table with
a usual course recipe, for the rule tier and model_rule.yml (docs/rule-ci.md).

The templates live in `mnist_arch/templates/` (the install steps of each kind in `templates/steps/`); docs/ci.md
explains them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata, resources
from itertools import takewhile
from pathlib import Path, PurePosixPath
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from mnist_arch.errors import MnistArchError
from mnist_arch.paths import is_file_target
from mnist_arch.project import TRAIN_DEFAULTS
from mnist_arch.runs import rule_threshold
from mnist_arch.spec import parse_recipe_fields, parse_spec_fields

TABLE = ("tool", "mnist-arch")
#: The workflows init writes, under .github/workflows/ of the repository.
WORKFLOWS = ("model_tests.yml", "model_rule.yml", "model_tests_comment.yml")
#: The hidden marker by which model_tests_comment.yml finds its own comment.
COMMENT_MARKER = "<!-- mnist-arch-report -->"
#: The badge's workflow, when the repository has no GitHub remote yet.
PLACEHOLDER_REMOTE = "https://github.com/OWNER/REPOSITORY"

_FORM = "Give the model as PATH.py:ATTR (a file relative to pyproject.toml, e.g. model.py:Net) or package.module:ATTR."
_MODEL = re.compile(r"(?P<source>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_HEADER = re.compile(r"\s*\[\[?(?P<key>[^\]]*)\]\]?\s*(#.*)?")
_REQUIREMENT = re.compile(r"[A-Za-z0-9 @+:/._=<>!~,\[\]-]+")  # what fits the workflow's quoted YAML string
_ACTION = re.compile(r"(?P<repo>[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+)@(?P<ref>[A-Za-z0-9._/-]+)")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_GITHUB = re.compile(r"https://github\.com/(?P<repo>[A-Za-z0-9-]+/[A-Za-z0-9._-]+?)(?:\.git)?/?")
#: Where each job gets torch: model_tests.yml's check job the CPU wheels (GitHub's runners have no GPU, and
#: the CUDA wheels are gigabytes); model_rule.yml's rule job those too, unless a repository variable names a
#: CUDA index for the GPU runner another variable points it at (docs/rule-ci.md).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CHECK = {"__TORCH_WHEELS__": "CPU wheels", "__TORCH_INDEX__": CPU_TORCH_INDEX,
               "__TORCH_WHY__": "CPU-only torch and torchvision wheels: the runners have no GPU, and the CUDA "
                                "wheels are gigabytes."}
TORCH_RULE = {"__TORCH_WHEELS__": "CPU or CUDA wheels",
              "__TORCH_INDEX__": f"${{{{ vars.MNIST_ARCH_RULE_TORCH_INDEX || '{CPU_TORCH_INDEX}' }}}}",
              "__TORCH_WHY__": "The CPU wheels, or the CUDA wheels of a GPU runner: the repository variable "
                               "MNIST_ARCH_RULE_TORCH_INDEX."}
#: The course's rule where `init --rule-threshold` is given alone: 15 epochs at most, 3 in a row.
RULE_DEFAULTS = {"epochs": 15, "consecutive": 3}
#: The recipe of the rule table init writes: a usual course recipe (SGD with momentum, OneCycle, batch 128,
#: RandomRotation(7)), a starting point for the student's own, not one tuned here.
COURSE_RECIPE = {"optimizer": "sgd", "lr": 0.01, "optimizer_kwargs": {"momentum": 0.9}, "schedule": "onecycle",
                 "schedule_kwargs": {"max_lr": 0.05, "pct_start": 0.25}, "batch_size": 128, "rotation": 7}
#: The seeds of `--min-accuracy auto`: the five of the threshold rule (docs/training.md).
SEEDS = (0, 1, 2, 3, 4)
# A workflow line that runs pytest (not one that installs it).
_RUNS_PYTEST = re.compile(r"(?:^|[\s;&|(])(?:python3? -m )?pytest(?=\s|$)")
# `uses: OWNER/REPO[/PATH]@vN...`, or `@COMMIT  # vN...` as pinned actions are written.
_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*[\"']?(?P<action>[\w.-]+/[\w./-]+)@(?P<ref>[\w./-]+)[\"']?"
                   r"\s*(?:#\s*(?P<tag>v\d\S*))?")
_FAILS = "GitHub has retired it: jobs that use it fail"
_OLD_NODE = "GitHub has retired it: it was written for node12 or node16, runtimes its runners no longer run"
_NODE20 = "it runs on node20, which GitHub removed from its runners on 23 September 2026"
#: Action majors at their end of life on GitHub's hosted runners, the one list init's notes read: action -> (each
#: such major and why, the major to move to: the one model_tests.yml uses, else the newest).
#: Sources: actionlint 1.17's table of popular actions (github.com/rhysd/actionlint, popular_actions.go: the majors
#: it reports as retired on GitHub.com, and those on node20), and GitHub's own notices: "Deprecation notice: v3 of
#: the artifact actions" (github.blog/changelog 2024-04-16; v1-v3 fail since 30 January 2025), the cache service
#: v2 notice (github.com/actions/cache/discussions/1510; cache v1-v2 fail since 1 March 2025), "Transitioning from
#: Node 16 to Node 20" (github.blog/changelog 2023-09-22) and "Deprecation of Node 20 on GitHub Actions runners"
#: (github.blog/changelog 2025-09-19; removal on 23 September 2026).
END_OF_LIFE_ACTIONS: dict[str, tuple[dict[int, str], int]] = {
    "actions/checkout": ({1: _OLD_NODE, 2: _OLD_NODE, 3: _OLD_NODE, 4: _NODE20}, 7),
    "actions/setup-python": ({1: _OLD_NODE, 2: _OLD_NODE, 3: _OLD_NODE, 4: _OLD_NODE, 5: _NODE20}, 7),
    "actions/setup-node": ({1: _OLD_NODE, 2: _OLD_NODE, 3: _OLD_NODE, 4: _NODE20}, 7),
    "actions/cache": ({1: _FAILS, 2: _FAILS, 3: _OLD_NODE, 4: _NODE20}, 6),
    "actions/cache/restore": ({3: _OLD_NODE, 4: _NODE20}, 6),
    "actions/cache/save": ({3: _OLD_NODE, 4: _NODE20}, 6),
    "actions/upload-artifact": ({1: _FAILS, 2: _FAILS, 3: _FAILS, 4: _NODE20, 5: _NODE20}, 7),
    "actions/download-artifact": ({1: _FAILS, 2: _FAILS, 3: _FAILS, 4: _NODE20, 5: _NODE20, 6: _NODE20}, 8),
}
#: pytest's own python_files, and the files where a repository may set its own (pytest's order in each folder).
PYTEST_FILES = ("test_*.py", "*_test.py")
_PYTEST_CONFIGS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
_DEFINES_TESTS = re.compile(r"^(?:async\s+)?def\s+test\w*\s*\(|^class\s+Test\w*\s*[:(]", re.MULTILINE)
_NOT_SOURCE = {"node_modules", "site-packages", "venv", "env", "build", "dist", "__pycache__"}


@dataclass(frozen=True)
class CiSource:
    """Where the generated workflow gets mnist-arch: the composite action of mnist-arch's repository at a commit
    (`action` is OWNER/REPO@COMMIT, `ref` the tag or branch it was given as), or a pip `requirement`."""

    action: str | None = None
    ref: str | None = None
    requirement: str | None = None

    def describe(self) -> str:
        if self.action:
            return f"the mnist-arch action {self.action}" + (f" ({self.ref})" if self.ref else "")
        return f"pip install {self.requirement}"


@dataclass
class InitResult:
    """What `init_project` did: the files it wrote (absolute), the README badge, notes for the user."""

    root: Path
    name: str
    model: str
    pyproject: str  # "written to a new" | "added to" | "replaced in"
    written: list[Path] = field(default_factory=list)
    badge: str = ""
    notes: list[str] = field(default_factory=list)
    source: CiSource | None = None

    def report(self) -> str:
        pyproject, *workflows = (os.path.relpath(p, self.root) for p in self.written)
        lines = [f"Declared model {self.name!r} ({self.model}): [tool.mnist-arch] {self.pyproject} {pyproject}."]
        lines += [f"Wrote {p}" for p in workflows]
        if self.source:
            lines.append(f"The workflow installs mnist-arch with {self.source.describe()}.")
        lines += ["", "Badge for your README:", self.badge, ""]
        lines += [f"Note: {note}" for note in self.notes]
        lines += ["Next: run `mnist-arch check` and `pytest` here, then commit pyproject.toml and .github/ and push."]
        return "\n".join(lines)


def init_project(
    root: str | Path,
    *,
    model: str,
    name: str | None = None,
    params_below: int | None = None,
    max_params: int | None = None,
    require: list[str] | tuple[str, ...] = (),
    require_any: list[list[str]] | tuple[tuple[str, ...], ...] = (),
    min_accuracy: float | str | None = None,
    epochs: int | None = None,
    rule: Mapping[str, Any] | None = None,
    action: str | None = None,
    requirement: str | None = None,
    data_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> InitResult:
    """Declare `model` in `root`/pyproject.toml and write the workflows; nothing is written when any target
    exists (a [tool.mnist-arch] table, a workflow file) unless `force`. `min_accuracy="auto"` trains the model
    on SEEDS first (MNIST from `data_dir`, else $MNIST_ARCH_DATA, else the cache) and declares the threshold
    rule's answer; `progress` gets a line per epoch and per run. `rule` (threshold, and epochs and consecutive or
    RULE_DEFAULTS') is declared as the model's rule table, with COURSE_RECIPE."""
    root = Path(root).resolve()
    model = _checked_model(model, root)
    name = name or _default_name(model)
    if not _NAME.fullmatch(name):
        raise MnistArchError(f"--name {name!r} is not a short identifier: use letters, digits, '_' and '-', "
                             "starting with a letter (it becomes [tool.mnist-arch.models.NAME]).")
    spec: dict[str, Any] = {"params_below": params_below, "max_params": max_params,
                            "require": sorted(set(require)) or None,
                            "require_any": [list(group) for group in require_any] or None}
    spec = {k: v for k, v in spec.items() if v is not None}
    parse_spec_fields(spec, "the command line")  # one home for validation: the same rules as the table's
    train: dict[str, Any] = {}
    auto = min_accuracy == "auto"
    if isinstance(min_accuracy, str) and not auto:
        raise MnistArchError(f"--min-accuracy {min_accuracy!r} is neither a fraction (e.g. 0.98) nor auto.")
    if min_accuracy is not None:
        train = {"min_accuracy": 1.0 if auto else min_accuracy, "epochs": epochs or 1}
        parse_recipe_fields(train, "the command line", TRAIN_DEFAULTS)
    elif epochs is not None:
        raise MnistArchError("--epochs needs --min-accuracy, the test accuracy the training item must reach (a "
                             "fraction, e.g. 0.98, or auto: five seeds' runs and the threshold rule).")
    declared = {"model": model, **spec}
    rule_table = _rule_table(rule) if rule is not None else {}

    # Every target is checked before anything is written.
    pyproject = root / "pyproject.toml"
    conflicts: list[str] = []
    table_conflict = False
    old_text, verb = "", "written to a new"
    if pyproject.exists():
        old_text, old_data = _read_pyproject(pyproject)
        verb = "added to"
        if _lookup(old_data, TABLE) is not None:
            if not force:
                conflicts.append(f"{pyproject} already has a [tool.mnist-arch] table")
                table_conflict = True
            else:
                old_text = _without_table(old_text, old_data, pyproject)
                verb = "replaced in"
    top = _git_top(root)
    workflows_dir = (top or root) / ".github" / "workflows"
    targets = [workflows_dir / w for w in WORKFLOWS]
    if not force:
        conflicts += [f"{t} exists" for t in targets if t.exists()]
    if conflicts:
        kept = " (the rest of pyproject.toml is kept byte for byte)" if table_conflict else ""
        raise MnistArchError(f"{'; '.join(conflicts)}. Nothing was written. Run it again with --force to "
                             f"replace them{kept}.")

    source = ci_source(action=action, requirement=requirement)
    result = InitResult(root=root, name=name, model=model, pyproject=verb, source=source)
    comment = None
    if auto:  # the slow part, once everything else is known to be fine
        accuracies = seed_accuracies(root, name, model, train["epochs"], data_dir, progress=progress)
        train["min_accuracy"] = threshold = rule_threshold(accuracies)
        reached = f"{min(accuracies):.2%} to {max(accuracies):.2%}"
        if threshold <= 0:
            raise MnistArchError(f"--min-accuracy auto: seeds {SEEDS[0]}-{SEEDS[-1]} of {model} reached {reached} "
                                 f"after {train['epochs']} epoch(s), which leaves no threshold above 0 (the worst "
                                 "minus the spread). Train longer (--epochs N) or give the threshold yourself. "
                                 "Nothing was written.")
        comment = (f"# seeds {SEEDS[0]}-{SEEDS[-1]} reached {reached}; the threshold rule (the worst minus the spread, "
                   "at least 0.1 point) gives min_accuracy")
        result.notes.append(f"min_accuracy = {threshold} comes from {len(accuracies)} seeds' test accuracies "
                            f"({', '.join(f'{a:.2%}' for a in accuracies)}) by the threshold rule; `mnist-arch train "
                            f"{name} --seed 0-4 --format markdown` runs them again.")
    result.notes += _tier_notes(name, train, rule_table)
    table_text = _table_text(name, declared, train, comment, rule_table)
    new_text = _appended(old_text, table_text)
    _verify(new_text, name, declared, train, pyproject, rule_table)
    project_dir = PurePosixPath(*root.relative_to(top).parts) if top else PurePosixPath(".")
    rendered = {w: render_workflow(w, project_dir, source) for w in WORKFLOWS}
    result.notes += existing_model_tests(workflows_dir, top or root, root)

    with open(pyproject, "w", encoding="utf-8", newline="") as f:  # newline="": the file's own line ends
        f.write(new_text)
    result.written.append(pyproject)
    workflows_dir.mkdir(parents=True, exist_ok=True)
    for target in targets:
        target.write_text(rendered[target.name], encoding="utf-8")
        result.written.append(target)
    result.badge, badge_note = _badge(top)
    if badge_note:
        result.notes.append(badge_note)
    return result


# ---------------------------------------------------------------------------------------------
# The declaration


def _checked_model(model: str, root: Path) -> str:
    """`model` in the table's form (forward slashes), after checking its form and that its file exists."""
    match = _MODEL.fullmatch(model.strip())
    if not match:
        raise MnistArchError(f"--model {model!r} is not PATH.py:ATTR or package.module:ATTR "
                             f"(ATTR a Python name). {_FORM}")
    source, attr = match["source"].replace("\\", "/"), match["attr"]
    if is_file_target(source):
        path = PurePosixPath(source)
        if not source.endswith(".py"):
            raise MnistArchError(f"--model {model!r}: {source} is a path but not a .py file. {_FORM}")
        if path.is_absolute() or ".." in path.parts:
            raise MnistArchError(f"--model {model!r}: {source} must be a path inside {root}, relative to it: "
                                 "CI checks out the repository, not this machine's folders.")
        if not (root / path).is_file():
            raise MnistArchError(f"--model {model!r}: the model file {root / path} does not exist. {_FORM}")
    elif not _MODULE.fullmatch(source):
        raise MnistArchError(f"--model {model!r}: {source!r} is neither a .py path nor a module name. {_FORM}")
    return f"{source}:{attr}"


def _default_name(model: str) -> str:
    """`model.py:Net` -> "net": the attribute, lower-cased."""
    return model.rpartition(":")[2].lower()


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table; keys are ours (bare)
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _table_text(name: str, declared: dict[str, Any], train: dict[str, Any], comment: str | None = None,
                rule: dict[str, Any] | None = None) -> str:
    lines = [
        "[tool.mnist-arch]",
        "# Models judged by `mnist-arch check`, `diff`, `bench` and by pytest (one item per declared fact).",
        '# data = "data"  # optional: the folder holding MNIST/raw/ for the training items',
        "",
        f"[tool.mnist-arch.models.{name}]",
        *(f"{key} = {_toml_value(value)}" for key, value in declared.items()),
    ]
    if train:
        lines += ["", f"[tool.mnist-arch.models.{name}.train]", *([comment] if comment else []),
                  *(f"{key} = {_toml_value(value)}" for key, value in train.items())]
    if rule:
        lines += ["", f"[tool.mnist-arch.models.{name}.rule]",
                  f"# The course's rule: {rule['threshold']:.2%} test accuracy held for {rule['consecutive']} "
                  f"epoch(s) in a row within {rule['epochs']}",
                  f"# (`mnist-arch train {name} --tier rule`, `pytest -m rule`, model_rule.yml). The",
                  "# recipe below is a usual course one (SGD with momentum, OneCycle, 7-degree rotation), a starting",
                  "# point that mnist-arch has not tuned for your model: write your notebook's own here.",
                  *(f"{key} = {_toml_value(value)}" for key, value in rule.items())]
    return "\n".join(lines) + "\n"


def _rule_table(rule: Mapping[str, Any]) -> dict[str, Any]:
    """The [...rule] table init writes: the rule (threshold, epochs, consecutive: RULE_DEFAULTS where not given),
    then COURSE_RECIPE; each number checked here, with the flag's name (the rule tier checks the table again)."""
    threshold = rule.get("threshold")
    epochs = rule.get("epochs") or RULE_DEFAULTS["epochs"]
    consecutive = rule.get("consecutive") or RULE_DEFAULTS["consecutive"]
    if threshold is None:
        given = "--rule-epochs" if rule.get("epochs") else "--rule-consecutive"
        raise MnistArchError(f"{given} needs --rule-threshold, the test accuracy the course's rule asks for (a "
                             "fraction, e.g. 0.994 for 99.4%).")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        percent = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 1 < threshold <= 100
        hint = f" ({threshold}% is {threshold / 100:g})" if percent else ""
        raise MnistArchError(f"--rule-threshold {threshold!r} is not a fraction in (0, 1]: give the test accuracy as a "
                             f"fraction, e.g. 0.994 for 99.4%{hint}.")
    if consecutive > epochs:
        raise MnistArchError(f"--rule-consecutive {consecutive} is more than --rule-epochs {epochs}: the rule asks for "
                             f"{consecutive} epochs in a row within {epochs}, which no run can hold. Give fewer "
                             "consecutive epochs, or more epochs.")
    return {"threshold": float(threshold), "epochs": epochs, "consecutive": consecutive, **COURSE_RECIPE}


def _tier_notes(name: str, train: dict[str, Any], rule: dict[str, Any]) -> list[str]:
    """What the quick tier is and where the course's rule is, in words every user of init reads."""
    notes = []
    if train:
        notes.append(f"the quick tier ([tool.mnist-arch.models.{name}.train], min_accuracy {train['min_accuracy']}) "
                     "is a floor from five one-epoch seeds: it catches breakage; the course rule is the rule tier"
                     + ("." if rule else " (`mnist-arch init --rule-threshold 0.994 ...`, docs/rule-ci.md)."))
    if rule:
        notes.append(f"the rule tier ([tool.mnist-arch.models.{name}.rule]): {rule['threshold']:.2%} held for "
                     f"{rule['consecutive']} epoch(s) in a row within {rule['epochs']}, with a usual course recipe "
                     "that is yours to edit. It runs here with `mnist-arch train " + name + " --tier rule` or `pytest "
                     "-m rule`, and in model_rule.yml weekly, on request and on pull requests labelled "
                     "accuracy-rule (docs/rule-ci.md: a GPU runner).")
    return notes


# ---------------------------------------------------------------------------------------------
# pyproject.toml, byte for byte


def _read_pyproject(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistArchError(f"{path} cannot be read as UTF-8 text: {exc}.") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MnistArchError(f"{path} is not valid TOML ({exc}); fix it, then run mnist-arch init again.") from None


def _lookup(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _is_ours(header_key: str) -> bool:
    key = re.sub(r"[\s\"']", "", header_key)
    return key == "tool.mnist-arch" or key.startswith("tool.mnist-arch.")


def _without_table(text: str, data: dict[str, Any], path: Path) -> str:
    """`text` less the [tool.mnist-arch] and [tool.mnist-arch.*] sections (each from its header to the next
    header that is not ours), verified: everything else must parse exactly as before."""
    kept: list[str] = []
    section: list[str] | None = None  # the lines of our sections being dropped, None outside them
    for line in text.splitlines(keepends=True):
        header = _HEADER.fullmatch(line.rstrip("\r\n"))
        if header and _is_ours(header["key"]):
            section = (section or []) + [line]
        elif section is not None and not header:
            section.append(line)
        else:
            if section:  # leaving our sections: the comment lines right above this header are its own
                comments = list(takewhile(lambda x: x.lstrip().startswith("#"), reversed(section)))
                kept += comments[::-1]
                section = None
            kept.append(line)
    result = "".join(kept)
    expected = json.loads(json.dumps(data, default=str))
    del expected["tool"]["mnist-arch"]
    if not expected["tool"]:
        del expected["tool"]
    try:
        same = json.loads(json.dumps(tomllib.loads(result), default=str)) == expected
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise MnistArchError(f"{path} declares [tool.mnist-arch] in a form that mnist-arch init cannot replace "
                             "safely (for example dotted keys under [tool]); remove that table by hand and run "
                             "mnist-arch init again. Nothing was written.")
    return result


def _appended(old: str, table: str) -> str:
    """`old` unchanged, then `table` after a blank line, in the file's own line ending."""
    newline = "\r\n" if "\r\n" in old else "\n"
    table = table.replace("\n", newline)
    if not old:
        return table
    if not old.endswith("\n"):
        old += newline
    if not old.endswith(2 * newline) and old.strip():
        old += newline
    return old + table


def _verify(text: str, name: str, declared: dict[str, Any], train: dict[str, Any], path: Path,
            rule: dict[str, Any] | None = None) -> None:
    """What will be written parses, and its table says what was asked (a guard on the TOML written here)."""
    try:
        table = _lookup(tomllib.loads(text), TABLE)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug here, not bad input
        raise AssertionError(f"init would write invalid TOML to {path}: {exc}") from None
    expected = {**declared, **({"train": train} if train else {}), **({"rule": rule} if rule else {})}
    assert table["models"][name] == expected, (table, expected)


# ---------------------------------------------------------------------------------------------
# Workflows and badge


def _git_top(root: Path) -> Path | None:
    from mnist_arch.diff import git_toplevel

    try:
        return git_toplevel(root).resolve()
    except (MnistArchError, OSError):  # not a repository, or no git at all
        return None


def ci_source(action: str | None = None, requirement: str | None = None) -> CiSource:
    """Where the generated workflow gets mnist-arch: `action` (OWNER/REPO@REF, pinned to REF's commit), or
    `requirement` (for pip), or else where this installation came from when that is known to work in CI."""
    if action and requirement:
        raise MnistArchError("Give --action or --requirement, not both: the workflow installs mnist-arch one way.")
    if action:
        return _pinned_action(action)
    if requirement:
        if not _REQUIREMENT.fullmatch(requirement.strip()):
            from mnist_arch import REPOSITORY, __version__

            raise MnistArchError(f"--requirement {requirement!r} is not a pip requirement init can write into the "
                                 "workflow: use letters, digits, spaces and @+:/._=<>!~,[]- only, e.g. "
                                 f"mnist-arch=={__version__} or "
                                 f"\"mnist-arch @ git+https://github.com/{REPOSITORY}@v{__version__}\".")
        return CiSource(requirement=requirement.strip())
    return _installed_source()


def _pinned_action(action: str) -> CiSource:
    """OWNER/REPO@REF with REF a commit, or a tag or branch that `git ls-remote` finds on GitHub (its commit)."""
    match = _ACTION.fullmatch(action.strip())
    if not match:
        from mnist_arch import REPOSITORY, __version__

        raise MnistArchError(f"--action {action!r} is not OWNER/REPO@REF: give the GitHub repository of mnist-arch "
                             f"and a tag, branch or commit, e.g. --action {REPOSITORY}@v{__version__}.")
    repo, ref = match["repo"], match["ref"]
    if _COMMIT.fullmatch(ref):
        return CiSource(action=f"{repo}@{ref}")
    url = f"https://github.com/{repo}"
    refs = [f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}", f"refs/heads/{ref}"]
    try:
        proc = subprocess.run(["git", "ls-remote", url, *refs], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        proc = subprocess.CompletedProcess([], 1, "", str(exc))
    found = dict(reversed(line.split("\t", 1)) for line in proc.stdout.splitlines() if "\t" in line)
    commit = next((found[r] for r in (refs[1], refs[0], refs[2]) if r in found), None)
    if proc.returncode != 0 or commit is None or not _COMMIT.fullmatch(commit):
        why = " ".join(proc.stderr.split()) or f"it has no tag or branch named {ref}"
        raise MnistArchError(f"--action {action}: git ls-remote {url} did not give the commit of {ref!r} ({why}). "
                             f"Give a tag or branch that exists there, or its 40-character commit: --action "
                             f"{repo}@COMMIT. Nothing was written.")
    return CiSource(action=f"{repo}@{commit}", ref=ref)


def _installed_source() -> CiSource:
    """This installation's source when CI can use it: the action at the GitHub commit a git URL installed, that
    URL and commit for pip (elsewhere), or this version from an index; else an error that asks for one."""
    from mnist_arch import REPOSITORY, __version__

    try:
        dist = metadata.distribution("mnist-arch")
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except metadata.PackageNotFoundError:
        dist, direct = None, {"url": "this source tree, not installed"}
    vcs = direct.get("vcs_info") or {}
    github = _GITHUB.fullmatch(direct.get("url", ""))
    if vcs.get("commit_id") and github:
        return CiSource(action=f"{github['repo']}@{vcs['commit_id']}")
    if vcs.get("commit_id"):
        requirement = f"mnist-arch @ {vcs.get('vcs', 'git')}+{direct['url']}@{vcs['commit_id']}"
        if _REQUIREMENT.fullmatch(requirement):
            return CiSource(requirement=requirement)
    if dist is not None and not direct:  # from a package index, which has this version
        return CiSource(requirement=f"mnist-arch=={dist.version}")
    raise MnistArchError(
        f"mnist-arch is installed here from {direct.get('url', 'an unknown place')}, so init cannot tell where your "
        f"CI should get it. Give --action {REPOSITORY}@TAG (mnist-arch's GitHub Action: it installs mnist-arch "
        "from its own repository, pinned to that tag's commit) or --requirement SPEC (what pip installs in CI, e.g. "
        f"\"mnist-arch @ git+https://github.com/{REPOSITORY}@v{__version__}\", or mnist-arch=={__version__} "
        "once it is on PyPI). Nothing was written.")


def _template(*parts: str) -> str:
    return resources.files("mnist_arch").joinpath("templates", *parts).read_text(encoding="utf-8")


def render_workflow(workflow: str, project_dir: str | PurePosixPath = ".", source: CiSource | None = None) -> str:
    """The text of template `workflow` (one of WORKFLOWS) for a project in `project_dir` (relative to the top of
    the repository) whose CI installs mnist-arch from `source` (default: this version with pip)."""
    from mnist_arch import __version__

    source = source or CiSource(requirement=f"mnist-arch=={__version__}")
    install = _template("steps", "install_action.yml" if source.action else "install_pip.yml")
    install = install.replace("__ACTION__", f"{source.action}" + (f"  # {source.ref}" if source.ref else ""))
    install = install.replace("__MNIST_ARCH_REQUIREMENT__", source.requirement or "")
    project_dir = PurePosixPath(project_dir)
    text = _template(workflow)
    for token, torch in (("__INSTALL_STEPS__", TORCH_CHECK), ("__RULE_INSTALL_STEPS__", TORCH_RULE)):
        steps = install
        for key, value in torch.items():
            steps = steps.replace(key, value)
        text = text.replace(f"      {token}\n", steps)
    for token, value in {"__PROJECT_DIR__": str(project_dir),
                         "__PYPROJECT__": str(project_dir / "pyproject.toml")}.items():
        text = text.replace(token, value)
    return text


def existing_model_tests(workflows_dir: Path, top: Path, root: Path | None = None) -> list[str]:
    """A note for each workflow already in `workflows_dir` (besides ours) that runs pytest or uses an action major
    at its end of life (END_OF_LIFE_ACTIONS), and for each test file in `root` that pytest, run there as
    model_tests.yml runs it, will not collect: what to do with each. init never changes or deletes them."""
    notes = []
    for path in sorted({*workflows_dir.glob("*.yml"), *workflows_dir.glob("*.yaml")}):
        if path.name in WORKFLOWS:
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        where = os.path.relpath(path, top)
        runs = next((n for n, line in enumerate(lines, 1)
                     if "pip install" not in line and _RUNS_PYTEST.search(line.split(" #")[0].strip())), None)
        if runs:
            notes.append(f"{where} already runs pytest (line {runs}), and model_tests.yml runs it too, with your "
                         "declared models: delete that workflow (or its test job) if it only ran these tests, so that "
                         "each push runs them once; keep it if it tests other things. init left it as it was.")
        for n, line in enumerate(lines, 1):
            uses = _USES.match(line)
            major = uses and re.match(r"v(\d+)(?:\.|$)", uses["tag"] or uses["ref"])
            old, current = END_OF_LIFE_ACTIONS.get(uses["action"] if uses else "", ({}, 0))
            if major and int(major[1]) in old:
                notes.append(f"{where} uses {uses['action']}@v{major[1]} (line {n}), at its end of life "
                             f"({old[int(major[1])]}). Move it to v{current} (or a later major), or delete the "
                             "workflow if model_tests.yml replaces it.")
    if root is not None:
        notes += uncollected_test_files(root)
    return notes


def uncollected_test_files(root: Path, limit: int = 20) -> list[str]:
    """A note for each Python file under `root` that defines tests (`def test...`, `class Test...`) and that pytest,
    run in `root` without arguments, will not collect: its name matches none of python_files (the repository's
    own, from the first pytest configuration upwards, else pytest's)."""
    patterns, config = _python_files(root)
    source = f"set in {os.path.relpath(config, root)}" if config else "pytest's default"
    notes = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_SOURCE
                         and not (Path(folder) / d / "pyvenv.cfg").exists())
        for name in sorted(files):
            path = Path(folder) / name
            if (not name.endswith(".py") or name == "conftest.py" or "test" not in name.lower()
                    or any(path.match(p) for p in patterns)):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            found = _DEFINES_TESTS.search(text)
            if not found:
                continue
            test, line = re.split(r"[\s(:]", found[0].split(None, 2)[-1])[0], text.count("\n", 0, found.start()) + 1
            if config:
                fix = f"add its name to python_files in {os.path.relpath(config, root)}"
            else:
                fix = (f"add python_files = [\"{PYTEST_FILES[0]}\", \"{PYTEST_FILES[1]}\", \"{name}\"] under "
                       "[tool.pytest.ini_options] in pyproject.toml")
            notes.append(f"{os.path.relpath(path, root)} defines tests ({test}, line {line}) that pytest will not run: "
                         f"its name matches none of python_files ({' '.join(patterns)}: {source}), so neither pytest "
                         f"here nor model_tests.yml collects it. Rename it (e.g. test_{name}), or {fix}.")
            if len(notes) == limit:
                return notes
    return notes


def _python_files(root: Path) -> tuple[tuple[str, ...], Path | None]:
    """pytest's python_files for a run in `root`, and the file that sets them: the first configuration file pytest
    reads from `root` upwards (pytest.ini, .pytest.ini, pyproject.toml with [tool.pytest.ini_options], tox.ini
    with [pytest], setup.cfg with [tool:pytest]); None where pytest's default applies."""
    import configparser

    for folder in (root, *root.parents):
        for name in _PYTEST_CONFIGS:
            path = folder / name
            if not path.is_file():
                continue
            if name == "pyproject.toml":
                try:
                    tool = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {})
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                    continue
                options = tool.get("pytest", {}).get("ini_options") if isinstance(tool, dict) else None
                if not isinstance(options, dict):
                    continue
                value = options.get("python_files")
            else:
                section = {"tox.ini": "pytest", "setup.cfg": "tool:pytest"}.get(name, "pytest")
                parser = configparser.ConfigParser(interpolation=None)
                try:
                    parser.read(path, encoding="utf-8")
                except (configparser.Error, UnicodeDecodeError):
                    continue
                if not parser.has_section(section) and name in ("tox.ini", "setup.cfg"):
                    continue
                value = parser.get(section, "python_files", fallback=None)
            if value is None:  # pytest reads this file, which keeps pytest's default
                return PYTEST_FILES, None
            return tuple(value.split() if isinstance(value, str) else map(str, value)), path
    return PYTEST_FILES, None


def seed_accuracies(root: Path, name: str, model: str, epochs: int, data_dir: str | Path | None = None,
                    seeds: tuple[int, ...] = SEEDS, progress: Callable[[str], None] | None = None) -> list[float]:
    """The test accuracies of `model` (PATH.py:ATTR or package.module:ATTR in `root`) trained for `epochs` of the
    table's default recipe, once per seed, each run in its own worker (`jobs.train_runs`): what `mnist-arch train
    NAME --seed 0-4` measures once the model is declared."""
    from mnist_arch.jobs import train_runs
    from mnist_arch.paths import mnist_root
    from mnist_arch.project import Project, adhoc
    from mnist_arch.work import TrainRequest

    project = Project(path=root / "pyproject.toml", root=root, declared=())
    recipe = parse_recipe_fields({"min_accuracy": 1.0, "epochs": epochs}, "the command line", TRAIN_DEFAULTS)
    declared = dataclasses.replace(adhoc(model, root), name=name)
    declared = dataclasses.replace(declared, spec=declared.spec.replace(recipes={"quick": recipe}))

    def reached(seed: int, result) -> None:
        if result.collapsed:
            share, label = result.collapsed["share"], result.collapsed["class"]
            raise MnistArchError(f"--min-accuracy auto: seed {seed} of {model} collapsed ({share:.1%} of the test "
                                 f"predictions are class {label}); a threshold from such runs would pass a broken "
                                 "model. Fix the model or its training, or give the threshold yourself. Nothing was "
                                 "written.")
        if progress:
            progress(f"{name} seed {seed}: test accuracy {result.test_accuracy:.2%} after {result.epochs} epoch(s) "
                     f"in {result.seconds:.1f}s")

    # on the CPU, as the CI that will hold the model to the threshold trains it (a GPU here would not be there)
    request = TrainRequest(declared, "quick", device="cpu", data_dir=str(mnist_root(data_dir)))
    results = train_runs(project, request, seeds, on_note=progress, on_result=reached)
    return [r.test_accuracy for r in results]


def _badge(top: Path | None) -> tuple[str, str | None]:
    """The README badge for model_tests.yml, from the `origin` remote when it is on GitHub."""
    from mnist_arch.diff import badge_markdown, remote_badge

    placeholder = badge_markdown(PLACEHOLDER_REMOTE)
    if top is None:
        return placeholder, ("this folder is not in a git repository yet; in the badge, replace OWNER/REPOSITORY "
                             "with your GitHub repository (or run `mnist-arch badge` once it has a remote).")
    try:
        return remote_badge(top), None
    except MnistArchError as exc:
        return placeholder, f"{exc}"
