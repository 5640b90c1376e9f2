"""`mnist-arch init`: declare a model in pyproject.toml and write the two GitHub workflows that judge it.

`init_project` adds a `[tool.mnist-arch]` table to the folder's pyproject.toml (creating the file, or
appending to it without changing a byte of what is there) and writes, at the top of the git repository,

- `.github/workflows/model_tests.yml`: pytest, the job summary (`check`, and `diff` on pull requests),
  the benchmarks, and on pull requests the report as an artifact;
- `.github/workflows/model_tests_comment.yml`: posts that report as one sticky comment, from a
  `workflow_run` that never runs the pull request's code (so it works for pull requests from forks).

The templates live in `mnist_arch/templates/`; docs/ci.md explains them.
"""

from __future__ import annotations

import json
import os
import re
import sys
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
from mnist_arch.project import TRAIN_DEFAULTS, is_file_target
from mnist_arch.spec import parse_recipe_fields, parse_spec_fields

TABLE = ("tool", "mnist-arch")
#: The workflows init writes, under .github/workflows/ of the repository.
WORKFLOWS = ("model_tests.yml", "model_tests_comment.yml")
#: The hidden marker by which model_tests_comment.yml finds its own comment.
COMMENT_MARKER = "<!-- mnist-arch-report -->"
#: The badge's workflow, when the repository has no GitHub remote yet.
PLACEHOLDER_REMOTE = "https://github.com/OWNER/REPOSITORY"

_FORM = "Give the model as PATH.py:ATTR (a file relative to pyproject.toml, e.g. model.py:Net) or package.module:ATTR."
_MODEL = re.compile(r"(?P<source>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_HEADER = re.compile(r"\s*\[\[?(?P<key>[^\]]*)\]\]?\s*(#.*)?")
_REQUIREMENT = re.compile(r"[A-Za-z0-9 @+:/._=<>!~,-]+")


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

    def report(self) -> str:
        pyproject, *workflows = (os.path.relpath(p, self.root) for p in self.written)
        lines = [f"Declared model {self.name!r} ({self.model}): [tool.mnist-arch] {self.pyproject} {pyproject}."]
        lines += [f"Wrote {p}" for p in workflows]
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
    min_accuracy: float | None = None,
    epochs: int | None = None,
    force: bool = False,
) -> InitResult:
    """Declare `model` in `root`/pyproject.toml and write the workflows; nothing is written when any target
    exists (a [tool.mnist-arch] table, a workflow file) unless `force`."""
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
    if min_accuracy is not None:
        train = {"min_accuracy": min_accuracy, "epochs": epochs or 1}
        parse_recipe_fields(train, "the command line", TRAIN_DEFAULTS)
    elif epochs is not None:
        raise MnistArchError("--epochs needs --min-accuracy, the test accuracy the training "
                             "item must reach (a fraction, e.g. 0.98).")
    declared = {"model": model, **spec}
    table_text = _table_text(name, declared, train)

    # Every target is checked before anything is written.
    pyproject = root / "pyproject.toml"
    conflicts: list[str] = []
    table_conflict = False
    old_text, action = "", "written to a new"
    if pyproject.exists():
        old_text, old_data = _read_pyproject(pyproject)
        action = "added to"
        if _lookup(old_data, TABLE) is not None:
            if not force:
                conflicts.append(f"{pyproject} already has a [tool.mnist-arch] table")
                table_conflict = True
            else:
                old_text = _without_table(old_text, old_data, pyproject)
                action = "replaced in"
    top = _git_top(root)
    workflows_dir = (top or root) / ".github" / "workflows"
    targets = [workflows_dir / w for w in WORKFLOWS]
    if not force:
        conflicts += [f"{t} exists" for t in targets if t.exists()]
    if conflicts:
        kept = " (the rest of pyproject.toml is kept byte for byte)" if table_conflict else ""
        raise MnistArchError(f"{'; '.join(conflicts)}. Nothing was written. Run it again with --force to "
                             f"replace them{kept}.")

    new_text = _appended(old_text, table_text)
    _verify(new_text, name, declared, train, pyproject)
    project_dir = PurePosixPath(*root.relative_to(top).parts) if top else PurePosixPath(".")
    requirement, note = _mnist_arch_requirement()
    rendered = {w: render_workflow(w, project_dir, requirement) for w in WORKFLOWS}

    result = InitResult(root=root, name=name, model=model, pyproject=action)
    with open(pyproject, "w", encoding="utf-8", newline="") as f:  # newline="": the file's own line ends
        f.write(new_text)
    result.written.append(pyproject)
    workflows_dir.mkdir(parents=True, exist_ok=True)
    for target in targets:
        target.write_text(rendered[target.name], encoding="utf-8")
        result.written.append(target)
    if note:
        result.notes.append(note)
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
    raise TypeError(value)


def _table_text(name: str, declared: dict[str, Any], train: dict[str, Any]) -> str:
    lines = [
        "[tool.mnist-arch]",
        "# Models judged by `mnist-arch check`, `diff`, `bench` and by pytest (one item per declared fact).",
        '# data = "data"  # optional: the folder holding MNIST/raw/ for the training items',
        "",
        f"[tool.mnist-arch.models.{name}]",
        *(f"{key} = {_toml_value(value)}" for key, value in declared.items()),
    ]
    if train:
        lines += ["", f"[tool.mnist-arch.models.{name}.train]",
                  *(f"{key} = {_toml_value(value)}" for key, value in train.items())]
    return "\n".join(lines) + "\n"


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


def _verify(text: str, name: str, declared: dict[str, Any], train: dict[str, Any], path: Path) -> None:
    """What will be written parses, and its table says what was asked (a guard on the TOML written here)."""
    try:
        table = _lookup(tomllib.loads(text), TABLE)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a bug here, not bad input
        raise AssertionError(f"init would write invalid TOML to {path}: {exc}") from None
    expected = {**declared, **({"train": train} if train else {})}
    assert table["models"][name] == expected, (table, expected)


# ---------------------------------------------------------------------------------------------
# Workflows and badge


def _git_top(root: Path) -> Path | None:
    from mnist_arch.diff import git_toplevel

    try:
        return git_toplevel(root).resolve()
    except (MnistArchError, OSError):  # not a repository, or no git at all
        return None


def _mnist_arch_requirement() -> tuple[str, str | None]:
    """What the workflow pip-installs as mnist-arch, and a note when that may not be what runs here."""
    try:
        dist = metadata.distribution("mnist-arch")
    except metadata.PackageNotFoundError:
        from mnist_arch import __version__

        return f"mnist-arch=={__version__}", None
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    vcs = direct.get("vcs_info")
    if vcs and vcs.get("commit_id"):
        requirement = f"mnist-arch @ {vcs.get('vcs', 'git')}+{direct['url']}@{vcs['commit_id']}"
        if _REQUIREMENT.fullmatch(requirement):
            return requirement, None
    requirement = f"mnist-arch=={dist.version}"
    if direct.get("url", "").startswith("file:"):
        return requirement, (f"mnist-arch is installed here from a local folder ({direct['url']}); the workflow "
                             f"installs {requirement} from PyPI. Edit MNIST_ARCH_REQUIREMENT in "
                             ".github/workflows/model_tests.yml if CI should install it from elsewhere.")
    return requirement, None


def render_workflow(workflow: str, project_dir: str | PurePosixPath = ".", requirement: str | None = None) -> str:
    """The text of template `workflow` (one of WORKFLOWS) for a project in `project_dir` (relative to the top of
    the repository) whose CI installs mnist-arch as `requirement` (default: this version, from PyPI)."""
    from mnist_arch import __version__

    project_dir = PurePosixPath(project_dir)
    text = resources.files("mnist_arch").joinpath("templates", workflow).read_text(encoding="utf-8")
    for token, value in {"__PROJECT_DIR__": str(project_dir),
                         "__PYPROJECT__": str(project_dir / "pyproject.toml"),
                         "__MNIST_ARCH_REQUIREMENT__": requirement or f"mnist-arch=={__version__}"}.items():
        text = text.replace(token, value)
    return text


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
