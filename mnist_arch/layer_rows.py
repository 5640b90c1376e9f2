"""`mnist-arch summary`'s rows as plain data, and their renderings: a terminal table, Markdown and JSON.

A worker builds the rows (`layer_table.layer_table`) and sends them back pickled; the command line's own process
unpickles and prints them with `FORMATS`. No torch here.

Rows follow the forward pass: one per call of a named module, in the order the calls start (the model first,
a container before what it runs), then the modules that did not run, in definition order, with no shape. A
module called three times has three rows, each with its own output shape and receptive field: `call` 1, 2, 3
(JSON keeps the module's `name` and adds `"call"`; the table writes `name #2` from the second call on, whose
parameters, shared with the first, read "shared").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mnist_arch.fields import ReceptiveField, field_dict, jump_text
from mnist_arch.report import count_text, md_cell


@dataclass(frozen=True)
class Row:
    name: str  # as in named_modules; '' is the model itself
    type: str
    output_shape: tuple[int, ...] | None  # without the batch dim; None when it did not run
    params: int
    mult_adds: int
    receptive_field: ReceptiveField | None
    call: int = 1  # which call of the module this row is (1: the first); 0: it did not run


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


def to_dict(rows: list[Row], name: str = "") -> dict[str, Any]:
    return {"model": name, "layers": [
        {"name": r.name, "call": r.call, "type": r.type,
         "output_shape": None if r.output_shape is None else list(r.output_shape),
         "params": r.params, "mult_adds": r.mult_adds, "receptive_field": field_dict(r.receptive_field)}
        for r in rows]}


def to_json(rows: list[Row], name: str = "") -> str:
    return json.dumps(to_dict(rows, name), indent=2)


FORMATS = {"table": to_table, "json": to_json, "markdown": to_markdown}
