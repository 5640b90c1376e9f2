"""Throughput benchmarks (pytest-benchmark): every registered architecture x batch size x inference
path, one training step per architecture, and the machine's practical peak (a large matmul).

The bodies are the prepared callables of `mnist_arch.bench_prepare` and `mnist_arch.train_step`, the very
ones `mnist-arch bench` times; CUDA calls end with `torch.cuda.synchronize()`, so the timer measures kernels.
Groups are architectures (plus "peak"); `extra_info` carries params, mult_adds, batch_size, device, dtype,
path, torch and images_per_s, so `--benchmark-json` is a throughput table.

Real timings:

    pytest benchmarks --benchmark-enable --benchmark-only --benchmark-json bench.json

pyproject's addopts carry --benchmark-disable, and pytest-benchmark refuses --benchmark-only next to
--benchmark-disable (a UsageError) unless --benchmark-enable overrides it.

Plain `pytest` (benchmarks disabled) runs each body once as a smoke test. That must stay cheap:
parallel_cnn alone is 178M mult-adds per image, so one call at batch 1024 is 364 GFLOP, several seconds
on two cores. Smoke runs therefore cap the batch at SMOKE_BATCH, use one thread, and skip `compile`
(compiling takes 5-40 s per model and batch size on a 2-core CPU).

Which models are compiled: micro_cnn and bn_dropout_cnn only. They are the small BatchNorm nets whose
eager time is many small ops, where fusing conv+BN+ReLU can pay; wide_cnn and parallel_cnn spend their
time in large convolutions and GEMMs that run in the same oneDNN/cuBLAS kernels compiled or not, and
compiling them per batch size would cost minutes of the run. `mnist-arch bench --paths compile`
measures any model.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from mnist_arch import bench_prepare, bench_timing, train_step
from mnist_arch.machine import native_bf16
from mnist_arch.registry import list_models

MODELS = list_models()
BATCH_SIZES = (1, 64, 1024)
COMPILE_MODELS = ("micro_cnn", "bn_dropout_cnn")
SMOKE_BATCH = 2
NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]

# Rounds: about TARGET_S of timed calls, between MIN_ROUNDS and MAX_ROUNDS, from one or two timed
# warm-up calls: the run's length then follows the machine's real speed (a loaded 2-core CPU can be
# 100x slower than an estimate), and parallel_cnn at batch 1024 costs 1 + 3 calls, not 200.
TARGET_S = 1.0
MIN_ROUNDS, MAX_ROUNDS = 3, 1000


def calibrate_rounds(fn) -> int:
    """Warm `fn` up and return the number of rounds that fills TARGET_S."""
    seconds = 0.0
    for _ in range(2):  # the first call may include one-off costs (oneDNN primitive creation)
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        if seconds >= TARGET_S / MIN_ROUNDS:
            break
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(TARGET_S / seconds)))


@pytest.fixture
def smoke(benchmark) -> bool:
    """True when benchmarks are disabled (plain `pytest`, xdist): one thread for the single call,
    because two OpenMP threads on a loaded 2-core machine spin at every barrier."""
    if not benchmark.disabled:
        yield False
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield True
    torch.set_num_threads(threads)


def _run(benchmark, fn, *, batch_size: int, info: dict) -> None:
    benchmark.extra_info.update(info, torch=torch.__version__, threads=torch.get_num_threads())
    rounds = 1 if benchmark.disabled else calibrate_rounds(fn)
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    if benchmark.stats is not None:  # None when disabled
        benchmark.extra_info["images_per_s"] = batch_size / benchmark.stats.stats.median


def _forward_cases():
    for device in ("cpu", "cuda"):
        marks = [NO_CUDA] if device == "cuda" else []
        for name in MODELS:
            for path in bench_prepare.default_paths(device):
                if path == "compile" and name not in COMPILE_MODELS:
                    continue
                for b in BATCH_SIZES:
                    yield pytest.param(device, name, path, b, marks=marks, id=f"{device}-{name}-{path}-{b}")


@pytest.mark.parametrize("device, name, path, batch_size", list(_forward_cases()))
def test_forward(benchmark, smoke, device, name, path, batch_size):
    if smoke and path == "compile":
        pytest.skip("compile is timed with --benchmark-enable only: compiling takes 5-40 s per model "
                    "and batch size on a 2-core CPU")
    batch_size = min(batch_size, SMOKE_BATCH) if smoke else batch_size
    try:
        prepared = bench_prepare.prepare(name, path, batch_size, device)
    except bench_prepare.PathUnavailable as exc:
        pytest.skip(str(exc))
    mult_adds, params, _, _ = bench_timing.registered_work(name)
    benchmark.group = name
    _run(benchmark, prepared, batch_size=batch_size,
         info={"kind": "forward", "params": params, "mult_adds": mult_adds, "batch_size": batch_size,
               "device": device, "dtype": prepared.dtype, "path": path, "setup_s": prepared.setup_s})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_train_step(benchmark, smoke, device, name):
    prepared = train_step.prepare_train_step(name, SMOKE_BATCH if smoke else None, device)
    mult_adds, params, _, _ = bench_timing.registered_work(name)
    benchmark.group = name
    b = prepared.batch_size
    _run(benchmark, prepared, batch_size=b,
         info={"kind": "train", "params": params, "mult_adds": mult_adds, "batch_size": b, "device": device,
               "dtype": prepared.dtype, "path": "train", **prepared.extra})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_peak_matmul(benchmark, smoke, device, dtype):
    if dtype == "bf16" and not smoke and not native_bf16(device):
        pytest.skip(f"no native bf16 on this {device}: emulated, one 2048x2048 matmul takes about a minute")
    n = 64 if smoke else (8192 if device == "cuda" else 2048)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    fn = bench_timing.matmul_callable(n, dtypes[dtype], torch.device(device))
    benchmark.group = "peak"
    benchmark.extra_info.update(kind="peak", matmul_size=n, device=device, dtype=dtype, torch=torch.__version__,
                                threads=torch.get_num_threads())
    benchmark.pedantic(fn, rounds=1 if smoke else calibrate_rounds(fn), iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["flops_per_s"] = 2 * n**3 / benchmark.stats.stats.median
