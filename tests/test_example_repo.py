"""Issue 9: examples/course-repo driven end to end as its owner would, in a throw-away git repository:
check, diff against an earlier commit, bench, pytest, pytest tests/, pytest --benchmark-only."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "course-repo"
BIN = Path(sys.executable).parent


def sh(repo: Path, *argv: str, data: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MNIST_ARCH_DATA", None)
    if data is not None:
        env["MNIST_ARCH_DATA"] = str(data)
    return subprocess.run(list(argv), cwd=repo, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def repo(tmp_path) -> Path:
    """The example at two commits: first with a narrower last conv (16 channels), then as shipped (32)."""
    repo = tmp_path / "course"
    shutil.copytree(EXAMPLE, repo)
    model = (repo / "model.py").read_text()
    narrow = model.replace("nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32)", "nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16)")
    narrow = narrow.replace("nn.Conv2d(32, 10, 1)", "nn.Conv2d(16, 10, 1)")
    assert narrow != model
    (repo / "model.py").write_text(narrow)
    who = ["-c", "user.name=t", "-c", "user.email=t@t"]
    for argv in (["init", "-q"], ["add", "-A"], [*who, "commit", "-qm", "narrow"]):
        subprocess.run(["git", *argv], cwd=repo, check=True)
    (repo / "model.py").write_text(model)
    subprocess.run(["git", *who, "commit", "-qam", "wider"], cwd=repo, check=True)
    return repo


def test_the_example_repository_end_to_end(repo, tmp_path):
    check = sh(repo, str(BIN / "mnist-arch"), "check", "--format", "json")
    (net,) = json.loads(check.stdout)["models"]
    assert check.returncode == 0 and net["name"] == "net" and net["params"] == 8682  # the docstring's sum

    diff = sh(repo, str(BIN / "mnist-arch"), "diff", "--base", "HEAD~1", "--format", "json")
    assert diff.returncode == 0, diff.stderr
    (model,) = json.loads(diff.stdout)["models"]
    # conv4 16->32 channels: (16*32*9+32) - (16*16*9+16) = 2,320 more; bn4 +32; head (32-16)*10 = +160
    assert model["params"]["delta"] == 2320 + 32 + 160

    bench = sh(repo, str(BIN / "mnist-arch"), "bench", "--min-time", "0.05", "--paths", "eager")
    assert bench.returncode == 0 and "net" in bench.stdout, bench.stderr

    for args in ([], ["tests/"]):
        run = sh(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark", *args)
        assert run.returncode == 0, run.stdout[-3000:]
        # its own test, and the declared facts (the training item is skipped without MNIST)
        assert "1 skipped" in run.stdout and "8 passed" in run.stdout, run.stdout[-2000:]

    out = tmp_path / "bench.json"
    run = sh(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
             f"--benchmark-json={out}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert sorted(b["name"] for b in json.loads(out.read_text())["benchmarks"]) == ["forward[1]", "forward[64]"]


def test_a_budget_broken_in_a_pull_request_fails_check_and_diff(repo):
    table = (repo / "pyproject.toml").read_text().replace("params_below = 20000", "params_below = 8000")
    (repo / "pyproject.toml").write_text(table)
    check = sh(repo, str(BIN / "mnist-arch"), "check")
    assert check.returncode == 1 and "8,682 parameters, budget fewer than 8,000 (683 too many)" in check.stdout
    diff = sh(repo, str(BIN / "mnist-arch"), "diff", "--base", "HEAD~1")
    assert diff.returncode == 1, diff.stdout + diff.stderr


@pytest.mark.training
def test_the_example_training_threshold(repo, mnist_root):
    run = sh(repo, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark", "-m",
             "training", data=mnist_root)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "net: test accuracy" in run.stdout
