"""`mnist-arch diff --base REF`: a throw-away repository with two commits, the second widening a layer of
micro_cnn. Every expected number is computed here from the layer sizes, not read from the tool.

The CLI runs as a subprocess from inside that repository with PYTHONPATH on its working tree, so that its
head side (judged in-process) is the throw-away repository's code, not this checkout's.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_arch import diff as diff_module
from mnist_arch.cli import main
from mnist_arch.diff import compare
from mnist_arch.errors import MnistArchError

ROOT = Path(__file__).resolve().parents[1]
MICRO = "mnist_arch/models/micro_cnn.py"

# micro_cnn as declared: 9,594 parameters, 1,117,994 mult-adds, budget at most 9,999 parameters.
PARAMS, MULT_ADDS, BUDGET = 9_594, 1_117_994, 9_999


def conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def batchnorm(c):
    return 2 * c


def linear(n_in, n_out):
    return n_in * n_out + n_out


def growth(width):
    """Parameters added by widening block3's last conv (16 -> width channels, kernel 2): the conv, its
    batch norm, and the Linear(width, 10) head that reads it."""
    block3 = conv(16, width, 2) + batchnorm(width) - conv(16, 16, 2) - batchnorm(16)
    head = linear(width, 10) - linear(16, 10)
    return block3, head


def widen(text, width, declare, was=16):
    """micro_cnn.py with block3's last conv `was` -> `width` wide; `declare` also updates the declared
    facts (from the original file's)."""
    block3, head = growth(width)
    edits = {f"*_conv_bn_relu(16, {was}, kernel=2)": f"*_conv_bn_relu(16, {width}, kernel=2)",
             f"nn.Linear({was}, num_classes)": f"nn.Linear({width}, num_classes)"}
    if declare:
        # That conv and the head output 1x1 (a vector), so each new weight is used once per image:
        # mult-adds grow exactly as much as parameters (torchinfo's convention).
        edits.update({
            "exact_params=9_594": f"exact_params={PARAMS + block3 + head}",
            "exact_mult_adds=1_117_994": f"exact_mult_adds={MULT_ADDS + block3 + head}",
            'Layer("block3", (16, 1, 1), 3_424)': f'Layer("block3", ({width}, 1, 1), {3_424 + block3})',
            'Layer("head", (10,), 170)': f'Layer("head", (10,), {170 + head})',
        })
    for old, new in edits.items():
        assert text.count(old) == 1, f"{MICRO} no longer contains {old!r}; update this test"
        text = text.replace(old, new)
    return text


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def run_diff(repo, *args):
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "mnist_arch.cli", "diff", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def snapshot(repo):
    """What the user would see: status, and the list of worktrees (only the main one)."""
    return git(repo, "status", "--porcelain"), git(repo, "worktree", "list", "--porcelain").count("worktree ")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Commit 0 (tag before-package): a README. Commit 1: this package with two small models registered
    (micro_cnn, slim_cnn), so that each `check` takes seconds. Commit 2: micro_cnn widened 16 -> 17 with
    its declared facts updated, slim_cnn unregistered, bn_dropout_cnn registered."""
    top = tmp_path_factory.mktemp("diff-repo")
    git(top, "init", "-q")
    git(top, "config", "user.name", "Test")
    git(top, "config", "user.email", "test@example.com")
    git(top, "config", "commit.gpgsign", "false")
    (top / "README.md").write_text("models to come\n")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "before the package")
    git(top, "tag", "before-package")
    shutil.copytree(ROOT / "mnist_arch", top / "mnist_arch", ignore=shutil.ignore_patterns("__pycache__"))
    registry = top / "mnist_arch" / "models" / "__init__.py"
    registry.write_text("from mnist_arch.models import micro_cnn, slim_cnn  # noqa: F401\n")
    (top / ".gitignore").write_text("__pycache__/\n")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "base")
    micro = top / MICRO
    micro.write_text(widen(micro.read_text(), 17, declare=True))
    registry.write_text("from mnist_arch.models import bn_dropout_cnn, micro_cnn  # noqa: F401\n")
    git(top, "commit", "-q", "-am", "widen micro_cnn's block3; slim_cnn out, bn_dropout_cnn in")
    return top


def test_widened_layer_shows_as_delta(repo):
    before = snapshot(repo)
    proc = run_diff(repo, "--base", "HEAD~1", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] and data["base"]["commit"] == git(repo, "rev-parse", "HEAD~1").strip()
    models = {m["name"]: m for m in data["models"]}
    assert {n: m["status"] for n, m in models.items()} == {
        "bn_dropout_cnn": "added", "micro_cnn": "changed", "slim_cnn": "removed"}

    delta = sum(growth(17))
    micro = models["micro_cnn"]
    assert delta == 77
    assert micro["params"] == {"base": PARAMS, "head": PARAMS + delta, "delta": delta,
                               "delta_percent": round(100 * delta / PARAMS, 4)}
    assert micro["mult_adds"]["base"] == MULT_ADDS and micro["mult_adds"]["delta"] == delta
    assert [(c["id"], c["passed"]) for c in micro["budgets"]] == [
        ("params.exact", True), ("params.max", True), ("mult_adds.exact", True)]
    assert models["slim_cnn"]["params"]["head"] is None and models["slim_cnn"]["budgets"] == []
    assert models["bn_dropout_cnn"]["params"]["base"] is None and models["bn_dropout_cnn"]["params"]["head"]
    assert snapshot(repo) == before == ("", 1)  # nothing changed, no worktree left behind


def test_no_change_has_zero_deltas(repo):
    proc = run_diff(repo, "--base", "HEAD", "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    head = PARAMS + sum(growth(17))
    rows = re.findall(r"^\| `(\w+)` \| ([\d,]+) → ([\d,]+) \| (\S+) ", proc.stdout, re.M)
    assert rows == [("bn_dropout_cnn", "19,576", "19,576", "+0"), ("micro_cnn", f"{head:,}", f"{head:,}", "+0")]
    assert proc.stdout.rstrip().endswith("✅ every model within its budgets")
    assert snapshot(repo) == ("", 1)


def test_widening_past_the_budget_fails(repo):
    micro = repo / MICRO
    committed = micro.read_text()
    micro.write_text(widen(committed, 24, declare=False, was=17))
    try:
        before = snapshot(repo)
        proc = run_diff(repo, "--base", "HEAD")
        after = snapshot(repo)
    finally:
        micro.write_text(committed)
    params = PARAMS + sum(growth(24))
    assert params > BUDGET
    assert proc.returncode == 1, proc.stderr
    assert re.search(rf"FAIL +params\.max +{params:,} parameters, budget at most {BUDGET:,} "
                     rf"\({params - BUDGET:,} over\)", proc.stdout), proc.stdout
    assert f"[{params - PARAMS - sum(growth(17)):+,} " in proc.stdout  # against the committed 17-wide head
    assert before == after == (f" M {MICRO}\n", 1)  # only the intended edit


def test_missing_ref_exit_2(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["diff", "--base", "no-such-branch"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "--base 'no-such-branch' is not a commit in" in err
    assert snapshot(repo) == ("", 1)


def test_base_without_the_package_exit_2(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert main(["diff", "--base", "before-package"]) == 2
    err = capsys.readouterr().err
    assert "--base 'before-package' (" in err and "has no mnist_arch/ package" in err and err.count("\n") == 1
    assert snapshot(repo) == ("", 1)


def test_worktree_removed_on_error(repo, monkeypatch):
    def broken_head():
        raise MnistArchError("a head model cannot be built")

    monkeypatch.setattr(diff_module, "head_models", broken_head)
    with pytest.raises(MnistArchError, match="cannot be built"):
        diff_module.diff_against("HEAD~1", cwd=repo)
    assert snapshot(repo) == ("", 1)


def test_not_a_repository_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)
    assert main(["diff", "--base", "main"]) == 2
    assert "is not inside a git repository" in capsys.readouterr().err


def test_compare_unknown_mult_adds():
    base = [{"name": "a", "params": 100, "mult_adds": None, "checks": []}]
    head = [{"name": "a", "params": 150, "mult_adds": 10,
             "checks": [{"id": "params.max", "passed": False}, {"id": "output_shape", "passed": False}]}]
    (m,) = compare(base, head)
    assert (m.status, m.delta("params"), m.delta_percent("params"), m.delta("mult_adds")) == ("changed", 50, 50.0,
                                                                                              None)
    assert [c["id"] for c in m.budgets] == ["params.max"] and not m.within_budget  # only budgets count


@pytest.mark.parametrize("remote", ["https://github.com/acme/mnist-models.git", "git@github.com:acme/mnist-models.git",
                                    "https://github.com/acme/mnist-models"])
def test_badge_from_remote(remote):
    url = "https://github.com/acme/mnist-models/actions/workflows/model_tests.yml"
    assert diff_module.badge_markdown(remote) == f"[![Model Tests]({url}/badge.svg)]({url})"


def test_badge_needs_a_github_remote():
    with pytest.raises(MnistArchError, match="not a GitHub repository"):
        diff_module.badge_markdown("https://gitlab.com/acme/x.git")
