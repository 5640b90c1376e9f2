"""A per-module table of one model, for `mnist-arch summary`: output shape, parameters, mult-adds and
receptive field, from one recorded forward pass (`receptive.trace_fields`).

Rows follow the forward pass: one per call of a named module, in the order the calls start (the model first,
a container before what it runs), then the modules that did not run, in definition order, with no shape. A
module called three times has three rows, each with its own output shape and receptive field: `call` 1, 2, 3
(JSON keeps the module's `name` and adds `"call"`; the table writes `name #2` from the second call on, whose
parameters, shared with the first, read "shared").

Parameters are counted like the engine's (unique tensors; a module's count includes its children's),
so a row can be copied into a spec's `[layers]` table. Mult-adds follow torchinfo's convention, per
image: a module without children adds, per call, for a `weight` or `bias` the tensor's size times the
output's H x W in a Conv module and the tensor's size elsewhere (and for RNN-style `weight_*` names
the size times the output's second dim); a module with children shows the sum over its descendants' calls
within that call, so the model's row is torchinfo's total.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from mnist_arch.receptive import ReceptiveField, jump_text, trace_fields
from mnist_arch.report import count_text, md_cell
from mnist_arch.trace import count_parameters, first_tensor


@dataclass(frozen=True)
class Row:
    name: str  # as in named_modules; '' is the model itself
    type: str
    output_shape: tuple[int, ...] | None  # without the batch dim; None when it did not run
    params: int
    mult_adds: int
    receptive_field: ReceptiveField | None
    call: int = 1  # which call of the module this row is (1: the first); 0: it did not run


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
    that did not run (module docstring)."""
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


# ---------------------------------------------------------------------------------------------
# Renderers


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else "[" + ", ".join(str(v) for v in shape) + "]"


def _label(row: Row) -> str:
    return (row.name or "(model)") + (f" #{row.call}" if row.call > 1 else "")


def _cells(row: Row) -> list[str]:
    params = "shared" if row.call > 1 else count_text(row.params)
    return [_label(row), row.type, _shape_text(row.output_shape), params,
            count_text(row.mult_adds), "-" if row.receptive_field is None else str(row.receptive_field),
            jump_text(row.receptive_field)]


_HEADER = ["module", "type", "output shape", "parameters", "mult-adds", "receptive field", "jump"]
_RIGHT = {3, 4}  # numeric columns


def to_table(rows: list[Row], name: str = "") -> str:
    cells = [_HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER))]
    lines = ["  ".join(c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                               strict=True))).rstrip()
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return (f"{name}\n" if name else "") + "\n".join(lines)


def to_markdown(rows: list[Row], name: str = "") -> str:
    lines = [f"### `{name}`", ""] if name else []
    lines.append("| " + " | ".join(_HEADER) + " |")
    lines.append("| " + " | ".join("---:" if i in _RIGHT else "---" for i in range(len(_HEADER))) + " |")
    for r in rows:
        cells = [md_cell(c) for c in _cells(r)]
        cells[0] = f"`{md_cell(r.name)}`" + (f" #{r.call}" if r.call > 1 else "") if r.name else cells[0]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rf_dict(rf: ReceptiveField | None) -> dict[str, Any] | None:
    if rf is None:
        return None
    if rf.unknown:
        return {"unknown": rf.unknown}
    return {"size": list(rf.size), "jump": list(rf.jump), "start": [a.start for a in rf.axes],
            "whole": rf.whole, "dense": rf.dense, "text": str(rf)}


def to_dict(rows: list[Row], name: str = "") -> dict[str, Any]:
    return {"model": name, "layers": [
        {"name": r.name, "call": r.call, "type": r.type,
         "output_shape": None if r.output_shape is None else list(r.output_shape),
         "params": r.params, "mult_adds": r.mult_adds, "receptive_field": _rf_dict(r.receptive_field)}
        for r in rows]}


def to_json(rows: list[Row], name: str = "") -> str:
    return json.dumps(to_dict(rows, name), indent=2)


FORMATS = {"table": to_table, "json": to_json, "markdown": to_markdown}
