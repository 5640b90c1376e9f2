"""Forward and training throughput, fast inference paths, and the distance to the machine's limit.

One implementation measures: `prepare` turns (model, path, batch size, device) into a `Prepared`
callable that runs one forward pass on a static input batch; pytest-benchmark times that callable
(`benchmarks/test_throughput.py`, and the plugin's `forward[B]` items through `mnist_arch.jobs`) and so does
`time_callable` in `run_benchmarks`. A model is a registered name or a built `Subject` (a name, a module,
its input shape and spec), whatever declared it. This module measures and renders; `mnist-arch bench` over
the declared models of a project is `mnist_arch.jobs.bench_project`: the peak once, in its own process
(`set_up`), then each model built and measured by `run_benchmarks` in its own isolated worker, so a user's
model that exits, prints or hangs cannot reach the report.

Paths. `eager` is the model in eval mode, fp32, under `torch.inference_mode()`. A fast path is
`eager` plus modifiers joined by "+" (e.g. `channels_last+bf16`), applied in this order:
`channels_last` (model and input in NHWC memory format), `bf16` (`torch.autocast` to bfloat16),
`compile` (`torch.compile`, static shapes; a failure to compile makes the row skipped, with the
reason) and `cuda_graphs` (CUDA only: the forward captured once into a `torch.cuda.CUDAGraph` on the
static input and replayed). On CUDA every call ends with `torch.cuda.synchronize()`, so a timer
around the call measures the kernels, not their launch.

Timing (`time_callable`): calls until `warmup` seconds have passed (at least one), then timed calls
until `min_time` seconds have passed and at least `min_rounds` calls were made; images/s is the batch
size over the median call time.

Accuracy of a fast path: the same input batch through the eager fp32 copy of the model (same
weights); we report the largest absolute difference of the outputs (logits, or log-probabilities for
models ending in LogSoftmax) and the fraction of images whose top-1 class agrees. The input is the
first B MNIST test images, normalised, when the test file is already on disk (see `mnist_arch.data`;
nothing is downloaded), else a fixed pseudo-random batch in [0, 1). Weights are random-init with a
fixed seed (trained weights give more meaningful agreement; random-init logits are close together,
so agreement there is a pessimistic figure).

Work and the limit. Achieved FLOP/s = 2 x mult-adds per image x images/s, mult-adds counted by
`mnist_arch.trace.count_mult_adds` (torchinfo's convention: layers with weights only). A training
step counts 3x the forward work (the backward pass is about twice the forward). The practical peak is
measured in the same run (`measure_peaks`): a square matmul (2048 on the CPU, 8192 on CUDA) in fp32
and, where the device computes it natively, in bf16, and the bandwidth of a large tensor copy. Fraction of
peak = achieved / the peak of the row's dtype (none for a bf16 row where bf16 is emulated). (On CUDA,
PyTorch lets cuDNN use TF32 for fp32 convolutions by default while the fp32 matmul peak is true fp32, so
an fp32 convolution row can approach or exceed "1.0".)

What bounds a row (`classify`), a heuristic with a stated rule:
  1. "launch overhead": the same model and path run at least `OVERHEAD_RATIO` (2x) more images/s at
     the largest batch size measured: a fixed per-call cost (Python, dispatch, kernel launches)
     dominates this batch size.
  2. otherwise the roofline: arithmetic intensity = FLOPs / bytes moved per call, with bytes =
     parameters x element size + B x (input + 2 x activations of every leaf module) x element size
     (each activation written once and read once; element size 2 for bf16, 4 for fp32). Below the
     machine's ridge point (peak FLOP/s of the dtype / copy bandwidth) the row is "memory" bound,
     at or above it "compute" bound.
Caches make the roofline pessimistic for small batches on a CPU; the rule is a first reading, not a
profile.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mnist_arch import data
from mnist_arch.channel import phase
from mnist_arch.errors import MnistArchError
from mnist_arch.machine import native_bf16, resolve_device
from mnist_arch.spec import MNIST_MEAN_STD, Recipe
from mnist_arch.trace import example_input
from mnist_arch.train import (
    choose_layout,
    fit_recipe,
    make_optimizer,
    model_input,
    optimize,
    prepare_model,
    recipe_call,
)

#: Modifiers a path may combine, in the order they are applied; "eager" is none of them.
MODIFIERS = ("channels_last", "bf16", "compile", "cuda_graphs")
CPU_PATHS = ("eager", "channels_last", "bf16", "compile")
CUDA_PATHS = ("eager", "channels_last", "bf16", "compile", "cuda_graphs")
BATCH_SIZES = (1, 64, 1024)
TRAIN_BATCH_SIZE = 128  # when the model declares no recipe
OVERHEAD_RATIO = 2.0  # see the module docstring, rule 1
BOUNDS = ("compute", "memory", "launch overhead")


class PathUnavailable(Exception):
    """This path cannot run here (no CUDA, the compiler failed); the message says why. Not an error:
    the row is reported as skipped."""


# ---------------------------------------------------------------------------------------------
# Paths, devices, inputs


def parse_path(text: str) -> str:
    """The canonical name of a path ("eager" or modifiers joined by "+" in `MODIFIERS` order)."""
    parts = {p.strip() for p in text.split("+") if p.strip()} - {"eager"}
    unknown = sorted(parts - set(MODIFIERS))
    if unknown or not text.strip():
        raise MnistArchError(
            f"Unknown benchmark path {text!r}: a path is 'eager' or a '+'-joined combination of "
            f"{', '.join(MODIFIERS)} (e.g. channels_last+bf16)."
        )
    return "+".join(m for m in MODIFIERS if m in parts) or "eager"


def default_paths(device: str | torch.device) -> tuple[str, ...]:
    """The paths measured unless others are asked for: bf16 only where the device computes it natively
    (`mnist_arch.train.native_bf16`; emulated bf16 is 3.8-20x slower than fp32, a path nobody would take)."""
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


def _build(model: str | nn.Module | Subject, seed: int,
           weights: str | None = None) -> tuple[nn.Module, str, tuple[int, ...], Any]:
    """A private copy of the model (the caller's module is never changed), its name, input shape, spec."""
    s = subject(model, seed, weights)
    return copy.deepcopy(s.module), s.name, tuple(s.input_shape), s.spec


def load_weights(model: nn.Module, name: str, weights: str) -> nn.Module:
    """`model` with the trained weights of a checkpoint written by `mnist-arch train --save` for `name`."""
    from mnist_arch.train import load_checkpoint

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


# ---------------------------------------------------------------------------------------------
# Prepared callables


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
    net, name, shape, _spec = _build(model, seed, weights)
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


def train_recipe(spec: Any) -> Any:
    """The recipe a training benchmark follows: "full", else "quick", else None."""
    recipes = getattr(spec, "recipes", None) or {}
    return recipes.get("full") or recipes.get("quick")


def prepare_train_step(model: str | nn.Module | Subject, batch_size: int | None = None,
                       device: str | torch.device = "cpu", *, recipe: Any = None,
                       seed: int = 0) -> Prepared:
    """One training step (forward, loss, backward, optimizer step) on a static random batch: the trainer's
    own (`mnist_arch.train.optimize`, without data loading and augmentation).

    Follows the model's recipe when it has one (optimizer, lr, loss, batch size, precision, memory layout),
    as it trains on this device (`mnist_arch.train.fit_recipe`: fp32 where bf16 is not native);
    otherwise SGD(lr=0.01, momentum=0.9), batch size `TRAIN_BATCH_SIZE` and cross-entropy.
    """
    dev = resolve_device(device)
    started = time.perf_counter()
    net, name, shape, spec = _build(model, seed)
    recipe = recipe if recipe is not None else train_recipe(spec)
    if recipe is None:  # a model without a recipe: plain SGD with momentum on logits
        recipe = Recipe(epochs=1, batch_size=batch_size or TRAIN_BATCH_SIZE, optimizer="sgd", lr=0.01,
                        min_accuracy=0.0, optimizer_kwargs={"momentum": 0.9})
    recipe, setting = fit_recipe(recipe, dev)
    batch_size = batch_size or recipe.batch_size
    # the recipe's memory layout and weight dtype, as it trains
    net = recipe_call("precision", recipe, prepare_model, net, recipe, dev).train()
    if shape[0] == 1:  # the layout the trainer chooses where the recipe leaves it open (MNIST's one channel)
        net, recipe, chosen = choose_layout(net, recipe, torch.zeros(2, *shape[1:], dtype=torch.uint8, device=dev))
        setting += chosen
    optimizer = recipe_call("optimizer", recipe, make_optimizer, net, recipe)
    generator = torch.Generator().manual_seed(seed)
    x = model_input(torch.rand(batch_size, *shape, generator=generator).to(dev), recipe)
    num_classes = getattr(spec, "num_classes", 10)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(dev)

    def step() -> torch.Tensor:
        return optimize(net, optimizer, recipe, x, y)[0]

    step()  # optimizer state (Adam moments, ...) is allocated on the first step, not timed
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return Prepared(name=name, path="train", device=dev, dtype=recipe.compute_dtype,
                    batch_size=batch_size, input=x, step=step, model=net, input_shape=shape,
                    setup_s=time.perf_counter() - started, kind="train",
                    extra={"optimizer": recipe.optimizer, "loss": recipe.loss, "precision": setting})


# ---------------------------------------------------------------------------------------------
# Timing, accuracy, work


@dataclass
class Timing:
    median_s: float
    min_s: float
    rounds: int


def time_callable(fn: Callable[[], Any], min_time: float = 0.5, min_rounds: int = 3,
                  warmup: float | None = None) -> Timing:
    """Median seconds per call: warm up for `warmup` s (default min_time / 5, at least one call), then
    call until `min_time` s have passed and at least `min_rounds` calls were timed."""
    warmup = min_time / 5 if warmup is None else warmup
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < warmup:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_rounds or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), len(times))


def compare_to_eager(prepared: Prepared) -> tuple[float, float]:
    """(largest absolute output difference, top-1 agreement) of the path against eager fp32."""
    if prepared.reference is None:
        raise ValueError("this prepared callable has no eager reference")
    out = prepared()
    out = out.float().clone() if isinstance(out, torch.Tensor) else out
    with torch.inference_mode():
        ref = prepared.reference(prepared.input.contiguous()).float()
    diff = (out - ref).abs().max().item() if out.numel() else 0.0
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    return float(diff), float(agree)


def achieved_flops(mult_adds: int | None, images_per_s: float | None, factor: float = 1.0) -> float | None:
    """FLOP/s: 2 FLOPs per mult-add, x `factor` (3 for a training step), x images/s."""
    if mult_adds is None or images_per_s is None:
        return None
    return 2.0 * mult_adds * images_per_s * factor


@functools.lru_cache(maxsize=32)
def registered_work(name: str) -> tuple[int | None, int, int, int]:
    """`work_per_image` of a registered model, computed once per process."""
    model, _, shape, _ = _build(name, 0)
    return work_per_image(model, shape)


def work_per_image(model: nn.Module, input_shape: Sequence[int] = (1, 28, 28)) -> tuple[int | None, int, int, int]:
    """(mult-adds, parameters, input elements, leaf-module activation elements) for one image."""
    from mnist_arch.trace import count_mult_adds, layer_output_shapes

    model = model.eval()
    mult_adds = count_mult_adds(model, input_shape)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    try:
        shapes = layer_output_shapes(model, example_input(1, input_shape))
    except MnistArchError:
        shapes = {}
    leaves = {n for n, m in model.named_modules() if not list(m.children())}
    acts = sum(math.prod(s) for n, s in shapes.items() if n in leaves)
    return mult_adds, params, math.prod(input_shape), acts


def traffic_bytes(params: int, input_elems: int, act_elems: int, batch_size: int, dtype: str) -> int:
    """Bytes one forward call moves in the roofline rule of the module docstring."""
    size = 2 if dtype == "bf16" else 4
    return size * (params + batch_size * (input_elems + 2 * act_elems))


# ---------------------------------------------------------------------------------------------
# The machine's practical limit


@dataclass
class Peaks:
    device: str
    flops: dict[str, float]  # dtype -> FLOP/s of a large square matmul (no "bf16" where it is not native)
    bytes_per_s: float  # tensor copy: bytes read + bytes written per second
    matmul_size: int
    copy_bytes: int


def matmul_callable(n: int, dtype: torch.dtype, device: torch.device) -> Callable[[], torch.Tensor]:
    """An n x n @ n x n matmul (2 n^3 FLOPs), synchronised on CUDA: the peak benchmark's body."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)

    def run() -> torch.Tensor:
        out = a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def measure_peaks(device: str | torch.device = "cpu", min_time: float = 0.5, matmul_size: int | None = None,
                  copy_bytes: int | None = None) -> Peaks:
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    n = matmul_size or (8192 if cuda else 2048)
    flops = {}
    # bf16 only where it is native: emulated, one 2048 matmul takes a minute on a 2-core AVX2 CPU
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))[: 2 if native_bf16(dev) else 1]:
        timing = time_callable(matmul_callable(n, dtype, dev), min_time=min_time)
        flops[label] = 2.0 * n**3 / timing.median_s
    nbytes = copy_bytes or ((1 << 30) if cuda else (256 << 20))
    src = torch.empty(nbytes // 4, device=dev).fill_(1.0)
    dst = torch.empty_like(src)

    def copy_once() -> None:
        dst.copy_(src)
        if cuda:
            torch.cuda.synchronize(dev)

    timing = time_callable(copy_once, min_time=min_time)
    return Peaks(device=str(dev), flops=flops, bytes_per_s=2.0 * src.numel() * 4 / timing.median_s,
                 matmul_size=n, copy_bytes=src.numel() * 4)


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    model: str
    kind: str  # "forward" | "train"
    path: str
    device: str
    dtype: str
    batch_size: int
    images_per_s: float | None = None
    median_s: float | None = None
    rounds: int = 0
    setup_s: float | None = None
    mult_adds: int | None = None
    params: int | None = None
    flops_per_s: float | None = None
    peak_fraction: float | None = None
    arithmetic_intensity: float | None = None  # FLOPs / byte, see traffic_bytes
    bound: str | None = None  # "compute" | "memory" | "launch overhead"
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    input: str | None = None  # "mnist-test" | "random"
    note: str = ""  # optimizer, loss and precision of a training row
    skipped: str | None = None  # the reason a path could not run here
    error: str | None = None  # why this row failed (the other rows are still measured)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(prepared: Prepared, min_time: float = 0.5, peaks: Peaks | None = None,
            accuracy: bool = True, work: tuple[int | None, int, int, int] | None = None) -> Row:
    """Time a prepared callable and fill in its row (work, fraction of peak, accuracy)."""
    if work is None:
        source = prepared.reference if prepared.reference is not None else prepared.model
        work = work_per_image(copy.deepcopy(source).float().cpu(),
                              prepared.input_shape)
    mult_adds, params, input_elems, acts = work
    timing = time_callable(prepared, min_time=min_time)
    ips = prepared.batch_size / timing.median_s
    factor = 3.0 if prepared.kind == "train" else 1.0
    flops = achieved_flops(mult_adds, ips, factor)
    row = Row(model=prepared.name, kind=prepared.kind, path=prepared.path, device=str(prepared.device),
              dtype=prepared.dtype, batch_size=prepared.batch_size, images_per_s=ips,
              median_s=timing.median_s, rounds=timing.rounds, setup_s=prepared.setup_s,
              mult_adds=mult_adds, params=params, flops_per_s=flops, input=prepared.input_source,
              note=", ".join(f"{k} {v}" for k, v in prepared.extra.items() if k != "recipe"))
    if mult_adds:
        moved = factor * traffic_bytes(params, input_elems, acts, prepared.batch_size, prepared.dtype)
        row.arithmetic_intensity = 2.0 * mult_adds * prepared.batch_size * factor / moved
    if peaks is not None and flops is not None and prepared.dtype in peaks.flops:
        row.peak_fraction = flops / peaks.flops[prepared.dtype]
    if prepared.kind == "forward" and accuracy:
        if prepared.path == "eager":
            row.max_abs_diff, row.top1_agreement = 0.0, 1.0
        else:
            row.max_abs_diff, row.top1_agreement = compare_to_eager(prepared)
    return row


def classify(rows: Iterable[Row], peaks: Peaks | None) -> None:
    """Set each measured row's `bound` by the rule in the module docstring."""
    rows = [r for r in rows if r.images_per_s is not None]
    largest: dict[tuple, Row] = {}
    for r in rows:
        key = (r.model, r.kind, r.path, r.device)
        if key not in largest or r.batch_size > largest[key].batch_size:
            largest[key] = r
    for r in rows:
        big = largest[(r.model, r.kind, r.path, r.device)]
        if big.batch_size > r.batch_size and big.images_per_s >= OVERHEAD_RATIO * r.images_per_s:
            r.bound = "launch overhead"
        elif peaks is not None and r.arithmetic_intensity is not None and r.dtype in peaks.flops:
            ridge = peaks.flops[r.dtype] / peaks.bytes_per_s
            r.bound = "memory" if r.arithmetic_intensity < ridge else "compute"


@dataclass
class BenchResult:
    meta: dict[str, Any]
    peaks: Peaks | None
    rows: list[Row]
    errors: list[str] = field(default_factory=list)  # models that could not be measured, and why (stderr)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "peaks": asdict(self.peaks) if self.peaks else None,
                "rows": [r.to_dict() for r in self.rows]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def result_of(rows: list[Row], errors: list[str], peaks: Peaks | None, dev: torch.device, min_time: float,
              weights: dict[str, str], threads: int) -> BenchResult:
    """The rows of a run classified (`classify`) and its errors, each failed row's among them."""
    classify(rows, peaks)
    errors = errors + [f"Model {r.model}: the {_row_label(r)} failed: {r.error}" for r in rows if r.error]
    return BenchResult(_meta(dev, min_time, weights, threads), peaks, rows, errors)


def _meta(dev: torch.device, min_time: float, weights: dict[str, str], threads: int) -> dict[str, Any]:
    return {"device": str(dev), "device_name": device_name(dev), "torch": torch.__version__, "weights": weights,
            "threads": threads, "min_time_s": min_time,
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if dev.type == "cuda" else None}


def set_up(device: str | torch.device, paths: Sequence[str] | None, min_time: float, say: Callable[[str], None],
           measure_peak: bool = True) -> tuple[torch.device, list[str], Peaks | None]:
    """What every benchmark run sets up first, in the process that measures the peak: the device, the paths
    (the device's defaults unless given) and the machine's practical peak (None unless `measure_peak`)."""
    dev = resolve_device(device)
    paths = [parse_path(p) for p in (paths or default_paths(dev))]
    peaks = None
    if measure_peak:
        say(f"peak: matmul {'fp32/bf16' if native_bf16(dev) else 'fp32'} and copy bandwidth on {dev}")
        peaks = measure_peaks(dev, min_time=min_time)
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # workers that measure models need the memory the peak's tensors held
    return dev, paths, peaks


def run_benchmarks(models: Sequence[str | Subject], batch_sizes: Sequence[int] = BATCH_SIZES,
                   paths: Sequence[str] | None = None, device: str | torch.device = "auto",
                   min_time: float = 0.5, train: bool = False, data_dir: str | Path | None = None,
                   progress: Callable[[str], None] | None = None, measure_peak: bool = True,
                   weights: dict[str, str] | None = None, peaks: Peaks | None = None) -> BenchResult:
    """In this process: the peak (unless `peaks` is given or `measure_peak` is off), then every (model,
    path, batch size) forward row, then (with `train`) a training row per model; rows whose path cannot
    run here are kept with the reason in `skipped`. `models` are registered names or built `Subject`s,
    measured by the same code whatever their source; `weights` maps a registered name to a checkpoint of
    trained weights (`mnist-arch train --save`). A user's model is measured behind the wall instead:
    `mnist_arch.jobs.bench_project`."""
    weights = weights or {}
    # an unknown name or a wrong checkpoint fails now, not after the peak measurement
    subjects = [subject(m, 0, weights.get(m) if isinstance(m, str) else None) for m in models]
    say = progress or (lambda _msg: None)
    dev, paths, measured = set_up(device, paths, min_time, say, measure_peak and peaks is None)
    peaks = peaks or measured
    rows: list[Row] = []
    for s in subjects:
        phase("bench")
        work = work_per_image(copy.deepcopy(s.module), s.input_shape)
        for path in paths:
            for b in batch_sizes:
                say(f"{s.name} {path} batch {b}")
                phase("bench")  # each row has the whole time limit (compiling can take a while)
                blank = Row(model=s.name, kind="forward", path=path, device=str(dev),
                            dtype="bf16" if "bf16" in path else "fp32", batch_size=b)
                rows.append(_measured(blank, (min_time, peaks, work), prepare, s, path, b, dev, data_dir=data_dir))
        if train:
            say(f"{s.name} training step")
            phase("bench")
            blank = Row(model=s.name, kind="train", path="train", device=str(dev), dtype="-", batch_size=0)
            rows.append(_measured(blank, (min_time, peaks, work), prepare_train_step, s, device=dev))
    return result_of(rows, [], peaks, dev, min_time, weights, torch.get_num_threads())


def _row_label(row: Row) -> str:
    return "training step" if row.kind == "train" else f"{row.path} row at batch {row.batch_size}"


def _measured(blank: Row, how: tuple, prepare_row: Callable[..., Prepared], *args: Any, **kwargs: Any) -> Row:
    """The row `prepare_row(*args, **kwargs)` measures (`how`: measure's min_time, peaks and work); or
    `blank` with the reason it was skipped (the path cannot run here) or failed (our set-up, a
    `MnistArchError` that names the recipe field; or an exception from the forward pass or the measuring
    around it, reported as it was raised), so that one row that cannot run does not take the others with
    it. A model that exits or hangs still ends its worker."""
    min_time, peaks, work = how
    try:
        return measure(prepare_row(*args, **kwargs), min_time, peaks, work=work)
    except PathUnavailable as exc:
        return dataclasses.replace(blank, skipped=str(exc))
    except MnistArchError as exc:
        return dataclasses.replace(blank, error=str(exc))
    except Exception as exc:  # the model's forward pass or our measuring around it: not told apart, not blamed
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        return dataclasses.replace(blank, error=f"{type(exc).__name__}: {first}".rstrip(": "))


# ---------------------------------------------------------------------------------------------
# Renderers


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}".rstrip()
    return f"{x:.3g} {unit}".rstrip()


def _ips(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _peaks_line(peaks: Peaks | None) -> str:
    if peaks is None:
        return "peak not measured"
    n = peaks.matmul_size
    bf16 = _si(peaks.flops["bf16"], "FLOP/s") if "bf16" in peaks.flops else "not measured (no native bf16)"
    return (f"practical peak on {peaks.device}: {n}x{n} matmul fp32 {_si(peaks.flops['fp32'], 'FLOP/s')}, "
            f"bf16 {bf16}; copy {_si(peaks.bytes_per_s, 'B/s')}")


def to_json(result: BenchResult) -> str:
    return json.dumps(result.to_dict(), indent=2)


def to_table(result: BenchResult) -> str:
    m = result.meta
    lines = [f"{m['device_name']} ({m['device']}), {m['threads']} thread(s), torch {m['torch']}",
             _peaks_line(result.peaks),
             f"{'model':15} {'kind':7} {'path':22} {'batch':>5} {'images/s':>12} {'FLOP/s':>11} "
             f"{'of peak':>7} {'bound':15} {'max|dlogit|':>11} {'top-1 agree':>11}"]
    for r in result.rows:
        head = f"{r.model:15} {r.kind:7} {r.path:22} {r.batch_size:>5} "
        if r.skipped or r.error:
            lines.append(head + (f"skipped: {r.skipped}" if r.skipped else f"error: {r.error}"))
            continue
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}"
        agree = "-" if r.top1_agreement is None else f"{r.top1_agreement:.4f}"
        lines.append(head + f"{_ips(r.images_per_s):>12} {_si(r.flops_per_s):>11} {_pct(r.peak_fraction):>7} "
                     f"{r.bound or '-':15} {diff:>11} {agree:>11}")
    return "\n".join(lines)


def to_markdown(result: BenchResult) -> str:
    m = result.meta
    fwd = [r for r in result.rows if r.kind == "forward"]
    paths = list(dict.fromkeys(r.path for r in fwd))
    threads = f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}"
    lines = [f"Measured with `mnist-arch bench` on {m['device_name']} ({m['device']}, {threads}), "
             f"torch {m['torch']}; images/s are medians of calls repeated for at least {m['min_time_s']} s. "
             f"{_upper_first(_peaks_line(result.peaks))}.", ""]
    if fwd:
        lines += ["| model | batch | " + " | ".join(f"{p} img/s" for p in paths)
                  + " | fastest / eager | fastest path | its share of peak | its bound |",
                  "| --- | ---: | " + " | ".join("---:" for _ in paths) + " | ---: | --- | ---: | --- |"]
        for (model, b), group in _groups(fwd, lambda r: (r.model, r.batch_size)).items():
            by_path = {r.path: r for r in group}
            cells = [("error" if by_path[p].error else _ips(by_path[p].images_per_s)) if p in by_path else "-"
                     for p in paths]
            ran = [r for r in group if r.images_per_s is not None]
            best = max(ran, key=lambda r: r.images_per_s) if ran else None
            eager = by_path.get("eager")
            ratio = (f"{best.images_per_s / eager.images_per_s:.2f}x"
                     if best and eager and eager.images_per_s else "-")
            lines.append(f"| `{model}` | {b} | " + " | ".join(cells) + f" | {ratio} | "
                         f"{best.path if best else '-'} | {_pct(best.peak_fraction) if best else '-'} | "
                         f"{(best.bound or '-') if best else '-'} |")
        skipped = {(r.path, r.skipped) for r in fwd if r.skipped}
        lines += [f"\n`{p}` skipped: {why}" for p, why in sorted(skipped)]
        lines += [f"\n`{r.model}` `{r.path}` batch {r.batch_size} failed: {r.error}" for r in fwd if r.error]
        acc = [r for r in fwd if r.path != "eager" and r.max_abs_diff is not None]
        if acc:
            lines += ["", "Fast paths against eager fp32 (same weights, same batch, largest batch measured):", "",
                      "| model | path | batch | input | max abs output difference | top-1 agreement |",
                      "| --- | --- | ---: | --- | ---: | ---: |"]
            for (model, path), group in _groups(acc, lambda r: (r.model, r.path)).items():
                r = max(group, key=lambda r: r.batch_size)
                lines.append(f"| `{model}` | {path} | {r.batch_size} | {r.input} | {r.max_abs_diff:.2e} | "
                             f"{100 * r.top1_agreement:.2f}% |")
    train = [r for r in result.rows if r.kind == "train"]
    if train:
        lines += ["", "Training step (forward, backward, optimizer step; 3x forward FLOPs):", "",
                  "| model | batch | dtype | optimizer, loss, precision | images/s | of peak | bound |",
                  "| --- | ---: | --- | --- | ---: | ---: | --- |"]
        lines += [f"| `{r.model}` | {r.batch_size or '-'} | {r.dtype} | {r.note or '-'} | "
                  f"{'error' if r.error else _ips(r.images_per_s)} | {_pct(r.peak_fraction)} | {r.bound or '-'} |"
                  for r in train]
        lines += [f"\n`{r.model}` training step failed: {r.error}" for r in train if r.error]
    lines += ["", f"Bound: \"launch overhead\" where the largest batch runs >= {OVERHEAD_RATIO:g}x the images/s; "
              "else \"memory\" below the roofline ridge (peak FLOP/s / copy bandwidth), \"compute\" above it "
              "(see `mnist_arch/bench.py`)."]
    return "\n".join(lines) + "\n"


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _groups(rows: Iterable[Row], key: Callable[[Row], tuple]) -> dict[tuple, list[Row]]:
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


FORMATS: dict[str, Callable[[BenchResult], str]] = {"table": to_table, "json": to_json, "markdown": to_markdown}
