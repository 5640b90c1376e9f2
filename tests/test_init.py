"""`mnist-arch init` as a student would run it, in throw-away git repositories shaped like a course
assignment: a model under 20,000 parameters with BatchNorm, Dropout and global average pooling, and the
student's own test_model.py.

The command runs in a subprocess (the installed console script beside this interpreter). What it writes is
linted with actionlint and zizmor (ours and zizmor's default settings), and the generated workflow's steps are
run here, install aside: `pytest`, the job summary and report writer, the benchmarks and their comparison, and
the comment poster on the report the pull request's run would upload (with a stand-in for `gh`). The install
steps run in fresh environments in tests/test_action.py (the action's) and tests/test_dist.py (the pip line's).
Where CI gets mnist-arch (--action, resolved with git ls-remote against a local repository standing in for
GitHub, or --requirement), the notes on workflows already there, and `--min-accuracy auto` (the README's
example, on the example model and real MNIST) are tested at the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_arch.badge import badge_markdown
from mnist_arch.comment import MARKER as COMMENT_MARKER
from mnist_arch.init import COURSE_RECIPE
from mnist_arch.runs import rule_threshold
from mnist_arch.workflows import WORKFLOWS
from tests.test_workflows import OUR_ACTION, _part, describe, output, run_poster, run_step, uses_lines, workflow, zizmor
from tests.test_workflows import actionlint as run_actionlint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

MNIST_ARCH = Path(sys.executable).parent / "mnist-arch"
REMOTE = "https://github.com/student/mnist-assignment.git"
REPO_ROOT = Path(__file__).resolve().parents[1]

MODEL = '''\
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """Under 20k parameters: BatchNorm after every convolution, a little Dropout, GAP instead of an FC."""

    def __init__(self, width=32):
        super().__init__()

        def block(cin, cout, pad, drop=0.05):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=pad), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Dropout(drop))

        self.features = nn.Sequential(
            block(1, 8, 1), block(8, 16, 1), nn.MaxPool2d(2),     # 28 -> 14
            block(16, 16, 0), block(16, 16, 0), nn.MaxPool2d(2),  # 14 -> 5
            block(16, width, 0, 0.0),                             # 5 -> 3
        )
        self.head = nn.Conv2d(width, 10, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.gap(self.head(self.features(x)))
        return F.log_softmax(x.view(-1, 10), dim=1)
'''

STUDENT_TEST = '''\
import torch

from model import Net


def test_parameter_count():
    assert sum(p.numel() for p in Net().parameters()) < 20000


def test_output_shape():
    assert Net()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
'''

#: Where the generated workflow gets mnist-arch: this environment is an editable install, which CI cannot use.
SOURCE = ["--action", OUR_ACTION.action]
INIT_ARGS = ["--model", "model.py:Net", "--params-below", "20000", "--require", "batchnorm", "--require", "dropout",
             "--require-any", "gap,fc", "--min-accuracy", "0.95", *SOURCE]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.com",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.com"}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return proc.stdout


def assignment(path: Path, remote: str | None = REMOTE, pyproject: bytes | None = None, top: Path | None = None
               ) -> Path:
    """A course repository: model.py, the student's test_model.py, a README; committed on main. With `top`,
    the assignment is a folder of the repository at `top`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.py").write_text(MODEL)
    (path / "test_model.py").write_text(STUDENT_TEST)
    (path / "README.md").write_text("# MNIST under 20k parameters\n")
    (path / ".gitignore").write_text("data/\n__pycache__/\n")
    if pyproject is not None:
        (path / "pyproject.toml").write_bytes(pyproject)
    top = top or path
    git(top, "init", "-q", "-b", "main")
    if remote:
        git(top, "remote", "add", "origin", remote)
    git(top, "add", "-A")
    git(top, "commit", "-q", "-m", "assignment")
    return path


def init(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    if not MNIST_ARCH.is_file():
        pytest.skip(f"the mnist-arch console script is not installed beside {sys.executable}")
    return subprocess.run([str(MNIST_ARCH), "init", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


def table(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["mnist-arch"]


def snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(repo).parts}


EXPECTED_MODEL = {"model": "model.py:Net", "params_below": 20000, "require": ["batchnorm", "dropout"],
                  "require_any": [["gap", "fc"]], "train": {"min_accuracy": 0.95, "epochs": 1}}


# --------------------------------------------------------------------------- what init writes


def test_init_appends_to_a_pyproject_byte_for_byte(tmp_path):
    # CRLF line ends and no newline at the end: both kept as they are.
    original = b'[project]\r\nname = "mnist-assignment"\r\nversion = "0.1"\r\n\r\n[tool.black]\r\nline-length = 100'
    repo = assignment(tmp_path / "repo", pyproject=original)
    proc = init(repo, *INIT_ARGS)
    assert proc.returncode == 0, output(proc)
    written = (repo / "pyproject.toml").read_bytes()
    assert written.startswith(original), "what was there is unchanged"
    assert b"\n" not in written.replace(b"\r\n", b""), "the file's own line ends"
    data = tomllib.loads(written.decode())
    assert data["project"] == {"name": "mnist-assignment", "version": "0.1"}
    assert data["tool"]["black"] == {"line-length": 100}
    assert table(repo / "pyproject.toml") == {"models": {"net": EXPECTED_MODEL}}
    for name in WORKFLOWS:
        assert (repo / ".github" / "workflows" / name).is_file()
    assert "[tool.mnist-arch] added to pyproject.toml" in proc.stdout
    assert badge_markdown(REMOTE) in proc.stdout.splitlines(), proc.stdout


def test_init_in_a_repository_without_pyproject(tmp_path):
    repo = assignment(tmp_path / "repo", remote=None)
    proc = init(repo, "--model", "model.py:Net", "--name", "tiny-net", "--max-params", "20000", *SOURCE)
    assert proc.returncode == 0, output(proc)
    data = tomllib.loads((repo / "pyproject.toml").read_text())
    assert data == {"tool": {"mnist-arch": {"models": {"tiny-net": {"model": "model.py:Net", "max_params": 20000}}}}}
    assert "[tool.mnist-arch] written to a new pyproject.toml" in proc.stdout
    # No remote yet: the badge with OWNER/REPOSITORY to replace, and a note that says so.
    assert badge_markdown("https://github.com/OWNER/REPOSITORY") in proc.stdout.splitlines()
    assert "no git remote named 'origin'" in proc.stdout


def test_init_outside_git_writes_beside_pyproject(tmp_path):
    folder = tmp_path / "not-a-repo"
    folder.mkdir()
    (folder / "net.py").write_text(MODEL)
    proc = init(folder, "--model", "net.py:Net", *SOURCE)
    assert proc.returncode == 0, output(proc)
    assert (folder / ".github" / "workflows" / "model_tests.yml").is_file()
    assert "not in a git repository yet" in proc.stdout


@pytest.mark.parametrize("source", [SOURCE, ["--requirement", "mnist-arch==0.1.0"]], ids=["action", "pip"])
def test_init_in_a_subfolder_of_the_repository(tmp_path, source):
    top = tmp_path / "course"
    assignment(top / "assignment-5", top=top)
    proc = init(top / "assignment-5", "--model", "model.py:Net", "--params-below", "20000", *source)
    assert proc.returncode == 0, output(proc)
    # Workflows live at the top of the repository; their steps run in the project's folder.
    assert not (top / "assignment-5" / ".github").exists()
    tests = workflow(top / ".github" / "workflows" / "model_tests.yml")
    job = tests["jobs"]["model-tests"]
    rule = workflow(top / ".github" / "workflows" / "model_rule.yml")["jobs"]["rule"]
    for each in (job, rule):  # the check job and the rule job
        assert each["defaults"]["run"]["working-directory"] == "assignment-5"
    install = next(s for s in job["steps"] if s.get("id") == "install")
    if source == SOURCE:  # the action installs in the project's folder and caches pip by its pyproject.toml
        assert install["uses"] == OUR_ACTION.action and install["with"]["working-directory"] == "assignment-5"
    else:
        setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
        assert setup["with"]["cache-dependency-path"] == "assignment-5/pyproject.toml"
        assert install["env"]["MNIST_ARCH_REQUIREMENT"] == "mnist-arch==0.1.0"
    assert (top / "assignment-5" / "pyproject.toml").is_file()


@pytest.mark.parametrize("source", [SOURCE, ["--requirement", "mnist-arch @ git+https://github.com/o/r@v1"]],
                         ids=["action", "pip"])
def test_what_init_writes_passes_both_linters(tmp_path, source):
    repo = assignment(tmp_path / "repo")
    proc = init(repo, *INIT_ARGS[:-2], *source)
    assert proc.returncode == 0, output(proc)
    files = [repo / ".github" / "workflows" / name for name in WORKFLOWS]
    lint = run_actionlint(*files, cwd=repo)
    assert lint.returncode == 0, output(lint)
    findings = zizmor(*files, cwd=repo)
    assert findings == [], describe(findings)
    # zizmor's own defaults too: every action pinned by commit (no `unpinned-uses`), at every severity.
    findings = zizmor(*files, cwd=repo, config=None, min_severity=None)
    assert findings == [], describe(findings)
    install = next(s for s in workflow(files[0])["jobs"]["model-tests"]["steps"] if s.get("id") == "install")
    if source == SOURCE:
        assert install["uses"] == OUR_ACTION.action and install["with"]["command"] == "install"
    else:
        assert install["env"]["MNIST_ARCH_REQUIREMENT"] == source[1]


@pytest.mark.parametrize("args, rule", [
    (["--rule-threshold", "0.994"], {"threshold": 0.994, "epochs": 15, "consecutive": 3}),
    (["--rule-threshold", "0.995", "--rule-epochs", "20", "--rule-consecutive", "2"],
     {"threshold": 0.995, "epochs": 20, "consecutive": 2}),
], ids=["defaults", "given"])
def test_init_declares_the_course_rule(tmp_path, args, rule):
    repo = assignment(tmp_path / "repo")
    proc = init(repo, *INIT_ARGS, *args)
    assert proc.returncode == 0, output(proc)
    declared = table(repo / "pyproject.toml")["models"]["net"]
    assert declared == {**EXPECTED_MODEL, "rule": {**rule, **COURSE_RECIPE}}
    assert COURSE_RECIPE == {"optimizer": "sgd", "lr": 0.01, "optimizer_kwargs": {"momentum": 0.9},
                             "schedule": "onecycle", "schedule_kwargs": {"max_lr": 0.05, "pct_start": 0.25},
                             "batch_size": 128, "rotation": 7}
    text = (repo / "pyproject.toml").read_text()
    assert text.index("[tool.mnist-arch.models.net.train]") < text.index("[tool.mnist-arch.models.net.rule]")
    assert (f"# The course's rule: {rule['threshold']:.2%} test accuracy held for {rule['consecutive']} epoch(s) in "
            f"a row within {rule['epochs']}") in text
    notes = [line for line in proc.stdout.splitlines() if line.startswith("Note: the ")]
    assert notes[0] == ("Note: the quick tier ([tool.mnist-arch.models.net.train], min_accuracy 0.95) is a floor from "
                        "five one-epoch seeds: it catches breakage; the course rule is the rule tier."), proc.stdout
    assert notes[1].startswith(f"Note: the rule tier ([tool.mnist-arch.models.net.rule]): {rule['threshold']:.2%} "
                               f"held for {rule['consecutive']} epoch(s) in a row within {rule['epochs']}")
    # model_rule.yml is written whether or not a rule is declared (a table added later is found by it).
    assert "rule" in workflow(repo / ".github" / "workflows" / "model_rule.yml")["jobs"]


def test_without_a_rule_init_says_where_the_course_rule_goes(tmp_path):
    repo = assignment(tmp_path / "repo")
    proc = init(repo, *INIT_ARGS)
    assert proc.returncode == 0, output(proc)
    assert "rule" not in table(repo / "pyproject.toml")["models"]["net"]
    assert ("Note: the quick tier ([tool.mnist-arch.models.net.train], min_accuracy 0.95) is a floor from five "
            "one-epoch seeds: it catches breakage; the course rule is the rule tier (`mnist-arch init "
            "--rule-threshold 0.994 ...`, docs/rule-ci.md).") in proc.stdout.splitlines()


# --------------------------------------------------------------------------- refusing, and --force


def test_init_refuses_to_overwrite(tmp_path):
    repo = assignment(tmp_path / "repo")
    assert init(repo, *INIT_ARGS).returncode == 0
    before = snapshot(repo)
    proc = init(repo, "--model", "model.py:Net", "--params-below", "15000")
    assert proc.returncode == 2, output(proc)
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert "pyproject.toml already has a [tool.mnist-arch] table" in message
    assert all(f"{name} exists" in message for name in ("model_tests.yml", "model_rule.yml", "model_tests_comment.yml"))
    assert "--force" in message
    assert snapshot(repo) == before, "nothing written"


def test_init_refuses_an_existing_workflow_alone(tmp_path):
    repo = assignment(tmp_path / "repo")
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "model_tests.yml").write_text("name: mine\n")
    before = snapshot(repo)
    proc = init(repo, *INIT_ARGS)
    assert proc.returncode == 2, output(proc)
    assert f"{workflows / 'model_tests.yml'} exists" in proc.stderr
    assert "pyproject" not in proc.stderr
    assert snapshot(repo) == before


def test_force_replaces_the_table_and_keeps_the_rest(tmp_path):
    head = b'[project]\nname = "a"\n'
    tail = b'# formatting\n[tool.black]\nline-length = 100\n'
    old_table = b'[tool.mnist-arch]\ndata = "data"\n\n[tool.mnist-arch.models.old]\nmodel = "model.py:Net"\n\n'
    repo = assignment(tmp_path / "repo", pyproject=head + b"\n" + old_table + tail)
    proc = init(repo, *INIT_ARGS, "--force")
    assert proc.returncode == 0, output(proc)
    text = (repo / "pyproject.toml").read_bytes()
    assert text.startswith(head + b"\n" + tail), text.decode()  # the old table cut out, its neighbours kept
    assert text.count(b"[tool.mnist-arch]") == 1
    data = tomllib.loads(text.decode())
    assert data["tool"]["black"] == {"line-length": 100} and data["project"] == {"name": "a"}
    assert table(repo / "pyproject.toml") == {"models": {"net": EXPECTED_MODEL}}
    assert "replaced in pyproject.toml" in proc.stdout
    again = init(repo, *INIT_ARGS, "--force")
    assert again.returncode == 0, output(again)
    assert (repo / "pyproject.toml").read_bytes() == text, "--force twice: the same file"


def test_force_moves_an_earlier_rule_job_into_its_own_workflow(tmp_path):
    # An earlier init wrote two workflows, the rule job inside model_tests.yml: init refuses them as any others,
    # and --force writes all three (model_rule.yml new, model_tests.yml without the rule job or the label).
    repo = assignment(tmp_path / "repo")
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    old = "name: model-tests\non:\n  pull_request:\n    types: [opened, synchronize, reopened, labeled]\njobs: {}\n"
    (workflows / "model_tests.yml").write_text(old)
    (workflows / "model_tests_comment.yml").write_text("name: model-tests-comment\n")
    refused = init(repo, *INIT_ARGS)
    assert refused.returncode == 2, output(refused)
    assert "model_tests.yml exists" in refused.stderr and "model_rule.yml" not in refused.stderr
    proc = init(repo, *INIT_ARGS, "--force")
    assert proc.returncode == 0, output(proc)
    wrote = [line for line in proc.stdout.splitlines() if line.startswith("Wrote ")]
    assert wrote == [f"Wrote .github/workflows/{name}" for name in WORKFLOWS], proc.stdout
    assert WORKFLOWS == ("model_tests.yml", "model_rule.yml", "model_tests_comment.yml")
    assert set(workflow(workflows / "model_tests.yml")["jobs"]) == {"model-tests"}
    assert "labeled" not in workflow(workflows / "model_tests.yml")["on"]["pull_request"]["types"]
    assert set(workflow(workflows / "model_rule.yml")["jobs"]) == {"rule"}
    assert "already runs pytest" not in proc.stdout, "init's own workflows get no note"


def test_force_refuses_a_table_it_cannot_cut_out(tmp_path):
    # Dotted keys under [tool] are not a section of their own: init says so instead of guessing.
    original = b'[tool]\nmnist-arch.models.old.model = "model.py:Net"\n'
    repo = assignment(tmp_path / "repo", pyproject=original)
    proc = init(repo, *INIT_ARGS, "--force")
    assert proc.returncode == 2, output(proc)
    assert "cannot replace safely" in proc.stderr and "pyproject.toml" in proc.stderr
    assert (repo / "pyproject.toml").read_bytes() == original
    assert not (repo / ".github").exists()


@pytest.mark.parametrize("args, named", [
    (["--model", "model.py"], "'model.py' is not PATH.py:ATTR"),
    (["--model", "nope.py:Net"], "nope.py does not exist"),
    (["--model", "../model.py:Net"], "must be a path inside"),
    (["--model", "/abs/model.py:Net"], "must be a path inside"),
    (["--model", "model.py:1Net"], "is not PATH.py:ATTR"),
    (["--model", "models/net:Net"], "is a path but not a .py file"),
    (["--model", "my-pkg.model:Net"], "neither a .py path nor a module name"),
    (["--model", "model.py:Net", "--name", "my net"], "--name 'my net' is not a short identifier"),
    (["--model", "model.py:Net", "--require-any", "gap,mlp"], "'require_any'"),
    (["--model", "model.py:Net", "--min-accuracy", "98"], "'min_accuracy' must be a fraction"),
    (["--model", "model.py:Net", "--epochs", "2"], "--epochs needs --min-accuracy"),
    (["--model", "model.py:Net", "--min-accuracy", "best"], "expected a fraction such as 0.98, or auto"),
    (["--model", "model.py:Net", "--rule-threshold", "99.4"], "--rule-threshold 99.4 is not a fraction in (0, 1]: "
                                                              "give the test accuracy as a fraction, e.g. 0.994 for "
                                                              "99.4% (99.4% is 0.994)"),
    (["--model", "model.py:Net", "--rule-threshold", "0"], "--rule-threshold 0.0 is not a fraction in (0, 1]"),
    (["--model", "model.py:Net", "--rule-epochs", "20"], "--rule-epochs needs --rule-threshold"),
    (["--model", "model.py:Net", "--rule-threshold", "0.994", "--rule-consecutive", "16"],
     "--rule-consecutive 16 is more than --rule-epochs 15"),
    (["--model", "model.py:Net", "--rule-threshold", "0.994", "--rule-epochs", "0"],
     "argument --rule-epochs: expected a number of at least 1, got '0'"),
    (["--model", "model.py:Net", "--action", "mnist-arch"], "--action 'mnist-arch' is not OWNER/REPO@REF"),
    (["--model", "model.py:Net", "--requirement", 'x"; rm -rf ~'], "is not a pip requirement init can write"),
    (["--model", "model.py:Net", *SOURCE, "--requirement", "mnist-arch"], "not allowed with argument --action"),
    (["--model", "model.py:Net"], "so init cannot tell where your CI should get it"),
])
def test_bad_arguments_are_named(tmp_path, args, named):
    repo = assignment(tmp_path / "repo")
    before = snapshot(repo)
    proc = init(repo, *args)
    assert proc.returncode == 2, output(proc)
    assert named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert snapshot(repo) == before


# --------------------------------------------------------------------------- the generated steps, run here


def _data_root() -> Path:
    for root in (os.environ.get("MNIST_ARCH_DATA"), REPO_ROOT.parent / "shared" / "data"):
        if root and (Path(root) / "MNIST" / "raw").is_dir():
            return Path(root)
    pytest.skip("real MNIST not found: set MNIST_ARCH_DATA to the folder that contains MNIST/raw/ "
                "(from the repository root: ../shared/data)")


def test_generated_workflow_steps_run_locally(tmp_path):
    """The steps, as GitHub runs them, on a push and on a pull request. The runner's MNIST cache is empty here
    (the folder the step points at holds none), so the table's training item skips with its reason: training
    a declared model through the plugin is tests/test_plugin.py's and tests/test_example_repo.py's business,
    and here it would be 40 of this test's 66 seconds."""
    repo = assignment(tmp_path / "repo")
    assert init(repo, *INIT_ARGS).returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mnist-arch init")
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")  # what checkout's fetch-depth 0 gives CI
    tests = repo / ".github" / "workflows" / "model_tests.yml"
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    summary = tmp_path / "summary.md"

    def step(name: str, event: str):
        expressions = {"github.workspace": str(repo), "github.base_ref": "main" if event == "pull_request" else "",
                       "github.event.pull_request.number": "7" if event == "pull_request" else ""}
        env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               "MNIST_ARCH_DATA": str(tmp_path / "mnist-cache"), "RUNNER_TEMP": str(runner_temp),
               "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_EVENT_NAME": event}
        return run_step(tests, name, repo, expressions, env)

    # A push to main: pytest (the student's tests and the declared facts), the summary, the benchmarks,
    # which become the baseline.
    proc = step("pytest", "push")
    assert proc.returncode == 0, output(proc)
    assert "test_model.py" in proc.stdout and "pyproject.toml" in proc.stdout, proc.stdout
    assert re.search(r"\b10 passed, 1 skipped\b", proc.stdout), proc.stdout  # the training item: no MNIST here
    proc = step("Compliance report (job summary and pull-request comment)", "push")
    assert proc.returncode == 0, output(proc)
    assert "## mnist-arch check" in summary.read_text() and "`net`" in summary.read_text()
    assert not (runner_temp / "mnist-arch-report" / "pr-number").exists(), "a push has no pull request"
    proc = step("Benchmarks", "push")
    assert proc.returncode == 0, output(proc)
    bench = json.loads((runner_temp / "bench" / "head.json").read_text())
    assert any(re.search(r"\bnet\b", b["fullname"]) for b in bench["benchmarks"]), bench["benchmarks"]
    assert step("Keep these benchmarks as the baseline (pushes to the default branch)", "push").returncode == 0
    assert (runner_temp / "bench" / "base.json").read_bytes() == (runner_temp / "bench" / "head.json").read_bytes()

    # A pull request that breaks the budget: the summary and the report say so, the step fails.
    git(repo, "checkout", "-q", "-b", "wider")
    (repo / "model.py").write_text(MODEL.replace("width=32", "width=96"))
    git(repo, "commit", "-q", "-am", "wider last block")
    summary.write_text("")
    proc = step("Compliance report (job summary and pull-request comment)", "pull_request")
    assert proc.returncode == 1, output(proc)
    assert "::error::mnist-arch" in proc.stdout
    report_dir = runner_temp / "mnist-arch-report"
    assert (report_dir / "pr-number").read_text() == "7\n"
    report = (report_dir / "10-models.md").read_text()
    assert "## mnist-arch check" in report and "## mnist-arch diff" in report and "❌" in report, report
    assert "params.below" in report, report
    assert summary.read_text().startswith(report)
    proc = step("Benchmarks", "pull_request")
    assert proc.returncode == 0, output(proc)
    comparison = (report_dir / "20-benchmarks.md").read_text()
    assert "base Mean" in comparison and "head Mean" in comparison, comparison
    assert re.search(r"\bnet\b\S*\[64\]", comparison), "a row per declared model and batch size"
    base = json.loads((runner_temp / "bench" / "base.json").read_text())
    head = json.loads((runner_temp / "bench" / "head.json").read_text())
    assert base["datetime"] != head["datetime"], "the pull request's run measured its own model"

    # The comment's body, built from those parts (mnist_arch.comment), then what model_tests_comment.yml posts.
    proc = step("The pull-request comment's body (pull requests)", "pull_request")
    assert proc.returncode == 0, output(proc)
    poster_dir = tmp_path / "poster"
    poster_dir.mkdir()
    proc, log = run_poster(poster_dir, report_dir)
    assert proc.returncode == 0, output(proc)
    assert "POST repos/student/mnist/issues/7/comments" in log, log
    body = json.loads(log.splitlines()[-1])["body"]
    assert body.startswith(COMMENT_MARKER + "\n<!-- mnist-arch-part:10-models.md ")
    assert _part(body, "10-models.md") == report and _part(body, "20-benchmarks.md") == comparison



# --------------------------------------------------------------------------- where CI gets mnist-arch, what is there


def test_init_pins_the_action_tag_to_its_commit(tmp_path):
    # A local repository stands in for https://github.com/example/mnist-arch (git's url.<base>.insteadOf).
    upstream = tmp_path / "github" / "example" / "mnist-arch"
    upstream.mkdir(parents=True)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "commit", "-q", "--allow-empty", "-m", "release")
    git(upstream, "tag", "-a", "v0.1.0", "-m", "v0.1.0")  # annotated: its own object, peeled to the commit
    commit = git(upstream, "rev-parse", "v0.1.0^{commit}").strip()
    env = {**os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_VALUE_0": "https://github.com/",
           "GIT_CONFIG_KEY_0": f"url.{(tmp_path / 'github').as_uri()}/.insteadOf"}
    repo = assignment(tmp_path / "repo")
    before = snapshot(repo)
    missing = init(repo, "--model", "model.py:Net", "--action", "example/mnist-arch@v9.9.9", env=env)
    assert missing.returncode == 2, output(missing)
    assert "git ls-remote https://github.com/example/mnist-arch did not give the commit of 'v9.9.9'" in missing.stderr
    assert "Nothing was written" in missing.stderr and snapshot(repo) == before
    proc = init(repo, "--model", "model.py:Net", "--action", "example/mnist-arch@v0.1.0", env=env)
    assert proc.returncode == 0, output(proc)
    assert f"example/mnist-arch@{commit} (v0.1.0)" in proc.stdout
    pins = uses_lines(repo / ".github" / "workflows" / "model_tests.yml")
    assert ("example/mnist-arch", commit, "v0.1.0") in pins, pins


def test_init_names_workflows_that_already_run_tests(tmp_path):
    repo = assignment(tmp_path / "repo")
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    old = ("name: ci\non: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
           "      - uses: actions/checkout@v3\n      - run: pip install pytest torch\n"
           "      - run: python -m pytest -q  # the course's tests\n"
           "      - uses: actions/upload-artifact@v3\n        with:\n          path: out/\n")
    (workflows / "ci.yml").write_text(old)
    (workflows / "lint.yaml").write_text("on: push\njobs:\n  l:\n    runs-on: ubuntu-latest\n    steps:\n"
                                         "      - run: pip install ruff pytest-cov\n      - run: ruff check .\n")
    proc = init(repo, *INIT_ARGS)
    assert proc.returncode == 0, output(proc)
    notes = [line for line in proc.stdout.splitlines() if line.startswith("Note: .github/workflows/")]
    assert notes == [
        "Note: .github/workflows/ci.yml already runs pytest (line 9), and model_tests.yml runs it too, with your "
        "declared models: delete that workflow (or its test job) if it only ran these tests, so that each push runs "
        "them once; keep it if it tests other things. init left it as it was.",
        "Note: .github/workflows/ci.yml uses actions/checkout@v3 (line 7), at its end of life (GitHub has retired it: "
        "it was written for node12 or node16, runtimes its runners no longer run). Move it to v7 (or a later major), "
        "or delete the workflow if model_tests.yml replaces it.",
        "Note: .github/workflows/ci.yml uses actions/upload-artifact@v3 (line 10), at its end of life (GitHub has "
        "retired it: jobs that use it fail). Move it to v7 (or a later major), or delete the workflow if "
        "model_tests.yml replaces it."], proc.stdout
    assert (workflows / "ci.yml").read_text() == old, "init never changes them"


def _readme_init_example() -> list[str]:
    """The `mnist-arch init` command of the README's "Use it in your repository", its lines joined."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Use it in your repository"):readme.index("### Hostile models")]
    match = re.search(r"^mnist-arch init (?:.*\\\n)*.*$", section, re.MULTILINE)
    assert match, "the README's section shows `mnist-arch init`"
    command = re.sub(r"\\\n\s*", " ", match[0]).split("#")[0]
    return shlex.split(command)[2:]


LINEAR = """\
import torch.nn as nn


class Net(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(784, 10))
"""


@pytest.mark.training
def test_min_accuracy_auto_trains_five_seeds_and_declares_the_rules_threshold(tmp_path):
    """`--min-accuracy auto` on a model that trains in about a second a seed (logistic regression): five seeds'
    accuracies, printed, and the rule's threshold on them written to the table."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "model.py").write_text(LINEAR)
    git(repo, "init", "-q", "-b", "main")
    env = {**os.environ, "MNIST_ARCH_DATA": str(_data_root())}
    proc = init(repo, "--model", "model.py:Net", "--min-accuracy", "auto", *SOURCE, env=env, timeout=600)
    assert proc.returncode == 0, output(proc)
    accuracies = [float(a) / 100 for a in re.findall(r"^net seed \d: test accuracy ([\d.]+)%", proc.stdout, re.M)]
    assert len(accuracies) == 5 and len(set(accuracies)) > 1, proc.stdout  # five seeds, not one run five times
    # what the five runs will take, said before they take it (issue 27)
    assert re.search(r"^net: 5 runs of 1 epoch, about .+ on this CPU", proc.stdout, re.M), proc.stdout
    train = table(repo / "pyproject.toml")["models"]["net"]["train"]
    assert abs(train["min_accuracy"] - rule_threshold(accuracies)) < 0.0011, (train, accuracies)
    assert 0.85 < train["min_accuracy"] < min(accuracies)


@pytest.mark.slow  # six training runs of half a minute each on 2 cores; the auto path itself: the test above
def test_readme_init_example_on_the_example_model(tmp_path):
    """The README's init line, on examples/course-repo's model in a fresh repository with real MNIST: five seeds set
    the threshold by the rule, and the training item that the table then declares passes."""
    args = _readme_init_example()
    assert args[args.index("--min-accuracy") + 1] == "auto"
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO_ROOT / "examples" / "course-repo" / "model.py", repo / "model.py")
    git(repo, "init", "-q", "-b", "main")
    env = {**os.environ, "MNIST_ARCH_DATA": str(_data_root())}
    proc = init(repo, *args, *SOURCE, env=env, timeout=1800)
    assert proc.returncode == 0, output(proc)
    accuracies = [float(a) / 100 for a in re.findall(r"^net seed \d: test accuracy ([\d.]+)%", proc.stdout, re.M)]
    assert len(accuracies) == 5, proc.stdout
    train = table(repo / "pyproject.toml")["models"]["net"]["train"]
    # The printed accuracies are rounded to 0.01 point; the rule works in 0.1 points.
    assert abs(train["min_accuracy"] - rule_threshold(accuracies)) < 0.0011, (train, accuracies)
    assert train["min_accuracy"] < min(accuracies) and train["epochs"] == 1
    assert "the threshold rule (the worst minus the spread" in (repo / "pyproject.toml").read_text()
    item = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-v",
                           "-m", "training", "pyproject.toml"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    assert item.returncode == 0 and "pyproject.toml::net::train.min_accuracy PASSED" in item.stdout, output(item)
