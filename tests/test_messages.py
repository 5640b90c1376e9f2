"""Messages a new user reads first (issue 22), each as the user meets it, through the installed console script or
pytest in a throw-away repository: `--version` (and the version in check's JSON and markdown), the exit codes at
the end of `--help`, `pytest --collect-only` with a table, `diff` against a base without a table (the ref as
written), and `badge` without a GitHub remote (what to do, not "see README")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from mnist_arch import __version__
from mnist_arch.badge import badge_markdown
from tests.test_init import assignment, git
from tests.test_workflows import output

BIN = Path(sys.executable).parent
TABLE = b'[tool.mnist-arch.models.net]\nmodel = "model.py:Net"\nparams_below = 20000\n'
PLACEHOLDER = badge_markdown("https://github.com/OWNER/REPOSITORY")


def run(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    if not (BIN / "mnist-arch").is_file():
        pytest.skip(f"the mnist-arch console script is not installed beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k != "MNIST_ARCH_DATA"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_version(tmp_path):
    proc = run(tmp_path, str(BIN / "mnist-arch"), "--version")
    assert proc.returncode == 0 and proc.stdout == f"mnist-arch {__version__}\n", output(proc)
    assert metadata.version("mnist-arch") == __version__, "the installed metadata is read from __version__"


def test_the_version_is_in_checks_reports(tmp_path):
    repo = assignment(tmp_path / "repo", pyproject=TABLE)
    data = json.loads(run(repo, str(BIN / "mnist-arch"), "check", "--format", "json").stdout)
    assert data["mnist_arch_version"] == __version__ and [m["name"] for m in data["models"]] == ["net"]
    markdown = run(repo, str(BIN / "mnist-arch"), "check", "--format", "markdown").stdout
    assert markdown.startswith("## mnist-arch check") and f"<sub>Judged by mnist-arch {__version__}.</sub>" in markdown


def test_help_ends_with_the_exit_codes(tmp_path):
    proc = run(tmp_path, str(BIN / "mnist-arch"), "--help")
    assert proc.returncode == 0, output(proc)
    tail = proc.stdout[proc.stdout.index("\nexit codes:\n"):].splitlines()[2:]
    codes = [line.split()[0] for line in tail if line.startswith("  ") and line.split()[0].isdigit()]
    assert codes == ["0", "1", "2"], proc.stdout
    assert "every check passed" in tail[0] and "--version" in proc.stdout


@pytest.mark.parametrize("args, collected", [(["--collect-only"], True),
                                             (["--collect-only", "-k", "no_such_test"], False)])
def test_collect_only_lists_the_table_and_says_nothing_more(tmp_path, args, collected):
    # Listed but not run is collected; deselecting the items is not (selecting one test by node id is not
    # either: tests/test_plugin.py::test_selecting_one_test_says_the_table_was_not_collected).
    repo = assignment(tmp_path / "repo", pyproject=TABLE)
    proc = run(repo, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", *args)
    assert proc.returncode in (0, 5), output(proc)  # 5: -k deselected everything
    assert ("params.below" in proc.stdout) == collected, proc.stdout
    assert ("this run did not collect their items" in proc.stdout) != collected, proc.stdout


def test_diff_note_keeps_the_ref_as_written(tmp_path):
    repo = assignment(tmp_path / "repo")  # committed without a table
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")
    (repo / "pyproject.toml").write_bytes(TABLE)
    proc = run(repo, str(BIN / "mnist-arch"), "diff", "--base", "origin/main", "--format", "markdown")
    assert proc.returncode == 0, output(proc)
    assert "Note: origin/main has no [tool.mnist-arch] table and no mnist_arch package" in proc.stdout, proc.stdout
    assert "Origin/main" not in proc.stdout


@pytest.mark.parametrize("remote", [None, "https://gitlab.com/someone/mnist.git"])
def test_badge_without_a_github_remote_says_what_to_do(tmp_path, remote):
    repo = assignment(tmp_path / "repo", remote=remote)
    proc = run(repo, str(BIN / "mnist-arch"), "badge")
    assert proc.returncode == 2 and proc.stdout == "", output(proc)
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message and "README)" not in message, message
    assert "README with OWNER/REPOSITORY replaced" in message and message.endswith(PLACEHOLDER), message
    if remote is None:
        assert "git remote add origin https://github.com/OWNER/REPOSITORY.git" in message
        assert "run `mnist-arch badge` again" in message
    else:
        assert f"The git remote '{remote}' is not a GitHub repository" in message


# --- A reader that went away (issue 25): `mnist-arch diff --format json | head -40` -----------------------------

TRAINED = TABLE + b'\n[tool.mnist-arch.models.net.train]\nmin_accuracy = 0.1\ntrain_subset = 256\n'
FORMATS = {"summary": ("table", "json", "markdown"), "check": ("table", "json", "markdown"),
           "diff": ("table", "json", "markdown"), "train": ("text", "json", "markdown"),
           "bench": ("table", "json", "markdown")}
ARGS = {"summary": ["net"], "diff": ["--base", "HEAD"], "train": ["net"],
        "bench": ["--paths", "eager", "--batch-sizes", "1", "--min-time", "0.01"],
        "init": ["--model", "model.py:Net", "--requirement", "mnist-arch"]}
CLOSED_PIPE = [[flag] for flag in ("--help", "--version")] + [["list"], ["badge"], ["init"]] + [
    [command, "--format", fmt] for command, formats in FORMATS.items() for fmt in formats]


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory):
    return assignment(tmp_path_factory.mktemp("pipe") / "repo", pyproject=TRAINED)


@pytest.mark.parametrize("argv", CLOSED_PIPE, ids=" ".join)
def test_a_closed_pipe_is_no_traceback(trained_repo, tmp_path, argv):
    # stdout is a pipe whose read end is closed before the command starts, so its first write fails.
    repo = assignment(tmp_path / "repo") if argv[0] == "init" else trained_repo
    read, write = os.pipe()
    os.close(read)
    try:
        env = {**os.environ, "MNIST_ARCH_DATA": os.environ.get("MNIST_ARCH_DATA", "")}
        proc = subprocess.run([str(BIN / "mnist-arch"), *argv, *ARGS.get(argv[0], [])], cwd=repo, env=env,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert "Error" not in proc.stderr, proc.stderr
    # 141: what a shell reports for a writer ended by SIGPIPE; argparse's --help and --version end first with 0
    assert proc.returncode == (0 if argv[0].startswith("--") else 141), proc.stderr


# --- Words that stop a student (issue 25) -----------------------------------------------------------------------


def test_train_without_a_train_table_says_what_to_add(tmp_path):
    repo = assignment(tmp_path / "repo", pyproject=TABLE)
    proc = run(repo, str(BIN / "mnist-arch"), "train", "net")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, output(proc)
    message = proc.stderr.strip()
    assert "\n" not in message and "declares no 'quick' recipe; it has none." in message, message
    assert "needs a [tool.mnist-arch.models.net.train] table with min_accuracy" in message, message
    assert f"add one below its table in {repo / 'pyproject.toml'}" in message, message
    assert "`mnist-arch init --model model.py:Net --name net --min-accuracy auto --force`" in message, message


def test_check_says_when_it_judges_our_references(tmp_path):
    proc = run(tmp_path, str(BIN / "mnist-arch"), "check", "--format", "json")
    judged = [m["name"] for m in json.loads(proc.stdout)["models"]]
    assert proc.returncode == 0 and len(judged) == 5, output(proc)  # the references all pass: exit code unchanged
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"mnist-arch check: No pyproject.toml in {tmp_path.resolve()} or any folder above it "
                           "declares models in [tool.mnist-arch], so these are mnist-arch's own 5 reference models, "
                           "not yours: declare yours with `mnist-arch init --model PATH.py:ATTR`"), line
    named = run(tmp_path, str(BIN / "mnist-arch"), "check", judged[0], "--format", "json")
    assert named.returncode == 0 and named.stderr == "", output(named)  # a reference named is no surprise
    repo = assignment(tmp_path / "repo", pyproject=TABLE)
    declared = run(repo, str(BIN / "mnist-arch"), "check")
    assert declared.returncode == 0 and declared.stderr == "", output(declared)


OLD_ACTIONS = """\
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v2
      - uses: actions/setup-python@0a5c61591373683505ea898e09a3ea4f39ef2b9c  # v2.3.0
      - uses: "actions/cache@v2.1.7"
      - uses: actions/cache/restore@v4
      - uses: actions/download-artifact@v4
      - uses: actions/setup-python@v7
      - uses: actions/checkout@main
      - uses: someone/else@v1
"""


def test_init_notes_every_end_of_life_action_major(tmp_path):
    repo = assignment(tmp_path / "repo")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "old.yml").write_text(OLD_ACTIONS)
    proc = run(repo, str(BIN / "mnist-arch"), "init", *ARGS["init"])
    assert proc.returncode == 0, output(proc)
    notes = [line for line in proc.stdout.splitlines() if line.startswith("Note: .github/workflows/old.yml")]
    named = [(note.split(" uses ")[1].split()[0], note.split("(line ")[1].split(")")[0]) for note in notes]
    assert named == [("actions/checkout@v2", "6"), ("actions/setup-python@v2", "7"), ("actions/cache@v2", "8"),
                     ("actions/cache/restore@v4", "9"), ("actions/download-artifact@v4", "10")], proc.stdout
    old_node = "(GitHub has retired it: it was written for node12 or node16, runtimes its runners no longer run)"
    assert old_node in notes[0] and "Move it to v7 (or a later major)" in notes[0], notes[0]
    assert "(GitHub has retired it: jobs that use it fail). Move it to v6" in notes[2], notes[2]
    assert "(it runs on node20, which GitHub removed from its runners on 23 September 2026). Move it to v8" in notes[4]


def test_the_major_to_move_to_is_the_one_init_writes():
    # END_OF_LIFE_ACTIONS is the one list; where model_tests.yml uses an action, the note sends users to its major.
    from mnist_arch.existing_tests import END_OF_LIFE_ACTIONS
    from tests.test_workflows import TEMPLATES_DIR, uses_lines

    written = {action: int(comment.lstrip("v").split(".")[0]) for path in TEMPLATES_DIR.rglob("*.yml")
               for action, _, comment in uses_lines(path) if comment and action in END_OF_LIFE_ACTIONS}
    assert len(written) >= 6, written
    for action, major in written.items():
        old, current = END_OF_LIFE_ACTIONS[action]
        assert current == major and major not in old, (action, old, current, major)


@pytest.mark.parametrize("config, uncollected", [
    (None, ["model_tests.py"]),
    (("pytest.ini", "[pytest]\npython_files = check_*.py model_tests.py\n"), ["test_model.py"]),
    (("setup.cfg", "[metadata]\nname = x\n\n[tool:pytest]\npython_files = check_*.py\n"),
     ["model_tests.py", "test_model.py"]),
    (("tox.ini", "[tox]\nenvlist = py\n"), ["model_tests.py"]),  # no [pytest] section: pytest's default
])
def test_init_notes_test_files_pytest_will_not_collect(tmp_path, config, uncollected):
    repo = assignment(tmp_path / "repo")  # its test_model.py matches pytest's default test_*.py
    (repo / "model_tests.py").write_text("from model import Net\n\n\ndef test_it_builds():\n    Net()\n")
    (repo / "check_model.py").write_text("def test_checked():\n    pass\n")
    (repo / "test_helpers").mkdir()
    (repo / "test_helpers" / "data_for_tests.py").write_text("SIZES = [1, 2]\n")  # defines no test: no note
    if config:
        (repo / config[0]).write_text(config[1])
    proc = run(repo, str(BIN / "mnist-arch"), "init", *ARGS["init"])
    assert proc.returncode == 0, output(proc)
    notes = [line for line in proc.stdout.splitlines() if "that pytest will not run" in line]
    assert [note.split()[1] for note in notes] == uncollected, proc.stdout
    source = f"set in {config[0]}" if config and "python_files" in config[1] else "pytest's default"
    assert all(f": {source}), so neither pytest here nor model_tests.yml collects it." in n for n in notes), notes
    if "model_tests.py" in uncollected:
        note = notes[uncollected.index("model_tests.py")]
        assert "model_tests.py defines tests (test_it_builds, line 4) that pytest will not run" in note, note
        assert "Rename it (e.g. test_model_tests.py)" in note, note
    # pytest itself agrees: what the notes name is not collected, the other test files are
    collected = run(repo, sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:mnist_arch",
                    "-p", "no:cacheprovider", "-p", "no:benchmark")
    files = {line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line}
    assert files == {"model_tests.py", "test_model.py", "check_model.py"} - set(uncollected) - (
        set() if config and "python_files" in config[1] else {"check_model.py"}), collected.stdout


COUNTED = '''
import os
from pathlib import Path

import torch.nn as nn

with open(Path(__file__).with_name("imports.txt"), "a") as f:  # one line each time a process imports it
    f.write(f"{os.getpid()}\\n")


class Net(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
'''
COUNTED_TABLE = TABLE + b'require = ["batchnorm", "dropout"]\n'


def counted_repo(path: Path) -> Path:
    repo = assignment(path, pyproject=COUNTED_TABLE)
    (repo / "model.py").write_text(COUNTED)
    (repo / "test_model.py").unlink()  # the student's test imports the model itself
    return repo


def test_collect_only_builds_no_model(tmp_path):
    repo = counted_repo(tmp_path / "repo")
    proc = run(repo, sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert proc.returncode == 0, output(proc)
    assert "pyproject.toml::net::require.dropout" in proc.stdout and "pyproject.toml::net::load" in proc.stdout
    assert not (repo / "imports.txt").exists(), "collecting imported the model"


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]])
def test_each_model_is_judged_once_per_process(tmp_path, xdist):
    repo = counted_repo(tmp_path / "repo")
    proc = run(repo, sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:benchmark", *xdist)
    assert proc.returncode == 0 and "5 passed" in proc.stdout, output(proc)  # load, params, shape, 2 requires
    imports = (repo / "imports.txt").read_text().split()
    assert len(imports) <= (2 if xdist else 1) and len(set(imports)) == len(imports), imports


def test_plain_pytest_runs_the_forward_items_without_a_timing_table(tmp_path):
    pytest.importorskip("pytest_benchmark")
    repo = counted_repo(tmp_path / "repo")
    proc = run(repo, sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider")
    assert proc.returncode == 0, output(proc)
    assert "pyproject.toml::net::forward[1] PASSED" in proc.stdout and "forward[64] PASSED" in proc.stdout
    table = re.search(r"-+ benchmark: \d+ tests? -+", proc.stdout)  # pytest-benchmark's table, and its header row
    assert table is None and "(time in " not in proc.stdout, proc.stdout
    assert "Benchmark fixture was not used" not in proc.stdout, proc.stdout


def test_the_items_collected_are_the_checks_the_engine_makes():
    # The plugin collects Spec.check_ids() without building a model; the engine must make exactly those checks
    # (besides the ones a model adds: params.stable, lints), or an item would fail as an error of ours.
    import torch.nn as nn

    from mnist_arch.checks import check_model
    from mnist_arch.registry import create_model, get_spec, list_models
    from mnist_arch.spec import Layer, Spec

    def made(model, spec):
        checks = check_model(model, spec).checks
        return [c.id for c in checks if c.id != "params.stable" and not c.id.startswith("lint.")]

    for name in list_models():
        spec = get_spec(name)
        assert sorted(made(create_model(name), spec)) == sorted(spec.check_ids()), name
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.1), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10), nn.LogSoftmax(1))
    every = Spec(exact_params=98, max_params=98, params_below=99, exact_mult_adds=1, max_mult_adds=1,
                 min_receptive_field=3, require=frozenset({"batchnorm", "dropout", "gap"}),
                 require_any=(frozenset({"gap", "fc"}), frozenset({"dropout"})), final_activation="log_softmax",
                 layers=(Layer("0", (4, 26, 26), receptive_field=3), Layer("6", (10,)), Layer("nope", (1,))),
                 batchnorm_after_every_conv=True)
    assert sorted(made(net, every)) == sorted(every.check_ids()) and len(every.check_ids()) == 18


REUSED = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3)
        self.head = nn.Linear(8, 10)
        self.pool = nn.MaxPool2d(2)  # defined after the last conv, called before it
        self.act = nn.ReLU()  # called twice
        self.unused = nn.Dropout(0.1)  # defined, never called

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))  # 28 -> 26 -> 13
        x = self.act(self.conv2(x))  # 13 -> 11
        return self.head(x.mean((2, 3)))
'''


def test_summary_lists_every_call_in_the_order_the_pass_runs_them(tmp_path):
    (tmp_path / "model.py").write_text(REUSED)
    proc = run(tmp_path, str(BIN / "mnist-arch"), "summary", "model.py:Net", "--format", "json")
    assert proc.returncode == 0, output(proc)
    rows = [(r["name"], r["call"], r["output_shape"], r["receptive_field"] and r["receptive_field"]["size"])
            for r in json.loads(proc.stdout)["layers"]]
    # receptive fields by hand: conv 3; pool 3 + 1 = 4 (jump 2); conv2 4 + 2 * 2 = 8; the mean over 11 positions
    # at jump 2: 8 + 10 * 2 = 28
    assert rows == [("", 1, [10], [28, 28]), ("conv1", 1, [4, 26, 26], [3, 3]), ("act", 1, [4, 26, 26], [3, 3]),
                    ("pool", 1, [4, 13, 13], [4, 4]), ("conv2", 1, [8, 11, 11], [8, 8]),
                    ("act", 2, [8, 11, 11], [8, 8]), ("head", 1, [10], [28, 28]),
                    ("unused", 0, None, None)], rows
    table = run(tmp_path, str(BIN / "mnist-arch"), "summary", "model.py:Net").stdout.splitlines()
    cells = [re.split(r"\s{2,}", line.strip()) for line in table[3:]]
    assert [c[0] for c in cells] == ["(model)", "conv1", "act", "pool", "conv2", "act #2", "head", "unused"], table
    assert cells[5][3] == "shared" and cells[7][2] == "-", table  # act #2 shares its parameters; unused did not run
