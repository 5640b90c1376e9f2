"""The README's status badge: the GitHub Actions badge of the workflow `mnist-arch init` writes, for the
repository behind a git remote (`mnist-arch badge`, and the badge `init` prints)."""

from __future__ import annotations

import re
from pathlib import Path

from mnist_arch.errors import MnistArchError
from mnist_arch.git import git_toplevel, run_git

#: The badge's workflow, when the repository has no GitHub remote yet.
PLACEHOLDER_REMOTE = "https://github.com/OWNER/REPOSITORY"


def badge_markdown(remote_url: str, workflow: str = "model_tests.yml") -> str:
    """The standard GitHub Actions badge for `workflow` of the repository behind `remote_url`
    (https://github.com/OWNER/REPO(.git) or git@github.com:OWNER/REPO(.git))."""
    match = re.search(r"github\.com[:/]+([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", remote_url.strip())
    if not match:
        placeholder = badge_markdown(PLACEHOLDER_REMOTE, workflow)
        raise MnistArchError(f"The git remote {remote_url.strip()!r} is not a GitHub repository, and the badge shows a "
                             "GitHub Actions workflow: put this line in your README with OWNER/REPOSITORY replaced by "
                             f"your GitHub repository: {placeholder}")
    owner_repo = f"{match.group(1)}/{match.group(2)}"
    url = f"https://github.com/{owner_repo}/actions/workflows/{workflow}"
    return f"[![Model Tests]({url}/badge.svg)]({url})"


def remote_badge(cwd: str | Path | None = None, remote: str = "origin") -> str:
    """The badge for the repository holding `cwd`, from its `remote`'s URL."""
    top = git_toplevel(cwd)
    proc = run_git(["remote", "get-url", remote], top)
    if proc.returncode != 0:
        raise MnistArchError(f"{top} has no git remote named {remote!r}; add your GitHub repository (git remote add "
                             f"{remote} {PLACEHOLDER_REMOTE}.git) and run `mnist-arch badge` again, or "
                             "put this line in your README with OWNER/REPOSITORY replaced: "
                             f"{badge_markdown(PLACEHOLDER_REMOTE)}")
    return badge_markdown(proc.stdout)


def readme_badge(top: Path | None) -> tuple[str, str | None]:
    """The README badge `init` prints for the repository at `top` (None: not a git repository yet), from its
    `origin` remote when it is on GitHub, else the placeholder; and a note saying why, where it is that."""
    placeholder = badge_markdown(PLACEHOLDER_REMOTE)
    if top is None:
        return placeholder, ("this folder is not in a git repository yet; in the badge, replace OWNER/REPOSITORY "
                             "with your GitHub repository (or run `mnist-arch badge` once it has a remote).")
    try:
        return remote_badge(top), None
    except MnistArchError as exc:
        return placeholder, f"{exc}"
