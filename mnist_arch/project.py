"""Which models: one answer for every face (`check`, `summary`, `diff`, `bench`, `train`, the pytest plugin).

A declared model is a name, a builder (a loader target such as `model.py:Net`), a spec and its recipes,
wherever it was declared. There are two sources: a `[tool.mnist-arch]` table in the nearest
pyproject.toml upwards from the current folder (found the way pytest finds its rootdir), and, where
there is no such table, our own registry of reference architectures. A table entry may also name a
registered model (`model = "micro_cnn"`) and override its spec.

    [tool.mnist-arch]
    data = "data"                   # optional: folder holding MNIST/raw/
    timeout = 120                   # optional: seconds a model may spend in one phase (import, build, ...)
    bench_batch_sizes = [1, 64]     # optional: forward benchmarks (`bench`, `pytest --benchmark-only`)
    [tool.mnist-arch.models.net]
    model = "model.py:Net"          # PATH.py:ATTR (relative to pyproject.toml), package.module:ATTR, or a
                                    # registered name
    params_below = 20000            # any spec field (mnist_arch.spec)
    require_any = [["gap", "fc"]]
    [tool.mnist-arch.models.net.train]
    min_accuracy = 0.98             # optional quick training threshold
    [tool.mnist-arch.models.net.rule]
    threshold = 0.994               # optional: the course's rule, a tier of its own (docs/rule.md)
    epochs = 15
    consecutive = 3

Everything here is plain data, and nothing imports torch; models are only ever built inside an isolated
worker (`mnist_arch.jobs` opens it, `mnist_arch.remote` runs there), and the registry read there where this
process has no torch yet. A declared model is a `work.Declared`, the record that crosses the wall.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from mnist_arch.errors import MnistArchError
from mnist_arch.isolate import DEFAULT_TIMEOUT
from mnist_arch.paths import mnist_root, resolve_target
from mnist_arch.spec import Spec, check_table, parse_recipe_fields, parse_rule_fields, parse_seconds, parse_spec_fields
from mnist_arch.work import Declared

TABLE = "tool.mnist-arch"
DEFAULT_TRAIN_TIMEOUT = 1800.0
DEFAULT_BENCH_BATCH_SIZES = (1, 64)
#: Quick-training defaults for a [tool.mnist-arch.models.NAME.train] table: one epoch of Adam at batch 128.
TRAIN_DEFAULTS = {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 1e-3}
_PROJECT_KEYS = ("data", "timeout", "train_timeout", "bench_batch_sizes", "models")


@dataclass(frozen=True)
class Project:
    """The declared models of a repository (or of our registry) and the settings every face shares."""

    path: Path | None  # the pyproject.toml holding the table; None for our registry
    root: Path  # folder that relative paths and package.module targets resolve from
    declared: tuple[Declared, ...] | None = None  # None: our registry's, read when first asked for
    foreign: Path | None = None  # a pyproject.toml of someone else's project without our table
    data: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    train_timeout: float = DEFAULT_TRAIN_TIMEOUT
    bench_batch_sizes: tuple[int, ...] = DEFAULT_BENCH_BATCH_SIZES
    extra: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def models(self) -> tuple[Declared, ...]:
        return self.declared if self.declared is not None else tuple(registered_models_here())

    @property
    def where(self) -> str:
        return f"{self.path} [{TABLE}]" if self.path else "the mnist-arch registry"

    def require_table(self) -> None:
        """For hooks and CI (`--require-table`): a project without a table of its own would judge our five
        reference architectures and pass, whatever the user's model does."""
        if self.path is None:
            raise MnistArchError(
                f"No pyproject.toml in {self.root} or any folder above it declares models in [{TABLE}], and "
                "--require-table was given. Run from the folder of the pyproject.toml that declares your models (a "
                "pre-commit hook runs at the repository's root; the action's working-directory input says where), "
                "or declare them there with `mnist-arch init --model PATH.py:ATTR`.")

    def reference_note(self) -> str | None:
        """Why `check` with no model named judges our registry's models: no table of the user's applies here (and
        no one else's pyproject.toml, which judges nothing). None where a table applies."""
        if self.path is not None or self.foreign is not None:
            return None
        return (f"No pyproject.toml in {self.root} or any folder above it declares models in [{TABLE}], so these "
                f"are mnist-arch's own {len(self.models)} reference models, not yours: declare yours with `mnist-arch "
                "init --model PATH.py:ATTR` (or judge one now with --model PATH.py:ATTR).")

    def mnist_root(self, explicit: str | Path | None = None) -> Path:
        """Where this project's faces look for MNIST (`mnist_root`, with the table's `data`)."""
        return mnist_root(explicit, self.data)

    def select(self, names: Sequence[str]) -> list[Declared]:
        """The declared models named (shell-style patterns; a registered model's name works everywhere),
        all of them when none is named. Never an empty list: a gate that judged nothing must not pass."""
        if not names:
            if self.foreign is not None:
                raise MnistArchError(
                    f"{self.foreign} has no [{TABLE}] table, so it declares no models to judge"
                    + (" (it has a [tool.mnist_arch] table: the name is spelt with a hyphen, tool.mnist-arch)"
                       if _has_underscore_table(self.foreign) else "")
                    + ". Declare them there (README, \"Use it in your repository\"), or name a registered model "
                      "or give --model PATH.py:ATTR.")
            if not self.models:
                raise MnistArchError(f"{self.where} declares no models: add a [{TABLE}.models.NAME] table with "
                                     "model = \"PATH.py:ATTR\".")
            return list(self.models)
        chosen: dict[str, Declared] = {}
        for pattern in names:
            hits = [m for m in self.models if fnmatch.fnmatchcase(m.name, pattern)]
            if not hits and self.declared is not None:  # a registered model, from inside a user's project
                hits = [m for m in registered_models_here() if fnmatch.fnmatchcase(m.name, pattern)]
            if not hits:
                known = ", ".join(m.name for m in self.models) or "none"
                raise MnistArchError(f"No declared or registered model is named {pattern!r} ({self.where} "
                                     f"declares: {known}). A model of your own is given as PATH.py:ATTR.")
            chosen.update((m.name, m) for m in hits)
        return list(chosen.values())


# ---------------------------------------------------------------------------------------------
# Finding and reading the table


def find_pyproject(start: str | Path | None = None) -> Path | None:
    """The nearest pyproject.toml with a [tool.mnist-arch] table, from `start` (default: the current
    folder) upwards; None when there is none."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and read_table(candidate) is not None:
            return candidate
    return None


def read_table(path: Path) -> Any:
    """The [tool.mnist-arch] value of a pyproject.toml (None when it has none)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistArchError(f"{path} cannot be read: {exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        if "mnist-arch" not in path.read_text(encoding="utf-8", errors="replace"):
            return None  # not ours to report
        raise MnistArchError(f"{path} is not valid TOML: {exc}.") from None
    tool = data.get("tool")
    return tool.get("mnist-arch") if isinstance(tool, dict) else None


def table_data(path: Path, table: Any) -> Path | None:
    """The folder `data` of a [tool.mnist-arch] table names, relative to its pyproject.toml (None when it names
    none). Read before the table is parsed too (the plugin, see `table_may_train`)."""
    data = table.get("data") if isinstance(table, dict) else None
    return path.parent.resolve() / data if isinstance(data, str) and data else None


def table_may_train(table: Any, rule: bool = False) -> bool:
    """Whether a [tool.mnist-arch] table as read (before `parse_project`) declares a model the plugin may
    train: one with a train table (or a rule table, where the run asks for the rule items: `rule`), or a
    registered model named without PATH:ATTR (the references declare quick recipes). Read first because
    parsing may start the fork server (`isolate.expect_training`)."""
    models = table.get("models") if isinstance(table, dict) else None
    return isinstance(models, dict) and any(
        isinstance(fields, dict) and ("train" in fields or (rule and "rule" in fields)
                                      or ":" not in str(fields.get("model", ":")))
        for fields in models.values())


def load_project(start: str | Path | None = None) -> Project:
    """The project the current folder belongs to: its [tool.mnist-arch] table, or our registry. Inside
    someone else's project without the table (its nearest pyproject.toml is not mnist-arch's own), the
    registry's models are there to be named, but there are no declared models to judge by default."""
    here = Path(start or Path.cwd()).resolve()
    path = find_pyproject(here)
    if path is not None:
        return parse_project(path, read_table(path))
    nearest = next((f / "pyproject.toml" for f in (here, *here.parents) if (f / "pyproject.toml").is_file()), None)
    foreign = nearest if nearest is not None and not _is_ours(nearest) else None
    return Project(path=None, root=here, foreign=foreign)


def _is_ours(pyproject: Path) -> bool:
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return isinstance(project, dict) and project.get("name") == "mnist-arch"


def _has_underscore_table(pyproject: Path) -> bool:
    try:
        tool = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return isinstance(tool, dict) and "mnist_arch" in tool


def _table_line(text: str, name: str) -> int:
    header = re.compile(rf"\[\s*tool\s*\.\s*[\"']?mnist-arch[\"']?\s*\.\s*models\s*\.\s*[\"']?{re.escape(name)}"
                        rf"[\"']?\s*\]")
    return next((i for i, line in enumerate(text.splitlines()) if header.match(line.strip())), 0)


def _batch_size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MnistArchError(f"{where}: 'bench_batch_sizes' must be a whole number of at least 1, found {value!r}.")
    return value


def parse_project(path: Path, table: Any) -> Project:
    where = f"{path} [{TABLE}]"
    check_table(table, where, _PROJECT_KEYS,
                f"it may set {', '.join(_PROJECT_KEYS[:-1])} and [{TABLE}.models.NAME] tables", word="key")
    root = path.parent.resolve()
    data = table.get("data")
    if data is not None and not isinstance(data, str):
        raise MnistArchError(f"{where}: 'data' must be a folder name, found {data!r}.")
    data = table_data(path, table)
    batches = table.get("bench_batch_sizes", list(DEFAULT_BENCH_BATCH_SIZES))
    if not isinstance(batches, list) or not batches:
        raise MnistArchError(f"{where}: 'bench_batch_sizes' must be a list such as [1, 64], found {batches!r}.")
    models = table.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
        raise MnistArchError(f"{where}: declare each model as a table, [{TABLE}.models.NAME] with "
                             "model = \"PATH.py:ATTR\" and its spec fields.")
    text = path.read_text(encoding="utf-8")
    return Project(
        path=path, root=root,
        declared=tuple(_declared_or_invalid(path, root, name, fields, _table_line(text, name))
                       for name, fields in models.items()),
        data=data,
        timeout=parse_seconds(table.get("timeout", DEFAULT_TIMEOUT), "timeout", where),
        train_timeout=parse_seconds(table.get("train_timeout", DEFAULT_TRAIN_TIMEOUT), "train_timeout", where),
        bench_batch_sizes=tuple(_batch_size(b, where) for b in batches),
    )


def _declared_or_invalid(path: Path, root: Path, name: str, fields: dict[str, Any], line: int) -> Declared:
    try:
        return _declared(path, root, name, fields, line)
    except MnistArchError as exc:
        return Declared(name, "", Spec(), f"{path} [{TABLE}.models.{name}]", line=line, error=str(exc))


def _declared(path: Path, root: Path, name: str, fields: dict[str, Any], line: int) -> Declared:
    where = f"{path} [{TABLE}.models.{name}]"
    if "::" in name or not name.strip():
        raise MnistArchError(f"{where}: a model's name must be non-empty and must not contain '::' (pytest "
                             "separates node ids with it); rename the table.")
    fields = dict(fields)
    model = fields.pop("model", None)
    train = fields.pop("train", None)
    rule = fields.pop("rule", None)
    fields.pop("tune", None)  # `mnist-arch tune`'s search space: read and checked by mnist_arch.tune alone
    if not isinstance(model, str) or not model:
        raise MnistArchError(f"{where} needs model = \"PATH.py:ATTR\" (relative to pyproject.toml), "
                             f"\"package.module:ATTR\" or a registered model's name, found {model!r}.")
    changes = parse_spec_fields(fields, where)
    if ":" in model:
        target, base = resolve_target(model, root), Spec()
    else:  # a registered model, with the table's overrides
        registered = [m for m in registered_models_here() if m.name == model]
        if len(registered) != 1:
            raise MnistArchError(f"{where}: model = {model!r} is neither PATH.py:ATTR nor package.module:ATTR "
                                 "nor the name of one registered model.")
        target, base = registered[0].target, registered[0].spec
    spec = dataclasses.replace(base.with_changes(changes), source=where)
    loss = None
    if train is not None:
        recipe = parse_recipe_fields(train, f"{where[:-1]}.train]", TRAIN_DEFAULTS)
        loss = train.get("loss") if isinstance(train, dict) else None
        spec = dataclasses.replace(spec, recipes={**spec.recipes, "quick": recipe})
    if rule is not None:  # the course's rule: its own tier beside the quick floor (docs/rule.md)
        recipe = parse_rule_fields(rule, f"{where[:-1]}.rule]", TRAIN_DEFAULTS)
        spec = dataclasses.replace(spec, recipes={**spec.recipes, "rule": recipe})
        rule_loss = rule.get("loss")
        if loss is not None and rule_loss is None:  # the train table's loss, for the rule's recipe too
            spec = dataclasses.replace(spec, recipes={**spec.recipes, "rule": dataclasses.replace(recipe, loss=loss)})
        elif rule_loss is not None and train is not None and loss is None:  # and the rule's for the quick one
            quick = dataclasses.replace(spec.recipes["quick"], loss=rule_loss)
            spec = dataclasses.replace(spec, recipes={**spec.recipes, "quick": quick})
        loss = loss or rule_loss
    return Declared(name, target, spec, where, loss, line)


def registered_models_here() -> list[Declared]:
    """Our registry's models. The references import torch; a process that has not imported it yet (the
    command line) reads the registry through a worker, whose fork server imports torch anyway, and so
    starts a second sooner."""
    from mnist_arch.isolate import run_isolated
    from mnist_arch.registry import declarations

    records = declarations() if "torch" in sys.modules else run_isolated("the registry", declarations)
    return [Declared(name, target, spec, spec.source, loss) for name, target, spec, loss in records]


def adhoc(target: str, root: Path) -> Declared:
    """A model given on the command line (--model PATH.py:ATTR), judged against the spec it is given; a
    package.module:ATTR imports from `root` (the current folder), as pytest and uvicorn users expect."""
    return Declared(target, resolve_target(target, root), Spec(source="the command line"), "--model " + target,
                    folder=root)
