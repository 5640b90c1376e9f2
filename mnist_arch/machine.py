"""What this machine computes, and how many of its cores a run takes: the one home of the facts a recipe is
fitted to (docs/training.md has the measurements behind each rule).

- the device (`resolve_device`) and whether it computes bf16 natively (`native_bf16`), which `train.fit_recipe`
  reads to keep or drop a bf16 precision;
- the CPU threads of a training run (`choose_threads`), from its work per step, the cores this process may use
  and those idle now (`idle_cores`);
- glibc's allocator told to keep freed memory for the next step (`keep_freed_memory`).

Runs in a worker (it imports torch).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import time

import torch
import torch.nn as nn

from mnist_arch.errors import MnistArchError
from mnist_arch.runs import available_cores
from mnist_arch.spec import Recipe


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU. Asking for CUDA without it is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MnistArchError(f"Unknown device {device!r}; use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MnistArchError(
            f"Device {device!r} was asked for, but this PyTorch ({torch.__version__}) sees no CUDA device; "
            "use --device cpu, or --device auto to take CUDA only where it exists."
        )
    if dev.type not in ("cpu", "cuda"):
        raise MnistArchError(f"Device {device!r} is not supported; use auto, cpu or cuda.")
    return dev


#: CPU flags of the instructions that compute bf16 (`torch.cpu.get_capabilities()`, read from the hardware).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes bf16 natively. On a CPU: oneDNN says so (`_is_mkldnn_bf16_supported`, which
    honours ONEDNN_MAX_CPU_ISA) and the CPU has one of `BF16_CPU_FLAGS` (some oneDNN builds answer yes for any
    AVX-512 CPU and emulate bf16 there); without them bf16 is emulated, 3.8-20x slower than fp32 in issue 19's
    measurements (docs/training.md). On CUDA: compute capability 8.0 or newer (Ampere on)."""
    device = torch.device(device)
    if device.type == "cuda":  # asked about CUDA where there is none (the paths bench would take there): no
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch 2.5 and newer
    if capabilities is None:
        return onednn
    return onednn and any(capabilities().get(flag) for flag in BF16_CPU_FLAGS)


def hardware(device: torch.device) -> str:
    if device.type == "cpu":
        return f"this CPU ({torch.backends.cpu.get_cpu_capability()})"
    return f"this GPU ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"device {device}"


#: Forward multiply-accumulates per training step that justify one more CPU thread (see `choose_threads`).
MULT_ADDS_PER_THREAD = 1e9


def _step_mult_adds(model: nn.Module, recipe: Recipe, input_shape: tuple[int, ...]) -> int:
    """Forward multiply-accumulates of one training step (batch x one image's, torchinfo's convention;
    0 when unknown). The recorded pass leaves the model and the random number generators as they were,
    so a seed repeats its run whether or not the threads were chosen."""
    from mnist_arch.trace import count_mult_adds

    try:
        with torch.random.fork_rng(devices=[]):
            per_image = count_mult_adds(model, input_shape)
    except MnistArchError:  # the run itself will say what is wrong with the model
        return 0
    return recipe.batch_size * (per_image or 0)


def _cpu_ticks(stat: str, cpus: set[int]) -> dict[int, tuple[int, int]]:
    """{cpu: (idle, total) ticks} for those of `cpus` that the per-CPU lines of a /proc/stat text list."""
    ticks = {}
    for name, *fields in (line.split() for line in stat.splitlines() if line.strip()):
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            ticks[int(name[3:])] = (values[3] + values[4], sum(values))
    return ticks


def idle_cores(seconds: float = 0.2, stat: str = "/proc/stat") -> float | None:
    """How many of the cores this process may run on sat idle over the next `seconds`: the sum of their
    idle shares, from the per-CPU lines of /proc/stat (None where it lists none of them). Not the whole
    host's: on a large machine that lends this process two cores, the others' idleness is no room for a
    second thread. A core listed in only one of the two looks (brought online between them) is left out."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))

    def sample() -> dict[int, tuple[int, int]]:
        with open(stat) as f:
            return _cpu_ticks(f.read(), cpus)

    try:
        before = sample()
        time.sleep(seconds)
        after = sample()
    except (OSError, ValueError, IndexError):
        return None
    shares = [(after[cpu][0] - before[cpu][0]) / (after[cpu][1] - before[cpu][1])
              for cpu in before.keys() & after.keys() if after[cpu][1] > before[cpu][1]]
    return sum(shares) if shares else None


def choose_threads(model: nn.Module, recipe: Recipe, input_shape: tuple[int, ...] = (1, 28, 28),
                   idle: bool = True) -> int:
    """CPU threads for a training run: the one place this is decided (docs/training.md has the measurements).

    1. One thread per MULT_ADDS_PER_THREAD of forward work in a step (batch x one image's; unknown
       work, say a matmul the count does not cover, gets one thread),
    2. at most the cores this process may use, shared out among pytest-xdist workers (OMP_NUM_THREADS,
       where set, caps it),
    3. one thread unless OpenMP's waiting threads sleep (OMP_WAIT_POLICY=PASSIVE, which the command line
       sets before torch loads, in its own process and its workers),
    4. and, where that still leaves more than one, no more than the cores found idle right now.

    Why, measured on the 2-core CI machine: a second thread buys nothing for the small networks (their
    convolutions are a few channels wide) and 1.5-1.7x for `wide_cnn` and `parallel_cnn`. Beside one
    busy process, spinning OpenMP threads wait at every barrier for a thread that is not running (2.6-3.3x
    slower); sleeping ones still lose 1.7-2.6x, while one thread loses nothing: so a run that finds a core
    taken keeps to one thread.
    """
    available = available_cores()
    if available <= 1 or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        return 1
    wanted = max(1, min(available, int(_step_mult_adds(model, recipe, input_shape) // MULT_ADDS_PER_THREAD)))
    if wanted > 1 and idle:  # rule 4, unless the caller reserves the cores (`remote.seed_threads`)
        found = idle_cores()
        if found is not None:
            wanted = max(1, min(wanted, int(found + 0.5)))
    return wanted


#: glibc's mallopt parameters, and what `keep_freed_memory` sets them to.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES, HEAP_BELOW_BYTES = 256 << 20, 32 << 20


@functools.cache
def keep_freed_memory() -> str:
    """Have glibc's allocator keep freed memory for reuse in this process, not hand it back to the kernel: the
    choice in words for a run's setting, "" where the C library is not glibc (nothing is changed there).

    A training step allocates and frees the same activations every step. With glibc's defaults, blocks above
    its (adaptive) mmap threshold are mapped and unmapped each time, and freed memory at the top of the heap
    is trimmed: every step then faults its pages in again, which the kernel zeroes (2,000-10,000 page
    faults and 5-17 ms of system time in a 60 ms step of a course-style network on one thread, docs/training.md).
    From the first run on, blocks under HEAP_BELOW_BYTES come from the heap and up to KEEP_FREED_BYTES of
    freed heap is kept: no faults after the first steps. Process-wide and for the process's lifetime (glibc
    has no way back to its adaptive threshold); a training process, which the command line's worker is."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
    except OSError:
        return ""
    if not hasattr(libc, "gnu_get_libc_version"):  # not glibc (musl's mallopt does nothing)
        return ""
    if (libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BELOW_BYTES) != 1
            or libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) != 1):
        return ""
    return ", freed memory kept for reuse (glibc)"
