"""The distribution, outside this tree (issue 22).

release.yml's own build step makes the sdist and the wheel from a copy of the working tree as a checkout has it
(`python -m build`, `twine check --strict`), and the metadata is checked. The wheel then goes into a fresh virtual
environment: no editable install and no source tree on its path; torch and the other dependencies are this
environment's own, named by a .pth file (a folder of links to our site-packages, less mnist-arch), so nothing
is downloaded (pip runs with PIP_NO_INDEX). There, release.yml's wheel test runs (`--version`, `init`, whose
templates ship, `check` and the pytest plugin in a throw-away repository), the pre-commit hook's entry runs as
pre-commit runs it, and the workflow `init --requirement WHEEL` writes installs that wheel in another fresh
environment, unedited, and runs its pytest step there.

Fast because nothing is downloaded or compiled: 23 s for this file on the 2-core development machine beside
another busy process, load average 2.8 (`/usr/bin/time pytest -q -p no:cacheprovider tests/test_dist.py`: 22.7 s
wall, 10 passed; `--durations`: the build 1.5 s, the wheel's environment with the wheel installed 1.3 s, the rest
mnist-arch's own runs, 4 to 7 s per test).
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mnist_arch import REPOSITORY, __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib
from mnist_arch.workflows import WORKFLOWS
from tests.test_init import assignment, git
from tests.test_workflows import RELEASE, REPO_ROOT, load_yaml, output, run_step, workflow

HOOKS = REPO_ROOT / ".pre-commit-hooks.yaml"
TIMEOUT_S = 300


# --------------------------------------------------------------------------- helpers


def checkout_copy(dest: Path) -> Path:
    """The working tree as a checkout of it has it: tracked files, and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        source = REPO_ROOT / os.fsdecode(name)
        if source.is_symlink() or not source.is_file():  # .venv (a link here), files deleted but not yet staged
            continue
        target = dest / os.fsdecode(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


@dataclass
class Venv:
    """A fresh virtual environment whose packages besides mnist-arch are this one's."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        ours = Path(sys.executable).parent.resolve()
        path = [p for p in os.environ["PATH"].split(os.pathsep) if p and Path(p).resolve() != ours]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MNIST_ARCH_DATA")}
        env.update(PATH=os.pathsep.join([str(self.bin), *path]), VIRTUAL_ENV=str(self.root), PIP_NO_INDEX="1",
                   PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
        return {**env, **extra}

    def run(self, *argv: str | Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=self.env(**extra), capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)


def fresh_venv(path: Path) -> Venv:
    """A virtual environment without mnist-arch. Its other packages are ours: a .pth file names a folder of links
    to our site-packages, less mnist-arch's editable install and the .pth files, so pip finds torch, pytest and
    the rest installed and downloads nothing; their console scripts (pytest, ...) are written as pip writes them."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=TIMEOUT_S)
    venv = Venv(path)
    deps = path / "ours"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.suffix != ".pth" and not entry.name.lower().startswith(("mnist_arch", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    site = subprocess.run([venv.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "ours.pth").write_text(f"{deps}\n")
    for dist in importlib.metadata.distributions(path=[str(deps)]):
        for ep in dist.entry_points.select(group="console_scripts"):
            script = venv.bin / ep.name
            if not script.exists():
                script.write_text(f"#!{venv.python}\nimport sys\nfrom importlib.metadata import EntryPoint\n"
                                  f"sys.exit(EntryPoint({ep.name!r}, {ep.value!r}, {ep.group!r}).load()())\n")
                script.chmod(0o755)
    return venv


def metadata_of(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        return email.parser.Parser().parsestr(zf.read(f"mnist_arch-{__version__}.dist-info/METADATA").decode())


# --------------------------------------------------------------------------- the build


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """dist/ as release.yml's build step leaves it, built from a copy of the working tree."""
    checkout = checkout_copy(tmp_path_factory.mktemp("checkout"))
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = run_step(RELEASE, "Build the distributions", checkout, {}, env)
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.count("PASSED") == 2, output(proc)  # twine check --strict, one line per file
    return checkout / "dist"


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    return dist / f"mnist_arch-{__version__}-py3-none-any.whl"


def test_one_sdist_and_one_wheel(dist):
    assert sorted(p.name for p in dist.iterdir()) == [f"mnist_arch-{__version__}-py3-none-any.whl",
                                                       f"mnist_arch-{__version__}.tar.gz"]


def test_the_metadata_is_complete(wheel):
    meta = metadata_of(wheel)
    assert meta["Name"] == "mnist-arch" and meta["Version"] == __version__
    assert meta["License-Expression"] == "MIT" and meta["License-File"] == "LICENSE"
    urls = dict(value.split(", ", 1) for value in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Documentation", "Changelog"} <= set(urls), urls
    # made by setup.py from mnist_arch.REPOSITORY, the one place the repository is written (tests/test_docs.py)
    assert all(url.startswith(f"https://github.com/{REPOSITORY}") for url in urls.values()), urls
    classifiers = meta.get_all("Classifier")
    assert "Framework :: Pytest" in classifiers and "Programming Language :: Python :: 3" in classifiers
    assert meta["Requires-Python"] == ">=3.10" and any(r.startswith("torch>=") for r in meta.get_all("Requires-Dist"))
    assert meta["Description-Content-Type"] == "text/markdown"


def test_the_readme_on_the_index_has_no_relative_link(wheel):
    description = metadata_of(wheel).get_payload()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert description.startswith("# mnist-arch") and len(description.splitlines()) == len(readme.splitlines())
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    relative = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [t for t in relative if not re.match(r"[a-z]+:", t)]
    assert relative, "the README has relative links (docs/...): the index needs them made absolute"
    assert all(re.match(r"https?://", t) for t in targets), [t for t in targets if not re.match(r"https?://", t)]
    source = dict(v.split(", ", 1) for v in metadata_of(wheel).get_all("Project-URL"))["Source"]
    for target in relative:
        assert f"]({source}/blob/v{__version__}/{target})" in description, target


def test_the_wheel_ships_the_package_and_its_templates(wheel, dist):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"mnist_arch-{__version__}.dist-info/entry_points.txt").decode()
    templates = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "mnist_arch" / "templates").rglob("*.yml")}
    assert len(templates) == len(WORKFLOWS) + 2 and templates <= names, templates - names
    assert f"mnist_arch-{__version__}.dist-info/licenses/LICENSE" in names
    assert "mnist-arch = mnist_arch.cli:run" in entry_points and "mnist_arch = mnist_arch.pytest_plugin" in entry_points
    with tarfile.open(dist / f"mnist_arch-{__version__}.tar.gz") as tf:
        sdist = {name.partition("/")[2] for name in tf.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "setup.py", *templates} <= sdist


def test_the_version_has_one_home():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mnist_arch.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


# --------------------------------------------------------------------------- the wheel, installed


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Venv:
    """A fresh environment where release.yml's install step has installed the wheel from dist/."""
    venv = fresh_venv(tmp_path_factory.mktemp("venv") / "wheel")
    proc = run_step(RELEASE, "Install the wheel, torch from the CPU wheel index", dist.parent, {}, venv.env())
    assert proc.returncode == 0, output(proc)
    return venv


def test_the_installed_package_is_the_wheel(installed, tmp_path):
    proc = installed.run(installed.python, "-c", "import json, mnist_arch, importlib.metadata as m; print(json.dumps("
                         "[mnist_arch.__file__, m.version('mnist-arch'), m.distribution('mnist-arch')"
                         ".read_text('direct_url.json')]))", cwd=tmp_path)
    assert proc.returncode == 0, output(proc)
    path, version, direct = json.loads(proc.stdout)
    assert Path(path).is_relative_to(installed.root) and version == __version__, (path, version)
    assert direct and json.loads(direct)["url"].endswith(".whl"), direct  # not the editable install of this tree
    version = installed.run("mnist-arch", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"mnist-arch {__version__}", output(version)


def test_release_wheel_test_passes(installed, tmp_path):
    """release.yml's wheel test: --version, init (the templates), check and the plugin in a throw-away repository."""
    proc = run_step(RELEASE, "Use the installed wheel in a throw-away repository", tmp_path,
                    {"github.ref_name": f"v{__version__}"}, installed.env(TMPDIR=str(tmp_path)))
    assert proc.returncode == 0, output(proc)
    assert "1 of 1 models pass" in proc.stdout and "passed" in proc.stdout, output(proc)
    made = next(tmp_path.glob("tmp.*"))
    assert workflow(made / ".github" / "workflows" / "model_tests.yml")["name"] == "model-tests"


def _hook_entry() -> list[str]:
    (hook,) = load_yaml(HOOKS)
    return [*hook["entry"].split(), *hook.get("args", [])]


def test_pre_commit_hook_definition():
    (hook,) = load_yaml(HOOKS)
    assert hook["id"] == "mnist-arch-check" and hook["language"] == "python" and hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    assert [bool(files.search(p)) for p in ("model.py", "nets/cnn.py", "pyproject.toml", "sub/pyproject.toml",
                                             "README.md", "data/train.csv", "pyproject.toml.bak")] == [
        True, True, True, True, False, False, False]
    assert _hook_entry()[0] in importlib.metadata.distribution("mnist-arch").entry_points.names


def test_pre_commit_hook_runs_as_pre_commit_runs_it(installed, tmp_path):
    """pre-commit installs the repository into an environment of its own and runs `entry` with `args` at the top
    of the repository being committed: exit 0 on a model within its budget, 1 when a budget breaks."""
    repo = assignment(tmp_path / "repo", pyproject=b'[tool.mnist-arch.models.net]\nmodel = "model.py:Net"\n'
                                                    b'params_below = 20000\nrequire = ["batchnorm"]\n')
    passing = installed.run(*_hook_entry(), cwd=repo)
    assert passing.returncode == 0 and "1 of 1 models pass" in passing.stdout, output(passing)
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text().replace("20000", "5000"))
    failing = installed.run(*_hook_entry(), cwd=repo)
    assert failing.returncode == 1 and "params.below" in failing.stdout, output(failing)
    # Where no table is found (a project in a subfolder, the hook at the repository's root) the hook fails
    # instead of judging our reference architectures and passing.
    (tmp_path / "bare").mkdir()
    nowhere = installed.run(*_hook_entry(), cwd=tmp_path / "bare")
    assert nowhere.returncode == 2 and "--require-table was given" in nowhere.stderr, output(nowhere)


def test_init_pip_line_installs_without_an_edit(installed, wheel, tmp_path):
    """`init --requirement WHEEL` (from the installed wheel) writes a workflow whose install step, run unedited in
    another fresh environment, installs that wheel; its pytest step then judges the declared model."""
    repo = assignment(tmp_path / "repo")
    (repo / "requirements.txt").write_text("torchinfo>=1.8\n")  # the step's requirements.txt branch
    proc = installed.run("mnist-arch", "init", "--model", "model.py:Net", "--params-below", "20000", "--require",
                         "batchnorm", "--requirement", str(wheel), cwd=repo)
    assert proc.returncode == 0 and f"pip install {wheel}" in proc.stdout, output(proc)
    tests = repo / ".github" / "workflows" / "model_tests.yml"
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mnist-arch init")
    ci = fresh_venv(tmp_path / "ci")
    assert ci.run(ci.python, "-c", "import mnist_arch", cwd=repo).returncode == 1, "no mnist-arch before the step"
    expressions = {"github.workspace": str(repo)}
    install = run_step(tests, "Install torch (CPU wheels), mnist-arch and your requirements", repo, expressions,
                       ci.env())
    assert install.returncode == 0, output(install)
    assert ci.run("mnist-arch", "--version", cwd=repo).stdout.strip() == f"mnist-arch {__version__}"
    pytest_step = run_step(tests, "pytest", repo, expressions, ci.env(MNIST_ARCH_DATA=str(tmp_path / "no-data")))
    assert pytest_step.returncode == 0, output(pytest_step)
    assert f"plugins: mnist-arch-{__version__}" in pytest_step.stdout, pytest_step.stdout
    assert re.search(r"^pyproject\.toml \.{3,} ", pytest_step.stdout, re.MULTILINE), pytest_step.stdout  # the items
    assert re.search(r"^test_model\.py \.\. ", pytest_step.stdout, re.MULTILINE), pytest_step.stdout  # the student's
