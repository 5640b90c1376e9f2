"""The pytest plugin: a throw-away project declares models in its pyproject.toml and a plain `pytest` there
collects one item per declared fact. Parameter counts in comments are computed by hand from layer sizes."""

import ast
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
    # good: params.max, output_shape, require.batchnorm, require.dropout pass.
    # big: output_shape passes (softmax is a lint warning); params.max and require.dropout fail.
    # linear: output_shape passes, train.min_accuracy skips. missing, typo: one failing item each.
    # test_own: passes.
    result.assert_outcomes(passed=8, failed=4, skipped=1, warnings=1)
    result.stdout.fnmatch_lines_random([
        "pyproject.toml::good::params.max PASSED*",
        "pyproject.toml::good::require.dropout PASSED*",
        "pyproject.toml::linear::train.min_accuracy SKIPPED*",
        "pyproject.toml::big::params.max FAILED*",
        "pyproject.toml::big::lint.double_softmax PASSED*",
        "pyproject.toml::missing::load FAILED*",
        "pyproject.toml::typo::load FAILED*",
        "test_own.py::test_own PASSED*",
        # the engine's messages, one line each, no traceback
        "_*_ big: params.max _*_",
        "7,850 parameters, budget at most 5,000 (2,850 over)",
        "dropout: no dropout (any Dropout variant or F.dropout*, p > 0) ran in a training-mode forward pass",
        "_*_ missing: load _*_",
        "*/nets/cnn.py has no attribute 'Missing'. It defines these nn.Module classes: Big, Good, Linear.",
        "pyproject.toml [[]tool.mnist-arch.models.typo[]]: unknown field(s) 'max_parms'; *",
        "FAILED pyproject.toml::big::params.max - 7,850 parameters*",
        "*MnistArchLintWarning: big: warning: the model ends in softmax*",
        f"SKIPPED [[]1[]] pyproject.toml*: no MNIST copy at {tmp_path}/MNIST/raw: pass --mnist-arch-data DIR*",
    ])
    assert "Traceback" not in result.stdout.str() and "def runtest" not in result.stdout.str()


@pytest.mark.training
def test_training_threshold(project, mnist_root):
    result = project.runpytest_subprocess("-m", "training", f"--mnist-arch-data={mnist_root}")
    result.assert_outcomes(passed=1, deselected=12)  # logistic regression on 2,000 images: about 85%


def test_bad_table_is_a_collection_error(pytester):
    pytester.makepyprojecttoml('[tool.mnist-arch]\nmodel = "x.py:Net"\n')
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*pyproject.toml [[]tool.mnist-arch[]]: unknown key(s) 'model'; it may set data*"])


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
    assert top == {"__future__", "os", "re", "sys", "warnings", "pathlib", "typing", "pytest", "tomllib", "tomli"}


def test_loading_the_plugin_does_not_import_torch():
    # The plugin loads in every pytest run of every repository that installs mnist-arch.
    import subprocess
    import sys

    code = "import sys, mnist_arch.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
