"""The recording of one forward pass, and what is measured from it: the calls the model made (a
`TorchFunctionMode` sees functional calls as well as modules), each module's output shape, the parameters and
the mult-adds. The engine (`checks`), the receptive field, the layer table, the benchmark and the trainer all
record through here; none of it judges.

Recording at the function level rather than the aten level is deliberate (see `mnist_arch.checks`). A
function mode only sees the outermost call (nested calls run with the mode popped), so `F.instance_norm` is
seen as itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parameter import UninitializedParameter
from torch.overrides import TorchFunctionMode

from mnist_arch.errors import MnistArchError

#: The convolutions, by the name their call is recorded under.
CONV_CALLS = {"conv1d", "conv2d", "conv3d"}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) over unique parameter tensors: a weight shared by two layers counts once,
    frozen weights count toward the total."""
    unique = [p for p in {id(p): p for p in model.parameters()}.values()  # parameters() yields a tied one once
              if not isinstance(p, UninitializedParameter)]  # a lazy layer before its first call: nothing yet
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    return total, trainable


def example_input(batch: int, input_shape: Iterable[int]) -> torch.Tensor:
    """A fixed pseudo-random batch in [0, 1), like scaled images; random rather than zeros so that
    data-dependent branches see realistic values."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, *input_shape, generator=generator)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in a value (a tensor, or tensors nested in tuples, lists and dicts), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return tensors_in(list(value.values()))
    return []


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor in a value (a tensor, or tensors nested in tuples, lists and dicts); None without one."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            t = first_tensor(v)
            if t is not None:
                return t
    if isinstance(value, dict):
        return first_tensor(list(value.values()))
    return None


def run_forward(model: nn.Module, x: torch.Tensor, name: str) -> Any:
    """model(x) without gradients; whatever the model raises becomes one paragraph naming the input shape."""
    try:
        with torch.no_grad():
            return model(x)
    except MemoryError:
        raise
    except Exception as exc:  # a user's model can raise anything; we report it, never a traceback
        if isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc):
            raise
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
    module: str = ""  # the innermost named module whose forward made the call ('' the model's own forward)

    def arg(self, index: int, key: str, default: Any = None) -> Any:
        if len(self.args) > index:
            return self.args[index]
        return self.kwargs.get(key, default)

    @property
    def input(self) -> torch.Tensor | None:
        return first_tensor(self.args[:1])


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.modules: list[str] = []  # the named modules whose forward is running, innermost last

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        module = self.modules[-1] if self.modules else ""
        self.calls.append(Call(getattr(func, "__name__", str(func)), args, kwargs, out, module))
        return out

    def watch(self, model: nn.Module) -> list:
        """Hooks that keep `modules` current while `model` runs; a TorchScript module takes none (its calls
        are named after the nearest plain module around them)."""
        def leave(*_: Any) -> None:  # a hook's return value would replace the module's output
            if self.modules:
                self.modules.pop()

        handles = []
        for module_name, module in model.named_modules():
            if isinstance(module, torch.jit.ScriptModule) or not module_name:
                continue
            handles.append(module.register_forward_pre_hook(
                lambda *_, module_name=module_name: self.modules.append(module_name)))  # None: input unchanged
            handles.append(module.register_forward_hook(leave, always_call=True))
        return handles


def record_calls(model: nn.Module, x: torch.Tensor, name: str = "model") -> tuple[list[Call], Any]:
    """Run one training-mode forward pass and return the calls it made and its output.

    Training mode, because dropout only runs there. The model's buffers (BatchNorm running stats)
    and its mode are restored afterwards, so judging a model does not change it.
    """
    saved = [(m, dict(m._buffers)) for m in model.modules()]
    for module, buffers in saved:
        for key, b in buffers.items():
            if b is not None:
                module._buffers[key] = b.detach().clone()  # the forward updates these copies in place
    was_training = model.training
    model.train()
    recorder = _Recorder()
    handles = recorder.watch(model)
    try:
        with recorder:
            out = run_forward(model, x, name)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        for module, buffers in saved:  # put the originals back, whatever the forward did to them
            module._buffers.clear()
            module._buffers.update(buffers)
    return recorder.calls, out


def layer_output_shapes(model: nn.Module, x: torch.Tensor, name: str = "model") -> dict[str, tuple]:
    """Output shape (without the batch dimension) of every named module, from an eval-mode forward."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for module_name, module in model.named_modules():
        def hook(_m, _inp, out, module_name=module_name):
            t = first_tensor(out)
            if t is not None and module_name not in shapes:  # first call wins for reused modules
                shapes[module_name] = tuple(t.shape[1:])
        hooks.append(module.register_forward_hook(hook))
    try:
        run_forward(model, x, name)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def count_mult_adds(model: nn.Module, input_shape: Iterable[int]) -> int | None:
    """Multiply-accumulates for one image in torchinfo's convention, from one recorded forward pass
    (see `mult_adds_from_calls`) on an input on the model's device in its floating-point dtype; None
    when it cannot be measured."""
    x = example_input(2, input_shape)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        x = x.to(parameter.device, parameter.dtype if parameter.is_floating_point() else x.dtype)
    calls, _ = record_calls(model, x)
    return mult_adds_from_calls(calls)


_WEIGHTED_CALLS = {*CONV_CALLS, "linear", "batch_norm", "layer_norm", "group_norm", "instance_norm",
                   "embedding", "prelu"}
_OPAQUE_PRODUCTS = {"matmul", "mm", "bmm", "addmm", "__matmul__", "einsum", "bilinear", "conv_transpose1d",
                    "conv_transpose2d", "conv_transpose3d", "baddbmm"}


def mult_adds_from_calls(calls: list[Call]) -> int | None:
    """torchinfo's convention, computed from what ran rather than from the module list: per image, each
    call's weight and bias element counts, times the output positions for a convolution (times the leading
    positions for a linear layer). It sees functional calls and layers whose weights are computed (weight
    norm), which torchinfo reports as 0; tests/test_engine.py checks it equals torchinfo's total where
    torchinfo can see the model. None when nothing was counted, or when a product ran whose work this
    convention does not define (matmul, einsum, transposed convolutions): unknown, never 0."""
    total, seen = 0, False
    for call in calls:
        if call.name in _OPAQUE_PRODUCTS:
            return None
        if call.name not in _WEIGHTED_CALLS:
            continue
        if call.name in ("batch_norm", "instance_norm"):
            weight, bias = call.arg(3, "weight"), call.arg(4, "bias")
        elif call.name in ("layer_norm", "group_norm"):
            weight, bias = call.arg(2, "weight"), call.arg(3, "bias")
        else:
            weight, bias = call.arg(1, "weight"), call.arg(2, "bias")
        own = sum(t.numel() for t in (weight, bias) if isinstance(t, torch.Tensor))
        out = first_tensor(call.out)
        if out is None:
            continue
        if call.name in CONV_CALLS:
            own *= math.prod(out.shape[2:])
        elif call.name == "linear":
            own *= math.prod(out.shape[1:-1])
        total, seen = total + own, True
    return total if seen else None
