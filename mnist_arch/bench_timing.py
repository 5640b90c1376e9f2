"""Timing: a prepared path measured into its row, and the machine's practical peak measured the same way.

`time_callable`: calls until `warmup` seconds have passed (at least one), then timed calls until `min_time`
seconds have passed and at least `min_rounds` calls were made; images/s is the batch size over the median call
time. `measure` fills a row from a `bench_prepare.Prepared` callable: the work per image (`work_per_image`), the
achieved FLOP/s and the fraction of the peak (`mnist_arch.roofline`), and the accuracy of a fast path.

Accuracy of a fast path (`compare_to_eager`): the same input batch through the eager fp32 copy of the model
(same weights); we report the largest absolute difference of the outputs (logits, or log-probabilities for
models ending in LogSoftmax) and the fraction of images whose top-1 class agrees. With random-init weights the
logits are close together, so agreement there is a pessimistic figure (trained weights give more meaningful
agreement).

The peak (`measure_peaks`): a square matmul (2048 on the CPU, 8192 on CUDA) in fp32 and, where the device
computes it natively, in bf16, and the bandwidth of a large tensor copy.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from mnist_arch.bench_prepare import Prepared, build
from mnist_arch.bench_results import Row
from mnist_arch.errors import MnistArchError
from mnist_arch.machine import native_bf16, resolve_device
from mnist_arch.roofline import Peaks, achieved_flops, traffic_bytes
from mnist_arch.trace import example_input


@dataclass
class Timing:
    """Seconds per call of a timed callable: the median, the fastest, and how many calls were timed."""

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


@functools.lru_cache(maxsize=32)
def registered_work(name: str) -> tuple[int | None, int, int, int]:
    """`work_per_image` of a registered model, computed once per process."""
    model, _, shape, _ = build(name, 0)
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
    """The machine's practical peak on `device`: matmul FLOP/s per dtype (bf16 only where native) and copy
    bandwidth (see the module docstring)."""
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
