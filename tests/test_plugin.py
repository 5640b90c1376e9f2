"""The pytest plugin: a throw-away project declares models in its pyproject.toml and a plain `pytest` there
collects one item per declared fact. Parameter counts in comments are computed by hand from layer sizes."""

import ast
import json
from pathlib import Path

import pytest
import torchinfo  # noqa: F401  (imported here, before pytester snapshots sys.modules for its in-process runs)

import mnist_arch.checks  # noqa: F401  (likewise)
import mnist_arch.pytest_plugin as plugin

pytest_plugins = ["pytester"]

NETS = '''
import torch.nn as nn


class Good(nn.Module):
    """conv 1*4*9+4 = 40, batch norm 2*4 = 8, fc 4*10+10 = 50: 98 parameters; dropout; logits."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.drop, self.fc = nn.Dropout(0.1), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.drop(self.bn(self.conv(x)).relu()).mean((2, 3)))


class Big(nn.Module):
    """fc 784*10+10 = 7,850 parameters, no dropout, ends in softmax."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).softmax(1)


class Linear(nn.Module):
    """Logistic regression, the quickest thing to train."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''

PYPROJECT = '''
[project]
name = "someone-elses-models"

[tool.mnist-arch.models.good]
model = "nets/cnn.py:Good"
max_params = 98
require = ["batchnorm", "dropout"]

[tool.mnist-arch.models.big]
model = "nets/cnn.py:Big"
max_params = 5000
require = ["dropout"]

[tool.mnist-arch.models.missing]
model = "nets/cnn.py:Missing"

[tool.mnist-arch.models.linear]
model = "nets/cnn.py:Linear"
[tool.mnist-arch.models.linear.train]
min_accuracy = 0.7
train_subset = 2000
lr = 0.01

[tool.mnist-arch.models.typo]
model = "nets/cnn.py:Good"
max_parms = 5
'''


@pytest.fixture
def project(pytester):
    pytester.makepyprojecttoml(PYPROJECT)
    (pytester.path / "nets").mkdir()
    (pytester.path / "nets" / "cnn.py").write_text(NETS)
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    return pytester


def test_one_item_per_declared_fact(project, tmp_path):
    # In a subprocess: an in-process run would drop the torch modules it imported from sys.modules
    # afterwards, and torch cannot register its operator libraries a second time.
    result = project.runpytest_subprocess("-v", "-rfs", f"--mnist-arch-data={tmp_path}")  # no MNIST there
    # good: load, params.max, output_shape, require.batchnorm, require.dropout pass.
    # big: load (with the softmax lint's warning) and output_shape pass; params.max and require.dropout fail.
    # linear: load and output_shape pass, train.min_accuracy skips. typo: one failing item (its declaration);
    # missing: load fails, its output_shape and forward items skip (not judged, see load).
    # good, big, linear: forward[1] and forward[64] benchmark items pass (run once: benchmarks disabled).
    # test_own: passes.
    result.assert_outcomes(passed=16, failed=4, skipped=4, warnings=1)
    result.stdout.fnmatch_lines_random([
        "pyproject.toml::good::params.max PASSED*",
        "pyproject.toml::good::require.dropout PASSED*",
        "pyproject.toml::linear::train.min_accuracy SKIPPED*",
        "pyproject.toml::big::params.max FAILED*",
        "pyproject.toml::big::load PASSED*",
        "pyproject.toml::missing::output_shape SKIPPED*",
        "pyproject.toml::missing::load FAILED*",
        "pyproject.toml::typo::load FAILED*",
        "pyproject.toml::good::forward[[]64[]] PASSED*",
        "test_own.py::test_own PASSED*",
        # the engine's messages, one line each, no traceback
        "_*_ big: params.max _*_",
        "7,850 parameters, budget at most 5,000 (2,850 over)",
        "dropout: no dropout (any Dropout variant or F.dropout*, p > 0) ran in a training-mode forward pass",
        "_*_ missing: load _*_",
        "*/nets/cnn.py has no attribute 'Missing'. It defines these nn.Module classes: Big, Good, Linear.",
        "*pyproject.toml [[]tool.mnist-arch.models.typo[]]: unknown field(s) 'max_parms'; *",
        "FAILED pyproject.toml::big::params.max - 7,850 parameters*",
        "*MnistArchLintWarning: big: warning: the model ends in softmax*",
        f"SKIPPED [[]1[]] pyproject.toml*: no MNIST copy at {tmp_path}/MNIST/raw: pass --mnist-arch-data DIR*",
    ])
    assert "Traceback" not in result.stdout.str() and "def runtest" not in result.stdout.str()


@pytest.mark.training
def test_training_threshold(project, mnist_root):
    result = project.runpytest_subprocess("-m", "training", f"--mnist-arch-data={mnist_root}")
    result.assert_outcomes(passed=1, deselected=23)  # logistic regression on 2,000 images: about 85%
    # the accuracy reached and the seconds taken are reported for a passing item too
    # on CUDA where there is one
    result.stdout.fnmatch_lines(["*mnist-arch training*", "linear: test accuracy *% after 1 epoch(s) in *s; threshold "
                                 "70.00%; on *, fp32, *; loss cross_entropy (the default for its output)"])


DEAD = '''
import torch
import torch.nn as nn


class Dead(nn.Module):
    """Every hidden ReLU dead (bias -1000): only the output bias learns, so the network answers the most common
    digit, 1, for every image: 11.35% of the test set, above a threshold of 10%, and a collapse."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(784, 32), nn.Linear(32, 10)
        nn.init.constant_(self.hidden.bias, -1e3)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))
'''


@pytest.mark.training
def test_a_collapsed_run_fails_its_training_item_as_the_command_line_fails_it(pytester, mnist_root):
    """What a passing training run is has one home (runs.TrainResult.passed): the threshold reached and no
    collapse, for `mnist-arch train` and for the plugin's item alike."""
    pytester.makepyprojecttoml("[tool.mnist-arch.models.dead]\nmodel = \"dead.py:Dead\"\n"
                               "[tool.mnist-arch.models.dead.train]\nmin_accuracy = 0.1\ntrain_subset = 4096\n")
    (pytester.path / "dead.py").write_text(DEAD)
    result = pytester.runpytest_subprocess("-m", "training", f"--mnist-arch-data={mnist_root}")
    result.assert_outcomes(failed=1, deselected=4)  # load, output_shape, forward[1], forward[64]
    result.stdout.fnmatch_lines(["*dead: test accuracy 11.35% after 1 epoch(s) in *s; threshold 10.00%; on *; "
                                 "collapsed: 100.0% of the test predictions are class 1 *"])


def test_bad_table_is_a_collection_error(pytester):
    pytester.makepyprojecttoml('[tool.mnist-arch]\nmodel = "x.py:Net"\n')
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*pyproject.toml [[]tool.mnist-arch[]]: unknown key(s) 'model'; it may set data*"])


TESTS_PROJECT = '''
[project]
name = "course"

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.mnist-arch]
timeout = 3

[tool.mnist-arch.models.net]
model = "model.py:Net"
params_below = 100
require_any = [["gap", "fc"]]

[tool.mnist-arch.models.hostile]
model = "model.py:Exits"

[tool.mnist-arch.models.sleepy]
model = "model.py:Sleeps"
'''

MODEL = '''
import sys
import time

import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """conv 1*4*9+4 = 40, fc 4*10+10 = 50: 90 parameters; GAP; ends in log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(self.conv(x).relu().mean((2, 3))), 1)


class Exits(Net):
    def forward(self, x):
        sys.exit(0)


class Sleeps(Net):
    def forward(self, x):
        time.sleep(3600)
'''


@pytest.fixture
def course(pytester):
    """A repository shaped like a course assignment: a model file, tests/test_model.py, testpaths."""
    pytester.makepyprojecttoml(TESTS_PROJECT)
    (pytester.path / "model.py").write_text(MODEL)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_model.py").write_text("def test_own():\n    pass\n")
    return pytester


@pytest.mark.parametrize("args", [[], ["tests/"], ["tests/test_model.py"]])
def test_a_path_run_still_collects_the_table(course, args):
    result = course.runpytest_subprocess("-v", "-p", "no:benchmark", *args)
    # net: load, params.below, output_shape, require_any pass (no double-softmax warning: log_softmax is trained
    # with NLL by default); hostile and sleepy: one failing load item each (their output_shape items skip, not
    # judged), the run itself goes on.
    result.assert_outcomes(passed=5, failed=2, skipped=2)
    result.stdout.fnmatch_lines_random([
        "pyproject.toml::net::params.below PASSED*",
        "pyproject.toml::net::require_any.fc|gap PASSED*",
        "tests/test_model.py::test_own PASSED*",
        "*hostile: the model's code exited the process with code 0 while running its forward pass*",
        "*sleepy: stopped at the time limit of 3 s while running its forward pass (phase: forward)*",
    ])
    assert "INTERNALERROR" not in result.stdout.str() and "double_softmax" not in result.stdout.str()


def test_selecting_one_test_says_the_table_was_not_collected(course):
    result = course.runpytest_subprocess("-p", "no:benchmark", "tests/test_model.py::test_own")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mnist-arch: *pyproject.toml declares models in [[]tool.mnist-arch[]], but this "
                                 "run did not collect their items*pytest pyproject.toml*"])


def test_xdist_runs_the_table_and_reports_like_a_plain_run(course):
    result = course.runpytest_subprocess("-n", "2", "-p", "no:benchmark", "tests/")
    result.assert_outcomes(passed=5, failed=2, skipped=2)
    assert "did not collect" not in result.stdout.str()


def test_the_table_is_found_upwards_from_where_pytest_starts(course, monkeypatch):
    """An ini file one folder up makes that folder pytest's rootdir; the table that `mnist-arch check` run
    in the project folder would read is still collected (the same search, upwards from there)."""
    (course.path / "project").mkdir()
    for name in ("pyproject.toml", "model.py", "tests"):
        (course.path / name).rename(course.path / "project" / name)
    (course.path / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(course.path / "project")
    result = course.runpytest_subprocess("-p", "no:benchmark", "tests/")
    result.assert_outcomes(passed=5, failed=2, skipped=2)


def test_benchmark_only_measures_the_declared_models(course, tmp_path):
    out = tmp_path / "bench.json"
    course.runpytest_subprocess("--benchmark-only", f"--benchmark-json={out}")
    names = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(names) == {"forward[1]", "forward[64]"}  # net only: the others could not be loaded
    assert names["forward[64]"]["extra_info"]["images_per_s"] > 0
    assert names["forward[64]"]["stats"]["rounds"] > 1  # really timed


def test_nothing_collected_without_the_table(pytester):
    pytester.makepyprojecttoml('[project]\nname = "x"\n[tool.other]\nmodels = 1\n')
    pytester.makepyfile(test_own="def test_own():\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_own.py::test_own", "1 test collected*"])


def test_options_and_markers(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["mnist-arch: compliance tests from*", "*--mnist-arch-data=DIR*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines_random(["@pytest.mark.training:*", "@pytest.mark.gpu:*"])


def test_gpu_marker_skips_without_cuda(pytester):
    import torch

    pytester.makepyfile(test_marked="import pytest\n\n@pytest.mark.gpu\ndef test_on_cuda():\n    pass\n\n"
                                    "def test_anywhere():\n    pass\n")
    result = pytester.runpytest("-rs")
    if torch.cuda.is_available():
        result.assert_outcomes(passed=2)
    else:
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["SKIPPED*test_marked.py:3: marked gpu, and this PyTorch * sees no CUDA device*"])


def test_plugin_imports_nothing_heavy():
    """It loads in every pytest run of anyone who installs mnist-arch: its module-level imports are the
    standard library and pytest; torch and the engine load only when a [tool.mnist-arch] table is found."""
    tree = ast.parse(Path(plugin.__file__).read_text(encoding="utf-8"))
    top: set[str] = set()
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try, ast.Import, ast.ImportFrom)) else ():
            if isinstance(sub, ast.Import):
                top |= {alias.name for alias in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                top.add(sub.module)
    assert top <= {"__future__", "os", "warnings", "pathlib", "pytest"}


def test_loading_the_plugin_does_not_import_torch():
    # The plugin loads in every pytest run of every repository that installs mnist-arch.
    import subprocess
    import sys

    code = "import sys, mnist_arch.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


PROBE_NET = '''
import sys
from pathlib import Path

import torch.nn as nn


class Probe(nn.Module):
    """Notes, in the worker that builds it, whether torch._dynamo was imported before any optimizer."""

    def __init__(self):
        super().__init__()
        Path("dynamo.txt").write_text(str("torch._dynamo" in sys.modules))
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


PROBE_TABLE = '[tool.mnist-arch.models.probe]\nmodel = "net.py:Probe"\n'


TRAINS = PROBE_TABLE + "[tool.mnist-arch.models.probe.train]\nmin_accuracy = 0.5\n"


@pytest.mark.parametrize("table, mnist, imported", [
    (TRAINS, True, "True"),
    # a registered model trains by its own quick recipe; reading the registry starts the fork server
    (PROBE_TABLE + '[tool.mnist-arch.models.mine]\nmodel = "micro_cnn"\n', True, "True"),
    (PROBE_TABLE, True, "False"),  # nothing to train
    (TRAINS, False, "False"),  # no MNIST copy: the training item is skipped
])
def test_a_table_that_trains_has_the_fork_server_import_torch_dynamo(pytester, tmp_path, table, mnist, imported):
    """Every torch.optim optimizer imports torch._dynamo (about 1 s); where the table will train, each
    xdist worker's fork server imports it once (isolate.expect_training), not each training item again.
    A table with nothing to train, or no data to train on, does not pay for it."""
    pytester.makepyprojecttoml(table)
    (pytester.path / "net.py").write_text(PROBE_NET)
    if mnist:
        (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # training is collected, not run
    # the load item builds the model (collection builds none: test_messages.py)
    result = pytester.runpytest_subprocess("-k", "load", "-p", "no:benchmark", f"--mnist-arch-data={tmp_path}")
    assert result.ret == 0
    assert (pytester.path / "dynamo.txt").read_text() == imported
