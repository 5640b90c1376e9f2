"""Receptive fields computed from what runs: the calls of one recorded forward pass, not the module order.

Each tensor the forward pass makes is followed by identity, from the model's input onwards, through the
per-call rules of `field_rules` (whose docstring gives the arithmetic); the results are `fields.ReceptiveField`s.
This module is the walk: it records the pass, carries each tensor's field from call to call, and answers per
module (`receptive_fields`, `last_conv_receptive_field`). The checks against declared figures are the engine's
(`checks.receptive_field_checks`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from mnist_arch.field_rules import CONVS, CREATION, State, apply_rule, input_state, to_field
from mnist_arch.fields import ReceptiveField
from mnist_arch.trace import Call, example_input, first_tensor, record_calls, tensors_in


def _propagate(calls: list[Call], x: torch.Tensor) -> dict[int, State | str]:
    """Receptive field (or the reason it is unknown) of every tensor made from `x`, by id."""
    k = x.dim() - 2
    states: dict[int, State | str] = {id(x): input_state(x)}
    for call in calls:
        outs = tensors_in(call.out)
        read = list({id(t): t for t in tensors_in((call.args, call.kwargs)) if id(t) in states}.values())
        if not outs or not read or call.name in CREATION:
            continue
        tracked = [(t, states[id(t)]) for t in read]
        unknown = next((s for _, s in tracked if isinstance(s, str)), None)  # unknown stays unknown
        result = unknown if unknown is not None else apply_rule(call, tracked, outs, k)
        for t in outs:
            states[id(t)] = result
    return states


@dataclass
class FieldTrace:
    """One recorded training-mode forward pass: every call, each named module's outputs (one per call
    of the module) and the receptive field of every tensor made from the input."""

    calls: list[Call]
    outputs: dict[str, list[Any]]
    fields: dict[int, ReceptiveField]
    image: tuple[int, ...]
    # Each call of a named module in the order the pass starts them: (name, index of the call among that module's,
    # tick at its start, tick at its end); a call's descendants' calls start and end within its ticks.
    runs: list[tuple[str, int, int, int]] = field(default_factory=list)

    def field_of(self, value: Any) -> ReceptiveField | None:
        t = first_tensor(value)
        return None if t is None else self.fields.get(id(t))


def trace_fields(model: nn.Module, input_shape: Iterable[int], name: str = "model") -> FieldTrace:
    """Run `model` once on a fixed batch of two (training-mode batch norm needs more than one value
    per channel) and compute the receptive field of everything it made."""
    input_shape = tuple(input_shape)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = example_input(2, input_shape).to(device)
    outputs: dict[str, list[Any]] = {}
    runs: list[list[Any]] = []  # [name, call index, start tick, end tick], in the order the calls start
    running: dict[str, list[int]] = {}  # a module's calls not ended yet (indices into runs)
    started: dict[str, int] = {}  # calls of each module so far
    ticks = itertools.count()

    def start(module_name: str):
        def pre_hook(_module, _inputs):
            running.setdefault(module_name, []).append(len(runs))
            runs.append([module_name, started.get(module_name, 0), next(ticks), None])
            started[module_name] = started.get(module_name, 0) + 1
        return pre_hook

    def hook(module_name: str):
        def forward_hook(_module, _inputs, out):
            outputs.setdefault(module_name, []).append(out)
            if running.get(module_name):
                runs[running[module_name].pop()][3] = next(ticks)
        return forward_hook

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    handles += [m.register_forward_pre_hook(start(n)) for n, m in model.named_modules()]
    try:
        calls, _ = record_calls(model, x, name)
    finally:
        for h in handles:
            h.remove()
    image = input_shape[1:]
    fields = {key: to_field(s, image) for key, s in _propagate(calls, x).items()}
    return FieldTrace(calls, outputs, fields, image, [tuple(r) for r in runs if r[3] is not None])


def receptive_fields(model: nn.Module, input_shape: Iterable[int] = (1, 28, 28)) -> dict[str, ReceptiveField | None]:
    """The receptive field of every named module's output ('' is the model); None for a module that did
    not run or returned no tensor. A module called twice reports its first call."""
    t = trace_fields(model, input_shape)
    return {n: t.field_of(t.outputs[n][0]) if n in t.outputs else None for n, _ in model.named_modules()}


def last_conv(model: nn.Module, t: FieldTrace) -> tuple[str, ReceptiveField] | None:
    """`last_conv_receptive_field` over a pass already traced."""
    convs = [c for c in t.calls if c.name in CONVS]
    if not convs:
        return None
    out = first_tensor(convs[-1].out)
    names = [n for n, outs in t.outputs.items() if any(first_tensor(o) is out for o in outs)]
    modules = dict(model.named_modules())
    names.sort(key=lambda n: ("Conv" not in type(modules[n]).__name__, -n.count(".")))  # the conv module itself
    label = names[0] if names else f"{convs[-1].name} call {t.calls.index(convs[-1]) + 1}"
    return label, t.fields[id(out)]


def last_conv_receptive_field(model: nn.Module, input_shape: Iterable[int] = (1, 28, 28)
                              ) -> tuple[str, ReceptiveField] | None:
    """(name, field) of the output of the last convolution that ran; the name is its module's (or
    'conv2d call N' for a functional one). None when no convolution ran."""
    return last_conv(model, trace_fields(model, input_shape))
