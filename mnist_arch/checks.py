"""The compliance engine: judge any `nn.Module` against a `Spec`.

Everything is computed from the model itself. It never imports `mnist_arch.models`: a user's model
and ours go through the same door, `check_model`.

Presence of batch norm and dropout is judged by what runs in one real forward pass, recorded with a
`TorchFunctionMode`, and `gap` and `fc` by the classifier head in the data flow of the same pass
(`mnist_arch.head`). That recording sees functional calls
(`F.dropout`, `F.batch_norm`, `x.mean((2, 3))`) as well as modules, and survives data-dependent
control flow that symbolic tracing cannot follow. We record at the functional level rather than the
aten level because the aten view loses the meaning we judge: on CPU, `F.dropout` decomposes into
`bernoulli_` and `InstanceNorm2d` decomposes into `native_batch_norm`, which would report an
instance-norm model as having batch norm. A function mode only sees the outermost call (nested calls
run with the mode popped), so `F.instance_norm` is seen as itself.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from mnist_arch.errors import MnistArchError
from mnist_arch.head import HEAD_FEATURES, Head, judge_head
from mnist_arch.receptive import receptive_field_checks
from mnist_arch.report import Check, Report
from mnist_arch.spec import FEATURES, Spec
from mnist_arch.trace import (
    CONV_CALLS,
    Call,
    count_parameters,
    example_input,
    first_tensor,
    layer_output_shapes,
    mult_adds_from_calls,
    record_calls,
    run_forward,
)

#: Batch sizes the output-shape check runs in eval mode.
OUTPUT_BATCH_SIZES = (1, 2, 5)

_DROPOUT_CALLS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                  "feature_alpha_dropout", "feature_dropout"}


# ---------------------------------------------------------------------------------------------
# What ran


def _is_dropout(call: Call) -> bool:
    if call.name not in _DROPOUT_CALLS:
        return False
    p = call.arg(1, "p", 0.5)
    training = call.arg(2, "training", call.kwargs.get("train", True))
    return bool(training) and isinstance(p, (int, float)) and p > 0


_FEATURE_TESTS = {
    "batchnorm": lambda c: c.name == "batch_norm",
    "dropout": _is_dropout,
}

_FEATURE_WORDS = {
    "batchnorm": "batch norm (any BatchNorm module or F.batch_norm)",
    "dropout": "dropout (any Dropout variant or F.dropout*, p > 0)",
}


_OTHER_NORMS = {"group_norm", "instance_norm", "layer_norm", "local_response_norm", "rms_norm", "normalize"}


def near_miss(feature: str, calls: list[Call]) -> str:
    """'; the closest that ran: ...' for a required batchnorm or dropout that is missing, naming what did run
    and why it does not count ('' when nothing came close). `gap` and `fc` say what the head does instead
    (`mnist_arch.head`)."""
    misses: list[str] = []
    for call in calls:
        if feature == "dropout" and call.name in _DROPOUT_CALLS and not _is_dropout(call):
            misses.append(f"{call.name} with p = {call.arg(1, 'p', 0.5)}"
                          + ("" if call.arg(2, "training", True) else " and training=False"))
        elif feature == "batchnorm" and call.name in _OTHER_NORMS:
            misses.append(f"{call.name}, a norm that is not batch norm")
    unique = list(dict.fromkeys(misses))
    return f"; the closest that ran: {'; '.join(unique[:3])}" if unique else ""


def features_present(calls: list[Call], out: Any = None, head: Head | None = None) -> dict[str, list[str]]:
    """For each feature, the calls that showed it, e.g. {'dropout': ['dropout2d(p=0.15)']}; `gap` and `fc`
    from the head of the pass that returned `out` (`mnist_arch.head`)."""
    found: dict[str, list[str]] = {f: [] for f in FEATURES}
    for call in calls:
        for feature, test in _FEATURE_TESTS.items():
            if test(call):
                detail = f"(p={call.arg(1, 'p', 0.5)})" if feature == "dropout" else ""
                found[feature].append(call.name + detail)
    found.update((head or judge_head(calls, out)).found)
    return found


def _said(feature: str, calls: list[Call], head: Head) -> str:
    """What the pass shows about a required feature, in words: why it holds or why not."""
    if feature in HEAD_FEATURES:
        return head.said[feature]
    return f"no {_FEATURE_WORDS[feature]} ran in a training-mode forward pass" + near_miss(feature, calls)


def final_activation(calls: list[Call], out: Any) -> str:
    """'softmax', 'log_softmax' or 'logits': what produced the tensor the model returned."""
    target = first_tensor(out)
    for call in reversed(calls):
        if first_tensor(call.out) is target:
            return call.name if call.name in ("softmax", "log_softmax") else "logits"
    return "logits"


def convs_without_batchnorm(calls: list[Call]) -> int:
    """How many conv calls' outputs go into no batch_norm call."""
    normalised = {id(c.input) for c in calls if c.name == "batch_norm"}
    return sum(1 for c in calls if c.name in CONV_CALLS and id(c.out) not in normalised)


def _summarise(items: list[str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


# ---------------------------------------------------------------------------------------------
# The judgement


def _fmt(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def _prepared(model: nn.Module, name: str) -> nn.Module:
    """The module to judge: a compiled model's original, on the CPU; models we cannot run are errors."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper runs the same module
    meta = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise MnistArchError(
            f"Model {name} has {len(meta)} parameter or buffer tensor(s) on the meta device (first: {meta[0]}): "
            "they have a shape but no values, so it cannot run. Build it with real tensors (e.g. "
            "model.to_empty(device='cpu') and initialise its weights) before judging it.")
    return model.cpu()


def _scripted(model: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def _needs_calls(spec: Spec) -> list[str]:
    """The spec fields that are judged from the recorded forward pass."""
    fields = {"require": spec.require, "require_any": spec.require_any, "layers": spec.layers,
              "final_activation": spec.final_activation, "batchnorm_after_every_conv": spec.batchnorm_after_every_conv}
    return [k for k, v in fields.items() if v]


def check_model(model: nn.Module, spec: Spec, name: str = "model", loss: str | None = None) -> Report:
    """Judge `model` against `spec`. `loss` is the loss the user declared for training ("cross_entropy" or
    "nll"), if any, for the lint on a Softmax/LogSoftmax output.

    Parameters are counted after the first forward pass, so a model that builds its layers on the first
    call is counted whole; a count that still changes on the second call fails `params.stable`."""
    from mnist_arch.channel import phase

    model = _prepared(model, name)
    scripted = _scripted(model)
    if scripted and _needs_calls(spec):
        raise MnistArchError(
            f"Model {name} is (or contains) a TorchScript module, whose forward pass the engine cannot see "
            f"into, so it cannot judge {', '.join(_needs_calls(spec))}: this is 'cannot judge', not 'absent'. "
            "Give the plain nn.Module (before torch.jit.script/trace), or drop those fields from the spec.")
    checks: list[Check] = []

    def add(check_id, passed, measured, expected, message, warning=False):
        checks.append(Check(check_id, bool(passed), measured, expected, message, warning))

    # Output shape, eval mode, several batch sizes; parameters counted around the first two calls
    phase("forward")
    model.eval()
    before = count_parameters(model)[0]
    shapes, counts = [], []
    for n in OUTPUT_BATCH_SIZES:
        out = first_tensor(run_forward(model, example_input(n, spec.input_shape), name))
        shapes.append(None if out is None else list(out.shape))
        counts.append(count_parameters(model)[0])
    # The training-mode pass the presence checks judge, recorded now so that what it builds is counted too
    calls: list[Call] = []
    if not scripted:
        probe = example_input(2, spec.input_shape)
        calls, out = record_calls(model, probe, name)
        counts.append(count_parameters(model)[0])
    params, trainable = count_parameters(model)

    # Parameters
    if len(set(counts)) > 1:
        add("params.stable", False, counts, counts[0],
            f"the parameter count changes from call to call ({before:,} before any forward, then "
            f"{', '.join(f'{c:,}' for c in counts)} after each of {len(counts)} calls, the last in training "
            "mode): the model creates parameters in forward, so it has no fixed size to judge")
    if spec.exact_params is not None:
        add("params.exact", params == spec.exact_params, params, spec.exact_params,
            f"{_fmt(params)} parameters, declared exactly {_fmt(spec.exact_params)}"
            + ("" if params == spec.exact_params else f" (off by {params - spec.exact_params:+,})"))
    if spec.max_params is not None:
        ok = params <= spec.max_params
        add("params.max", ok, params, spec.max_params,
            f"{_fmt(params)} parameters, budget at most {_fmt(spec.max_params)}"
            + ("" if ok else f" ({params - spec.max_params:,} over)"))
    if spec.params_below is not None:
        ok = params < spec.params_below
        add("params.below", ok, params, spec.params_below,
            f"{_fmt(params)} parameters, budget fewer than {_fmt(spec.params_below)}"
            + ("" if ok else f" ({params - spec.params_below + 1:,} too many)"))

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

    # Receptive fields, from the calls one forward pass makes (mnist_arch.receptive)
    layer_rfs = {layer.name: layer.receptive_field for layer in spec.layers if layer.receptive_field is not None}
    if spec.min_receptive_field is not None or layer_rfs:

        for rf_check in receptive_field_checks(model, spec.input_shape, spec.min_receptive_field, layer_rfs, name):
            add(*rf_check)

    # What runs in a training-mode forward pass (the lints always look at it)
    final = None
    if not scripted:
        head = judge_head(calls, out, probe)
        found = features_present(calls, out, head)
        for feature in sorted(spec.require):
            seen = found[feature]
            add(f"require.{feature}", bool(seen), _summarise(seen) or "none", "present",
                f"{feature}: found {_summarise(seen)}" if seen and feature not in HEAD_FEATURES
                else f"{feature}: {_said(feature, calls, head)}")
        for group in spec.require_any:
            options = sorted(group)
            seen = {f: found[f] for f in options if found[f]}
            label = "require_any." + "|".join(options)
            if seen:
                message = f"one of {', '.join(options)}: found " + "; ".join(
                    f"{f} ({_summarise(v)})" for f, v in seen.items())
            elif group.isdisjoint(HEAD_FEATURES):
                message = (f"none of {', '.join(options)} ran in a training-mode forward pass"
                           + "".join(near_miss(f, calls) for f in options))
            else:
                others = [f"{f}: {_said(f, calls, head)}" for f in options if f not in HEAD_FEATURES]
                words = group & set(HEAD_FEATURES)
                said = head.neither if words == set(HEAD_FEATURES) else f"{min(words)}: {head.said[min(words)]}"
                message = f"none of {', '.join(options)}: " + "; ".join([said, *others])
            add(label, bool(seen), ", ".join(f"{f}: {_summarise(v)}" for f, v in seen.items()) or "none",
                f"one of {', '.join(options)}", message)
        if spec.batchnorm_after_every_conv:
            convs = sum(1 for call in calls if call.name in CONV_CALLS)
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
                + (f" and its declared loss is {trained}" if trained else "")
                + "; CrossEntropyLoss applies log-softmax itself (return logits), and NLLLoss expects "
                  "log-probabilities, not probabilities",
                warning=not as_error)

    # Mult-adds, torchinfo's convention over the recorded calls (unknown for a TorchScript model)
    mult_adds = mult_adds_from_calls(calls)
    if spec.exact_mult_adds is not None:
        add("mult_adds.exact", mult_adds == spec.exact_mult_adds, mult_adds, spec.exact_mult_adds,
            f"{_fmt(mult_adds)} mult-adds per image, declared exactly {_fmt(spec.exact_mult_adds)}"
            + (" (cannot be measured for this model, so the check fails)" if mult_adds is None else ""))
    if spec.max_mult_adds is not None:
        ok = mult_adds is not None and mult_adds <= spec.max_mult_adds
        add("mult_adds.max", ok, mult_adds, spec.max_mult_adds,
            f"{_fmt(mult_adds)} mult-adds per image, budget at most {_fmt(spec.max_mult_adds)}"
            + (" (cannot be measured for this model, and an unknown never passes a budget)"
               if mult_adds is None else ""))

    return Report(name, params, trainable, mult_adds, checks, final_activation=final)
