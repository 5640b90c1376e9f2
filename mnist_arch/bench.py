"""Forward and training throughput, fast inference paths, and the distance to the machine's limit: a run's
set-up and the run itself.

As pytest-benchmark splits its files, the benchmark is split by job:
- `mnist_arch.bench_prepare`: a model as a `Subject`, and `prepare`, which turns (model, path, batch size,
  device) into a `Prepared` callable running one forward pass on a static input (the paths are described there);
- `mnist_arch.train_step`: the same for one training step, the trainer's own;
- `mnist_arch.bench_timing`: timing a prepared callable into its row (`measure`), its accuracy against eager
  fp32, its work per image, and the machine's practical peak (`measure_peaks`);
- `mnist_arch.roofline`: the arithmetic of work, traffic and peaks, and what bounds a row (`classify`);
- `mnist_arch.bench_results`: the rows and the run's result as plain data, and their table, JSON and Markdown,
  with no torch, so that the parent prints them without it;
- this module: the set-up (`set_up`: the threads, the device, the paths, the peak) and the run
  (`measure_subject`: every row of one model; `run_benchmarks`: the whole run in this process).

`mnist-arch bench` over the declared models of a project is `mnist_arch.jobs.bench_project`, with every step
behind the wall: the set-up in a worker of its own (`remote.bench_checkpoint`, `remote.bench_setup`), then each
model built and measured by `measure_subject` in its own worker (`remote.bench`), one after another with the
same threads, so a user's model that exits, prints or hangs cannot reach the report. Each takes the run's
`work.BenchRequest` whole.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from mnist_arch.bench_prepare import PathUnavailable, Prepared, Subject, default_paths, prepare, subject
from mnist_arch.bench_results import BATCH_SIZES, BenchResult, Row, SetUp, parse_path, result_of
from mnist_arch.bench_timing import measure, measure_peaks, work_per_image
from mnist_arch.channel import phase
from mnist_arch.errors import MnistArchError
from mnist_arch.machine import native_bf16, resolve_device
from mnist_arch.train_step import prepare_train_step
from mnist_arch.work import BenchRequest


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def checkpoint_weights(weights: str | None) -> dict[str, str]:
    """{the model a checkpoint's weights belong to: the checkpoint} (`mnist-arch train --save`); {} for none."""
    if weights is None:
        return {}
    from mnist_arch.checkpoint import load_checkpoint

    return {load_checkpoint(weights)["model"]: weights}


def set_up(request: BenchRequest, say: Callable[[str], None]) -> SetUp:
    """What every benchmark run sets up first, in the process that measures the peak: the torch threads (the
    request's, else this process's), the device, the paths (the device's defaults unless given) and the
    machine's practical peak (the request's; else measured unless `measure_peak` is off). The checkpoint's
    model is the caller's to add (`checkpoint_weights`)."""
    if request.threads:
        torch.set_num_threads(request.threads)
    dev = resolve_device(request.device)
    paths = tuple(parse_path(p) for p in (request.paths or default_paths(dev)))
    peaks = request.peaks
    if peaks is None and request.measure_peak:
        say(f"peak: matmul {'fp32/bf16' if native_bf16(dev) else 'fp32'} and copy bandwidth on {dev}")
        peaks = measure_peaks(dev, min_time=request.min_time, matmul_size=request.matmul_size,
                              copy_bytes=request.copy_bytes)
        if dev.type == "cuda":
            torch.cuda.empty_cache()  # workers that measure models need the memory the peak's tensors held
    return SetUp(str(dev), paths, torch.get_num_threads(), peaks, device_name(dev), str(torch.__version__),
                 bool(torch.backends.cudnn.allow_tf32) if dev.type == "cuda" else None)


def run_benchmarks(models: Sequence[str | Subject], request: BenchRequest | None = None,
                   progress: Callable[[str], None] | None = None) -> BenchResult:
    """In this process: the set-up (`set_up`: the peak unless the request carries it or `measure_peak` is off),
    then every row of each model (`measure_subject`). `models` are registered names or built `Subject`s,
    measured by the same code whatever their source; the request's `weights`, a checkpoint of trained weights
    (`mnist-arch train --save`), go to the registered model they belong to. Batch sizes default to
    `BATCH_SIZES`. A user's model is measured behind the wall instead: `mnist_arch.jobs.bench_project`."""
    request = request or BenchRequest()
    weights = checkpoint_weights(request.weights)
    # an unknown name or a wrong checkpoint fails now, not after the peak measurement
    subjects = [subject(m, 0, weights.get(m) if isinstance(m, str) else None) for m in models]
    say = progress or (lambda _msg: None)
    setup = dataclasses.replace(set_up(request, say), weights=weights)
    request = dataclasses.replace(request.measured_with(setup), batch_sizes=request.batch_sizes or BATCH_SIZES)
    rows = [row for s in subjects for row in measure_subject(s, request, say)]
    return result_of(rows, [], setup, request.min_time)


def measure_subject(s: Subject, request: BenchRequest, say: Callable[[str], None]) -> list[Row]:
    """Every (path, batch size) forward row of one model, then (with `train`) its training row, on the device,
    paths and peak the request carries (`BenchRequest.measured_with`); rows whose path cannot run here are kept
    with the reason in `skipped`, rows that fail with theirs in `error`."""
    dev = resolve_device(request.device)
    phase("bench")
    work = work_per_image(copy.deepcopy(s.module), s.input_shape)
    rows: list[Row] = []
    for path in request.paths or default_paths(dev):
        for b in request.batch_sizes or BATCH_SIZES:
            say(f"{s.name} {path} batch {b}")
            phase("bench")  # each row has the whole time limit (compiling can take a while)
            blank = Row(model=s.name, kind="forward", path=path, device=str(dev),
                        dtype="bf16" if "bf16" in path else "fp32", batch_size=b)
            rows.append(_measured(blank, lambda p=path, b=b: prepare(s, p, b, dev, data_dir=request.data_dir),
                                  request, work))
    if request.train:
        say(f"{s.name} training step")
        phase("bench")
        blank = Row(model=s.name, kind="train", path="train", device=str(dev), dtype="-", batch_size=0)
        rows.append(_measured(blank, lambda: prepare_train_step(s, device=dev), request, work))
    return rows


def _measured(blank: Row, prepare_row: Callable[[], Prepared], request: BenchRequest, work: tuple) -> Row:
    """The row `prepare_row()` measures (with the request's min_time and peaks, and the model's work); or
    `blank` with the reason it was skipped (the path cannot run here) or failed (our set-up, a
    `MnistArchError` that names the recipe field; or an exception from the forward pass or the measuring
    around it, reported as it was raised), so that one row that cannot run does not take the others with
    it. A model that exits or hangs still ends its worker."""
    try:
        return measure(prepare_row(), request.min_time, request.peaks, work=work)
    except PathUnavailable as exc:
        return dataclasses.replace(blank, skipped=str(exc))
    except MnistArchError as exc:
        return dataclasses.replace(blank, error=str(exc))
    except Exception as exc:  # the model's forward pass or our measuring around it: not told apart, not blamed
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        return dataclasses.replace(blank, error=f"{type(exc).__name__}: {first}".rstrip(": "))
