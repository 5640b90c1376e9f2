"""The distance to the machine's limit: the arithmetic of work, traffic and peaks, and what bounds a row.

Plain arithmetic on plain records, no torch: the parent classifies the rows its workers measured and prints
them without importing torch (`mnist_arch.bench_results`). The peaks themselves are measured in a worker
(`mnist_arch.bench_timing.measure_peaks`); the work of a model is counted there too
(`mnist_arch.bench_timing.work_per_image`).

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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mnist_arch.bench_results import Row

OVERHEAD_RATIO = 2.0  # see the module docstring, rule 1
BOUNDS = ("compute", "memory", "launch overhead")


@dataclass
class Peaks:
    """The machine's practical peak (`bench_timing.measure_peaks`)."""

    device: str
    flops: dict[str, float]  # dtype -> FLOP/s of a large square matmul (no "bf16" where it is not native)
    bytes_per_s: float  # tensor copy: bytes read + bytes written per second
    matmul_size: int
    copy_bytes: int


def achieved_flops(mult_adds: int | None, images_per_s: float | None, factor: float = 1.0) -> float | None:
    """FLOP/s: 2 FLOPs per mult-add, x `factor` (3 for a training step), x images/s."""
    if mult_adds is None or images_per_s is None:
        return None
    return 2.0 * mult_adds * images_per_s * factor


def traffic_bytes(params: int, input_elems: int, act_elems: int, batch_size: int, dtype: str) -> int:
    """Bytes one forward call moves in the roofline rule of the module docstring."""
    size = 2 if dtype == "bf16" else 4
    return size * (params + batch_size * (input_elems + 2 * act_elems))


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
