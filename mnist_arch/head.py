"""The classifier head, judged from what runs: the `gap` and `fc` requirement words.

The head is what lies between the last spatial maps and the output. It is found on the recorded calls of one
forward pass (`mnist_arch.trace.record_calls`) by following data, not module definitions: each call reads
the tensors the calls before it wrote (an in-place call writes its first argument again), and walking back
from the output through tensors that are not spatial maps reaches the calls that read one: the head's
entries. A spatial map is a tensor of three or more dimensions with more than one position (a 16x1x1 map is
a vector of 16; a 16x7x7 map is a map).

- `gap`: the classifier reads a globally average-pooled map. Every entry of the head is a global average
  pool (adaptive average pooling to 1x1, an average pool whose kernel covers the map, a mean over exactly the
  spatial dims); what follows it sees one position, so only per-position layers can follow (1x1
  convolutions, Linear, batch norm, activations, dropout, flatten, view, softmax). A global max pool is not
  an average and does not count.
- `fc`: the head is fully connected: a Linear (or matrix product) in the head over a vector, such as a
  flattened map or a pooled one, or an entry that is a convolution whose kernel covers its whole input map
  (larger than 1x1) down to 1x1. A 1x1 convolution after a global pool is the usual GAP classifier, not FC.

A pooling or Linear that runs before the last spatial maps, such as a squeeze-excitation gate whose result
multiplies a map, is not in the head and counts for neither; failures name it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mnist_arch.check_messages import HEAD_MESSAGES as WORDS
from mnist_arch.trace import CONV_CALLS, Call, first_tensor, tensors_in

#: The requirement words this module judges.
HEAD_FEATURES = ("gap", "fc")

#: Calls whose first argument is the data and whose other tensors are weights.
_WEIGHTED = {*CONV_CALLS, "linear", "batch_norm", "instance_norm", "layer_norm", "group_norm", "prelu"}
_PRODUCTS = {"linear", "matmul", "mm", "__matmul__", "addmm"}
_FLATTENS = {"flatten", "view", "reshape", "ravel", "squeeze", "view_as", "reshape_as"}
#: Calls whose other tensor arguments lend only a shape or a dtype.
_SHAPE_ONLY = {"view_as", "reshape_as", "expand_as", "type_as"}
_AVERAGES = ("avg_pool", "adaptive_avg_pool")
#: Calls by which a branch's result scales a map: a gate (squeeze-excitation, attention).
_GATES = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "addcmul", "div", "__truediv__"}


def _is_map(t: torch.Tensor) -> bool:
    return t.dim() >= 3 and math.prod(t.shape[2:]) > 1


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(n) for n in t.shape[1:]) or "scalar"


def _spatial(t: torch.Tensor | None) -> str:
    return "x".join(str(n) for n in t.shape[2:]) if t is not None and t.dim() > 2 else "?"


def _dims(call: Call, x: torch.Tensor) -> set[int] | None:
    dims = call.arg(1, "dim")
    if dims is None or not isinstance(dims, (int, list, tuple)):
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not all(isinstance(d, int) for d in dims):
        return None
    return {d % x.dim() for d in dims}


def _covers(x: torch.Tensor, kernel: Any) -> bool:
    """Whether a pooling kernel (an int or one per spatial dim) spans the whole map."""
    if isinstance(kernel, int):
        kernel = [kernel] * (x.dim() - 2)
    if not isinstance(kernel, (list, tuple)) or len(kernel) != x.dim() - 2:
        return False
    return all(isinstance(k, int) and k >= n for k, n in zip(kernel, x.shape[2:], strict=True))


def _global_pool(call: Call, pool: str, reductions: tuple[str, ...]) -> bool:
    """Whether `call` pools the whole map to one position: adaptive `pool` pooling to 1x1, a `pool` pooling whose
    kernel covers the map, or one of `reductions` over exactly the spatial dims."""
    x, out = call.input, first_tensor(call.out)
    if x is None or out is None or x.dim() < 3:
        return False
    if call.name.startswith(f"adaptive_{pool}_pool"):
        return all(s == 1 for s in out.shape[2:])
    if call.name.startswith(f"{pool}_pool"):
        return all(s == 1 for s in out.shape[2:]) and _covers(x, call.arg(1, "kernel_size"))
    if call.name in reductions:
        return _dims(call, x) == set(range(2, x.dim()))
    return False


def is_global_average_pool(call: Call) -> bool:
    """Adaptive average pooling to 1x1, an average pool covering the map, or a mean over exactly the spatial
    dims."""
    return _global_pool(call, "avg", ("mean",))


def _is_other_global_pool(call: Call) -> bool:
    """A global pool that is no average (max, sum, ...): named in messages, never counted as GAP."""
    return _global_pool(call, "max", ("amax", "max", "sum", "amin", "logsumexp"))


def _whole_map_conv(call: Call, x: torch.Tensor) -> bool:
    out, weight = first_tensor(call.out), call.arg(1, "weight")
    if call.name not in CONV_CALLS or out is None or not isinstance(weight, torch.Tensor):
        return False
    dilation = call.arg(5, "dilation", 1)
    dilation = [dilation] * (x.dim() - 2) if isinstance(dilation, int) else dilation
    if not isinstance(dilation, (list, tuple)):
        return False
    reach = [(k - 1) * d + 1 for k, d in zip(weight.shape[2:], dilation, strict=False)]
    return all(s == 1 for s in out.shape[2:]) and len(reach) == x.dim() - 2 and all(
        r >= n for r, n in zip(reach, x.shape[2:], strict=True))


def _product_input(call: Call) -> torch.Tensor | None:
    t = call.arg(1, "mat1") if call.name == "addmm" else call.input
    return t if isinstance(t, torch.Tensor) else None


def _is_fully_connected(call: Call) -> bool:
    """A Linear or matrix product over a vector: every input position reaches every output."""
    x = _product_input(call) if call.name in _PRODUCTS else None
    return x is not None and x.dim() >= 2 and math.prod(x.shape[1:-1]) == 1


def _linear(call: Call) -> str:
    weight = call.arg(1, "weight") if call.name == "linear" else None
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return WORDS["linear"].format(inputs=weight.shape[1], outputs=weight.shape[0])
    return call.name


def _where(call: Call) -> str:
    return WORDS["where.module"].format(module=call.module) if call.module else WORDS["where.model"]


def _kernel(call: Call) -> str:
    k = call.arg(1, "kernel_size")
    return "x".join(map(str, k)) if isinstance(k, (list, tuple)) else f"{k}x{k}"


@dataclass
class _Flow:
    """Who wrote each tensor each call read: `sources[i]` lists (writer index or None, tensor) for call i's
    data inputs; `consumers[i]` the calls that read what call i wrote."""

    calls: list[Call]
    x: torch.Tensor | None
    sources: list[list[tuple[int | None, torch.Tensor]]] = field(default_factory=list)
    consumers: dict[int, list[int]] = field(default_factory=dict)
    writer: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, call in enumerate(self.calls):
            data_only = call.name in _WEIGHTED or call.name in _SHAPE_ONLY
            read = tensors_in(call.args[:1]) if data_only else tensors_in((call.args, call.kwargs))
            if call.name == "addmm":
                read = tensors_in(call.args[1:2])
            seen = {id(t): t for t in read}.values()
            self.sources.append([(self.writer.get(id(t)), t) for t in seen])
            for p, _ in self.sources[-1]:
                if p is not None:
                    self.consumers.setdefault(p, []).append(i)
            written = tensors_in(call.out)
            if call.name == "__setitem__" or (call.name.endswith("_") and not call.name.endswith("__")):
                written += tensors_in(call.args[:1])  # in place
            written += tensors_in(call.kwargs.get("out"))
            for t in written:
                self.writer[id(t)] = i

    def describe_map(self, t: torch.Tensor, writer: int | None) -> str:
        if writer is None and self.x is not None and t is self.x:
            return WORDS["map.input"].format(shape=_shape(t))
        origin = self.calls[writer] if writer is not None else None
        if origin is not None and origin.name.startswith(_AVERAGES) and origin.input is not None:
            kernel = origin.name.startswith("avg_pool")
            how = WORDS["map.pooled+kernel"].format(kernel=_kernel(origin)) if kernel else ""
            return WORDS["map.pooled"].format(shape=_shape(t), call=origin.name, how=how,
                                              spatial=_spatial(origin.input))
        return WORDS["map"].format(shape=_shape(t))

    def downstream(self, start: int, within: set[int] | None = None) -> list[int]:
        """The calls that read, directly or not, what call `start` wrote, in call order."""
        found, todo = set(), [start]
        while todo:
            for j in self.consumers.get(todo.pop(), []):
                if j not in found and (within is None or j in within):
                    found.add(j)
                    todo.append(j)
        return sorted(found)


@dataclass
class Head:
    """What the head does: `found[word]` the calls that show `gap` or `fc` (short names, for a measured
    value), `said[word]` one sentence on why the word holds or not, `neither` why neither holds."""

    found: dict[str, list[str]]
    said: dict[str, str]
    neither: str  # why neither word holds, said once


def judge_head(calls: list[Call], out: Any, x: torch.Tensor | None = None) -> Head:
    """Judge `gap` and `fc` on one recorded forward pass (`x` the input it ran on, for messages)."""
    flow = _Flow(calls, x)
    target = first_tensor(out)
    none: dict[str, list[str]] = {"gap": [], "fc": []}
    if target is None:
        why = WORDS["no_tensor"]
        return Head(none, dict.fromkeys(HEAD_FEATURES, why), why)
    if _is_map(target):
        why = WORDS["map_output"].format(shape=_shape(target))
        return Head(none, dict.fromkeys(HEAD_FEATURES, why), why)
    start = flow.writer.get(id(target))
    if start is None:
        why = WORDS["no_writer"]
        return Head(none, dict.fromkeys(HEAD_FEATURES, why), why)

    # Walk back from the output through vectors; a call that reads a spatial map is an entry of the head.
    region: set[int] = set()
    entries: list[tuple[int, torch.Tensor, int | None]] = []
    todo = [start]
    while todo:
        i = todo.pop()
        if i in region:
            continue
        region.add(i)
        for p, t in flow.sources[i]:
            if _is_map(t):
                entries.append((i, t, p))
            elif p is not None:
                todo.append(p)
    entries.sort(key=lambda e: e[0])
    if not entries:
        why = WORDS["no_map"]
        return Head(none, dict.fromkeys(HEAD_FEATURES, why), why)

    def entry(i: int, t: torch.Tensor, p: int | None) -> str:
        call, m = calls[i], flow.describe_map(t, p)
        if is_global_average_pool(call):
            how = WORDS["entry.average+mean"].format(dims=sorted(_dims(call, t) or ())) if call.name == "mean" \
                else call.name
            return WORDS["entry.average"].format(map=m, how=how)
        if _is_other_global_pool(call):
            kind = {"sum": "sum", "logsumexp": "log-sum-exp", "amin": "min"}.get(call.name, "max")
            return WORDS["entry.other_pool"].format(kind=kind, map=m, call=call.name)
        if _whole_map_conv(call, t):
            k = "x".join(str(n) for n in call.arg(1, "weight").shape[2:])
            return WORDS["entry.whole_map_conv"].format(call=call.name, kernel=k, map=m)
        linears = [j for j in flow.downstream(i, region) if calls[j].name in _PRODUCTS]
        into = WORDS["entry+into"].format(linear=_linear(calls[linears[0]])) if linears else ""
        out_t = first_tensor(call.out)
        if call.name in _FLATTENS and out_t is not None and out_t.dim() == 2:
            return WORDS["entry.flatten"].format(map=m, into=into)
        if call.name in _PRODUCTS and _is_fully_connected(call):
            return WORDS["entry.linear"].format(linear=_linear(call), map=m)
        result = WORDS["entry.reads+result"].format(shape=_shape(out_t)) if out_t is not None else ""
        how = WORDS["entry.reads+indexing"] if call.name == "__getitem__" else call.name
        return WORDS["entry.reads"].format(map=m, how=how, result=result, into=into)

    said_entries = "; and ".join(dict.fromkeys(entry(*e) for e in entries))

    # gap: every entry a global average pool
    entry_calls = {i for i, _, _ in entries}
    not_pools = [e for e in entries if not is_global_average_pool(calls[e[0]])]
    found = {"gap": [] if not_pools else [calls[i].name for i in sorted(entry_calls)], "fc": []}
    not_gap = "; and ".join(dict.fromkeys(entry(*e) for e in not_pools))
    pools_elsewhere = _elsewhere(flow, region, entry_calls, is_global_average_pool, "global average pool")
    said = {"gap": WORDS["gap.yes"].format(entries=said_entries) if not not_pools
            else WORDS["gap.no"].format(entries=not_gap, elsewhere=pools_elsewhere)}

    # fc: a Linear over a vector in the head, or an entry that is a whole-map convolution
    fc = [i for i in sorted(region) if calls[i].name in _PRODUCTS and _is_fully_connected(calls[i])]
    fc = sorted({*fc, *(i for i, t, _ in entries if _whole_map_conv(calls[i], t))})
    found["fc"] = [calls[i].name for i in fc]
    layers = ", ".join(dict.fromkeys(_linear(calls[i]) if calls[i].name in _PRODUCTS else calls[i].name for i in fc))
    linears_elsewhere = _elsewhere(flow, region, set(), lambda c: c.name in _PRODUCTS, "Linear")
    said["fc"] = (WORDS["fc.yes"].format(layers=layers, entries=said_entries) if fc
                  else WORDS["fc.no"].format(entries=said_entries, elsewhere=linears_elsewhere))
    neither = WORDS["neither"].format(entries=said_entries, pools=pools_elsewhere, linears=linears_elsewhere)
    return Head(found, said, neither)


def _elsewhere(flow: _Flow, region: set[int], entries: set[int], test, what: str) -> str:
    """'; the only global average pool that ran, adaptive_avg_pool2d in `se.pool`, is off the head's path (...)'
    for calls that pass `test` but are not part of the head ('' when there are none)."""
    matches = [i for i, c in enumerate(flow.calls) if test(c)]
    off = [i for i in matches if i not in region]
    notes = []
    if off:
        named = [f"{_linear(flow.calls[i]) if what == 'Linear' else flow.calls[i].name} {_where(flow.calls[i])}"
                 for i in off[:3]] + ([WORDS["elsewhere.more"].format(count=len(off) - 3)] if len(off) > 3 else [])
        gate = ""
        for j in flow.downstream(off[0]):
            t = first_tensor(flow.calls[j].out)
            if t is not None and _is_map(t):
                what_for = WORDS["elsewhere+gate.inside"] if flow.calls[j].name in _GATES else ""
                gate = WORDS["elsewhere+gate"].format(whose="its" if len(off) == 1 else "their",
                                                      call=flow.calls[j].name, shape=_shape(t), what_for=what_for)
                break
        if len(off) < len(matches):
            notes.append(WORDS["elsewhere.some"].format(what=what, named=", ".join(named), gate=gate))
        elif len(off) == 1:
            notes.append(WORDS["elsewhere.only"].format(what=what, named=named[0], gate=gate))
        else:
            notes.append(WORDS["elsewhere.every"].format(what=what, named=", ".join(named), gate=gate))
    idle = [i for i in matches if i in region and i not in entries and what != "Linear"]
    if idle:
        c = flow.calls[idle[0]]
        notes.append(WORDS["elsewhere.idle"].format(call=c.name, where=_where(c)))
    return "".join(f"; {n}" for n in notes)
