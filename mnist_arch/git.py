"""The git repository a command runs in, read with git: run a git command there, find its top, resolve a revision,
check one out into a temporary worktree (the base side of `mnist-arch diff`), and git's error text in one line.
`diff`, `init` and `badge` read the repository through here. (`init --action` asks GitHub for a tag's commit with
`git ls-remote` in mnist_arch.workflows: another repository, with its own time limit and messages.)"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mnist_arch.errors import MnistArchError


def run_git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`git ARGS` in `cwd`, its output captured as text; a missing git is an error that says so."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise MnistArchError("git is not installed (or not on PATH); `diff` needs it to read the base "
                             "revision.") from None


def one_line(text: str) -> str:
    """Text as one line; a Python traceback as its last line, which says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        return f"{lines[-1]} (the last line of a traceback)"
    return " ".join(" ".join(lines).split())


def git_toplevel(cwd: str | Path | None = None) -> Path:
    """The root of the git working tree holding `cwd`."""
    cwd = Path(cwd or Path.cwd())
    proc = run_git(["rev-parse", "--show-toplevel"], cwd)
    if proc.returncode != 0:
        raise MnistArchError(f"{cwd} is not inside a git repository; run `mnist-arch diff` from the "
                             "repository whose models you want to compare.")
    return Path(proc.stdout.strip())


def resolve_commit(top: Path, ref: str) -> str:
    """The full hash of `ref`, or an error naming it."""
    proc = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], top)
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
        proc = run_git(["worktree", "add", "--detach", str(tree), commit], top)
        if proc.returncode != 0:
            raise MnistArchError(f"git could not check out {commit[:12]} into a temporary worktree: "
                                 f"{one_line(proc.stderr)}")
        yield tree
    finally:
        run_git(["worktree", "remove", "--force", str(tree)], top)
        run_git(["worktree", "prune"], top)
        shutil.rmtree(scratch, ignore_errors=True)
