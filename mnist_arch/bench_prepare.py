"""Setting up a path to measure: a model as a `Subject`, and `prepare`, which turns (model, path, batch size,
device) into a `Prepared` callable that runs one forward pass on a static input batch. pytest-benchmark times
that callable (`benchmarks/test_throughput.py`, and the plugin's `forward[B]` items through `mnist_arch.remote`)
and so does `mnist_arch.bench.run_benchmarks`. A model is a registered name or a built `Subject` (a name, a
module, its input shape and spec), whatever declared it.

Paths. `eager` is the model in eval mode, fp32, under `torch.inference_mode()`. A fast path is
`eager` plus modifiers joined by "+" (e.g. `channels_last+bf16`), applied in this order:
`channels_last` (model and input in NHWC memory format), `bf16` (`torch.autocast` to bfloat16),
`compile` (`torch.compile`, static shapes; a failure to compile makes the row skipped, with the
reason) and `cuda_graphs` (CUDA only: the forward captured once into a `torch.cuda.CUDAGraph` on the
static input and replayed). On CUDA every call ends with `torch.cuda.synchronize()`, so a timer
around the call measures the kernels, not their launch.

The input is the first B MNIST test images, normalised, when the test file is already on disk (see
`mnist_arch.data`; nothing is downloaded), else a fixed pseudo-random batch in [0, 1). Weights are random-init
with a fixed seed, or a checkpoint's (`mnist-arch train --save`). The training step's preparation lives with the
trainer: `mnist_arch.train_step`.
"""

from __future__ import annotations

import copy
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mnist_arch import data
from mnist_arch.bench_results import CPU_PATHS, CUDA_PATHS, parse_path
from mnist_arch.errors import MnistArchError
from mnist_arch.machine import native_bf16, resolve_device
from mnist_arch.spec import MNIST_MEAN_STD
from mnist_arch.trace import example_input


class PathUnavailable(Exception):
    """This path cannot run here (no CUDA, the compiler failed); the message says why. Not an error:
    the row is reported as skipped."""


def default_paths(device: str | torch.device) -> tuple[str, ...]:
    """The paths measured unless others are asked for: bf16 only where the device computes it natively
    (`mnist_arch.machine.native_bf16`; emulated bf16 is 3.8-20x slower than fp32, a path nobody would take)."""
    paths = CUDA_PATHS if torch.device(device).type == "cuda" else CPU_PATHS
    return paths if native_bf16(device) else tuple(p for p in paths if p != "bf16")


@functools.lru_cache(maxsize=4)
def _mnist_test_images(data_dir: str | None) -> torch.Tensor | None:
    """uint8 [10000, 28, 28] when the MNIST test images are already on disk; never downloads."""
    try:
        raw = Path(data.resolve_data_root(data_dir)) / "MNIST" / "raw"
        name = "t10k-images-idx3-ubyte"
        for candidate in (raw / name, raw / f"{name}.gz"):
            if candidate.is_file():
                return data.read_idx(candidate)
    except (MnistArchError, OSError):  # a damaged or foreign copy: fall back to random
        return None
    return None


def input_batch(batch_size: int, input_shape: Sequence[int] = (1, 28, 28),
                data_dir: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """A fixed float batch and where it came from ("mnist-test" or "random")."""
    images = _mnist_test_images(None if data_dir is None else str(data_dir))
    if images is not None and tuple(input_shape) == (1, *images.shape[1:]):
        idx = torch.arange(batch_size) % images.shape[0]
        return data.normalize(images[idx], *MNIST_MEAN_STD).unsqueeze(1), "mnist-test"
    return example_input(batch_size, input_shape), "random"


@dataclass(frozen=True)
class Subject:
    """A model to measure, wherever it came from (our registry, a user's table, a test): its name, the
    built module (never changed: every path and batch size starts from a copy of it), the input shape
    of one image and its spec (whose recipes a training step follows; None when it has none)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...] = (1, 28, 28)
    spec: Any = None


def subject(model: str | nn.Module | Subject, seed: int = 0, weights: str | None = None) -> Subject:
    """A registered name, a bare module or a Subject, as a Subject."""
    if isinstance(model, Subject):
        return model
    if isinstance(model, nn.Module):
        return Subject(type(model).__name__, model)
    from mnist_arch.registry import get_spec

    spec = get_spec(model)
    return Subject(model, _pristine(model, seed, weights), tuple(spec.input_shape), spec)


def build(model: str | nn.Module | Subject, seed: int,
          weights: str | None = None) -> tuple[nn.Module, str, tuple[int, ...], Any]:
    """A private copy of the model (the caller's module is never changed), its name, input shape, spec."""
    s = subject(model, seed, weights)
    return copy.deepcopy(s.module), s.name, tuple(s.input_shape), s.spec


def load_weights(model: nn.Module, name: str, weights: str) -> nn.Module:
    """`model` with the trained weights of a checkpoint written by `mnist-arch train --save` for `name`."""
    from mnist_arch.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(weights)
    if checkpoint.get("model") != name:
        raise MnistArchError(f"Checkpoint {weights} holds weights of {checkpoint.get('model')!r}, not {name!r}.")
    model.load_state_dict(checkpoint["state_dict"])
    return model


@functools.lru_cache(maxsize=2)
def _pristine(name: str, seed: int, weights: str | None = None) -> nn.Module:
    """A registered model with seeded random-init weights, or the trained weights of a checkpoint
    written by `mnist-arch train --save`; built once: building parallel_cnn's 28.6M weights takes
    longer than copying them, and every path and batch size starts from a copy."""
    from mnist_arch.registry import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(name)
    return model if weights is None else load_weights(model, name, weights)


@dataclass
class Prepared:
    """One forward pass (or training step) on a static input, ready to be called repeatedly."""

    name: str
    path: str
    device: torch.device
    dtype: str  # "fp32" | "bf16"
    batch_size: int
    input: torch.Tensor
    step: Callable[[], Any]  # the work, not synchronised
    model: nn.Module  # the model as the path runs it (compiled or converted)
    reference: nn.Module | None = None  # eager fp32 model with the same weights, for accuracy
    input_source: str = "random"
    input_shape: tuple[int, ...] = (1, 28, 28)
    setup_s: float = 0.0  # preparing, including compiling or capturing
    kind: str = "forward"  # "forward" | "train"
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        out = self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out


def prepare(model: str | nn.Module | Subject, path: str = "eager", batch_size: int = 64,
            device: str | torch.device = "cpu", *, data_dir: str | Path | None = None,
            input_shape: Sequence[int] | None = None, seed: int = 0, weights: str | None = None) -> Prepared:
    """Build a forward-pass callable for `model` (a registered name, any nn.Module or a Subject) on `path`;
    `weights`: a checkpoint of trained weights for a registered model (else seeded random init).

    Raises `PathUnavailable` (with the reason) where the path cannot run here, `MnistArchError` for
    bad arguments.
    """
    path = parse_path(path)
    dev = resolve_device(device)
    mods = set(path.split("+")) - {"eager"}
    if "cuda_graphs" in mods and dev.type != "cuda":
        raise PathUnavailable("cuda_graphs needs a CUDA device")
    started = time.perf_counter()
    net, name, shape, _spec = build(model, seed, weights)
    shape = tuple(input_shape or shape)
    net = net.eval().to(dev)
    x, source = input_batch(batch_size, shape, data_dir)
    x = x.to(dev)
    # fp32 and contiguous, what every path is compared with; only channels_last changes `net` itself
    reference = copy.deepcopy(net) if "channels_last" in mods else net
    if "channels_last" in mods:
        if x.dim() != 4:
            raise PathUnavailable(f"channels_last needs a 4-d input, this one is {x.dim()}-d")
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    runner: nn.Module | Callable = net
    if "compile" in mods:
        # A fresh, static-shape compile per prepared model: no recompile limits, no shared guards. (Not
        # yet imported means nothing to reset; importing dynamo only to reset it costs seconds.)
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is not None:
            dynamo.reset()
        runner = torch.compile(net, dynamic=False)
    bf16 = "bf16" in mods
    # Autocast's weight-cast cache must be off while a CUDA graph is captured.
    cache = "cuda_graphs" not in mods

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            if bf16:
                with torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=cache):
                    return runner(x)
            return runner(x)

    step: Callable[[], Any] = forward
    try:
        if "compile" in mods:
            forward()  # compiling happens on the first call; a failure makes the path unavailable
        if "cuda_graphs" in mods:
            step = _capture(forward, dev)
    except PathUnavailable:
        raise
    except Exception as exc:  # the compiler or the capture can fail in many ways; report, never crash
        what = "torch.compile" if "compile" in mods else "CUDA graph capture"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PathUnavailable(f"{what} failed: {type(exc).__name__}: {first[:300]}") from None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return Prepared(name=name, path=path, device=dev, dtype="bf16" if bf16 else "fp32", batch_size=batch_size,
                    input=x, step=step, model=net, reference=reference, input_source=source,
                    input_shape=shape, setup_s=time.perf_counter() - started)


def _capture(forward: Callable[[], torch.Tensor], dev: torch.device) -> Callable[[], torch.Tensor]:
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):  # warm up on a side stream, as the CUDA graphs docs advise
        for _ in range(3):
            forward()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward()

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay
