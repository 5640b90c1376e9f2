"""The parent's jobs: open a worker for a declared model, send it one request, collect what comes back.

The wall is `mnist_arch.isolate` (the parent's end) and `mnist_arch.channel` (the worker's): one child process
per model, the verdict back on a pipe of ours. As pytest-xdist splits them (`remote.py` runs in a worker;
`dsession.py` and `workermanage.py` never run user code), this module is the parent's side: it names a job of
`mnist_arch.remote` and sends it a request of `mnist_arch.work`, whole; it never builds a model or imports
torch, so the command line's own process never pays for it. What comes back is a plain record
(`report.Report`, `runs.TrainResult`, `layer_table.Row`).

`mnist_arch.project` says which models there are and with what settings; it never opens a worker but to
read our own registry (`registry.declarations`) where torch is not imported yet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError
from mnist_arch.isolate import Worker, expect_training, stopping
from mnist_arch.runs import available_cores
from mnist_arch.work import BenchRequest, CheckRequest, Declared, SummaryRequest, TrainRequest

if TYPE_CHECKING:
    from mnist_arch.project import Project
    from mnist_arch.runs import TrainResult


def worker_for(project: Project, model: Declared, *, training: bool = False, timeout: float | None = None,
               threads: int | None = None, on_note: Callable[[str], None] | None = None) -> Worker:
    """The one way to open a worker for a declared model: it runs in the project's folder with that folder
    (and the model file's own) importable, and each phase may take the project's time limit (its
    train_timeout for an epoch when `training`), unless `timeout` says otherwise."""
    root = model.folder or project.root
    extra = [str(root)] + ([str(model.model_folder)] if model.model_folder else [])
    limit = timeout if timeout is not None else project.train_timeout if training else project.timeout
    return Worker(model.name, limit, cwd=root, extra_path=extra, threads=threads, on_note=on_note)


def judge(project: Project, model: Declared, changes: Mapping[str, Any] | None = None,
          timeout: float | None = None):
    """A model's report (`checks.Report`), computed in its own worker."""
    if model.error:
        raise MnistArchError(model.error)
    with worker_for(project, model, timeout=timeout) as worker:
        return worker.call("check", CheckRequest(model, dict(changes or {})))


def judge_all(project: Project, models: Sequence[Declared], changes: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> list[Any]:
    """Each model's report, or the MnistArchError that says why it could not be judged, in order. Two
    workers at a time (one thread each), as many as the machine has cores, up to two."""
    from concurrent.futures import ThreadPoolExecutor

    def one(model: Declared) -> Any:
        try:
            return judge(project, model, changes, timeout)
        except MnistArchError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        try:
            return list(pool.map(one, models))
        except BaseException:  # interrupted (Ctrl-C, a stop signal): the pool's threads must not wait for models
            with stopping():
                pool.shutdown(cancel_futures=True)
            raise


def summarise(project: Project, model: Declared, shape: Sequence[int], timeout: float | None = None) -> list:
    """A model's layer table (`layer_table.Row`s), computed in its own worker."""
    with worker_for(project, model, timeout=timeout) as worker:
        return worker.call("summary", SummaryRequest(model, tuple(shape)))


def train_runs(project: Project, request: TrainRequest, seeds: Sequence[int] = (0,), *,
               on_note: Callable[[str], None] | None = None,
               on_result: Callable[[int, TrainResult], None] | None = None, timeout: float | None = None
               ) -> list[TrainResult]:
    """The request's run once per seed (its own `seed` is replaced), each in a fresh worker (so each repeats alone
    whatever ran before it): what `mnist-arch train`, the plugin's training items, `init --min-accuracy auto` and
    `tune`'s seeds run. The loss follows the model's output where the declaration names none
    (`work.training_recipe`): the request's `final_activation` where the caller has judged the model already,
    else it is judged first; MNIST from `project.mnist_root()` unless the request names a `data_dir`. `on_note`
    gets each epoch's line, `on_result` each seed's result as its run ends."""
    model = request.model
    if model.error:
        raise MnistArchError(model.error)
    if request.recipe_name not in model.spec.recipes:
        raise MnistArchError(f"{model.name} ({model.source}) declares no {request.recipe_name!r} recipe; it has "
                             f"{', '.join(model.spec.recipes) or 'none'}."
                             f"{_recipe_hint(project, model, request.recipe_name)}")
    expect_training()  # before the fork server starts, where this process starts it here
    if model.loss is None and request.final_activation is None:  # judged in a worker of its own, at the check's limit
        request = replace(request, final_activation=judge(project, model).final_activation)
    if request.data_dir is None:
        request = replace(request, data_dir=str(project.mnist_root()))
    at_once = 1
    if len(seeds) > 1 and request.threads is None:  # seeds side by side where the cores allow (`seed_threads`)
        with worker_for(project, model, training=True, timeout=timeout) as worker:
            kind, alone = worker.call("seed_threads", request)
        if kind == "cpu" and available_cores() // alone > 1:
            at_once, request = min(len(seeds), available_cores() // alone), replace(request, threads=alone)
            if on_note is not None:
                on_note(f"{model.name}: seeds {', '.join(map(str, seeds))} side by side, {at_once} at once with "
                        f"{alone} thread(s) each (the threads one run takes alone: each seed repeats its run alone)")
    workers: set[Worker] = set()

    def one(index: int, seed: int) -> TrainResult:
        def say(line: str) -> None:  # side by side, each epoch's line says whose it is
            if on_note is not None:
                on_note(f"seed {seed}: {line}" if at_once > 1 and line.startswith(f"{model.name} epoch") else line)

        runs = len(seeds) if index == 0 else 0  # one estimate, before the first run, for them all
        with worker_for(project, model, training=True, timeout=timeout, on_note=say) as worker:
            workers.add(worker)
            result = worker.call("train", replace(request, seed=seed, estimate_runs=runs, estimate_at_once=at_once))
            workers.discard(worker)
        if on_result is not None:
            on_result(seed, result)
        return result

    if at_once == 1:
        return [one(index, seed) for index, seed in enumerate(seeds)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=at_once) as pool:
        futures = [pool.submit(one, index, seed) for index, seed in enumerate(seeds)]
        try:
            return [future.result() for future in futures]
        except BaseException:  # Ctrl-C, or one seed's error: the others stop now rather than at their end
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in list(workers):
                worker.close(kill=True)
            raise


def _recipe_hint(project: Project, model: Declared, recipe_name: str) -> str:
    """What to do about a missing recipe: a table's model gets its quick recipe from a train table."""
    from mnist_arch.paths import is_file_target
    from mnist_arch.project import TABLE

    if project.path is None or model.name not in {m.name for m in project.declared or ()}:
        return ""
    if recipe_name != "quick":
        return (f" A table's [{TABLE}.models.{model.name}.train] table declares its 'quick' recipe; 'full' recipes "
                "are the registered references' own.")
    target = model.target
    if is_file_target(target.rpartition(":")[0]):
        source, _, attr = target.rpartition(":")
        target = f"{os.path.relpath(source, project.root)}:{attr}"
    return (f" Training needs a [{TABLE}.models.{model.name}.train] table with min_accuracy, the test accuracy to "
            f"reach: add one below its table in {project.path} (e.g. min_accuracy = 0.95 and epochs = 1), or let "
            f"`mnist-arch init --model {target} --name {model.name} --min-accuracy auto --force` train five seeds "
            "and write the threshold rule's (--force replaces the whole table and init's workflow files: give the "
            "table's other fields as options too).")


def bench_project(project: Project, models: Sequence[Declared], request: BenchRequest, *,
                  timeout: float | None = None, progress: Callable[[str], None] | None = None):
    """`mnist-arch bench`, every step behind the wall: the set-up in a worker of its own (`remote.bench_checkpoint`:
    the model the request's checkpoint belongs to, which must be among `models`; `remote.bench_setup`: the threads,
    the device, the paths and the machine's peak, once), then each declared model measured by `remote.bench` in
    its own worker, one after the other (so no two share the cores), each with the set-up's threads (the
    request's, else torch's default). `request.batch_sizes` default to the project's `bench_batch_sizes` (our
    registry: `bench_results.BATCH_SIZES`); `timeout` (default: the project's) applies to each row of a model.
    A model or a row that cannot be measured leaves its reason in `errors`; the others still run. A
    `bench_results.BenchResult`."""
    from mnist_arch.bench_results import BATCH_SIZES, CPU_PATHS, CUDA_PATHS, result_of

    if request.data_dir is None:  # the accuracy batch: MNIST's test images where they are
        request = replace(request, data_dir=str(project.mnist_root()))
    if request.batch_sizes is None:
        request = replace(request, batch_sizes=tuple(project.bench_batch_sizes) if project.path is not None
                          else BATCH_SIZES)
    say = progress or (lambda _msg: None)
    # the default paths, whichever the device, compile
    if request.train or any("compile" in p.split("+") for p in request.paths or (*CPU_PATHS, *CUDA_PATHS)):
        expect_training()  # torch._dynamo in the fork server: set-up times the same with and without --train
    # our own code, in the command's folder, with no time limit (the request's paths are absolute: `work._here`)
    with Worker("the benchmark's set-up", None, threads=request.threads, on_note=say) as worker:
        weights = worker.call("bench_checkpoint", request)
        names = [m.name for m in models]
        for name, checkpoint in weights.items():
            if name not in names:
                raise MnistArchError(f"Checkpoint {checkpoint} holds weights of {name!r}, which is not among the "
                                     f"models benchmarked ({', '.join(names) or 'none'}); name it: mnist-arch bench "
                                     f"{name}.")
        setup = replace(worker.call("bench_setup", request), weights=weights)
    rows, errors = [], []
    for model in models:
        try:
            if model.error:
                raise MnistArchError(model.error)
            with worker_for(project, model, timeout=timeout, threads=setup.threads, on_note=say) as worker:
                rows += worker.call("bench", request.measured_with(setup, model))
        except MnistArchError as exc:
            errors.append(str(exc))
    return result_of(rows, errors, setup, request.min_time)


def forward_repeats(batch_size: int) -> int:
    """Forward passes per timed call of the plugin's forward benchmark (`remote.run_forwards`): at least 64
    images, so the worker round trip stays small."""
    return max(1, math.ceil(64 / batch_size))
