"""Declared facts about a model and how it is trained: plain dataclasses, no torch.

A `Spec` is what the compliance engine (`mnist_arch.checks`) proves against a built model.
A `Recipe` is what the trainer runs. Both are declared next to each model in `mnist_arch/models/`,
and a user's project can write the same fields in a TOML file (`load_spec_file`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from mnist_arch.errors import MnistArchError

#: MNIST's pixel mean and standard deviation (on [0, 1]), the usual normalisation.
MNIST_MEAN_STD = (0.1307, 0.3081)

#: Features `require` may name; each is judged by what runs in a forward pass (see checks.py).
FEATURES = ("batchnorm", "dropout", "gap", "fc")
#: What `final_activation` may declare.
ACTIVATIONS = ("logits", "softmax", "log_softmax")
#: Lint ids that `lint_errors` may name (a lint warns unless named there).
LINTS = ("double_softmax",)
#: The largest input one image may have (values of C*H*W): 4096x4096 on one channel, 64 MiB as float32.
MAX_INPUT_VALUES = 4096 * 4096


@dataclass(frozen=True)
class Layer:
    """One row of a layer table: a module's name (as in `named_modules`), its output shape
    without the batch dimension, and optionally the number of parameters it owns directly or
    through its children."""

    name: str
    output_shape: tuple[int, ...]
    params: int | None = None
    receptive_field: int | str | None = None  # input pixels per axis its output sees, or "whole"


@dataclass(frozen=True)
class Augment:
    """Per-sample random affine transform, in torchvision's RandomAffine terms."""

    degrees: float = 0.0  # rotation drawn from [-degrees, degrees]
    translate: float = 0.0  # shift drawn from [-t, t] x image size, per axis
    scale: tuple[float, float] = (1.0, 1.0)
    shear: float = 0.0  # x-shear drawn from [-shear, shear] degrees


@dataclass(frozen=True)
class Recipe:
    """How a model is trained, and the test accuracy the run must reach."""

    epochs: int
    batch_size: int
    optimizer: str  # "sgd" | "adam" | "adamw" | "adagrad"
    lr: float
    min_accuracy: float  # fraction of the MNIST test set, e.g. 0.99
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    schedule: str | None = None  # None | "onecycle" | "plateau" | "step" | "multistep" | "cosine"
    schedule_kwargs: Mapping[str, Any] = field(default_factory=dict)
    loss: str = "cross_entropy"  # "cross_entropy" (logits) | "nll" (log-probabilities) | "nll_probs" (probabilities)
    label_smoothing: float = 0.0
    augment: Augment | None = None
    normalize: tuple[float, float] | None = MNIST_MEAN_STD
    train_subset: int | None = None  # the first N training images, for heavy models in the quick tier
    # "fp32" | "bf16" (autocast) | "bf16_weights" (weights and optimizer in bf16 too). A bf16 precision is
    # used only where the device computes bf16 natively; elsewhere the recipe trains in fp32, with
    # `fp32_changes` applied (see `mnist_arch.train.fit_recipe`).
    precision: str = "fp32"
    # NHWC weights and inputs: faster convolutions on the CPU (oneDNN). None: the trainer decides
    # (`mnist_arch.train.choose_layout`: channels_last on a CPU with oneDNN where the model runs in it).
    channels_last: bool | None = None
    threshold_note: str = ""  # where min_accuracy comes from
    # Fields that change where a bf16 recipe trains in fp32 (a CPU without native bf16): a smaller
    # train_subset that keeps the tier's time, and the min_accuracy and threshold_note of its fp32 seeds.
    fp32_changes: Mapping[str, Any] = field(default_factory=dict)
    # The rule tier (docs/rule.md): None judges the last epoch against min_accuracy; a number K passes the run
    # as soon as K epochs in a row reach min_accuracy within `epochs`, and stops it there.
    consecutive: int | None = None
    seed: int = 0  # the seed the run is judged with unless another is asked for (`--seed`)

    @property
    def compute_dtype(self) -> str:
        """The dtype its convolutions and matmuls run in: "bf16" under autocast and with bf16 weights alike."""
        return "fp32" if self.precision == "fp32" else "bf16"

    def in_fp32(self) -> Recipe:
        """This recipe as it trains where bf16 is not native: fp32, with `fp32_changes` applied."""
        if self.precision == "fp32":
            return self
        return dataclasses.replace(self, **{**self.fp32_changes, "precision": "fp32", "fp32_changes": {}})


@dataclass(frozen=True)
class Spec:
    """What a model must be. Every field left at None (or empty) is not checked."""

    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    exact_params: int | None = None
    max_params: int | None = None  # inclusive: params <= max_params
    params_below: int | None = None  # strict: params < params_below ("fewer than 20,000")
    exact_mult_adds: int | None = None  # torchinfo's convention, batch size 1
    max_mult_adds: int | None = None  # inclusive
    min_receptive_field: int | None = None  # the last conv output sees at least this many pixels per axis
    require: frozenset[str] = frozenset()  # subset of FEATURES
    require_any: tuple[frozenset[str], ...] = ()  # each group: at least one of its features
    layers: tuple[Layer, ...] = ()
    final_activation: str | None = None  # "softmax" | "log_softmax" | "logits"
    batchnorm_after_every_conv: bool = False
    lint_errors: frozenset[str] = frozenset()  # lint ids that fail the model instead of warning
    recipes: Mapping[str, Recipe] = field(default_factory=dict)  # "quick", "full"
    source: str = ""  # where the spec was declared, for messages

    def with_changes(self, changes: Mapping[str, Any]) -> Spec:
        """Apply overrides from a spec file, a project table or the command line; requirements add up."""
        changes = dict(changes)
        if "require" in changes:
            changes["require"] = self.require | changes["require"]
        if "require_any" in changes:
            changes["require_any"] = tuple(dict.fromkeys(self.require_any + tuple(changes["require_any"])))
        return dataclasses.replace(self, **changes)

    def check_ids(self) -> list[str]:
        """The ids of the checks `checks.check_model` makes of any model judged against this spec, known before a
        model is built (the pytest plugin collects one item per id). A model may add others: params.stable when
        its count changes from call to call, a lint on its output (lint.double_softmax)."""
        ids = [name for name, value in (("params.exact", self.exact_params), ("params.max", self.max_params),
                                        ("params.below", self.params_below)) if value is not None]
        ids += ["output_shape", *(f"layer.{layer.name}" for layer in self.layers)]
        ids += ["receptive_field.min"] if self.min_receptive_field is not None else []
        ids += [f"receptive_field.{layer.name}" for layer in self.layers if layer.receptive_field is not None]
        ids += [f"require.{feature}" for feature in sorted(self.require)]
        ids += ["require_any." + "|".join(sorted(group)) for group in self.require_any]
        ids += ["batchnorm_after_every_conv"] if self.batchnorm_after_every_conv else []
        ids += ["final_activation"] if self.final_activation is not None else []
        return ids + [name for name, value in (("mult_adds.exact", self.exact_mult_adds),
                                               ("mult_adds.max", self.max_mult_adds)) if value is not None]


def merge_changes(*sources: Mapping[str, Any]) -> dict[str, Any]:
    """Spec changes from several sources (a spec file, then the command line), later ones winning, except
    the requirement lists, which add up."""
    merged: dict[str, Any] = {}
    for changes in sources:
        for key, value in changes.items():
            if key == "require" and key in merged:
                value = merged[key] | value
            elif key == "require_any" and key in merged:
                value = tuple(dict.fromkeys(merged[key] + tuple(value)))
            merged[key] = value
    return merged


# Fields a TOML spec file may set, with the converter for each.
_FILE_FIELDS = {
    "input_shape": "shape",
    "num_classes": "count",
    "exact_params": "count",
    "max_params": "count",
    "params_below": "count",
    "exact_mult_adds": "count",
    "max_mult_adds": "count",
    "min_receptive_field": "count",
    "require": "features",
    "require_any": "feature_groups",
    "layers": "layers",
    "final_activation": "activation",
    "batchnorm_after_every_conv": "bool",
    "lint_errors": "lints",
}


def _convert(kind: str, key: str, value: Any, where: str) -> Any:
    def bad(expected: str) -> MnistArchError:
        return MnistArchError(f"{where}: '{key}' must be {expected}, found {value!r}.")

    if kind in ("count", "count0"):
        least = 1 if kind == "count" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise bad(f"a whole number of at least {least}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "activation":
        if value not in ACTIVATIONS:
            raise bad(f"one of {', '.join(ACTIVATIONS)}")
        return value
    if kind == "shape":
        if (
            not isinstance(value, (list, tuple))
            or not value
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
        ):
            raise bad("a list of positive whole numbers such as [1, 28, 28]")
        if key == "input_shape":
            if len(value) != 3:
                raise bad("three positive whole numbers, channels, height and width, such as [1, 28, 28]")
            values = value[0] * value[1] * value[2]
            if values > MAX_INPUT_VALUES:
                raise MnistArchError(f"{where}: 'input_shape' {list(value)} is {values:,} values per image; the "
                                     f"limit is {MAX_INPUT_VALUES:,} (4096x4096 on one channel).")
        return tuple(value)
    if kind in ("features", "lints"):
        choices = FEATURES if kind == "features" else LINTS
        if not isinstance(value, (list, tuple)) or any(not isinstance(v, str) for v in value):
            raise bad(f"a list of strings drawn from {', '.join(choices)}")
        unknown = sorted(set(value) - set(choices))
        if unknown:
            raise bad(f"a list drawn from {', '.join(choices)} (unknown: {', '.join(unknown)})")
        return frozenset(value)
    if kind == "feature_groups":
        if not isinstance(value, (list, tuple)) or not value:
            raise bad('a list of alternatives such as [["gap", "fc"]]')
        groups = tuple(_convert("features", key, group, where) for group in value)
        if not all(groups):
            raise bad('a list of non-empty groups such as [["gap", "fc"]]')
        return groups
    if kind == "layers":
        # [layers] table: module name = [C, H, W]  or  { shape = [...], params = N }
        if not isinstance(value, Mapping):
            raise bad('a table of module name = [shape] or { shape = [...], params = N }')
        rows = []
        for name, row in value.items():
            if isinstance(row, Mapping):
                extra = sorted(set(row) - {"shape", "params", "receptive_field"})
                if extra or "shape" not in row:
                    raise bad(f"rows with 'shape' and optional 'params', 'receptive_field' (layer {name!r})")
                params = row.get("params")
                if params is not None:
                    params = _convert("count0", f"layers.{name}.params", params, where)
                rf = row.get("receptive_field")
                if rf is not None and rf != "whole":
                    if isinstance(rf, str):
                        raise bad(f'rows whose receptive_field is a whole number or "whole" (layer {name!r})')
                    rf = _convert("count", f"layers.{name}.receptive_field", rf, where)
                rows.append(Layer(name, _convert("shape", f"layers.{name}", row["shape"], where), params, rf))
            else:
                rows.append(Layer(name, _convert("shape", f"layers.{name}", row, where)))
        return tuple(rows)
    raise AssertionError(kind)


#: The longest time limit accepted, a week: a longer one is surely a slip, and no wait can be that long.
MAX_SECONDS = 7 * 24 * 3600


def parse_seconds(value: Any, key: str, where: str) -> float:
    """A time limit or budget in seconds: positive, finite, at most MAX_SECONDS (every face uses this)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise MnistArchError(f"{where}: '{key}' must be a number of seconds above 0 and at most {MAX_SECONDS:,} "
                             f"(a week), found {value!r}.")
    return float(value)


def check_table(data: Any, where: str, allowed: Iterable[str], may_set: str, word: str = "field") -> Mapping[str, Any]:
    """`data` when it is a table whose keys are all `allowed`; else one paragraph naming `where`, the keys
    that are not, and what the table may set (`may_set`). Every TOML table we read is checked here first."""
    if not isinstance(data, Mapping):
        raise MnistArchError(f"{where} must be a table, found {data!r}.")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise MnistArchError(f"{where}: unknown {word}(s) {', '.join(map(repr, unknown))}; {may_set}.")
    return data


def parse_spec_fields(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate a TOML-like mapping of spec fields, naming `where` (a file) in every error."""
    check_table(data, where, _FILE_FIELDS, f"a spec may set {', '.join(_FILE_FIELDS)}")
    return {key: _convert(_FILE_FIELDS[key], key, value, where) for key, value in data.items()}


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The validated spec fields of a TOML file, to apply with `Spec.with_changes`."""
    path = Path(path)
    try:
        data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MnistArchError(f"Spec file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MnistArchError(f"Spec file {path} cannot be read: {exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise MnistArchError(f"Spec file {path} is not valid TOML: {exc}.") from None
    return parse_spec_fields(data, str(path))


#: The values a recipe's named choices may take: the one list the TOML reader and the trainer check against.
RECIPE_CHOICES = {"optimizer": ("sgd", "adam", "adamw", "adagrad"),
                  "loss": ("cross_entropy", "nll", "nll_probs"),
                  "schedule": ("onecycle", "plateau", "step", "multistep", "cosine"),
                  "precision": ("fp32", "bf16", "bf16_weights")}
# Recipe fields a TOML table may set (the pytest plugin's [tool.mnist-arch.models.NAME.train] and .rule).
_RECIPE_COUNTS = ("epochs", "batch_size", "train_subset")
_RECIPE_TABLES = ("optimizer_kwargs", "schedule_kwargs")
_RECIPE_FLAGS = ("channels_last",)
#: Augmentation, in torchvision's words (RandomRotation / RandomAffine): each becomes a field of `Augment`.
AUGMENT_FIELDS = ("rotation", "translate", "scale", "shear")
_RECIPE_FIELDS = ("min_accuracy", "lr", "label_smoothing", *_RECIPE_COUNTS, *RECIPE_CHOICES, *_RECIPE_TABLES,
                  *_RECIPE_FLAGS, *AUGMENT_FIELDS)
#: The rule tier's own fields (docs/rule.md), beside every recipe field but min_accuracy (the threshold is it).
RULE_FIELDS = ("threshold", "consecutive", "seed")
#: The most epochs a rule may state: more is surely a slip (a course states 15 or 20).
MAX_RULE_EPOCHS = 1000
#: What schedule_kwargs the schedules we step once an epoch take, and which of them must be given.
_EPOCH_SCHEDULE_KWARGS = {"step": (("step_size", "gamma"), ("step_size",)),
                          "multistep": (("milestones", "gamma"), ("milestones",)),
                          "cosine": (("T_max", "eta_min"), ())}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _augment(data: Mapping[str, Any], bad) -> Augment | None:
    """The `Augment` of a recipe table's rotation, translate, scale and shear (None when it sets none)."""
    given = {key: data[key] for key in AUGMENT_FIELDS if key in data}
    if not given:
        return None
    rotation, translate = given.get("rotation", 0), given.get("translate", 0)
    scale, shear = given.get("scale", [1, 1]), given.get("shear", 0)
    if not (_number(rotation) and 0 <= rotation <= 180):
        raise bad("rotation", "a number of degrees from 0 to 180 (RandomRotation(7) is rotation = 7)")
    if not (_number(translate) and 0 <= translate <= 1):
        raise bad("translate", "a fraction of the image from 0 to 1 (RandomAffine's translate=(0.1, 0.1) is "
                               "translate = 0.1)")
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(map(_number, scale))
            and 0 < scale[0] <= scale[1] <= 10):
        raise bad("scale", "two numbers [low, high] with 0 < low <= high <= 10, e.g. [0.9, 1.1]")
    if not (_number(shear) and 0 <= shear < 90):
        raise bad("shear", "a number of degrees from 0 to below 90 (x-shear drawn from [-shear, shear])")
    return Augment(float(rotation), float(translate), (float(scale[0]), float(scale[1])), float(shear))


def _check_optimizer_kwargs(optimizer: str, kwargs: Mapping[str, Any], bad) -> None:
    """The values of the optimizer settings a course recipe uses, checked here, and SGD's own settings refused for
    another optimizer (the user's slip, said when the table is read). Whether an optimizer takes any other
    setting is torch's to say: that fails the run's set-up (`train.recipe_call`)."""
    for key in ("momentum", "dampening", "nesterov"):
        if key in kwargs and optimizer != "sgd":
            raise bad(f"optimizer_kwargs.{key}", f"left out: it is SGD's setting, and optimizer = {optimizer!r} "
                      "(Adam's momentum is betas = [0.9, 0.999]); or optimizer = \"sgd\"", kwargs[key])
    for key in ("momentum", "dampening"):
        if key in kwargs and not (_number(kwargs[key]) and 0 <= kwargs[key] < 1):
            raise bad(f"optimizer_kwargs.{key}", "a number from 0 to below 1, e.g. 0.9", kwargs[key])
    if "weight_decay" in kwargs and not (_number(kwargs["weight_decay"]) and 0 <= kwargs["weight_decay"] < 1):
        raise bad("optimizer_kwargs.weight_decay", "a number from 0 to below 1, e.g. 5e-4", kwargs["weight_decay"])
    if "nesterov" in kwargs:
        if not isinstance(kwargs["nesterov"], bool):
            raise bad("optimizer_kwargs.nesterov", "true or false", kwargs["nesterov"])
        if kwargs["nesterov"] and not (kwargs.get("momentum", 0) > 0 and kwargs.get("dampening", 0) == 0):
            raise bad("optimizer_kwargs.nesterov", "false unless momentum is above 0 and dampening is 0 (torch's "
                      "SGD rule): add momentum = 0.9", kwargs["nesterov"])


def _check_schedule_kwargs(schedule: str | None, kwargs: Mapping[str, Any], bad) -> None:
    """The settings of the schedules stepped once an epoch (StepLR, MultiStepLR, cosine); OneCycle's and
    ReduceLROnPlateau's go to torch as they are."""
    if schedule not in _EPOCH_SCHEDULE_KWARGS:
        return
    allowed, needed = _EPOCH_SCHEDULE_KWARGS[schedule]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise bad(f"schedule_kwargs.{unknown[0]}", f"left out: schedule = {schedule!r} takes "
                  f"{' and '.join(allowed)}", kwargs[unknown[0]])
    for key in needed:
        if key not in kwargs:
            example = {"step_size": "{step_size = 5, gamma = 0.1}", "milestones": "{milestones = [6, 12], gamma = 0.1}"}
            raise bad("schedule_kwargs", f"a table with {key}: schedule = {schedule!r} needs it, e.g. "
                      f"schedule_kwargs = {example[key]}", dict(kwargs))
    if "step_size" in kwargs and not _whole(kwargs["step_size"]):
        raise bad("schedule_kwargs.step_size", "a whole number of epochs of at least 1", kwargs["step_size"])
    if "T_max" in kwargs and not _whole(kwargs["T_max"]):
        raise bad("schedule_kwargs.T_max", "a whole number of epochs of at least 1 (default: the run's epochs)",
                  kwargs["T_max"])
    milestones = kwargs.get("milestones", [1])
    if not (isinstance(milestones, list) and milestones and all(_whole(m) for m in milestones)
            and milestones == sorted(set(milestones))):
        raise bad("schedule_kwargs.milestones", "a list of epochs in increasing order, each at least 1, e.g. "
                  "[6, 12]", milestones)
    if "gamma" in kwargs and not (_number(kwargs["gamma"]) and 0 < kwargs["gamma"] <= 1):
        raise bad("schedule_kwargs.gamma", "a number above 0 and at most 1, e.g. 0.1", kwargs["gamma"])
    if "eta_min" in kwargs and not (_number(kwargs["eta_min"]) and kwargs["eta_min"] >= 0):
        raise bad("schedule_kwargs.eta_min", "a number of at least 0", kwargs["eta_min"])


def parse_recipe_fields(data: Any, where: str, defaults: Mapping[str, Any]) -> Recipe:
    """A Recipe from a TOML-like table over `defaults`, naming `where` in every error.
    min_accuracy has no default: a threshold is the point of declaring a recipe."""
    check_table(data, where, _RECIPE_FIELDS, f"the table may set {', '.join(_RECIPE_FIELDS)}")
    if "min_accuracy" not in data:
        raise MnistArchError(f"{where} needs min_accuracy, the test accuracy to reach (a fraction, e.g. 0.95).")
    return _recipe(data, where, defaults)


def _recipe(data: Mapping[str, Any], where: str, defaults: Mapping[str, Any]) -> Recipe:
    def bad(key: str, expected: str, value: Any = None) -> MnistArchError:
        value = data[key] if value is None and key in data else value
        return MnistArchError(f"{where}: '{key}' must be {expected}, found {value!r}.")

    for key, value in data.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key == "min_accuracy" and not (number and 0 < value <= 1):
            raise bad(key, "a fraction in (0, 1], e.g. 0.95")
        if key == "lr" and not (number and value > 0):
            raise bad(key, "a positive number")
        if key == "label_smoothing" and not (number and 0 <= value < 1):
            raise bad(key, "a number in [0, 1)")
        if key in _RECIPE_COUNTS and not _whole(value):
            raise bad(key, "a whole number of at least 1")
        if key in RECIPE_CHOICES and value not in RECIPE_CHOICES[key]:
            raise bad(key, f"one of {', '.join(RECIPE_CHOICES[key])}")
        if key in _RECIPE_TABLES and not isinstance(value, Mapping):
            raise bad(key, "a table")
        if key in _RECIPE_FLAGS and not isinstance(value, bool):
            raise bad(key, "true or false")
    merged = {**defaults, **{k: v for k, v in data.items() if k not in AUGMENT_FIELDS}}
    _check_optimizer_kwargs(merged.get("optimizer", "sgd"), merged.get("optimizer_kwargs", {}), bad)
    _check_schedule_kwargs(merged.get("schedule"), merged.get("schedule_kwargs", {}), bad)
    augment = _augment(data, bad)
    return Recipe(**merged, **({"augment": augment} if augment is not None else {}))


def parse_rule_fields(data: Any, where: str, defaults: Mapping[str, Any]) -> Recipe:
    """The rule tier's Recipe (docs/rule.md) from a [tool.mnist-arch.models.NAME.rule] table over `defaults`:
    threshold, epochs (the most) and consecutive, an optional seed, and any recipe field but min_accuracy."""
    allowed = (*RULE_FIELDS, *(f for f in _RECIPE_FIELDS if f != "min_accuracy"))
    check_table(data, where, allowed, f"the table may set {', '.join(allowed)}")
    missing = [key for key in ("threshold", "epochs") if key not in data]
    if missing:
        raise MnistArchError(f"{where} needs {' and '.join(missing)}: the rule is a test accuracy to reach "
                             "(threshold, a fraction such as 0.994) within at most so many epochs (epochs, such as "
                             "15), held for `consecutive` epochs in a row (default 1).")

    def bad(key: str, expected: str) -> MnistArchError:
        return MnistArchError(f"{where}: '{key}' must be {expected}, found {data[key]!r}.")

    threshold, epochs = data["threshold"], data["epochs"]
    consecutive, seed = data.get("consecutive", 1), data.get("seed", 0)
    if not (_number(threshold) and 0 < threshold <= 1):
        raise bad("threshold", "a fraction of the 10,000 test images in (0, 1], e.g. 0.994 for 99.4%")
    if not (_whole(epochs) and epochs <= MAX_RULE_EPOCHS):
        raise bad("epochs", f"a whole number of epochs from 1 to {MAX_RULE_EPOCHS:,}, the most the rule allows")
    if not (_whole(consecutive) and consecutive <= epochs):
        raise bad("consecutive", f"a whole number of epochs from 1 to epochs ({epochs}): how many in a row must "
                                 "reach the threshold")
    if not _whole(seed, 0):
        raise bad("seed", "a whole number of at least 0")
    fields = {key: value for key, value in data.items() if key not in RULE_FIELDS}
    return dataclasses.replace(_recipe({**fields, "min_accuracy": threshold}, where, defaults),
                               consecutive=consecutive, seed=seed)
