"""Training speed of every architecture's quick recipe, as a share of the machine's measured peak.

The body is the trainer's own step (`mnist_arch.train.train_step`, set up by `make_step` of
benchmarks/train_step.py: index a batch of the uint8 images, normalise, forward at the recipe's precision
and memory layout, loss, backward, fused optimizer step), run
at the thread count the trainer chooses for that recipe (`mnist_arch.machine.choose_threads`). The peak is
`mnist_arch.bench_timing.measure_peaks` (a 2048x2048 matmul in the recipe's compute dtype) at the same thread
count; a training step counts as 3x the forward mult-adds, 2 FLOPs each. `extra_info` carries images/s, FLOP/s,
the peak and the share; `-s` prints one line per model:

    pytest benchmarks/test_training_speed.py --benchmark-only -s

Plain `pytest` (benchmarks disabled) runs one step per model at batch 2 as a smoke test.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from train_step import make_step  # benchmarks/train_step.py: the same step its profile and speed commands time

from mnist_arch import bench_timing, get_spec, list_models, roofline
from mnist_arch.train import fit_recipe

MODELS = list_models()
TARGET_S = 2.0  # timed seconds per model, at least MIN_ROUNDS steps
MIN_ROUNDS = 5


@pytest.fixture(scope="module")
def peaks():
    """bench_timing.measure_peaks at a given thread count, measured once per count."""
    measured: dict[int, roofline.Peaks] = {}

    def at(threads: int) -> roofline.Peaks:
        if threads not in measured:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                measured[threads] = bench_timing.measure_peaks("cpu", min_time=1.0)
            finally:
                torch.set_num_threads(previous)
        return measured[threads]

    return at


@pytest.mark.benchmark(group="training-speed")
@pytest.mark.parametrize("name", MODELS)
def test_quick_training_step(benchmark, peaks, mnist_root, name):
    recipe, setting = fit_recipe(get_spec(name).recipes["quick"])  # as it trains on this CPU
    previous = torch.get_num_threads()
    try:
        # The trainer's thread choice and the recipe's batch when timing; one thread and batch 2 for the smoke
        # run. make_step sets the threads and takes the first steps (optimizer state, oneDNN primitives) untimed.
        step, batch_size, threads, _ = make_step(name, threads=None if benchmark.enabled else 1,
                                                 batch_size=None if benchmark.enabled else 2, data_dir=str(mnist_root))
        rounds = 1
        if benchmark.enabled:
            started = time.perf_counter()
            step()
            rounds = max(MIN_ROUNDS, math.ceil(TARGET_S / (time.perf_counter() - started)))
        benchmark.pedantic(step, rounds=rounds, iterations=1)
    finally:
        torch.set_num_threads(previous)
    benchmark.extra_info.update(kind="train-quick", batch_size=batch_size, threads=threads, dtype=recipe.precision,
                                setting=setting,
                                channels_last=recipe.channels_last, optimizer=recipe.optimizer, torch=torch.__version__)
    if benchmark.stats is None:  # disabled: the smoke run is done
        return
    mult_adds = bench_timing.registered_work(name)[0]
    benchmark.extra_info["mult_adds"] = mult_adds
    images_per_s = batch_size / benchmark.stats.stats.median
    flops = roofline.achieved_flops(mult_adds, images_per_s, factor=3)
    dtype = recipe.compute_dtype
    peak = peaks(threads).flops[dtype]
    benchmark.extra_info.update(images_per_s=round(images_per_s), flops_per_s=flops, peak_flops_per_s=peak,
                                share_of_peak=round(flops / peak, 4))
    print(f"\n{name}: {images_per_s:,.0f} training images/s (batch {batch_size}, {setting}"
          f"{', channels_last' if recipe.channels_last else ''}, {threads} thread(s)) = {flops / 1e9:.1f} GFLOP/s, "
          f"{flops / peak:.1%} of the {dtype} matmul peak at {threads} thread(s) ({peak / 1e9:.0f} GFLOP/s)")
