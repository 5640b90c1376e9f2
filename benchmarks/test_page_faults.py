"""Minor page faults of a training step, with glibc's defaults and after `machine.keep_freed_memory`
(docs/training.md, "Allocator"): each round is two fresh processes' worth of steps of a course-style network at
batch 128, one thread, counted by the kernel (getrusage). The medians of the rounds go to `extra_info`:

    pytest benchmarks/test_page_faults.py --benchmark-only --benchmark-columns=median -s

A count, not a time, and a noisy one: glibc adapts its mmap threshold to what was freed, so a process with its
defaults faults 30 to 12,000 times a step depending on the order of its first frees, and one that keeps its
freed memory 0 to 640 (2-core EPYC, torch 2.14.1). That is why it is measured here, over rounds, and not
asserted in a test (tests/test_speed_choices.py checks that the setting is made)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")

STEP = textwrap.dedent("""
    import json, resource, torch, torch.nn as nn, torch.nn.functional as F
    from mnist_arch.machine import keep_freed_memory
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 10, 3), nn.ReLU(), nn.BatchNorm2d(10), nn.Dropout(0.05),
                        nn.Conv2d(10, 18, 3), nn.ReLU(), nn.BatchNorm2d(18), nn.Dropout(0.05),
                        nn.Conv2d(18, 8, 1), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def faults(steps):
        for _ in range(3):
            F.cross_entropy(net(x), y).backward()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            F.cross_entropy(net(x), y).backward()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

    default = faults(10)
    note = keep_freed_memory()
    print(json.dumps({"default": default, "kept": faults(10), "note": note}))
""")


def _one() -> dict:
    proc = subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def test_page_faults_of_a_step(benchmark):
    if not benchmark.enabled:
        pytest.skip("fresh processes that import torch: run with --benchmark-only")
    runs: list[dict] = []
    benchmark.pedantic(lambda: runs.append(_one()), rounds=7, iterations=1)
    if not runs[0]["note"]:
        pytest.skip("not glibc: nothing is changed")
    default = statistics.median(r["default"] for r in runs)
    kept = statistics.median(r["kept"] for r in runs)
    benchmark.extra_info.update({"faults_per_step_default": default, "faults_per_step_kept": kept,
                                 "rounds": [[r["default"], r["kept"]] for r in runs]})
    print(f"\nminor page faults a step, median of {len(runs)} processes: {default:,.1f} with glibc's defaults, "
          f"{kept:,.1f} with freed memory kept")
