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

Its parts live beside it: the table's text and pyproject.toml byte for byte in `mnist_arch.pyproject_table`, the
workflows and where they get mnist-arch in `mnist_arch.workflows` (the templates in `mnist_arch/templates/`, the
install steps of each kind in `templates/steps/`; docs/ci.md explains them), the notes on the repository's own
tests in `mnist_arch.existing_tests`, the badge in `mnist_arch.badge`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mnist_arch.badge import readme_badge
from mnist_arch.errors import MnistArchError
from mnist_arch.existing_tests import existing_model_tests
from mnist_arch.git import git_toplevel
from mnist_arch.paths import is_file_target
from mnist_arch.project import TRAIN_DEFAULTS
from mnist_arch.pyproject_table import TABLE, appended, lookup, read_pyproject, table_text, verify, without_table
from mnist_arch.runs import rule_threshold
from mnist_arch.spec import parse_recipe_fields, parse_spec_fields
from mnist_arch.workflows import WORKFLOWS, CiSource, ci_source, render_workflow

_FORM = "Give the model as PATH.py:ATTR (a file relative to pyproject.toml, e.g. model.py:Net) or package.module:ATTR."
_MODEL = re.compile(r"(?P<source>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
#: The course's rule where `init --rule-threshold` is given alone: 15 epochs at most, 3 in a row.
RULE_DEFAULTS = {"epochs": 15, "consecutive": 3}
#: The recipe of the rule table init writes: a usual course recipe (SGD with momentum, OneCycle, batch 128,
#: RandomRotation(7)), a starting point for the student's own, not one tuned here.
COURSE_RECIPE = {"optimizer": "sgd", "lr": 0.01, "optimizer_kwargs": {"momentum": 0.9}, "schedule": "onecycle",
                 "schedule_kwargs": {"max_lr": 0.05, "pct_start": 0.25}, "batch_size": 128, "rotation": 7}
#: The seeds of `--min-accuracy auto`: the five of the threshold rule (docs/training.md).
SEEDS = (0, 1, 2, 3, 4)


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


@dataclass(frozen=True)
class InitRequest:
    """What `mnist-arch init` is asked for, one field per option: the model (PATH.py:ATTR or package.module:ATTR)
    and its name in the table; its budgets and required features; its quick tier (`min_accuracy`, a fraction or
    "auto": SEEDS trained first, MNIST from `data_dir`, else $MNIST_ARCH_DATA, else the cache; `epochs`); its rule
    (threshold, and epochs and consecutive or RULE_DEFAULTS'), declared with COURSE_RECIPE; where CI gets
    mnist-arch (`action` or `requirement`, else this installation's source: ci_source); and `force`, to replace
    a table and workflows that exist."""

    model: str
    name: str | None = None
    params_below: int | None = None
    max_params: int | None = None
    require: list[str] | tuple[str, ...] = ()
    require_any: list[list[str]] | tuple[tuple[str, ...], ...] = ()
    min_accuracy: float | str | None = None
    epochs: int | None = None
    rule: Mapping[str, Any] | None = None
    action: str | None = None
    requirement: str | None = None
    data_dir: str | Path | None = None
    force: bool = False


@dataclass
class _Declaration:
    """The table's contents, checked: the model, its name, its spec fields, its quick tier and its rule table."""

    model: str
    name: str
    declared: dict[str, Any]
    train: dict[str, Any]
    rule: dict[str, Any]
    auto: bool


def init_project(root: str | Path, request: InitRequest,
                 progress: Callable[[str], None] | None = None) -> InitResult:
    """Declare `request.model` in `root`/pyproject.toml and write the workflows; nothing is written when any
    target exists (a [tool.mnist-arch] table, a workflow file) unless `request.force`. `min_accuracy="auto"` trains
    the model on SEEDS first and declares the threshold rule's answer; `progress` gets a line per epoch and per
    run."""
    root = Path(root).resolve()
    decl = _declaration(request, root)

    # Every target is checked before anything is written.
    pyproject = root / "pyproject.toml"
    old_text, verb, conflicts = _old_pyproject(pyproject, request.force)
    table_conflict = bool(conflicts)
    top = _git_top(root)
    workflows_dir = (top or root) / ".github" / "workflows"
    targets = [workflows_dir / w for w in WORKFLOWS]
    if not request.force:
        conflicts += [f"{t} exists" for t in targets if t.exists()]
    if conflicts:
        kept = " (the rest of pyproject.toml is kept byte for byte)" if table_conflict else ""
        raise MnistArchError(f"{'; '.join(conflicts)}. Nothing was written. Run it again with --force to "
                             f"replace them{kept}.")

    source = ci_source(action=request.action, requirement=request.requirement)
    result = InitResult(root=root, name=decl.name, model=decl.model, pyproject=verb, source=source)
    comment = None
    if decl.auto:  # the slow part, once everything else is known to be fine
        comment = _auto_threshold(root, decl, request.data_dir, result, progress)
    result.notes += _tier_notes(decl.name, decl.train, decl.rule)
    new_text = appended(old_text, table_text(decl.name, decl.declared, decl.train, comment, decl.rule))
    verify(new_text, decl.name, decl.declared, decl.train, pyproject, decl.rule)
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
    result.badge, badge_note = readme_badge(top)
    if badge_note:
        result.notes.append(badge_note)
    return result


def _declaration(request: InitRequest, root: Path) -> _Declaration:
    """The request's table, each field checked by the table's own rules (an error names the flag)."""
    model = _checked_model(request.model, root)
    name = request.name or _default_name(model)
    if not _NAME.fullmatch(name):
        raise MnistArchError(f"--name {name!r} is not a short identifier: use letters, digits, '_' and '-', "
                             "starting with a letter (it becomes [tool.mnist-arch.models.NAME]).")
    spec: dict[str, Any] = {"params_below": request.params_below, "max_params": request.max_params,
                            "require": sorted(set(request.require)) or None,
                            "require_any": [list(group) for group in request.require_any] or None}
    spec = {k: v for k, v in spec.items() if v is not None}
    parse_spec_fields(spec, "the command line")  # one home for validation: the same rules as the table's
    train: dict[str, Any] = {}
    min_accuracy, epochs = request.min_accuracy, request.epochs
    auto = min_accuracy == "auto"
    if isinstance(min_accuracy, str) and not auto:
        raise MnistArchError(f"--min-accuracy {min_accuracy!r} is neither a fraction (e.g. 0.98) nor auto.")
    if min_accuracy is not None:
        train = {"min_accuracy": 1.0 if auto else min_accuracy, "epochs": epochs or 1}
        parse_recipe_fields(train, "the command line", TRAIN_DEFAULTS)
    elif epochs is not None:
        raise MnistArchError("--epochs needs --min-accuracy, the test accuracy the training item must reach (a "
                             "fraction, e.g. 0.98, or auto: five seeds' runs and the threshold rule).")
    rule = _rule_table(request.rule) if request.rule is not None else {}
    return _Declaration(model, name, {"model": model, **spec}, train, rule, auto)


def _old_pyproject(pyproject: Path, force: bool) -> tuple[str, str, list[str]]:
    """pyproject.toml's text as it stays (less an old [tool.mnist-arch] table, with `force`), what happens to it
    ("written to a new", "added to", "replaced in"), and the conflict its table is without `force`."""
    if not pyproject.exists():
        return "", "written to a new", []
    old_text, old_data = read_pyproject(pyproject)
    if lookup(old_data, TABLE) is None:
        return old_text, "added to", []
    if not force:
        return old_text, "added to", [f"{pyproject} already has a [tool.mnist-arch] table"]
    return without_table(old_text, old_data, pyproject), "replaced in", []


def _auto_threshold(root: Path, decl: _Declaration, data_dir: str | Path | None, result: InitResult,
                    progress: Callable[[str], None] | None) -> str:
    """`--min-accuracy auto`: train SEEDS, set the threshold rule's answer as the quick tier's min_accuracy, note
    it in `result`, and return the table's comment line that says where it came from."""
    train, model, name = decl.train, decl.model, decl.name
    accuracies = seed_accuracies(root, name, model, train["epochs"], data_dir, progress=progress)
    train["min_accuracy"] = threshold = rule_threshold(accuracies)
    reached = f"{min(accuracies):.2%} to {max(accuracies):.2%}"
    if threshold <= 0:
        raise MnistArchError(f"--min-accuracy auto: seeds {SEEDS[0]}-{SEEDS[-1]} of {model} reached {reached} "
                             f"after {train['epochs']} epoch(s), which leaves no threshold above 0 (the worst "
                             "minus the spread). Train longer (--epochs N) or give the threshold yourself. "
                             "Nothing was written.")
    result.notes.append(f"min_accuracy = {threshold} comes from {len(accuracies)} seeds' test accuracies "
                        f"({', '.join(f'{a:.2%}' for a in accuracies)}) by the threshold rule; `mnist-arch train "
                        f"{name} --seed 0-4 --format markdown` runs them again.")
    return (f"# seeds {SEEDS[0]}-{SEEDS[-1]} reached {reached}; the threshold rule (the worst minus the spread, "
            "at least 0.1 point) gives min_accuracy")


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
# The repository and the seeds


def _git_top(root: Path) -> Path | None:
    """The top of the git repository holding `root`, None when there is none (or no git)."""
    try:
        return git_toplevel(root).resolve()
    except (MnistArchError, OSError):  # not a repository, or no git at all
        return None


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
    declared = dataclasses.replace(declared, spec=dataclasses.replace(declared.spec, recipes={"quick": recipe}))

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

