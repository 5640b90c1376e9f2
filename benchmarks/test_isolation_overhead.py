"""Issue 8's performance target: isolating every user model in its own worker must not make the tool slow.

Each benchmark runs a whole process of this tree and, alternately in the same round, the same command of
the last commit before isolation (`BASELINE`, checked out into a temporary git worktree), and records
both medians and their ratio in `extra_info` (target: at most 1.3x). Print the table with

    pytest benchmarks/test_isolation_overhead.py --benchmark-only -s

Plain `pytest` skips them (each round starts six processes that import torch); `--benchmark-only` runs them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "b2073f5"  # main before isolation (issue 8)
PROJECT = """
[tool.mnist-arch.models.{name}]
model = "mnist_arch.models.{name}:{name}"
max_params = 30000000
"""
NAMES = ("bn_dropout_cnn", "micro_cnn", "parallel_cnn", "slim_cnn", "wide_cnn")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    if shutil.which("git") is None or subprocess.run(["git", "cat-file", "-e", f"{BASELINE}^{{commit}}"], cwd=ROOT,
                                                     capture_output=True).returncode != 0:
        pytest.skip(f"the baseline commit {BASELINE} is not in this clone's history")
    tree = tmp_path_factory.mktemp("baseline") / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), BASELINE], cwd=ROOT, check=True,
                   capture_output=True)
    yield tree
    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


@pytest.fixture(scope="module")
def declared(tmp_path_factory) -> Path:
    """A user's project declaring the five references (by module path, which both versions read)."""
    folder = tmp_path_factory.mktemp("declared")
    (folder / "pyproject.toml").write_text("[project]\nname = 'x'\n" + "".join(PROJECT.format(name=n) for n in NAMES))
    return folder


SCENARIOS = {
    "check_five_references": (["-m", "mnist_arch.cli", "check"], None),
    "check_one_model": (["-m", "mnist_arch.cli", "check", "--model", "tests/user_models/nets.py:Dropout2dNet"], None),
    "plugin_collects_five": (["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p",
                              "no:benchmark"], "declared"),
}


def _seconds(argv: list[str], tree: Path, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    return elapsed


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_isolation_overhead(benchmark, baseline, declared, scenario):
    if not benchmark.enabled:
        pytest.skip("whole-process timings: run with --benchmark-only")
    argv, where = SCENARIOS[scenario]
    times: dict[str, list[float]] = {"head": [], "baseline": []}

    def one_round() -> None:  # side by side: this tree, then the baseline, in the same round
        for side, tree in (("head", ROOT), ("baseline", baseline)):
            times[side].append(_seconds(argv, tree, declared if where else tree))

    rounds = 5
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    head, base = statistics.median(times["head"]), statistics.median(times["baseline"])
    benchmark.extra_info.update({"head_s": round(head, 3), "baseline_s": round(base, 3),
                                 "ratio": round(head / base, 3), "baseline_commit": BASELINE, "rounds": rounds})
    print(f"\n{scenario}: head {head:.2f} s, baseline {base:.2f} s, ratio {head / base:.2f}x "
          f"(medians of {rounds} alternating rounds)")
