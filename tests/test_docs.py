"""The README and docs/ as a reader meets them (issue 26): links that lead somewhere, a README that starts with the
user, mnist-arch's own GitHub repository written in one place (`mnist_arch.REPOSITORY`), and runtime dependencies
that are the ones the package imports."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from mnist_arch import REPOSITORY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

#: Every file a reader (or pip, or GitHub) reads mnist-arch's repository from, besides mnist_arch/__init__.py.
NAMING_FILES = [README, *DOCS, ROOT / "action.yml", ROOT / ".pre-commit-hooks.yaml", ROOT / "pyproject.toml",
                ROOT / "setup.py", *sorted((ROOT / "mnist_arch").rglob("*.py")),
                *sorted((ROOT / "mnist_arch" / "templates").rglob("*.yml")), *sorted((ROOT / "examples").rglob("*.*")),
                *sorted((ROOT / ".github").rglob("*.yml"))]
#: A mention of a GitHub repository named mnist-arch: a URL, or `uses:`/`--action` with a ref.
MENTION = re.compile(r"github\.com/([\w.-]+/mnist-arch)\b|\b([\w.-]+/mnist-arch)@")
#: Placeholders for the *user's* repository (the badge, the OWNER/REPO@REF syntax): they stay.
USERS_PLACEHOLDER = re.compile(r"\bOWNER/(?:REPOSITORY|REPO)\b")


def _prose(markdown: str) -> str:
    """Markdown without its fenced code blocks and inline code spans, where a `](x)` is not a link."""
    return re.sub(r"`(?:[^`\n]|\n(?!\n))*`", "", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M))


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of `markdown`."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


def test_the_readme_starts_with_the_user():
    """Under 2,500 words; its first 80 lines go from install to a gated pull request; the project's own test
    command is the one .ci/run runs."""
    text = README.read_text(encoding="utf-8")
    words = len(re.findall(r"\S+", text))
    assert words < 2500, f"README.md has {words} words; move the detail to docs/"
    first = "\n".join(text.splitlines()[:80])
    for step in ("pip install", "mnist-arch init", "[tool.mnist-arch", "mnist-arch check", "\npytest",
                 "mnist-arch diff", "git push"):
        assert step in first, f"the README's first 80 lines do not show {step.strip()!r}"
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ('pip install -e ".[dev]" -c .ci/constraints.txt', "pytest -n auto"):
        assert f"\n{command}\n" in text and command in run.replace(" -q ", " "), command
    assert "`pytest -n auto` (pytest-xdist, one worker per core, one torch thread each) runs" in text


def test_the_repository_is_written_in_one_place():
    """Every mention of mnist-arch's repository is `REPOSITORY`; code formats it from the setting, never a copy;
    the project URLs are made from it (setup.py); `OWNER` appears nowhere else but in the user's placeholders."""
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", REPOSITORY), REPOSITORY
    stray, copies = [], []
    for path in NAMING_FILES:
        if path == ROOT / "mnist_arch" / "__init__.py" or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            for match in MENTION.finditer(line):
                named = match[1] or match[2]
                if named != REPOSITORY:
                    stray.append(f"{where}: {named}")
                elif path.suffix == ".py":
                    copies.append(where)
            if "OWNER" in USERS_PLACEHOLDER.sub("", MENTION.sub("", line)):
                stray.append(f"{where}: OWNER")
    old = sorted({s.split(": ")[1] for s in stray} - {"OWNER"})
    fix = (f" (after changing REPOSITORY: sed -i 's#{old[0]}#{REPOSITORY}#g' on those files)" if old else "")
    assert not stray, f"mentions of mnist-arch's repository that are not mnist_arch.REPOSITORY{fix}: {stray}"
    assert not copies, f"code that writes the repository out instead of formatting mnist_arch.REPOSITORY: {copies}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "urls" not in project and "urls" in project["dynamic"], "[project.urls] is made by setup.py"
    sys.path.insert(0, str(ROOT))
    try:
        import setup
    finally:
        sys.path.remove(str(ROOT))
    assert setup._setting("REPOSITORY") == REPOSITORY
    assert set(setup.project_urls(REPOSITORY).values()) >= {f"https://github.com/{REPOSITORY}"}


def test_init_names_the_repository_from_the_setting(monkeypatch):
    """`init`'s message for a malformed --action suggests this repository, read from the setting."""
    import mnist_arch
    from mnist_arch import MnistArchError
    from mnist_arch.workflows import ci_source

    monkeypatch.setattr(mnist_arch, "REPOSITORY", "someone/mnist-arch")
    with pytest.raises(MnistArchError, match=r"e\.g\. --action someone/mnist-arch@v"):
        ci_source(action="mnist-arch")
    with pytest.raises(MnistArchError, match=r"git\+https://github\.com/someone/mnist-arch@v"):
        ci_source(requirement="mnist-arch; rm -rf /")


def _imported_top_modules() -> set[str]:
    names = set()
    for path in (ROOT / "mnist_arch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_runtime_dependencies_are_what_the_package_imports():
    """Each runtime dependency is imported by mnist_arch/ (its module named as the distribution is); torchvision and
    torchinfo, which only tests and benchmarks import, are in the dev extra (docs/dependencies.md)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = {re.match(r"[A-Za-z0-9_.-]+", r)[0].lower() for r in project["dependencies"]}
    imported = _imported_top_modules()
    assert runtime <= imported, f"runtime dependencies the package never imports: {sorted(runtime - imported)}"
    assert not {"torchvision", "torchinfo"} & imported
    dev = {re.match(r"[A-Za-z0-9_.-]+", r)[0].lower() for r in project["optional-dependencies"]["dev"]}
    assert {"torchvision", "torchinfo"} <= dev
