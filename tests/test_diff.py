"""`mnist-arch diff --base REF`, on both kinds of project:

- a user's repository (a throw-away git repository with a [tool.mnist-arch] table and a model file, using
  the installed mnist_arch): the head adds a layer (exact parameter, trainable and mult-add deltas), declares
  a model and drops one, and breaks the strict budget; bases without a table, with a broken table, and a
  ref that does not exist;
- our own registry (a throw-away repository holding a copy of this package), judged by each revision's own
  package: a widened layer of micro_cnn.

Every expected number is computed here from the layer sizes, not read from the tool.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_arch import diff as diff_module
from mnist_arch import diff_render
from mnist_arch.badge import badge_markdown
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


def widen(text, width):
    """micro_cnn.py with block3's last conv 16 -> `width` wide and its declared facts updated."""
    block3, head = growth(width)
    # That conv and the head output 1x1 (a vector), so each new weight is used once per image:
    # mult-adds grow exactly as much as parameters (torchinfo's convention).
    edits = {"*_conv_bn_relu(16, 16, kernel=2)": f"*_conv_bn_relu(16, {width}, kernel=2)",
             "nn.Linear(16, num_classes)": f"nn.Linear({width}, num_classes)",
             "exact_params=9_594": f"exact_params={PARAMS + block3 + head}",
             "exact_mult_adds=1_117_994": f"exact_mult_adds={MULT_ADDS + block3 + head}",
             'Layer("block3", (16, 1, 1), 3_424)': f'Layer("block3", ({width}, 1, 1), {3_424 + block3})',
             'Layer("head", (10,), 170)': f'Layer("head", (10,), {170 + head})'}
    for old, new in edits.items():
        assert text.count(old) == 1, f"{MICRO} no longer contains {old!r}; update this test"
        text = text.replace(old, new)
    return text


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def snapshot(repo):
    """What the user would see: status, and the list of worktrees (only the main one)."""
    return git(repo, "status", "--porcelain"), git(repo, "worktree", "list", "--porcelain").count("worktree ")


def new_repo(top):
    git(top, "init", "-q")
    git(top, "config", "user.name", "Test")
    git(top, "config", "user.email", "test@example.com")
    git(top, "config", "commit.gpgsign", "false")
    (top / ".gitignore").write_text("__pycache__/\n")


def cli(cwd, *argv):
    """`mnist-arch ARGV` run in `cwd`, in this process: (exit code, stdout, stderr)."""
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# A user's repository

# The user's model: conv 1->4 3x3 (4*9+4 = 40) on a 28x28 image gives 4x26x26, averaged, then fc 4->10
# (4*10+10 = 50): 90 parameters. torchinfo's mult-adds count each weight once per output position:
# 40 * 26*26 + 50 = 27,090.
NET = (Path(__file__).resolve().parent / "user_models" / "small_net.py").read_text()  # 90 parameters
# The head adds a 1x1 conv 4->4 on the 26x26 map (4*4+4 = 20 parameters, each used 26*26 times), its bias
# frozen (4 parameters not trainable).
WIDER = NET.replace("nn.Linear(4, 10)\n", "nn.Linear(4, 10)\n        self.mix = nn.Conv2d(4, 4, 1)\n"
                    "        self.mix.bias.requires_grad_(False)\n").replace(
    "self.conv(x).relu()", "self.mix(self.conv(x).relu())")
BASE_PARAMS, BASE_MULT_ADDS = 40 + 50, 40 * 26 * 26 + 50
ADDED_PARAMS, ADDED_TRAINABLE, ADDED_MULT_ADDS = 4 * 4 + 4, 4 * 4, (4 * 4 + 4) * 26 * 26
BELOW = 100  # the strict budget: the base (90) is within it, the head (110) is not
BAD = '\n[tool.mnist-arch.models.bad]\nmodel = "model.py:Nope"\n'


def table(*models):
    entries = {"net": f'model = "model.py:Net"\nparams_below = {BELOW}\n', "gone": 'model = "model.py:Net"\n',
               "new": 'model = "model.py:Net"\nrequire = ["gap"]\n'}
    return "[tool.mnist-arch]\n" + "".join(f"\n[tool.mnist-arch.models.{m}]\n{entries[m]}" for m in models)


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory):
    """Tags: `empty` (a README), `broken` (a table with an unknown key), then HEAD: the table declares net,
    gone and bad (whose class does not exist). The working tree adds a layer to the model, declares new and
    drops gone and bad."""
    top = tmp_path_factory.mktemp("user-repo")
    new_repo(top)
    (top / "README.md").write_text("a model to come\n")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "empty")
    git(top, "tag", "empty")
    (top / "model.py").write_text(NET)
    (top / "pyproject.toml").write_text("[tool.mnist-arch]\nbogus = 1\n")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "broken table")
    git(top, "tag", "broken")
    (top / "pyproject.toml").write_text(table("net", "gone") + BAD)
    git(top, "commit", "-q", "-am", "base")
    (top / "model.py").write_text(WIDER)
    (top / "pyproject.toml").write_text(table("net", "new"))
    return top


@pytest.fixture(scope="module")
def user_diff(user_repo):
    before = snapshot(user_repo)
    code, out, err = cli(user_repo, "diff", "--base", "HEAD", "--format", "json")
    assert snapshot(user_repo) == before == (" M model.py\n M pyproject.toml\n", 1)  # no worktree left
    return code, json.loads(out), err


def test_user_repo_added_layer_exact_deltas(user_diff, user_repo):
    _code, data, _err = user_diff
    assert data["base"]["commit"] == git(user_repo, "rev-parse", "HEAD").strip()
    net = next(m for m in data["models"] if m["name"] == "net")
    assert net["status"] == "changed"
    assert net["params"] == {"base": BASE_PARAMS, "head": BASE_PARAMS + ADDED_PARAMS, "delta": ADDED_PARAMS,
                             "delta_percent": round(100 * ADDED_PARAMS / BASE_PARAMS, 4)}
    assert net["trainable_params"]["delta"] == ADDED_TRAINABLE
    assert net["mult_adds"] == {"base": BASE_MULT_ADDS, "head": BASE_MULT_ADDS + ADDED_MULT_ADDS,
                                "delta": ADDED_MULT_ADDS,
                                "delta_percent": round(100 * ADDED_MULT_ADDS / BASE_MULT_ADDS, 4)}


def test_user_repo_models_added_and_removed(user_diff):
    _code, data, _err = user_diff
    models = {m["name"]: m for m in data["models"]}
    assert {n: m["status"] for n, m in models.items()} == {"gone": "removed", "net": "changed", "new": "added"}
    assert models["gone"]["params"] == {"base": BASE_PARAMS, "head": None, "delta": None, "delta_percent": None}
    assert models["gone"]["passed"] == {"base": True, "head": None} and models["gone"]["budgets"] == []
    assert models["new"]["params"]["base"] is None and models["new"]["params"]["head"] == BASE_PARAMS + ADDED_PARAMS
    assert models["new"]["passed"] == {"base": None, "head": True}  # require gap: it averages the map


def test_user_repo_broken_budget_exit_1(user_diff):
    code, data, err = user_diff
    assert code == 1, err
    net = next(m for m in data["models"] if m["name"] == "net")
    head = BASE_PARAMS + ADDED_PARAMS
    assert not data["passed"] and net["passed"] == {"base": True, "head": False}
    assert [(c["id"], c["passed"], c["measured"], c["expected"]) for c in net["budgets"]] == [
        ("params.below", False, head, BELOW)]
    assert f"{head - BELOW + 1:,} too many" in net["budgets"][0]["message"]
    assert [(f["model"], f["id"], f["measured"], f["expected"]) for f in data["newly_failing"]] == [
        ("net", "params.below", head, BELOW)]
    assert [(c["model"], c["change"]) for c in data["rule_changes"]] == [("gone", "model removed")]


def test_base_without_table_or_package_every_model_added(user_repo):
    code, out, err = cli(user_repo, "diff", "--base", "empty")
    assert code == 1, err  # the head still breaks its budget
    assert "note: empty has no [tool.mnist-arch] table and no mnist_arch package" in out
    assert "net (added): params - -> 110 " in out and "new (added)" in out and "gone" not in out
    assert "NEWLY FAILING  params.below: measured 110, expected 100" in out and snapshot(user_repo)[1] == 1


def test_base_check_that_fails_exit_2(user_repo):
    code, out, err = cli(user_repo, "diff", "--base", "broken")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "`mnist-arch check --format json` at broken failed with exit code 2" in err and "'bogus'" in err
    assert snapshot(user_repo)[1] == 1


def test_base_with_a_model_that_cannot_be_judged(user_diff):
    """A broken base is what a fix is compared with: its other models are still read."""
    _code, data, _err = user_diff
    assert data["note"].startswith("at HEAD, some models could not be judged: ")
    assert "model.py has no attribute 'Nope'" in data["note"]
    assert "bad" not in {m["name"] for m in data["models"]}


def test_missing_ref_exit_2(user_repo):
    code, out, err = cli(user_repo, "diff", "--base", "no-such-branch")
    assert (code, out) == (2, "") and err.count("\n") == 1 and "Traceback" not in err
    assert "--base 'no-such-branch' is not a commit in" in err


def test_worktree_removed_on_error(user_repo, monkeypatch):
    def broken_head(cwd=None, timeout=None):
        raise MnistArchError("a head model cannot be built")

    monkeypatch.setattr(diff_module, "head_models", broken_head)
    before = snapshot(user_repo)
    with pytest.raises(MnistArchError, match="cannot be built"):
        diff_module.diff_against("HEAD", cwd=user_repo)
    assert snapshot(user_repo) == before


def test_not_a_repository_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)
    assert main(["diff", "--base", "main"]) == 2
    assert "is not inside a git repository" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Our registry, judged by each revision's own package


def test_registry_widened_layer(tmp_path):
    """Commit 1: this package with two small models registered (micro_cnn, slim_cnn). Commit 2: micro_cnn
    widened 16 -> 17 with its declared facts updated, slim_cnn unregistered, bn_dropout_cnn registered.
    The CLI runs with PYTHONPATH on the throw-away repository, so both sides are its code. Unregistering
    slim_cnn is a rule change, allowed here (tests/test_gate.py fails the gate on one)."""
    new_repo(tmp_path)
    shutil.copytree(ROOT / "mnist_arch", tmp_path / "mnist_arch", ignore=shutil.ignore_patterns("__pycache__"))
    registry = tmp_path / "mnist_arch" / "models" / "__init__.py"
    registry.write_text("from mnist_arch.models import micro_cnn, slim_cnn  # noqa: F401\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "base")
    micro = tmp_path / MICRO
    micro.write_text(widen(micro.read_text(), 17))
    registry.write_text("from mnist_arch.models import bn_dropout_cnn, micro_cnn  # noqa: F401\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mnist_arch.cli", "diff", "--base", "HEAD", "--format", "json",
                           "--allow-rule-changes"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] and data["base"]["commit"] == git(tmp_path, "rev-parse", "HEAD").strip()
    assert [(c["model"], c["change"]) for c in data["rule_changes"]] == [("slim_cnn", "model removed")]
    assert data["newly_failing"] == data["worse"] == []  # the widened micro_cnn declares its new facts
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
    assert snapshot(tmp_path) == (" M mnist_arch/models/__init__.py\n M mnist_arch/models/micro_cnn.py\n", 1)


# ---------------------------------------------------------------------------------------------
# Comparing and rendering (no git)


def test_compare_unknown_mult_adds():
    base = [{"name": "a", "params": 100, "mult_adds": None, "checks": []}]
    head = [{"name": "a", "params": 150, "mult_adds": 10,
             "checks": [{"id": "params.max", "passed": False}, {"id": "output_shape", "passed": False}]}]
    (m,) = compare(base, head)
    assert (m.status, m.delta("params"), m.delta_percent("params"), m.delta("mult_adds")) == ("changed", 50, 50.0,
                                                                                              None)
    assert [c["id"] for c in m.budgets] == ["params.max"] and not m.within_budget  # only budgets count


def _entry(name, params, passed=True, checks=()):
    return {"name": name, "params": params, "trainable_params": params, "mult_adds": 2 * params, "passed": passed,
            "checks": list(checks)}


def test_renderers():
    below = {"id": "params.below", "passed": False, "measured": 1200, "expected": 1000,
             "message": "1,200 parameters, budget fewer than 1,000 (201 too many)"}
    diff = diff_module.Diff("origin/main", "0123456789abcdef", compare(
        [_entry("same", 10), _entry("grows", 1000), _entry("gone", 5)],
        [_entry("same", 10), _entry("grows", 1200, False, [below]), _entry("new", 7)]))
    assert [(m.name, m.status) for m in diff.models] == [("gone", "removed"), ("grows", "changed"), ("new", "added"),
                                                         ("same", "unchanged")]
    md = diff_render.to_markdown(diff)
    assert ("| `grows` | 1,000 → 1,200 | +200 (+20.00%) | 1,000 → 1,200 | 2,000 → 2,400 | +400 (+20.00%) | "
            "pass → fail | ❌ `params.below` |") in md
    assert "| `gone` (removed) | 5 → - | - |" in md and "| `same` | 10 → 10 | +0 (+0.00%) |" in md
    summary = "gate FAIL: 1 check(s) newly failing, 1 rule change(s) (--allow-rule-changes accepts them)"
    assert md.startswith("## mnist-arch diff: `origin/main` (012345678) → working tree\n\n❌ **" + summary + "**\n")
    assert "### Rule changes\n\n| model | change | check | base | head | message |\n| --- | --- | --- | --- | --- | " \
           "--- |\n| `gone` | model removed | - | - | - | gone is declared at origin/main and not in the working " \
           "tree: its 0 checks no longer run |\n" in md
    assert md.endswith("### Newly failing\n\n| model | check | measured | expected | message |\n| --- | --- | --- | "
                       "--- | --- |\n| `grows` | `params.below` | 1,200 | 1,000 | 1,200 parameters, budget fewer than "
                       "1,000 (201 too many) |\n")
    table = diff_render.to_table(diff)
    assert "grows: params 1,000 -> 1,200 [+200 (+20.00%)]" in table and "verdict pass -> fail" in table
    assert ("\n  NEWLY FAILING  params.below: measured 1,200, expected 1,000: 1,200 parameters, budget fewer than "
            "1,000 (201 too many)\n") in table
    assert "gone (removed): params 5 -> -" in table and "\n  RULE CHANGE    model removed: gone is declared" in table
    assert table.endswith("\n" + summary)
    data = json.loads(diff_render.to_json(diff))
    assert data["models"][1]["passed"] == {"base": True, "head": False} and data["passed"] is False
    assert [(f["model"], f["id"], f["measured"], f["expected"], f["message"]) for f in data["newly_failing"]] == [
        ("grows", "params.below", 1200, 1000, below["message"])]


@pytest.mark.parametrize("remote", ["https://github.com/acme/mnist-models.git", "git@github.com:acme/mnist-models.git",
                                    "https://github.com/acme/mnist-models"])
def test_badge_from_remote(remote):
    url = "https://github.com/acme/mnist-models/actions/workflows/model_tests.yml"
    assert badge_markdown(remote) == f"[![Model Tests]({url}/badge.svg)]({url})"


def test_badge_needs_a_github_remote():
    with pytest.raises(MnistArchError, match="not a GitHub repository"):
        badge_markdown("https://gitlab.com/acme/x.git")
