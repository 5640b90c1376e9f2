"""The GitHub workflows `mnist-arch init` writes (WORKFLOWS, from mnist_arch/templates/, the install steps of
each kind in templates/steps/; docs/ci.md explains them), and where they get mnist-arch: this repository's
GitHub Action pinned by commit (`--action OWNER/REPO@REF`, or the GitHub commit a git URL installed here) or pip
(`--requirement SPEC`, or this version when it came from a package index); never a guess."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import PurePosixPath

from mnist_arch.errors import MnistArchError

#: The workflows init writes, under .github/workflows/ of the repository.
WORKFLOWS = ("model_tests.yml", "model_rule.yml", "model_tests_comment.yml")
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

