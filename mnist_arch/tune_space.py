"""The search space of `mnist-arch tune` (docs/tune.md): its defaults, a [...tune] table's narrowing or widening of
it, the rule table a model is tuned for, and a trial's recipe drawn from it (the rule table with the searched
fields replaced). Nothing here imports torch, nor Optuna: a trial is whatever has Optuna's `suggest_*`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError

if TYPE_CHECKING:
    from mnist_arch.project import Project
    from mnist_arch.spec import Recipe
    from mnist_arch.work import Declared

#: The default space. A range [low, high] (log scale for LOG_FIELDS, whole numbers for INT_FIELDS) or a list
#: of choices (CHOICE_FIELDS); a table's single value fixes the field. `lr` may also be a table per optimizer.
DEFAULT_SPACE: dict[str, Any] = {
    "optimizer": ["sgd", "adam"],
    "lr": {"sgd": [0.01, 0.3], "adam": [3e-4, 1e-2], "adamw": [3e-4, 1e-2], "adagrad": [3e-3, 0.1]},
    "momentum": [0.8, 0.95],  # SGD only
    "nesterov": [True, False],  # SGD only
    "weight_decay": [1e-6, 1e-3],
    "schedule": ["onecycle", "step", "cosine", "none"],
    "pct_start": [0.1, 0.4],  # onecycle: the share of steps spent warming up to the peak lr
    "step_size": [2, 8],  # step: epochs between drops (at most the rule's epochs)
    "gamma": [0.1, 0.5],  # step: the drop
    "batch_size": [64, 128, 256],
    "rotation": [0.0, 15.0],  # degrees, RandomRotation
    "translate": [0.0, 0.1],  # fraction of the image, RandomAffine
    "label_smoothing": [0.0, 0.1],
}
CHOICE_FIELDS = ("optimizer", "nesterov", "schedule", "batch_size")
LOG_FIELDS = ("lr", "weight_decay")
INT_FIELDS = ("step_size",)
#: The rule table's fields a trial sets (the others of the table, say threshold or train_subset, stay).
SEARCHED = ("optimizer", "lr", "optimizer_kwargs", "schedule", "schedule_kwargs", "batch_size", "rotation",
            "translate", "label_smoothing")
_SCHEDULES = ("onecycle", "step", "cosine", "plateau", "none")


def parse_space(table: Any, where: str) -> dict[str, Any]:
    """The search space: DEFAULT_SPACE with a [tool.mnist-arch.models.NAME.tune] table's fields over it, each
    checked (one paragraph naming the table, the field and the form it takes)."""
    from mnist_arch.spec import RECIPE_CHOICES, check_table

    if table is None:
        return dict(DEFAULT_SPACE)
    check_table(table, where, DEFAULT_SPACE, f"the table may set {', '.join(DEFAULT_SPACE)}")
    space = dict(DEFAULT_SPACE)
    choices = {"optimizer": RECIPE_CHOICES["optimizer"], "schedule": _SCHEDULES, "nesterov": (True, False)}
    for key, value in table.items():
        values = value if isinstance(value, list) else [value]
        if key in CHOICE_FIELDS:
            allowed = choices.get(key)
            ok = values and all((v in allowed and type(v) is type(allowed[0])) if allowed else
                                (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in values)
            if not ok:
                raise MnistArchError(f"{where}: '{key}' must be one value or a list of choices"
                                     + (f" among {', '.join(map(str, allowed))}" if allowed else
                                        " of whole numbers of at least 1, e.g. [64, 128, 256]")
                                     + f", found {value!r}.")
            space[key] = values
        elif key == "lr" and isinstance(value, dict):
            unknown = sorted(set(value) - set(RECIPE_CHOICES["optimizer"]))
            if unknown:
                raise MnistArchError(f"{where}: 'lr' as a table names optimizers "
                                     f"({', '.join(RECIPE_CHOICES['optimizer'])}), found {unknown[0]!r}.")
            space[key] = {**DEFAULT_SPACE["lr"], **{k: _range(key, v, where) for k, v in value.items()}}
        else:
            space[key] = _range(key, value, where)
    return space


def _range(key: str, value: Any, where: str) -> list[float]:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    pair = value if isinstance(value, list) else [value, value]
    least = 1 if key in INT_FIELDS else 0
    ok = (len(pair) == 2 and all(map(number, pair)) and least <= pair[0] <= pair[1]
          and (key not in LOG_FIELDS or pair[0] > 0)
          and (key not in INT_FIELDS or all(isinstance(v, int) for v in pair)))
    if not ok:
        form = ("whole numbers of at least 1" if key in INT_FIELDS else
                "numbers above 0 (sampled on a log scale)" if key in LOG_FIELDS else "numbers of at least 0")
        raise MnistArchError(f"{where}: '{key}' must be one value or a range [low, high] of {form} with low <= "
                             f"high, found {value!r}.")
    return pair


def _round(value: float) -> float:
    """Three significant digits: what the table shows is what the trial ran."""
    return float(f"{value:.3g}")


def suggest(trial: Any, space: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """A trial's recipe: the rule table's fields from `space` (define-by-run: momentum only for SGD, a
    schedule's own settings only with it)."""
    def pick(key: str) -> Any:
        values = space[key]
        if len(values) == 1:
            return values[0]
        # Optuna keeps a choice's list for the whole study: another list (a table changed between runs) is
        # another parameter, so the study goes on with it.
        name = key if values == DEFAULT_SPACE[key] else f"{key} in {'/'.join(map(str, values))}"
        return trial.suggest_categorical(name, values)

    def draw(key: str, name: str | None = None, high: float | None = None, bounds: Sequence | None = None) -> float:
        low, top = bounds or space[key]
        top = min(top, high) if high is not None else top
        low = min(low, top)
        if low == top:
            return low
        if key in INT_FIELDS:
            return trial.suggest_int(name or key, int(low), int(top))
        return _round(trial.suggest_float(name or key, low, top, log=key in LOG_FIELDS))

    optimizer = pick("optimizer")
    lr = draw("lr", f"lr_{optimizer}", bounds=space["lr"][optimizer]) if isinstance(space["lr"], dict) \
        else draw("lr")
    fields: dict[str, Any] = {"optimizer": optimizer, "lr": lr, "batch_size": pick("batch_size")}
    kwargs: dict[str, Any] = {}
    if optimizer == "sgd":
        kwargs["momentum"] = draw("momentum")
        if kwargs["momentum"] > 0:
            kwargs["nesterov"] = pick("nesterov")
    weight_decay = draw("weight_decay")
    if weight_decay > 0:
        kwargs["weight_decay"] = weight_decay
    if kwargs:
        fields["optimizer_kwargs"] = kwargs
    schedule = pick("schedule")
    if schedule == "onecycle":
        fields.update(schedule="onecycle", schedule_kwargs={"max_lr": lr, "pct_start": draw("pct_start")})
    elif schedule == "step":
        fields.update(schedule="step", schedule_kwargs={"step_size": draw("step_size", high=epochs),
                                                        "gamma": draw("gamma")})
    elif schedule in ("cosine", "plateau"):
        fields["schedule"] = schedule
    for key in ("rotation", "translate", "label_smoothing"):
        value = draw(key)
        if value > 0:
            fields[key] = value
    return fields



# ---------------------------------------------------------------------------------------------
# A table's recipe


def rule_fields(recipe: Recipe) -> dict[str, Any]:
    """The rule a recipe states: what a study is searched for, and judged by."""
    return {"threshold": recipe.min_accuracy, "epochs": recipe.epochs, "consecutive": recipe.consecutive or 1}


def fixed_fields(base: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """The fields of a rule table that every trial trains with and the search does not set (train_subset, seed,
    scale, precision, ...; the loss as the recipe has it), the rule's own aside: a study records them."""
    rule = ("threshold", "epochs", "consecutive")
    return {**{k: v for k, v in base.items() if k not in SEARCHED and k not in rule}, "loss": recipe.loss}


def recipe_of(project: Project, model: Declared, table: Mapping[str, Any]) -> Recipe:
    """The rule tier's Recipe of a rule table (checked as the project's own is)."""
    from mnist_arch.project import TRAIN_DEFAULTS
    from mnist_arch.spec import parse_rule_fields

    where = (f"{project.path} [tool.mnist-arch.models.{model.name}.rule]" if project.path
             and not model.source.startswith("--model") else f"the rule given for {model.name}")
    recipe = parse_rule_fields(dict(table), where, TRAIN_DEFAULTS)
    declared = model.spec.recipes.get("rule")
    if "loss" not in table and declared is not None:
        recipe = dataclasses.replace(recipe, loss=declared.loss)
    return recipe


def model_with(project: Project, model: Declared, table: Mapping[str, Any]) -> Declared:
    """The model with a rule table's recipe as its rule tier: what a trial, or a seed's run, trains."""
    recipes = {**model.spec.recipes, "rule": recipe_of(project, model, table)}
    return dataclasses.replace(model, spec=dataclasses.replace(model.spec, recipes=recipes))


def trial_table(base: Mapping[str, Any], trial: Any, space: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """A trial's rule table: the declared one's fields that are not searched, and a recipe drawn from `space`."""
    return {**{k: v for k, v in base.items() if k not in SEARCHED}, **suggest(trial, space, epochs)}


# ---------------------------------------------------------------------------------------------
# What to tune


def what_to_tune(project: Project, model: Declared, threshold: float | None = None, epochs: int | None = None,
                 consecutive: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the model's rule table as declared, its search space): from [tool.mnist-arch.models.NAME.rule] and
    .tune, or, for a model that declares no rule, from the command line's --threshold, --epochs, --consecutive."""
    from mnist_arch.project import read_table

    fields: Any = {}
    if project.path is not None and not model.source.startswith("--model"):
        fields = ((read_table(project.path) or {}).get("models") or {}).get(model.name) or {}
    rule, space = fields.get("rule"), fields.get("tune")
    given = {k: v for k, v in (("threshold", threshold), ("epochs", epochs), ("consecutive", consecutive))
             if v is not None}
    table = f"{project.path} [tool.mnist-arch.models.{model.name}.rule]"
    if rule is not None and given:
        raise MnistArchError(f"{table} states the rule already; --{next(iter(given))} would search for another one. "
                             "Change the table instead.")
    if rule is None:
        if "threshold" not in given or "epochs" not in given:
            add = (f"add [tool.mnist-arch.models.{model.name}.rule] with threshold = 0.994, epochs = 15 and "
                   "consecutive = 3 to pyproject.toml (docs/rule.md), or give them here:"
                   if not model.source.startswith("--model") else "give them here:")
            raise MnistArchError(
                f"{model.name} ({model.source}) declares no rule to tune for. A rule is a test accuracy to reach "
                "(threshold, e.g. 0.994) within at most so many epochs (epochs, e.g. 15), held for `consecutive` "
                f"epochs in a row (default 1): {add} --threshold 0.994 --epochs 15 --consecutive 3.")
        rule = given
    if not isinstance(rule, dict):
        raise MnistArchError(f"{table} must be a table, found {rule!r}.")
    return dict(rule), parse_space(space, f"{project.path} [tool.mnist-arch.models.{model.name}.tune]")
