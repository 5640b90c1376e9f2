"""What `mnist-arch init` notes about a repository's own tests, and never changes: workflows that already run
pytest or use an action major at its end of life (END_OF_LIFE_ACTIONS), and test files that pytest, run as
model_tests.yml runs it, will not collect (the repository's python_files)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from mnist_arch.workflows import WORKFLOWS

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
