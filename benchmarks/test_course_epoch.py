"""One epoch of a course-style model: the course pipeline against our trainer, side by side (issue 27, "Fast").

The course side is `course_pipeline.course_epoch`: `CourseNet` (7,926 parameters: batch norm, dropout, a 1x1
transition, global average pooling), torchvision's MNIST in a DataLoader with RandomRotation(7), ToTensor and
Normalize per sample, SGD at 0.01 with momentum 0.9, batch 128, eager fp32, then the whole test set. Ours is
`mnist_arch.train.train_model` with the same recipe (SGD, momentum 0.9, batch 128, rotation of up to 7 degrees
on the device, NLL loss, fp32) on the same network from the same seed, the whole test set evaluated at the end
of the epoch. Both at the same thread count, in the same process, alternating in each round (the course
pipeline first); each side's seconds run from its first batch to its last prediction (ours: the whole
`train_model` call, set-up included). The figure is course / ours per round, wall time and CPU time (CPU time
is the steadier one on a shared machine: it leaves out the time other processes took; at one thread it is the
wall time of a quiet machine). Issue 27's target: at least 3x. They train for minutes, so they run only with
real timing; plain `pytest` runs the network check below only:

    pytest benchmarks/test_course_epoch.py --benchmark-only -s
    pytest benchmarks/test_course_epoch.py --benchmark-only -s -k "threads1"   # one thread only

`COURSE_EPOCH_ROUNDS` sets the rounds (default 2). Each line names the CPU (`get_cpu_capability()`, oneDNN's bf16
answer) and the trainer's setting (what it chose for this machine).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch
import torch.nn as nn
from cores_busy import cpu_line as machine_line  # benchmarks/cores_busy.py
from course_pipeline import (  # benchmarks/course_pipeline.py
    COURSE_BATCH,
    COURSE_DEGREES,
    COURSE_LR,
    COURSE_MOMENTUM,
    CourseNet,
    course_epoch,
)

from mnist_arch.data import load_mnist
from mnist_arch.spec import Augment, Recipe
from mnist_arch.train import RunOptions, train_model

ROUNDS = int(os.environ.get("COURSE_EPOCH_ROUNDS", 2))
TARGET = 3.0
#: The course recipe in our terms. Every field a course repository sets is here; the layout, the threads and
#: the allocator are left to the trainer, as they are for a user's recipe.
RECIPE = Recipe(epochs=1, batch_size=COURSE_BATCH, optimizer="sgd", lr=COURSE_LR,
                optimizer_kwargs={"momentum": COURSE_MOMENTUM}, loss="nll", augment=Augment(degrees=COURSE_DEGREES),
                normalize=(0.1307, 0.3081), precision="fp32", min_accuracy=0.95)


def cpu_line(threads: int) -> str:
    return f"{machine_line()}, {threads} thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}"


def ours_epoch(root, seed: int, threads: int) -> dict:
    data = load_mnist(root)
    torch.manual_seed(seed)
    model = CourseNet()
    started, cpu = time.perf_counter(), time.process_time()
    result = train_model(model, RECIPE, data, RunOptions(seed=seed, threads=threads))
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
            "test_accuracy": result.test_accuracy, "setting": result.setting, "threads": result.threads}


def _course(root, seed: int, threads: int) -> dict:
    cpu = time.process_time()
    out = course_epoch(str(root), seed, threads)
    return {**out, "cpu_seconds": time.process_time() - cpu}  # its data set-up (under a second) included


def test_course_net_is_the_issues_model():
    """The course-style network issue 27 describes: 7-8k parameters, batch norm, dropout, a 1x1 transition,
    global average pooling, log_softmax output."""
    model = CourseNet()
    kinds = {type(m) for m in model.modules()}
    assert 7_000 <= sum(p.numel() for p in model.parameters()) <= 8_000
    assert {nn.BatchNorm2d, nn.Dropout, nn.AdaptiveAvgPool2d, nn.MaxPool2d} <= kinds
    assert any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.allclose(out.exp().sum(1), torch.ones(2))


@pytest.mark.benchmark(group="course-epoch")
@pytest.mark.parametrize("threads", sorted({1, torch.get_num_threads()}), ids=lambda t: f"threads{t}")
def test_course_epoch_against_ours(benchmark, mnist_root, threads):
    if benchmark.disabled:
        pytest.skip("an epoch takes minutes on a CPU; run with --benchmark-only")
    rounds: list[tuple[dict, dict]] = []
    previous = torch.get_num_threads()

    def one_round() -> None:  # side by side: the course pipeline, then ours, same seed, same threads
        seed = len(rounds)
        course = _course(mnist_root, seed, threads)
        rounds.append((course, ours_epoch(mnist_root, seed, threads)))

    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    finally:
        torch.set_num_threads(previous)
    print(f"\n{cpu_line(threads)}; trainer's setting: {rounds[0][1]['setting']}")
    for i, (course, ours) in enumerate(rounds, 1):
        print(f"round {i}: course pipeline {course['seconds']:.1f} s ({course['cpu_seconds']:.1f} s CPU, "
              f"{course['test_accuracy']:.2%}), ours {ours['seconds']:.1f} s ({ours['cpu_seconds']:.1f} s CPU, "
              f"{ours['test_accuracy']:.2%}): {course['seconds'] / ours['seconds']:.2f}x wall, "
              f"{course['cpu_seconds'] / ours['cpu_seconds']:.2f}x CPU time")
    wall = statistics.median(c["seconds"] / o["seconds"] for c, o in rounds)
    cpu = statistics.median(c["cpu_seconds"] / o["cpu_seconds"] for c, o in rounds)
    print(f"median of {len(rounds)} round(s): {wall:.2f}x wall, {cpu:.2f}x CPU time (target {TARGET:.0f}x)")
    benchmark.extra_info.update(
        cpu=cpu_line(threads), setting=rounds[0][1]["setting"], threads=threads,
        course_seconds=[round(c["seconds"], 2) for c, _ in rounds],
        ours_seconds=[round(o["seconds"], 2) for _, o in rounds],
        course_cpu_seconds=[round(c["cpu_seconds"], 2) for c, _ in rounds],
        ours_cpu_seconds=[round(o["cpu_seconds"], 2) for _, o in rounds],
        course_accuracy=[c["test_accuracy"] for c, _ in rounds], ours_accuracy=[o["test_accuracy"] for _, o in rounds],
        ratio_wall=round(wall, 2), ratio_cpu=round(cpu, 2), target=TARGET)
    # Both sides trained (a fast epoch that learned nothing would be no comparison); the ratio is recorded,
    # not asserted: a shared machine's figure is the lead's to read.
    assert all(c["test_accuracy"] >= RECIPE.min_accuracy and o["test_accuracy"] >= RECIPE.min_accuracy
               for c, o in rounds)
