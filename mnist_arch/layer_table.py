"""A per-module table of one model, for `mnist-arch summary`, built in a worker: output shape, parameters,
mult-adds and receptive field, from one recorded forward pass (`receptive.trace_fields`). The rows and their
renderings are `layer_rows` (no torch: the command line prints them).

Parameters are counted like the engine's (unique tensors; a module's count includes its children's),
so a row can be copied into a spec's `[layers]` table. Mult-adds follow torchinfo's convention, per
image: a module without children adds, per call, for a `weight` or `bias` the tensor's size times the
output's H x W in a Conv module and the tensor's size elsewhere (and for RNN-style `weight_*` names
the size times the output's second dim); a module with children shows the sum over its descendants' calls
within that call, so the model's row is torchinfo's total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch.nn as nn

from mnist_arch.layer_rows import Row
from mnist_arch.receptive import trace_fields
from mnist_arch.trace import count_parameters, first_tensor


def _mult_adds_per_call(module: nn.Module, out: Any) -> int:
    t = first_tensor(out)
    if t is None:
        return 0
    shape = tuple(t.shape[1:])
    total = 0
    for param_name, p in module.named_parameters(recurse=False):
        if param_name in ("weight", "bias"):
            total += p.numel() * (math.prod(shape[1:]) if "Conv" in type(module).__name__ else 1)
        elif "weight" in param_name or "bias" in param_name:
            total += p.numel() * math.prod(shape[:1])
    return total


def layer_table(model: nn.Module, input_shape: Iterable[int] = (1, 28, 28), name: str = "model") -> list[Row]:
    """One row per call of a named module, in the order the forward pass starts them, then one per named module
    that did not run (`layer_rows`)."""
    t = trace_fields(model, input_shape, name)
    modules = dict(model.named_modules())
    leaf_calls = [(n, tick, _mult_adds_per_call(modules[n], t.outputs[n][k])) for n, k, tick, _ in t.runs
                  if not any(modules[n].children())]
    rows = []
    for module_name, k, begins, ends in t.runs:
        module, prefix = modules[module_name], module_name + "." if module_name else ""
        first = first_tensor(t.outputs[module_name][k])
        rows.append(Row(
            name=module_name,
            type=type(module).__name__,
            output_shape=None if first is None else tuple(first.shape[1:]),
            params=count_parameters(module)[0],
            mult_adds=sum(v for n, tick, v in leaf_calls
                          if begins <= tick <= ends and (n == module_name or n.startswith(prefix))),
            receptive_field=None if first is None else t.fields.get(id(first)),
            call=k + 1,
        ))
    ran = {n for n, *_ in t.runs}
    rows += [Row(n, type(m).__name__, None, count_parameters(m)[0], 0, None, call=0)
             for n, m in modules.items() if n not in ran]
    return rows
