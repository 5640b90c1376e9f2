"""The compliance engine: judge any `nn.Module` against a `Spec`.

Everything is computed from the model itself. It never imports `mnist_arch.models`: a user's model
and ours go through the same door, `check_model`.

Presence of batch norm, dropout, global average pooling and fully connected layers is judged by what
runs in one real forward pass, recorded with a `TorchFunctionMode`. That sees functional calls
(`F.dropout`, `F.batch_norm`, `x.mean((2, 3))`) as well as modules, and survives data-dependent
control flow that symbolic tracing cannot follow. We record at the functional level rather than the
aten level because the aten view loses the meaning we judge: on CPU, `F.dropout` decomposes into
`bernoulli_` and `InstanceNorm2d` decomposes into `native_batch_norm`, which would report an
instance-norm model as having batch norm. A function mode only sees the outermost call (nested calls
run with the mode popped), so `F.instance_norm` is seen as itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parameter import UninitializedParameter
from torch.overrides import TorchFunctionMode

from mnist_arch.errors import MnistArchError
from mnist_arch.spec import FEATURES, Spec

#: Batch sizes the output-shape check runs in eval mode.
OUTPUT_BATCH_SIZES = (1, 2, 5)

_DROPOUT_CALLS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                  "feature_alpha_dropout", "feature_dropout"}
_FC_CALLS = {"linear", "addmm", "mm", "matmul", "__matmul__", "bilinear"}
_CONV_CALLS = {"conv1d", "conv2d", "conv3d"}


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Check:
    id: str
    passed: bool
    measured: Any
    expected: Any
    message: str
    warning: bool = False  # a lint that is reported but does not fail the model

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "passed": self.passed, "measured": self.measured,
                "expected": self.expected, "message": self.message}


@dataclass
class Report:
    name: str
    params: int
    trainable_params: int
    mult_adds: int | None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "trainable_params": self.trainable_params,
                "mult_adds": self.mult_adds, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


# ---------------------------------------------------------------------------------------------
# Measurements


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) over unique parameter tensors: a weight shared by two layers counts once,
    frozen weights count toward the total."""
    unique = {id(p): p for p in model.parameters()}.values()  # parameters() yields a tied one once
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    return total, trainable


def example_input(batch: int, input_shape: Iterable[int]) -> torch.Tensor:
    """A fixed pseudo-random batch in [0, 1), like scaled images; random rather than zeros so that
    data-dependent branches see realistic values."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, *input_shape, generator=generator)


def _has_lazy(model: nn.Module) -> bool:
    return any(isinstance(p, UninitializedParameter) for p in model.parameters())


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def _run(model: nn.Module, x: torch.Tensor, name: str) -> Any:
    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:  # a user's model can raise anything; we report it, never a traceback
        raise MnistArchError(
            f"Model {name} failed on an input of shape {tuple(x.shape)}: {type(exc).__name__}: {exc}. "
            "Check the input shape (--input-shape C,H,W) and that the model's forward runs on a "
            "float tensor of that shape."
        ) from None


@dataclass
class Call:
    """One function call seen during the recorded forward pass."""

    name: str
    args: tuple
    kwargs: dict
    out: Any

    def arg(self, index: int, key: str, default: Any = None) -> Any:
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(key, default)

    @property
    def input(self) -> torch.Tensor | None:
        return _first_tensor(self.args[:1])


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls.append(Call(getattr(func, "__name__", str(func)), args, kwargs, out))
        return out


def record_calls(model: nn.Module, x: torch.Tensor, name: str = "model") -> tuple[list[Call], Any]:
    """Run one training-mode forward pass and return the calls it made and its output.

    Training mode, because dropout only runs there. The model's buffers (BatchNorm running stats)
    and its mode are restored afterwards, so judging a model does not change it.
    """
    saved = {k: b.detach().clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with _Recorder() as recorder:
            out = _run(model, x, name)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, b in model.named_buffers():
                if k in saved:
                    b.copy_(saved[k])
    return recorder.calls, out


def layer_output_shapes(model: nn.Module, x: torch.Tensor, name: str = "model") -> dict[str, tuple]:
    """Output shape (without the batch dimension) of every named module, from an eval-mode forward."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for module_name, module in model.named_modules():
        def hook(_m, _inp, out, module_name=module_name):
            t = _first_tensor(out)
            if t is not None and module_name not in shapes:  # first call wins for reused modules
                shapes[module_name] = tuple(t.shape[1:])
        hooks.append(module.register_forward_hook(hook))
    try:
        _run(model, x, name)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def count_mult_adds(model: nn.Module, input_shape: Iterable[int]) -> int | None:
    """Multiply-accumulates for one image in torchinfo's convention (modules with weights only)."""
    import torchinfo  # imported here: it is slow to import and only this measurement needs it

    try:
        stats = torchinfo.summary(model, input_size=(1, *input_shape), verbose=0, mode="eval")
    except Exception:  # torchinfo cannot summarise every model; the figure is then unknown
        return None
    return int(stats.total_mult_adds)


# ---------------------------------------------------------------------------------------------
# What ran


def _spatial_dims(ndim: int) -> set[int]:
    return set(range(2, ndim))


def _is_dropout(call: Call) -> bool:
    if call.name not in _DROPOUT_CALLS:
        return False
    p = call.arg(1, "p", 0.5)
    training = call.arg(2, "training", call.kwargs.get("train", True))
    return bool(training) and isinstance(p, (int, float)) and p > 0


def _is_gap(call: Call) -> bool:
    x, out = call.input, _first_tensor(call.out)
    if x is None or out is None or x.dim() < 3:
        return False
    spatial = _spatial_dims(x.dim())
    if call.name.startswith("adaptive_avg_pool"):
        return all(s == 1 for s in out.shape[2:])
    if call.name.startswith("avg_pool"):
        kernel = call.arg(1, "kernel_size")
        kernel = [kernel] * len(spatial) if isinstance(kernel, int) else list(kernel or [])
        return all(s == 1 for s in out.shape[2:]) and all(
            k >= n for k, n in zip(kernel, x.shape[2:], strict=False))
    if call.name == "mean":
        dims = call.arg(1, "dim")
        if dims is None:
            return False
        dims = {dims} if isinstance(dims, int) else set(dims)
        return {d % x.dim() for d in dims} == spatial
    return False


def _is_fc(call: Call) -> bool:
    return call.name in _FC_CALLS


_FEATURE_TESTS = {
    "batchnorm": lambda c: c.name == "batch_norm",
    "dropout": _is_dropout,
    "gap": _is_gap,
    "fc": _is_fc,
}

_FEATURE_WORDS = {
    "batchnorm": "batch norm (any BatchNorm module or F.batch_norm)",
    "dropout": "dropout (any Dropout variant or F.dropout*, p > 0)",
    "gap": "global average pooling (adaptive pool to 1x1, mean over H and W, or an average pool "
           "covering the whole map)",
    "fc": "a fully connected layer (Linear, F.linear or a matrix product)",
}


def features_present(calls: list[Call]) -> dict[str, list[str]]:
    """For each feature, the calls that showed it, e.g. {'dropout': ['dropout2d(p=0.15)']}."""
    found: dict[str, list[str]] = {f: [] for f in FEATURES}
    for call in calls:
        for feature, test in _FEATURE_TESTS.items():
            if test(call):
                detail = f"(p={call.arg(1, 'p', 0.5)})" if feature == "dropout" else ""
                found[feature].append(call.name + detail)
    return found


def final_activation(calls: list[Call], out: Any) -> str:
    """'softmax', 'log_softmax' or 'logits': what produced the tensor the model returned."""
    target = _first_tensor(out)
    for call in reversed(calls):
        if _first_tensor(call.out) is target:
            return call.name if call.name in ("softmax", "log_softmax") else "logits"
    return "logits"


def convs_without_batchnorm(calls: list[Call]) -> int:
    """How many conv calls' outputs go into no batch_norm call."""
    normalised = {id(c.input) for c in calls if c.name == "batch_norm"}
    return sum(1 for c in calls if c.name in _CONV_CALLS and id(c.out) not in normalised)


def _summarise(items: list[str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


# ---------------------------------------------------------------------------------------------
# The judgement


def _fmt(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def check_model(model: nn.Module, spec: Spec, name: str = "model", loss: str | None = None) -> Report:
    """Judge `model` against `spec`. `loss` is the recipe's loss ("cross_entropy" or "nll"), if known,
    for the lint on a Softmax/LogSoftmax output."""
    model = model.cpu()
    if _has_lazy(model):  # lazy modules get their shapes from a first forward
        model.eval()
        _run(model, example_input(2, spec.input_shape), name)
    model.eval()

    params, trainable = count_parameters(model)
    checks: list[Check] = []

    def add(check_id, passed, measured, expected, message, warning=False):
        checks.append(Check(check_id, bool(passed), measured, expected, message, warning))

    # Parameters
    if spec.exact_params is not None:
        add("params.exact", params == spec.exact_params, params, spec.exact_params,
            f"{_fmt(params)} parameters, declared exactly {_fmt(spec.exact_params)}"
            + ("" if params == spec.exact_params else f" (off by {params - spec.exact_params:+,})"))
    if spec.max_params is not None:
        ok = params <= spec.max_params
        add("params.max", ok, params, spec.max_params,
            f"{_fmt(params)} parameters, budget at most {_fmt(spec.max_params)}"
            + ("" if ok else f" ({params - spec.max_params:,} over)"))

    # Output shape, eval mode, several batch sizes
    shapes = []
    for n in OUTPUT_BATCH_SIZES:
        out = _first_tensor(_run(model, example_input(n, spec.input_shape), name))
        shapes.append(None if out is None else list(out.shape))
    expected_shapes = [[n, spec.num_classes] for n in OUTPUT_BATCH_SIZES]
    add("output_shape", shapes == expected_shapes, shapes, expected_shapes,
        f"output shapes {shapes} for batch sizes {list(OUTPUT_BATCH_SIZES)}, expected (N, "
        f"{spec.num_classes})")

    # Per-layer output shapes (and parameters, where declared)
    if spec.layers:
        measured_shapes = layer_output_shapes(model, example_input(1, spec.input_shape), name)
        modules = dict(model.named_modules())
        for layer in spec.layers:
            if layer.name not in modules:
                add(f"layer.{layer.name}", False, None, list(layer.output_shape),
                    f"no module named {layer.name!r} (modules: {', '.join(list(modules)[1:12])}...)")
                continue
            shape = measured_shapes.get(layer.name)
            got = None if shape is None else list(shape)
            ok = got == list(layer.output_shape)
            message = f"{layer.name} outputs {got}, declared {list(layer.output_shape)}"
            measured: Any = got
            expected: Any = list(layer.output_shape)
            if layer.params is not None:
                own, _ = count_parameters(modules[layer.name])
                ok = ok and own == layer.params
                measured, expected = {"shape": got, "params": own}, {"shape": expected, "params": layer.params}
                message += f"; {own:,} parameters, declared {layer.params:,}"
            add(f"layer.{layer.name}", ok, measured, expected, message)

    # What runs in a training-mode forward pass (the lints always look at it)
    calls, out = record_calls(model, example_input(2, spec.input_shape), name)
    found = features_present(calls)
    for feature in sorted(spec.require):
        seen = found[feature]
        add(f"require.{feature}", bool(seen), _summarise(seen) or "none", "present",
            f"{feature}: found {_summarise(seen)}" if seen
            else f"{feature}: no {_FEATURE_WORDS[feature]} ran in a training-mode forward pass")
    if spec.batchnorm_after_every_conv:
        convs = sum(1 for call in calls if call.name in _CONV_CALLS)
        missing = convs_without_batchnorm(calls)
        add("batchnorm_after_every_conv", missing == 0, f"{convs - missing}/{convs}", f"{convs}/{convs}",
            f"{convs - missing} of {convs} conv outputs go straight into batch norm")
    final = final_activation(calls, out)
    if spec.final_activation is not None:
        add("final_activation", final == spec.final_activation, final, spec.final_activation,
            f"the output comes from {final}, declared {spec.final_activation}")
    double = final == "softmax" or (final == "log_softmax" and loss == "cross_entropy")
    if double:
        as_error = "double_softmax" in spec.lint_errors
        trained = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss"}.get(loss or "", "")
        add("lint.double_softmax", not as_error, final, "logits",
            f"{'error' if as_error else 'warning'}: the model ends in {final}"
            + (f" and its recipe trains it with {trained}" if trained else "")
            + "; CrossEntropyLoss applies log-softmax itself (return logits), and NLLLoss expects "
              "log-probabilities, not probabilities",
            warning=not as_error)

    # Mult-adds, torchinfo's convention
    mult_adds = count_mult_adds(model, spec.input_shape)
    if spec.exact_mult_adds is not None:
        add("mult_adds.exact", mult_adds == spec.exact_mult_adds, mult_adds, spec.exact_mult_adds,
            f"{_fmt(mult_adds)} mult-adds per image, declared exactly {_fmt(spec.exact_mult_adds)}")
    if spec.max_mult_adds is not None:
        ok = mult_adds is not None and mult_adds <= spec.max_mult_adds
        add("mult_adds.max", ok, mult_adds, spec.max_mult_adds,
            f"{_fmt(mult_adds)} mult-adds per image, budget at most {_fmt(spec.max_mult_adds)}")

    return Report(name, params, trainable, mult_adds, checks)
