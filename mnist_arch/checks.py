"""The compliance engine: judge any `nn.Module` against a `Spec`.

Everything is computed from the model itself. It never imports `mnist_arch.models`: a user's model
and ours go through the same door, `check_model`. It measures the model once (`_measure`: the eval-mode
output shapes, the parameter counts and one recorded training-mode pass), then runs each check of `CHECKS` in
order over what was measured; each check is a small function returning its `Check`s (none when the spec does
not ask for it), worded from the templates in `check_messages`.

Presence of batch norm and dropout is judged by what runs in one real forward pass, recorded with a
`TorchFunctionMode`, and `gap` and `fc` by the classifier head in the data flow of the same pass
(`mnist_arch.features`, `mnist_arch.head`). That recording sees functional calls
(`F.dropout`, `F.batch_norm`, `x.mean((2, 3))`) as well as modules, and survives data-dependent
control flow that symbolic tracing cannot follow. We record at the functional level rather than the
aten level because the aten view loses the meaning we judge: on CPU, `F.dropout` decomposes into
`bernoulli_` and `InstanceNorm2d` decomposes into `native_batch_norm`, which would report an
instance-norm model as having batch norm. A function mode only sees the outermost call (nested calls
run with the mode popped), so `F.instance_norm` is seen as itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn as nn

from mnist_arch.check_messages import ERRORS, LOSS_CLASSES, MESSAGES
from mnist_arch.errors import MnistArchError
from mnist_arch.features import (
    convs_without_batchnorm,
    features_present,
    final_activation,
    near_miss,
    said,
    summarise,
)
from mnist_arch.fields import ReceptiveField, dims_text, jump_text
from mnist_arch.head import HEAD_FEATURES, Head, judge_head
from mnist_arch.receptive import FieldTrace, last_conv, trace_fields
from mnist_arch.report import Check, Report
from mnist_arch.spec import Layer, Spec
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


# ---------------------------------------------------------------------------------------------
# What is measured once, for every check


@dataclass
class Measured:
    """The model under judgement and what its forward passes showed."""

    model: nn.Module
    spec: Spec
    name: str
    loss: str | None  # the loss declared for training, for the double-softmax lint
    shapes: list[list[int] | None]  # the output's shape per batch size of OUTPUT_BATCH_SIZES, in eval mode
    counts: list[int]  # parameters before any forward, then after each call (the last in training mode)
    params: tuple[int, int]  # (all, trainable) after those calls
    recorded: tuple[list[Call], Any, torch.Tensor] | None  # the training-mode pass: calls, output, input; None for
    # a TorchScript model, whose calls cannot be seen

    @property
    def calls(self) -> list[Call]:
        return self.recorded[0] if self.recorded else []

    @cached_property
    def head(self) -> Head:
        calls, out, probe = self.recorded
        return judge_head(calls, out, probe)

    @cached_property
    def found(self) -> dict[str, list[str]]:
        return features_present(self.calls, self.recorded[1], self.head)

    @cached_property
    def final(self) -> str | None:
        """What produced the output ('softmax', 'log_softmax', 'logits'); None for a TorchScript model."""
        return None if self.recorded is None else final_activation(self.calls, self.recorded[1])

    @cached_property
    def mult_adds(self) -> int | None:
        """torchinfo's convention over the recorded calls (unknown for a TorchScript model)."""
        return mult_adds_from_calls(self.calls)


def _prepared(model: nn.Module, name: str) -> nn.Module:
    """The module to judge: a compiled model's original, on the CPU; models we cannot run are errors."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper runs the same module
    meta = [k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise MnistArchError(ERRORS["meta"].format(name=name, count=len(meta), first=meta[0]))
    return model.cpu()


def _scripted(model: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


def _needs_calls(spec: Spec) -> list[str]:
    """The spec fields that are judged from the recorded forward pass."""
    fields = {"require": spec.require, "require_any": spec.require_any, "layers": spec.layers,
              "min_receptive_field": spec.min_receptive_field is not None,
              "final_activation": spec.final_activation, "batchnorm_after_every_conv": spec.batchnorm_after_every_conv}
    return [k for k, v in fields.items() if v]


def _measure(model: nn.Module, spec: Spec, name: str, loss: str | None, scripted: bool) -> Measured:
    """Output shapes in eval mode at several batch sizes, parameters counted around each call, then the
    training-mode pass the presence checks judge, recorded last so that what it builds is counted too."""
    model.eval()
    counts = [count_parameters(model)[0]]
    shapes = []
    for n in OUTPUT_BATCH_SIZES:
        out = first_tensor(run_forward(model, example_input(n, spec.input_shape), name))
        shapes.append(None if out is None else list(out.shape))
        counts.append(count_parameters(model)[0])
    recorded = None
    if not scripted:
        probe = example_input(2, spec.input_shape)
        calls, out = record_calls(model, probe, name)
        recorded = (calls, out, probe)
        counts.append(count_parameters(model)[0])
    return Measured(model, spec, name, loss, shapes, counts, count_parameters(model), recorded)


# ---------------------------------------------------------------------------------------------
# The checks, in report order: each takes what was measured and returns its checks


def _check(check_id: str, passed: Any, measured: Any, expected: Any, message: str, warning: bool = False) -> Check:
    return Check(check_id, bool(passed), measured, expected, message, warning)


def _fmt(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


def params_stable(m: Measured) -> list[Check]:
    before, after = m.counts[0], m.counts[1:]
    if len(set(after)) <= 1:
        return []
    message = MESSAGES["params.stable"].format(before=before, counts=", ".join(f"{c:,}" for c in after),
                                               calls=len(after))
    return [_check("params.stable", False, after, after[0], message)]


def params_exact(m: Measured) -> list[Check]:
    params, declared = m.params[0], m.spec.exact_params
    if declared is None:
        return []
    message = MESSAGES["params.exact"].format(params=_fmt(params), declared=_fmt(declared))
    if params != declared:
        message += MESSAGES["params.exact+off"].format(off=params - declared)
    return [_check("params.exact", params == declared, params, declared, message)]


def params_max(m: Measured) -> list[Check]:
    params, limit = m.params[0], m.spec.max_params
    if limit is None:
        return []
    ok = params <= limit
    message = MESSAGES["params.max"].format(params=_fmt(params), limit=_fmt(limit))
    if not ok:
        message += MESSAGES["params.max+over"].format(over=params - limit)
    return [_check("params.max", ok, params, limit, message)]


def params_below(m: Measured) -> list[Check]:
    params, limit = m.params[0], m.spec.params_below
    if limit is None:
        return []
    ok = params < limit
    message = MESSAGES["params.below"].format(params=_fmt(params), limit=_fmt(limit))
    if not ok:
        message += MESSAGES["params.below+over"].format(over=params - limit + 1)
    return [_check("params.below", ok, params, limit, message)]


def output_shape(m: Measured) -> list[Check]:
    expected = [[n, m.spec.num_classes] for n in OUTPUT_BATCH_SIZES]
    message = MESSAGES["output_shape"].format(shapes=m.shapes, sizes=list(OUTPUT_BATCH_SIZES),
                                              classes=m.spec.num_classes)
    return [_check("output_shape", m.shapes == expected, m.shapes, expected, message)]


def layers(m: Measured) -> list[Check]:
    """Per-layer output shapes (and parameters, where declared), from one eval-mode pass."""
    if not m.spec.layers:
        return []
    shapes = layer_output_shapes(m.model, example_input(1, m.spec.input_shape), m.name)
    modules = dict(m.model.named_modules())
    return [_layer(layer, shapes, modules) for layer in m.spec.layers]


def _layer(layer: Layer, shapes: Mapping[str, tuple], modules: Mapping[str, nn.Module]) -> Check:
    check_id, declared = f"layer.{layer.name}", list(layer.output_shape)
    if layer.name not in modules:
        return _check(check_id, False, None, declared,
                      MESSAGES["layer.missing"].format(layer=layer.name, modules=", ".join(list(modules)[1:12])))
    shape = shapes.get(layer.name)
    got = None if shape is None else list(shape)
    message = MESSAGES["layer"].format(layer=layer.name, shape=got, declared=declared)
    if layer.params is None:
        return _check(check_id, got == declared, got, declared, message)
    own, _ = count_parameters(modules[layer.name])
    message += MESSAGES["layer+params"].format(params=own, declared=layer.params)
    return _check(check_id, got == declared and own == layer.params, {"shape": got, "params": own},
                  {"shape": declared, "params": layer.params}, message)


def receptive_field(m: Measured) -> list[Check]:
    """The declared receptive fields, from the calls one more forward pass makes (`receptive_field_checks`)."""
    layer_rfs = {layer.name: layer.receptive_field for layer in m.spec.layers if layer.receptive_field is not None}
    if m.spec.min_receptive_field is None and not layer_rfs:
        return []
    return [_check(*c) for c in receptive_field_checks(m.model, m.spec.input_shape, m.spec.min_receptive_field,
                                                       layer_rfs, m.name)]


def require(m: Measured) -> list[Check]:
    """Each feature of `require` ran in the training-mode pass."""
    checks = []
    for feature in sorted(m.spec.require):
        seen = m.found[feature]
        if seen and feature not in HEAD_FEATURES:
            message = MESSAGES["require.found"].format(feature=feature, calls=summarise(seen))
        else:
            message = MESSAGES["require.said"].format(feature=feature, said=said(feature, m.calls, m.head))
        checks.append(_check(f"require.{feature}", seen, summarise(seen) or "none", "present", message))
    return checks


def require_any(m: Measured) -> list[Check]:
    """One feature of each `require_any` group ran in the training-mode pass."""
    return [_require_group(m, group) for group in m.spec.require_any]


def _require_group(m: Measured, group: frozenset[str]) -> Check:
    options = sorted(group)
    listed = ", ".join(options)
    seen = {f: m.found[f] for f in options if m.found[f]}
    if seen:
        found = "; ".join(MESSAGES["require_any.found+feature"].format(feature=f, calls=summarise(v))
                          for f, v in seen.items())
        message = MESSAGES["require_any.found"].format(options=listed, found=found)
    elif group.isdisjoint(HEAD_FEATURES):
        message = MESSAGES["require_any.absent"].format(
            options=listed, near_misses="".join(near_miss(f, m.calls) for f in options))
    else:
        others = [MESSAGES["require.said"].format(feature=f, said=said(f, m.calls, m.head))
                  for f in options if f not in HEAD_FEATURES]
        words = group & set(HEAD_FEATURES)
        head = m.head.neither if words == set(HEAD_FEATURES) else MESSAGES["require.said"].format(
            feature=min(words), said=m.head.said[min(words)])
        message = MESSAGES["require_any.said"].format(options=listed, said="; ".join([head, *others]))
    measured = ", ".join(f"{f}: {summarise(v)}" for f, v in seen.items()) or "none"
    return _check("require_any." + "|".join(options), seen, measured, f"one of {listed}", message)


def batchnorm_after_every_conv(m: Measured) -> list[Check]:
    if not m.spec.batchnorm_after_every_conv:
        return []
    convs = sum(1 for call in m.calls if call.name in CONV_CALLS)
    missing = convs_without_batchnorm(m.calls)
    message = MESSAGES["batchnorm_after_every_conv"].format(normalised=convs - missing, convs=convs)
    return [_check("batchnorm_after_every_conv", missing == 0, f"{convs - missing}/{convs}", f"{convs}/{convs}",
                   message)]


def final_activation_declared(m: Measured) -> list[Check]:
    declared = m.spec.final_activation
    if declared is None:
        return []
    message = MESSAGES["final_activation"].format(final=m.final, declared=declared)
    return [_check("final_activation", m.final == declared, m.final, declared, message)]


def double_softmax(m: Measured) -> list[Check]:
    """The lint: an output of softmax (or log-softmax under CrossEntropyLoss) is normalised twice in training."""
    final = m.final
    if not (final == "softmax" or (final == "log_softmax" and m.loss == "cross_entropy")):
        return []
    as_error = "double_softmax" in m.spec.lint_errors
    trained = LOSS_CLASSES.get(m.loss or "", "")
    message = MESSAGES["lint.double_softmax"].format(level="error" if as_error else "warning", final=final)
    if trained:
        message += MESSAGES["lint.double_softmax+loss"].format(loss=trained)
    message += MESSAGES["lint.double_softmax+why"]
    return [_check("lint.double_softmax", not as_error, final, "logits", message, warning=not as_error)]


def mult_adds_exact(m: Measured) -> list[Check]:
    mult_adds, declared = m.mult_adds, m.spec.exact_mult_adds
    if declared is None:
        return []
    message = MESSAGES["mult_adds.exact"].format(mult_adds=_fmt(mult_adds), declared=_fmt(declared))
    if mult_adds is None:
        message += MESSAGES["mult_adds.exact+unknown"]
    return [_check("mult_adds.exact", mult_adds == declared, mult_adds, declared, message)]


def mult_adds_max(m: Measured) -> list[Check]:
    mult_adds, limit = m.mult_adds, m.spec.max_mult_adds
    if limit is None:
        return []
    message = MESSAGES["mult_adds.max"].format(mult_adds=_fmt(mult_adds), limit=_fmt(limit))
    if mult_adds is None:
        message += MESSAGES["mult_adds.max+unknown"]
    return [_check("mult_adds.max", mult_adds is not None and mult_adds <= limit, mult_adds, limit, message)]


#: Every check, in the order the report lists them.
CHECKS: tuple[Callable[[Measured], list[Check]], ...] = (
    params_stable, params_exact, params_max, params_below, output_shape, layers, receptive_field,
    require, require_any, batchnorm_after_every_conv, final_activation_declared, double_softmax,
    mult_adds_exact, mult_adds_max,
)


def check_model(model: nn.Module, spec: Spec, name: str = "model", loss: str | None = None) -> Report:
    """Judge `model` against `spec`. `loss` is the loss the user declared for training ("cross_entropy" or
    "nll"), if any, for the lint on a Softmax/LogSoftmax output.

    Parameters are counted after the first forward pass, so a model that builds its layers on the first
    call is counted whole; a count that still changes on the second call fails `params.stable`."""
    from mnist_arch.channel import phase

    model = _prepared(model, name)
    scripted = _scripted(model)
    if scripted and _needs_calls(spec):
        raise MnistArchError(ERRORS["scripted"].format(name=name, fields=", ".join(_needs_calls(spec))))
    phase("forward")
    measured = _measure(model, spec, name, loss, scripted)
    checks = [check for rule in CHECKS for check in rule(measured)]
    return Report(name, *measured.params, measured.mult_adds, checks, final_activation=measured.final)


# ---------------------------------------------------------------------------------------------
# Receptive fields against declared figures


def _figure(rf: ReceptiveField) -> Any:
    return "unknown" if rf.unknown else (rf.size[0] if len(set(rf.size)) == 1 else list(rf.size))


def receptive_field_checks(model: nn.Module, input_shape: Iterable[int], min_receptive_field: int | None = None,
                           layer_rfs: Mapping[str, int | str] | None = None, name: str = "model"
                           ) -> list[tuple[str, bool, Any, Any, str]]:
    """(id, passed, measured, expected, message) per declared figure: `min_receptive_field`, the least
    size per axis of the last conv output's field; `layer_rfs`, per module name, its size per axis
    exactly (an int) or "whole" (every output element sees the whole input)."""
    layer_rfs = dict(layer_rfs or {})
    if min_receptive_field is None and not layer_rfs:
        return []
    t = trace_fields(model, input_shape, name)
    checks = [] if min_receptive_field is None else [_min_field(model, t, min_receptive_field)]
    modules = dict(model.named_modules())
    return checks + [_layer_field(t, modules, layer, expected) for layer, expected in layer_rfs.items()]


def _min_field(model: nn.Module, t: FieldTrace, limit: int) -> tuple[str, bool, Any, Any, str]:
    last = last_conv(model, t)
    if last is None:
        return "receptive_field.min", False, None, limit, MESSAGES["receptive_field.min.no_conv"].format(limit=limit)
    label, rf = last
    ok = not rf.unknown and min(rf.size) >= limit
    sees = (MESSAGES["receptive_field.min+unknown"].format(unknown=rf.unknown) if rf.unknown
            else MESSAGES["receptive_field.min+sees"].format(size=dims_text(rf.size), jump=jump_text(rf)))
    message = MESSAGES["receptive_field.min"].format(label=label, sees=sees, limit=limit)
    if not (ok or rf.unknown):
        message += MESSAGES["receptive_field.min+short"].format(short=limit - min(rf.size))
    return "receptive_field.min", ok, _figure(rf) if rf.unknown else min(rf.size), limit, message


def _layer_field(t: FieldTrace, modules: Mapping[str, nn.Module], layer: str, expected: int | str
                 ) -> tuple[str, bool, Any, Any, str]:
    check_id = f"receptive_field.{layer}"
    if layer not in modules:
        return check_id, False, None, expected, MESSAGES["receptive_field.layer.missing"].format(
            layer=layer, expected=expected)
    rf = t.field_of(t.outputs[layer][0]) if layer in t.outputs else None
    if rf is None:
        return check_id, False, None, expected, MESSAGES["receptive_field.layer.no_tensor"].format(
            layer=layer, expected=expected)
    if expected == "whole":
        ok, declared = rf.whole, MESSAGES["receptive_field.layer+whole"]
    else:
        ok = not rf.unknown and all(s == expected for s in rf.size)
        declared = MESSAGES["receptive_field.layer+size"].format(size=expected)
    measured = "whole" if rf.whole and expected == "whole" else _figure(rf)
    return check_id, ok, measured, expected, MESSAGES["receptive_field.layer"].format(layer=layer, field=rf,
                                                                                     declared=declared)
