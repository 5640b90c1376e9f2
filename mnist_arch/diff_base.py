"""The base side of `mnist-arch diff`: in a temporary worktree of the base revision (mnist_arch.git), the
revision's *own* table and code judge its models, `python -m mnist_arch.cli check --format json` run in the same
folder of that worktree, so that a base that declared different models or budgets is read as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_arch.errors import MnistArchError
from mnist_arch.git import one_line


def package_root_in(top: Path) -> Path | None:
    """Where this package sits inside the repository (e.g. "." or "src"), so that the base side imports
    the same folder of the base revision; None when it is installed from elsewhere (a user's repository)."""
    root = Path(__file__).resolve().parent.parent
    try:
        return root.relative_to(top.resolve())
    except ValueError:
        return None


def in_tree(tree: Path, relative: Path) -> Path:
    """The folder `relative` of the base worktree, or its nearest ancestor that exists there (the
    table's search upwards then passes the same folders as it does in the working tree)."""
    folder = tree / relative
    while not folder.is_dir() and folder != tree:
        folder = folder.parent
    return folder


def base_table(folder: Path, tree: Path) -> Path | None:
    """The pyproject.toml holding the base's [tool.mnist-arch] table, looked for upwards from `folder`
    as far as the worktree's top (an invalid table is the base check's to report)."""
    from mnist_arch.project import read_table

    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        try:
            if path.is_file() and read_table(path) is not None:
                return path
        except MnistArchError:
            return path
        if candidate == tree:
            break
    return None


def start_base_check(folder: Path, package: Path, timeout: float | None) -> subprocess.Popen:
    """`python -m mnist_arch.cli check --format json` in `folder`, importing mnist_arch from `package`."""
    from mnist_arch.isolate import ends_with_this_thread

    env = dict(os.environ)
    env["PYTHONPATH"] = str(package) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "mnist_arch.cli", "check", "--format", "json"]
    if timeout is not None:  # else the base's own table's (or its code's default) limit
        command += ["--timeout", f"{timeout:g}"]
    # It is a child of ours, not a worker: on Linux it gets SIGTERM when this thread (waiting for it) or this
    # process ends, SIGKILL included, and stops as a stopped `check` does, with its own workers.
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ends_with_this_thread())


def base_models(proc: subprocess.Popen, ref: str) -> tuple[list[dict[str, Any]], str | None]:
    """The base's model entries, and a note when some of its models could not be judged (its check
    exits 2 and still reports the others: a base that is broken is what a fix is compared with)."""
    out, err = proc.communicate()
    what = f"`mnist-arch check --format json` at {ref}"
    try:
        models = json.loads(out)["models"]
        if not isinstance(models, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        models = None
    if models is not None and proc.returncode in (0, 1):  # 1: the base's own checks failed, which is fine here
        return models, None
    if models is not None and proc.returncode == 2:
        return models, f"at {ref}, some models could not be judged: {one_line(err)[:1000]}"
    if proc.returncode not in (0, 1):
        raise MnistArchError(f"{what} failed with exit code {proc.returncode}: "
                             f"{one_line(err)[-2000:] or 'no message'}")
    raise MnistArchError(f"{what} did not print the JSON report (exit code {proc.returncode}): "
                         f"{one_line(err)[-2000:] or one_line(out)[:500] or 'no output'}")

