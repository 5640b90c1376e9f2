"""pytest plugin (entry point pytest11): a project that declares its models in `pyproject.toml` gets one
test per declared fact from a plain `pytest`.

    [tool.mnist-arch]
    data = "data"                     # optional: the folder holding MNIST/raw/, for training items
    [tool.mnist-arch.models.tiny]
    model = "models/tiny.py:Net"      # PATH.py:ATTR (relative to pyproject.toml) or package.module:ATTR
    max_params = 20000                # any spec field (see mnist_arch.spec)
    require = ["batchnorm", "dropout"]
    [tool.mnist-arch.models.tiny.train]
    min_accuracy = 0.95               # optional quick training threshold, an item marked `training`
    epochs = 1

collects `pyproject.toml::tiny::params.max`, `pyproject.toml::tiny::require.batchnorm`, ... and
`pyproject.toml::tiny::train.min_accuracy`. The checks are the engine's (`check_model`), run once per
model at collection; each item reports its check's message.

This module is imported by every pytest run of anyone who installs mnist-arch, so it imports neither
torch nor the engine at import time; they load when a `[tool.mnist-arch]` table is found.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TABLE = "tool.mnist-arch"
DATA_ENV = "MNIST_ARCH_DATA"

class MnistArchLintWarning(UserWarning):
    """A lint the engine reports without failing the model (e.g. a softmax output)."""


def pytest_addoption(parser):
    group = parser.getgroup("mnist-arch", "mnist-arch: compliance tests from [tool.mnist-arch] in pyproject.toml")
    group.addoption("--mnist-arch-data", metavar="DIR", default=None,
                    help=f"folder containing MNIST/raw/ for the training items (default: ${DATA_ENV}, "
                         "else `data` in [tool.mnist-arch])")


def pytest_configure(config):
    config.addinivalue_line("markers", "training: trains on real MNIST (needs the data; see README)")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")


def pytest_collect_file(file_path: Path, parent):
    config = parent.config
    if file_path.name != "pyproject.toml" or (file_path.parent.resolve() != config.rootpath.resolve()
                                              and file_path != config.inipath):
        return None  # only the project's own pyproject.toml, not one of a vendored package
    try:
        data = tomllib.loads(file_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # not ours to report; the build tool will
    tool = data.get("tool")
    table = tool.get("mnist-arch") if isinstance(tool, dict) else None
    if table is None:
        return None
    return ComplianceFile.from_parent(parent, path=file_path, table=table)


# ---------------------------------------------------------------------------------------------
# Reading the table


def _where(name: str | None = None, sub: str = "") -> str:
    return f"pyproject.toml [{TABLE}{f'.models.{name}' if name else ''}{sub}]"


def _recipe(train: Any, name: str):
    """A Recipe from [tool.mnist-arch.models.NAME.train]; quick defaults: 1 epoch of Adam at batch 128."""
    from mnist_arch.spec import parse_recipe_fields

    defaults = {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1e-3}
    return parse_recipe_fields(train, _where(name, ".train"), defaults)


def _target(model: Any, root: Path, name: str) -> str:
    """The loader's target, with a PATH.py relative to the pyproject's folder made absolute."""
    from mnist_arch.errors import MnistArchError

    if not isinstance(model, str) or ":" not in model:
        raise MnistArchError(f"{_where(name)} needs model = \"PATH.py:ATTR\" (relative to pyproject.toml) or "
                             f"\"package.module:ATTR\", found {model!r}.")
    source, _, attr = model.rpartition(":")
    if source.endswith(".py") or "/" in source or "\\" in source:  # the loader's test for a file
        source = str(root / source)
    return f"{source}:{attr}"


class ComplianceFile(pytest.File):
    """pyproject.toml: one ModelNode per [tool.mnist-arch.models.NAME]."""

    def __init__(self, *, table: Any, **kwargs):
        super().__init__(**kwargs)
        self.table = table

    def collect(self):
        table, where = self.table, _where()
        if not isinstance(table, dict):
            raise self.CollectError(f"{where} must be a table.")
        unknown = sorted(set(table) - {"data", "models"})
        if unknown:
            raise self.CollectError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; it may set "
                                    f"data (a folder) and [{TABLE}.models.NAME] tables.")
        if not isinstance(table.get("data", ""), str):
            raise self.CollectError(f"{where}: 'data' must be a folder name, found {table['data']!r}.")
        models = table.get("models", {})
        if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
            raise self.CollectError(f"{where}: declare each model as a table, [{TABLE}.models.NAME] with "
                                    "model = \"PATH.py:ATTR\" and its spec fields.")
        for name, declared in models.items():
            yield ModelNode.from_parent(self, name=name, declared=declared)

    def data_root(self) -> Path | None:
        """--mnist-arch-data, else $MNIST_ARCH_DATA, else `data` in the table (relative to pyproject.toml),
        else mnist_arch.data's default folder when that module is there."""
        chosen = self.config.getoption("mnist_arch_data") or os.environ.get(DATA_ENV)
        if chosen:
            return Path(chosen)
        if self.table.get("data"):
            return self.path.parent / self.table["data"]
        try:
            from mnist_arch.data import resolve_data_root

            return Path(resolve_data_root(None))
        except (ImportError, TypeError):  # the data module is not there (or changed): no default
            return None


class ModelNode(pytest.Collector):
    """One declared model: judged once here, then one item per check."""

    def __init__(self, *, declared: dict[str, Any], **kwargs):
        super().__init__(**kwargs)
        self.declared = declared
        self.lineno = self._table_line()

    def _table_line(self) -> int:
        """The 0-based line of [tool.mnist-arch.models.NAME] in pyproject.toml (0 when not found)."""
        header = re.compile(rf"\[\s*tool\s*\.\s*[\"']?mnist-arch[\"']?\s*\.\s*models\s*\.\s*[\"']?"
                            rf"{re.escape(self.name)}[\"']?\s*\]")
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return next((i for i, line in enumerate(lines) if header.match(line.strip())), 0)

    def collect(self):
        from mnist_arch.errors import MnistArchError

        try:
            target, spec, recipe = self._declaration()
            report = self._judge(target, spec, recipe)
        except MnistArchError as exc:
            yield ProblemItem.from_parent(self, name="load", message=str(exc))
            return
        for check in report.checks:
            yield CheckItem.from_parent(self, name=check.id, check=check)
        if recipe is not None:
            item = TrainingItem.from_parent(self, name="train.min_accuracy", target=target, recipe=recipe)
            item.add_marker(pytest.mark.training)
            missing = _training_unavailable(self.parent.data_root())
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing))
            yield item

    def _declaration(self):
        from mnist_arch.spec import Spec, parse_spec_fields

        fields = dict(self.declared)
        target = _target(fields.pop("model", None), self.path.parent, self.name)
        train = fields.pop("train", None)
        recipe = None if train is None else _recipe(train, self.name)
        spec = Spec(source=_where(self.name)).with_changes(parse_spec_fields(fields, _where(self.name)))
        return target, spec, recipe

    def build(self, target: str):
        from mnist_arch.loader import load_model

        sys.path.insert(0, str(self.path.parent))  # package.module:ATTR from the project's folder
        try:
            return load_model(target)
        finally:
            sys.path.remove(str(self.path.parent))

    def _judge(self, target, spec, recipe):
        from mnist_arch.checks import check_model

        return check_model(self.build(target), spec, name=self.name, loss=recipe.loss if recipe else None)


# ---------------------------------------------------------------------------------------------
# Items


class ComplianceFailure(Exception):
    """A declared fact that does not hold; reported as its message alone."""


class _Item(pytest.Item):
    def reportinfo(self):
        # The line of the model's table, and the failure header. Not "model::check": pytest would print
        # a header that ends the node id with its dots as "::", as for a Python name (params::max).
        return self.path, self.parent.lineno, f"{self.parent.name}: {self.name}"

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ComplianceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class CheckItem(_Item):
    def __init__(self, *, check, **kwargs):
        super().__init__(**kwargs)
        self.check = check

    def runtest(self):
        if self.check.warning:
            warnings.warn(MnistArchLintWarning(f"{self.parent.name}: {self.check.message}"), stacklevel=1)
        if not self.check.passed:
            raise ComplianceFailure(self.check.message)


class ProblemItem(_Item):
    """A model whose declaration is invalid or that cannot be loaded, built or run: one failure."""

    def __init__(self, *, message: str, **kwargs):
        super().__init__(**kwargs)
        self.message = message

    def runtest(self):
        raise ComplianceFailure(self.message)


class TrainingItem(_Item):
    def __init__(self, *, target: str, recipe, **kwargs):
        super().__init__(**kwargs)
        self.target, self.recipe = target, recipe

    def runtest(self):
        from mnist_arch.errors import MnistArchError

        root = self.parent.parent.data_root()
        try:
            import torch

            torch.manual_seed(0)  # repeatable initial weights
            accuracy = _train(self.parent.build(self.target), self.recipe, root, self.parent.name)
        except MnistArchError as exc:
            raise ComplianceFailure(str(exc)) from None
        if accuracy < self.recipe.min_accuracy:
            raise ComplianceFailure(f"test accuracy {accuracy:.2%} after {self.recipe.epochs} epoch(s), declared "
                                    f"at least {self.recipe.min_accuracy:.2%}")


def _training_unavailable(root: Path | None) -> str | None:
    """Why a training item cannot run here (skipped at collection), or None."""
    if root is None or not (root / "MNIST" / "raw").is_dir():
        return (f"no MNIST copy{f' at {root}/MNIST/raw' if root else ''}: pass --mnist-arch-data DIR, set "
                f"{DATA_ENV}, or set data = \"DIR\" in [{TABLE}] (DIR must contain MNIST/raw/)")
    return None


def _train(model, recipe, data_root: Path, name: str) -> float:
    """Test accuracy (a fraction) after training `model` with `recipe` on CUDA where present."""
    from mnist_arch.data import load_mnist
    from mnist_arch.train import resolve_device, train_model

    device = resolve_device("auto")
    data = load_mnist(data_root, device=device)
    result = train_model(model, recipe, data, name=name, seed=0, device=device, progress=False)
    return float(result.test_accuracy)
