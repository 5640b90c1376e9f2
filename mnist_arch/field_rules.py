"""The receptive field's rules, one per kind of call: how a call a forward pass makes maps the field of what
it reads to the field of what it writes. The walk over the calls is `receptive`; the results are `fields`.

Per spatial axis a receptive field is three numbers: output position `o` sees the input pixels
`start + o * jump` to `start + o * jump + size - 1` (pixels below 0 or past the image are padding).
A convolution or pool with kernel k, stride s, padding p and dilation d maps (size r, jump j, start t)
to (r + (k - 1) * d * j, j * s, t - p * j). Element-wise calls and concatenation give the union of
what their inputs see; pooling positions away (a mean over H and W, a linear layer on a flattened
map, an adaptive pool to 1x1) leaves jump 0 and the span of every position. A call whose effect is
not known here (interpolate, a transposed conv, any call without a rule) makes the field unknown,
with the call named; it is never guessed.

`size` is the extent of the window. Dilation, a stride larger than the window, or branches that do
not nest can leave pixels inside it that never reach the output: `dense` is False when that may be
so. Normalisation statistics (batch, instance, group and layer norm) are not counted, as in the usual
definition: those calls are element-wise here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from mnist_arch.fields import Axis, ReceptiveField, dims_text
from mnist_arch.trace import CONV_CALLS, Call


@dataclass(frozen=True)
class State:
    """A tensor's receptive field and where its positions lie in it."""

    axes: tuple[Axis, ...]
    grid: tuple[int, ...]  # positions per axis (1 once pooled away)
    dims: tuple[int | None, ...]  # the tensor dim holding each axis' positions (None once pooled away)
    steps: tuple[int, ...]  # index step between positions along that dim (1 unless flattened with others)
    dense: bool = True

    def with_axis(self, i: int, axis: Axis, grid: int, dim: int | None, step: int = 1) -> State:
        def put(values, value):
            return values[:i] + (value,) + values[i + 1:]

        return State(put(self.axes, axis), put(self.grid, grid), put(self.dims, dim), put(self.steps, step),
                      self.dense)

    def moved(self, where) -> State:
        """The same positions with each dim `d` moved to `where(d)`."""
        return State(self.axes, self.grid, tuple(None if d is None else where(d) for d in self.dims),
                      self.steps, self.dense)

    def on(self, dims: Iterable[int]) -> list[int]:
        dims = set(dims)
        return [i for i, d in enumerate(self.dims) if d in dims]


def _pool_away(s: State, which: Iterable[int]) -> State:
    """Every position along the given axes folded into one: the span of all their windows."""
    for i in which:
        a, n = s.axes[i], s.grid[i]
        dense = s.dense and (n == 1 or a.jump <= a.size)
        s = s.with_axis(i, Axis((n - 1) * a.jump + a.size, 0, a.start), 1, None)
        s = State(s.axes, s.grid, s.dims, s.steps, dense)
    return s


def _laid_out(s: State, x: torch.Tensor, k: int) -> bool:
    """Positions on the last k dims of x, one axis per dim, as a conv or pool reads them."""
    return x.dim() > k and all(
        d is None or (d == x.dim() - k + i and step == 1 and x.shape[d] == n)
        for i, (d, step, n) in enumerate(zip(s.dims, s.steps, s.grid, strict=True)))


def _per_axis(value: Any, k: int, default: int) -> tuple[int, ...] | None:
    if value is None or (isinstance(value, (list, tuple, torch.Size)) and len(value) == 0):
        return (default,) * k
    if isinstance(value, int):
        return (value,) * k
    if isinstance(value, (list, tuple, torch.Size)) and all(isinstance(v, int) for v in value):
        if len(value) == 1:
            return (value[0],) * k
        if len(value) == k:
            return tuple(value)
    return None


def _window_op(s, x, out, k, kernel, stride, padding, dilation) -> State | str:
    """A conv or pool: kernel, stride, padding (left) and dilation per axis."""
    if not _laid_out(s, x, k):
        return "a window over a tensor whose positions were reshaped"
    dense = s.dense
    for i, (a, kk, st, p, d) in enumerate(zip(s.axes, kernel, stride, padding, dilation, strict=True)):
        dense = dense and (kk == 1 or d * a.jump <= a.size)
        dim = None if s.dims[i] is None else out.dim() - k + i
        s = s.with_axis(i, Axis(a.size + (kk - 1) * d * a.jump, a.jump * st, a.start - p * a.jump),
                        1 if dim is None else out.shape[dim], dim)
    return State(s.axes, s.grid, s.dims, s.steps, dense)


def _conv(call: Call, s, x, out, k):
    weight = call.arg(1, "weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != k + 2:
        return f"{call.name} with {k} spatial axes expected"
    kernel = tuple(weight.shape[2:])
    stride, dilation = _per_axis(call.arg(3, "stride", 1), k, 1), _per_axis(call.arg(5, "dilation", 1), k, 1)
    padding = call.arg(4, "padding", 0)
    if padding == "valid":
        padding = 0
    if padding == "same" and dilation is not None:  # PyTorch puts the odd pixel on the right
        padding = tuple(d * (kk - 1) // 2 for kk, d in zip(kernel, dilation, strict=True))
    padding = _per_axis(padding, k, 0)
    if None in (stride, padding, dilation):
        return f"{call.name} with unreadable arguments"
    return _window_op(s, x, out, k, kernel, stride, padding, dilation)


def _pool(call: Call, s, x, out, k):
    lp = call.name.startswith("lp_pool")
    first = 2 if lp else 1  # lp_pool(input, norm_type, kernel_size, stride, ceil_mode)
    kernel = _per_axis(call.arg(first, "kernel_size"), k, 1)
    stride = _per_axis(call.arg(first + 1, "stride"), k, 1)
    if kernel is not None and call.arg(first + 1, "stride") in (None, (), []):
        stride = kernel
    padding = (0,) * k if lp else _per_axis(call.arg(3, "padding", 0), k, 0)
    dilation = _per_axis(call.arg(4, "dilation", 1), k, 1) if call.name.startswith("max_pool") else (1,) * k
    if None in (kernel, stride, padding, dilation):
        return f"{call.name} with unreadable arguments"
    return _window_op(s, x, out, k, kernel, stride, padding, dilation)  # ceil_mode changes the count only


def _adaptive(call: Call, s, x, out, k):
    """Exact when each input size is a whole multiple of the output size: then kernel = stride = ratio."""
    sizes_in, sizes_out = tuple(x.shape[-k:]), tuple(out.shape[-k:])
    if any(n % m for n, m in zip(sizes_in, sizes_out, strict=True)):
        return f"{call.name} from {dims_text(sizes_in)} to {dims_text(sizes_out)}, not a whole multiple"
    ratio = tuple(n // m for n, m in zip(sizes_in, sizes_out, strict=True))
    return _window_op(s, x, out, k, ratio, ratio, (0,) * k, (1,) * k)


def _pad(call: Call, s, x, out, k):
    """F.pad: the left padding of each spatial axis moves the start. Reflect, replicate and circular
    modes fold the border windows back into the image; size and jump are as for zeros."""
    if not _laid_out(s, x, k):
        return "pad of a tensor whose positions were reshaped"
    pad = list(call.arg(1, "pad"))
    for i, a in enumerate(s.axes):
        m = k - 1 - i  # pad lists the last dim first
        left = pad[2 * m] if 2 * m < len(pad) else 0
        dim = None if s.dims[i] is None else out.dim() - k + i
        s = s.with_axis(i, Axis(a.size, a.jump, a.start - left * a.jump), 1 if dim is None else out.shape[dim], dim)
    return s


def _contains(a: Axis, b: Axis, n: int) -> bool:
    """Does a's window hold b's at every one of n positions? (Linear in the position: check the ends.)"""
    return all(a.window(o)[0] <= b.window(o)[0] and a.window(o)[1] >= b.window(o)[1] for o in (0, n - 1))


def _join(a: State, b: State) -> State | str:
    """The union of what two aligned tensors see, position by position."""
    axes, grid, dims, steps, differ, nested_a, nested_b = [], [], [], [], 0, True, True
    for i in range(len(a.axes)):
        (A, na, da, sa), (B, nb, db, sb) = [(s.axes[i], s.grid[i], s.dims[i], s.steps[i]) for s in (a, b)]
        if na != nb:  # broadcasting a single position: every position reads that one window
            if na == 1:
                A, da = Axis(A.size, 0, A.start), None
            elif nb == 1:
                B, db = Axis(B.size, 0, B.start), None
            else:
                return f"tensors with {na} and {nb} positions joined"
        if da is not None and db is not None and (da, sa) != (db, sb):
            return "tensors whose positions lie on different dims joined"
        n = max(na, nb)
        a_has_b, b_has_a = _contains(A, B, n), _contains(B, A, n)
        nested_a, nested_b = nested_a and a_has_b, nested_b and b_has_a
        if a_has_b or b_has_a:
            axis = A if a_has_b else B
        elif A.jump == B.jump:
            first = min(A.start, B.start)
            axis = Axis(max(A.start + A.size, B.start + B.size) - first, A.jump, first)
        else:
            return f"branches with jumps {A.jump} and {B.jump} joined"
        if A != B:  # two windows fill their span only if they differ on one axis and overlap or touch there
            touch = a_has_b or b_has_a or max(A.start, B.start) <= min(A.start + A.size, B.start + B.size)
            differ += 1 if touch else 2
        axes.append(axis)
        grid.append(n)
        dims.append(da if da is not None else db)
        steps.append(sa if da is not None else sb)
    if nested_a or nested_b:
        dense = a.dense if nested_a else b.dense
    else:
        dense = a.dense and b.dense and differ <= 1
    return State(tuple(axes), tuple(grid), tuple(dims), tuple(steps), dense)


def _union(states: list[State]) -> State | str:
    joined: State | str = states[0]
    for s in states[1:]:
        joined = _join(joined, s) if isinstance(joined, State) else joined
    return joined


def _aligned(s: State, x: torch.Tensor, out: torch.Tensor) -> State:
    """Broadcasting aligns dims from the right."""
    shift = out.dim() - x.dim()
    return s.moved(lambda d: d + shift) if shift else s


def _elementwise(call, tracked, out, k):
    states = []
    for x, s in tracked:
        s = _aligned(s, x, out)
        for i, d in enumerate(s.dims):
            if d is not None and x.shape[d - out.dim() + x.dim()] != out.shape[d]:  # broadcast along positions
                if s.grid[i] != 1:
                    return f"{call.name} changed the number of positions"
                s = s.with_axis(i, Axis(s.axes[i].size, 0, s.axes[i].start), 1, None)  # one window for all
        states.append(s)
    return _union(states)


def _dim_set(value: Any, ndim: int) -> set[int]:
    """Dims a reduction runs over; None or () mean all of them."""
    if value is None or isinstance(value, bool) or (isinstance(value, (list, tuple)) and not value):
        return set(range(ndim))
    values = [value] if isinstance(value, int) else list(value)
    return {v % ndim for v in values}


def _reduce(call: Call, s, x, out, k):
    """mean, sum, amax, ... over some dims: the positions on those dims are pooled away."""
    dims = _dim_set(call.arg(2 if call.name == "norm" else 1, "dim", call.kwargs.get("axis")), x.dim())
    s = _pool_away(s, s.on(dims))
    if out.dim() == x.dim():  # keepdim
        return s
    return s.moved(lambda d: d - sum(1 for r in dims if r < d))


def _mix_along(call: Call, s, x, out, k):
    """softmax and friends: same shape, each element depends on its whole line along `dim`."""
    index, default = (2, 1) if call.name == "normalize" else (1, None)
    dim = call.arg(index, "dim", default)
    if dim is None:  # softmax's legacy implicit dim
        dim = 0 if x.dim() in (0, 1, 3) else 1
    on = s.on({dim % x.dim()})
    if on and call.name in ("cumsum", "cumprod"):
        return f"{call.name} along a spatial dim"
    return _pool_away(s, on)


def _matmul(call: Call, tracked, out, k):
    """linear and matrix products: the first operand's last dim and the second's dim -2 are summed over."""
    name = call.name
    operands = call.args[1:3] if name in ("addmm", "addbmm", "baddbmm") else call.args[:2]
    contracted = (-1, -1) if name == "bilinear" else (-1, -2)
    states, with_positions = [], 0
    for x, s in tracked:
        hit = [j for j, op in enumerate(operands) if op is x]
        if hit:
            s = _pool_away(s, s.on({contracted[hit[0]] % x.dim()}))
            with_positions += any(d is not None for d in s.dims)
        states.append(_aligned(s, x, out))
    if with_positions > 1:
        return f"{name} of two tensors that both carry positions"
    return _union(states)


def _cat(call: Call, tracked, out, k):
    dim = call.arg(1, "dim", call.kwargs.get("axis", 0)) % out.dim()
    states = []
    for _, s in tracked:
        if call.name == "stack":
            s = s.moved(lambda d: d + 1 if d >= dim else d)
        elif s.on({dim}):
            return f"{call.name} along a spatial dim"
        states.append(s)
    return _union(states)


def _split(call: Call, s, x, outs, k):
    index = 1 if call.name == "unbind" else 2
    dim = call.arg(index, "dim", 0) % x.dim()
    if s.on({dim}):
        return f"{call.name} along a spatial dim"
    return s.moved(lambda d: d - 1 if d > dim else d) if call.name == "unbind" else s


def _reshape(call: Call, s, x, out, k):
    """Any reshape in row-major order: each axis' positions are a digit of the linear index, with
    place value `step x (elements per index of its dim)`; they land on the output dim that holds
    that digit whole."""
    for i, (d, step, n) in enumerate(zip(s.dims, s.steps, s.grid, strict=True)):
        if d is None:
            continue
        place = step * math.prod(x.shape[d + 1:])
        for j in reversed(range(out.dim())):  # from the innermost: dims of size 1 hold no digit
            inner = math.prod(out.shape[j + 1:])
            if place % inner == 0 and (inner * out.shape[j]) % (place * n) == 0:
                s = s.with_axis(i, s.axes[i], n, j, place // inner)
                break
        else:
            if n != 1:
                return f"{call.name} split the positions of one axis over several dims"
            s = s.with_axis(i, Axis(s.axes[i].size, 0, s.axes[i].start), 1, None)
    return s


def _permute(call: Call, s, x, out, k):
    n = x.dim()
    rest = [a for a in call.args[1:] if not isinstance(a, torch.Tensor)]
    if call.name == "permute":
        order = list(rest[0]) if rest and isinstance(rest[0], (list, tuple)) else list(rest or call.kwargs["dims"])
    else:
        order = list(range(n))
        if call.name in ("movedim", "moveaxis"):
            src, dst = (call.arg(1, "source"), call.arg(2, "destination"))
            src, dst = ([src], [dst]) if isinstance(src, int) else (list(src), list(dst))
            src, dst = [v % n for v in src], [v % n for v in dst]
            order = [v for v in range(n) if v not in src]
            for to, frm in sorted(zip(dst, src, strict=True)):
                order.insert(to, frm)
        else:  # transpose, swapaxes, swapdims, t
            a, b = (call.arg(1, "dim0", 0) % n, call.arg(2, "dim1", 1) % n) if n > 1 else (0, 0)
            order[a], order[b] = order[b], order[a]
    order = [v % n for v in order]
    return s.moved(order.index)


def _getitem(call: Call, s, x, out, k):
    """Basic indexing: ints pick one position, slices crop or stride, None and ... reshape."""
    index = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice))) or isinstance(i, bool) for i in index):
        return s if all(d is None for d in s.dims) else "indexing with tensors or lists"
    given = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis not in index:
        index = (*index, Ellipsis)
    e = index.index(Ellipsis)
    index = index[:e] + (slice(None),) * (x.dim() - given) + tuple(i for i in index[e + 1:] if i is not Ellipsis)
    where, d_in, d_out = {}, 0, 0
    for i in index:
        if i is None:
            d_out += 1
            continue
        where[d_in] = (i, d_out)
        d_in += 1
        d_out += 0 if isinstance(i, int) else 1
    for a in range(len(s.axes)):
        d = s.dims[a]
        if d is None:
            continue
        i, j = where[d]
        axis, n = s.axes[a], x.shape[d]
        full = isinstance(i, slice) and range(n)[i] == range(n)
        if full:
            s = s.with_axis(a, axis, s.grid[a], j, s.steps[a])
        elif s.steps[a] != 1 or n != s.grid[a]:
            return "indexing into flattened positions"
        elif isinstance(i, int):
            s = s.with_axis(a, Axis(axis.size, 0, axis.start + (i % n) * axis.jump), 1, None)
        else:
            r = range(n)[i]
            s = s.with_axis(a, Axis(axis.size, axis.jump * r.step, axis.start + r.start * axis.jump), len(r), j)
    return s


_ELEMENTWISE = {
    # activations
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "gelu", "silu", "mish", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "elu", "elu_", "selu", "celu",
    "softplus", "softsign", "prelu", "rrelu", "threshold", "logsigmoid", "tanhshrink", "softshrink",
    "hardshrink",
    # normalisation (statistics not counted) and dropout
    "batch_norm", "instance_norm", "group_norm", "layer_norm", "local_response_norm", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "feature_dropout",
    # arithmetic
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__", "__isub__",
    "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__", "__rtruediv__",
    "__itruediv__", "neg", "__neg__", "abs", "clamp", "clamp_", "clip", "pow", "__pow__", "exp", "log",
    "sqrt", "rsqrt", "square", "maximum", "minimum", "where", "addcmul", "addcdiv", "lerp", "masked_fill",
    # copies and conversions
    "contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type", "type_as", "detach", "cpu",
    "cuda", "requires_grad_", "expand", "expand_as",
}
CREATION = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
            "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"}
CONVS = CONV_CALLS
_POOLS = {f"{kind}_pool{n}d{suffix}" for kind in ("max", "avg", "lp") for n in (1, 2, 3)
          for suffix in ("", "_with_indices")}
_ADAPTIVE = {f"adaptive_{kind}_pool{n}d{suffix}" for kind in ("max", "avg") for n in (1, 2, 3)
             for suffix in ("", "_with_indices")}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "logsumexp", "norm", "prod", "nansum",
           "nanmean", "median", "mode"}
_MIX = {"softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod"}
_MATMUL = {"linear", "matmul", "__matmul__", "mm", "bmm", "addmm", "addbmm", "baddbmm", "bilinear"}
_CAT = {"cat", "concat", "concatenate", "stack"}
_SPLIT = {"chunk", "split", "split_with_sizes", "tensor_split", "unbind"}
_RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_",
            "view_as", "reshape_as", "ravel"}
_PERMUTE = {"permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis"}

# calls of one tensor with a fixed geometry: (call, state, input, output, spatial axes) -> state | reason
_SINGLE = {**{n: _conv for n in CONVS}, **{n: _pool for n in _POOLS}, **{n: _adaptive for n in _ADAPTIVE},
           "pad": _pad, **{n: _reduce for n in _REDUCE}, **{n: _mix_along for n in _MIX},
           **{n: _reshape for n in _RESHAPE}, **{n: _permute for n in _PERMUTE}, "__getitem__": _getitem}
# calls that read several tensors: (call, [(tensor, state)], output, spatial axes) -> state | reason
_SEVERAL = {**{n: _elementwise for n in _ELEMENTWISE}, **{n: _matmul for n in _MATMUL}, **{n: _cat for n in _CAT}}


def input_state(x: torch.Tensor) -> State:
    """The model's input: each position sees its own pixel."""
    k = x.dim() - 2
    return State((Axis(1, 1, 0),) * k, tuple(x.shape[2:]), tuple(range(2, x.dim())), (1,) * k)


def apply_rule(call: Call, tracked: list[tuple[torch.Tensor, State]], outs: list[torch.Tensor], k: int
               ) -> State | str:
    """The state of what `call` wrote, from the (tensor, state) pairs of what it read (none unknown), or the
    reason it is unknown. `k` is the number of spatial axes."""
    name, (x0, s0), out = call.name, tracked[0], outs[0]
    if name in ("max", "min") and isinstance(call.arg(1, "other"), torch.Tensor):
        return _elementwise(call, tracked, out, k)  # torch.max(a, b)
    if name in _SINGLE or name in _SPLIT:
        shape_only = name in _RESHAPE or name in _PERMUTE  # view_as(other) reads other's shape only
        if x0 is not call.input or (len(tracked) > 1 and not shape_only):
            return f"{name} with input-dependent arguments"
        if name in _SPLIT:
            return _split(call, s0, x0, outs, k)
        return _SINGLE[name](call, s0, x0, out, k)
    if name in _SEVERAL:
        return _SEVERAL[name](call, tracked, out, k)
    return name  # no rule for this call: say so rather than guess


def to_field(state: State | str, image: tuple[int, ...]) -> ReceptiveField:
    """The public form of a tensor's state (or of the reason it is unknown) over an input of spatial size `image`."""
    if isinstance(state, str):
        return ReceptiveField(image=image, unknown=state)
    whole = state.dense and all(
        a.start + (n - 1) * a.jump <= 0 and a.start + a.size >= size
        for a, n, size in zip(state.axes, state.grid, image, strict=True))
    return ReceptiveField(state.axes, image, whole, state.dense)
