"""What crosses the wall: a declared model and one request per job, carried whole to a worker.

The parent side (`mnist_arch.jobs`) builds a request and sends it; the worker side (`mnist_arch.remote`) takes it
whole. Plain frozen dataclasses, pickled on the pipe: no torch, nothing of either side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError
from mnist_arch.paths import is_file_target
from mnist_arch.roofline import Peaks
from mnist_arch.spec import Recipe, Spec

if TYPE_CHECKING:
    from mnist_arch.bench_results import SetUp


def _here(request: Any, *fields: str) -> None:
    """The request's file and folder fields made absolute where it is built (the command's folder): a model's worker
    runs in the project's folder, which may be above it, so a relative path would be read or written there."""
    for name in fields:
        value = getattr(request, name)
        if value is None:
            continue
        if not str(value).strip():
            raise MnistArchError(f"An empty path was given for {name.replace('_', ' ')} (--{name.replace('_', '-')}): "
                                 "name a file or folder. Nothing was run.")
        object.__setattr__(request, name, str(Path(os.path.expanduser(value)).absolute()))


@dataclass(frozen=True)
class Declared:
    """One declared model: a name, a builder (a loader target), a spec with its recipes, wherever it was declared
    (a `[tool.mnist-arch]` table, our registry, --model)."""

    name: str
    target: str  # PATH.py:ATTR with an absolute path, or package.module:ATTR
    spec: Spec  # with its recipes ("quick", "full", "rule")
    source: str  # where it was declared, for messages
    loss: str | None = None  # the training loss the declaration names; None: it follows the model's output
    line: int = 0  # 0-based line of its table in pyproject.toml
    error: str | None = None  # why the declaration is invalid: judging it reports this, the others still run
    folder: Path | None = None  # where package.module targets import from (default: the project's folder)

    @property
    def model_folder(self) -> Path | None:
        source = self.target.rpartition(":")[0]
        return Path(source).parent if is_file_target(source) else None


def training_recipe(model: Declared, recipe_name: str, final_activation: str | None) -> Recipe:
    """The recipe to train with. Where the declaration names no loss, the loss follows the model's
    output: NLL for log-softmax, cross-entropy for logits (and for softmax, which the lint reports)."""
    recipe = model.spec.recipes[recipe_name]
    if model.loss is None:
        recipe = replace(recipe, loss="nll" if final_activation == "log_softmax" else "cross_entropy")
    return recipe


@dataclass(frozen=True)
class CheckRequest:
    """Judge a declared model against its spec, with `changes` to the spec (`remote.check`)."""

    model: Declared
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SummaryRequest:
    """A declared model's layer table for an input shape (`remote.summary`)."""

    model: Declared
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TrainRequest:
    """One seeded training run of a declared model's recipe (`remote.train`); with `seed_threads`, only the threads
    such a run takes alone (`remote.seed_threads`)."""

    model: Declared
    recipe_name: str = "quick"
    final_activation: str | None = None  # the model's output: the loss follows it (`training_recipe`)
    seed: int = 0
    epochs: int | None = None  # the recipe's unless given
    device: str = "auto"
    time_budget: float | None = None
    data_dir: str | None = None  # the folder holding MNIST/raw/ (`paths.mnist_root`)
    plots: str | None = None  # a folder for the PNGs
    save: str | None = None  # a checkpoint path
    threads: int | None = None  # CPU threads (default: machine.choose_threads)
    estimate_runs: int = 1  # the runs (seeds) its estimate covers, this one and those after it; 0: no estimate
    estimate_at_once: int = 1  # of those runs, how many run side by side
    epoch_records: bool = False  # a `tune` trial: also send the worker's pid and each `runs.Epoch` (the pruner's)

    def __post_init__(self) -> None:
        _here(self, "data_dir", "plots", "save")


#: The note a `tune` trial's worker sends just before its run fails in a way no recipe can fix (`remote.trial`): the
#: study stops at that trial with its error, instead of running the next recipes into the same one.
NO_RECIPE_FIXES = ("no recipe fixes it",)


@dataclass(frozen=True)
class ForwardRequest:
    """Prepare a declared model's eager forward pass on a fixed batch, as `bench` times it (`remote.load_for_forward`,
    then `remote.run_forwards`): the plugin's forward benchmarks."""

    model: Declared
    batch_size: int


@dataclass(frozen=True)
class BenchRequest:
    """`mnist-arch bench`: what to measure and how. The parent (`jobs.bench_project`) sends it whole to a set-up
    worker of its own (`remote.bench_checkpoint`: the model a checkpoint's weights belong to; `remote.bench_setup`:
    the threads, the device, the paths and the machine's peak), then, with `model` and what the set-up found
    (`measured_with`), to each declared model's worker in turn (`remote.bench`). `bench.run_benchmarks` takes it
    in one process."""

    model: Declared | None = None  # the model a worker measures (`measured_with`)
    batch_sizes: tuple[int, ...] | None = None  # default: the project's bench_batch_sizes, else bench_results'
    paths: tuple[str, ...] | None = None  # default: the device's (`bench_prepare.default_paths`)
    device: str = "auto"
    min_time: float = 0.5  # seconds each row is timed for, at least
    train: bool = False  # also a training step per model
    data_dir: str | None = None  # the folder holding MNIST/raw/: its test images are the accuracy batch
    weights: str | None = None  # a checkpoint (`mnist-arch train --save`), loaded into the model it belongs to
    threads: int | None = None  # torch CPU threads of the set-up and of every model's worker (default: torch's)
    measure_peak: bool = True
    peaks: Peaks | None = None  # the machine's peak, as the set-up measured it
    matmul_size: int | None = None  # the peak's square matmul (default: the device's, `bench_timing.measure_peaks`)
    copy_bytes: int | None = None  # the peak's tensor copy (default: the device's)

    def __post_init__(self) -> None:
        _here(self, "data_dir", "weights")

    def measured_with(self, setup: SetUp, model: Declared | None = None) -> BenchRequest:
        """This request as a model's worker runs it: on the device, paths, threads and peak the set-up found,
        with the checkpoint only for the model it belongs to."""
        weights = setup.weights.get(model.name) if model is not None else None
        return replace(self, model=model, device=setup.device, paths=setup.paths, threads=setup.threads,
                       peaks=setup.peaks, weights=weights)
