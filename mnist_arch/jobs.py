"""The jobs a worker runs, and the one way to open a worker for a declared model.

The wall is `mnist_arch.isolate`: one child process per model, the verdict back on a pipe of ours. This
module is both sides of it, as pytest-xdist splits them (`remote.py` runs in a worker; `dsession.py` and
`workermanage.py` never run user code):

- **In the parent** (`worker_for`, `judge`, `judge_all`, `summarise`, `train_runs`): open a worker for a
  declared model and send it a job. Nothing here builds a model or imports torch, so the command line's
  own process never pays for it.
- **In the worker** (every function below "In the worker"): build the model (`mnist_arch.loader`) and judge,
  train, tabulate or time it with the library. Their arguments and results cross the pipe pickled: plain
  records (`project.Declared`, `TrainRequest`, `checks.Report`, `runs.TrainResult`, `layer_table.Row`).

`mnist_arch.project` says which models there are and with what settings; it never opens a worker but to
read our own registry (`registry.declarations`) where torch is not imported yet.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError, ours
from mnist_arch.isolate import Worker, expect_training, note, phase, stopping
from mnist_arch.runs import available_cores

if TYPE_CHECKING:
    from mnist_arch.project import Declared, Project
    from mnist_arch.runs import TrainResult
    from mnist_arch.spec import Recipe

# ---------------------------------------------------------------------------------------------
# In the parent


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
        return worker.call(check_declared, model, dict(changes or {}))


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
        return worker.call(summary_rows, model, tuple(shape))


def training_recipe(model: Declared, recipe_name: str, final_activation: str | None) -> Recipe:
    """The recipe to train with. Where the declaration names no loss, the loss follows the model's
    output: NLL for log-softmax, cross-entropy for logits (and for softmax, which the lint reports)."""
    recipe = model.spec.recipes[recipe_name]
    if model.loss is None:
        recipe = replace(recipe, loss="nll" if final_activation == "log_softmax" else "cross_entropy")
    return recipe


@dataclass(frozen=True)
class TrainRequest:
    """One seeded training run of a declared model's recipe, as a worker runs it (`train_declared`)."""

    model: Declared
    recipe_name: str = "quick"
    final_activation: str | None = None  # the model's output: the loss follows it (`training_recipe`)
    seed: int = 0
    epochs: int | None = None  # the recipe's unless given
    device: str = "auto"
    time_budget: float | None = None
    data_dir: str | None = None  # the folder holding MNIST/raw/ (`project.mnist_root`)
    plots: str | None = None  # a folder for the PNGs
    save: str | None = None  # a checkpoint path
    threads: int | None = None  # CPU threads (default: train.choose_threads)
    estimate_runs: int = 1  # the runs (seeds) its estimate covers, this one and those after it; 0: no estimate
    estimate_at_once: int = 1  # of those runs, how many run side by side
    epoch_records: bool = False  # also send each `runs.Epoch` itself as a note (`mnist-arch tune`'s pruner reads it)


def train_runs(project: Project, model: Declared, recipe_name: str = "quick", seeds: Sequence[int] = (0,),
               final_activation: str | None = None, on_note: Callable[[str], None] | None = None,
               on_result: Callable[[int, TrainResult], None] | None = None, timeout: float | None = None,
               **request: Any) -> list[TrainResult]:
    """One training run per seed, each in a fresh worker (so each repeats alone whatever ran before it):
    what `mnist-arch train`, the plugin's training item and `init --min-accuracy auto` run. The loss follows
    the model's output where the declaration names none (`training_recipe`): `final_activation` where the
    caller has judged the model already, else it is judged first. `on_note` gets each epoch's line,
    `on_result` each seed's result as its run ends; `request`: the other fields of `TrainRequest` (MNIST
    from `project.mnist_root()` unless `data_dir` is given)."""
    if model.error:
        raise MnistArchError(model.error)
    if recipe_name not in model.spec.recipes:
        raise MnistArchError(f"{model.name} ({model.source}) declares no {recipe_name!r} recipe; it has "
                             f"{', '.join(model.spec.recipes) or 'none'}.{_recipe_hint(project, model, recipe_name)}")
    expect_training()  # before the fork server starts, where this process starts it here
    if model.loss is None and final_activation is None:  # judged in a worker of its own, at the check's limit
        final_activation = judge(project, model).final_activation
    request.setdefault("data_dir", str(project.mnist_root()))
    at_once, threads = 1, request.get("threads")
    if len(seeds) > 1 and threads is None:  # seeds side by side where the cores allow (`seed_threads`)
        with worker_for(project, model, training=True, timeout=timeout) as worker:
            kind, alone = worker.call(seed_threads, model, recipe_name, final_activation, request.get("device", "auto"))
        if kind == "cpu" and available_cores() // alone > 1:
            at_once, threads = min(len(seeds), available_cores() // alone), alone
            if on_note is not None:
                on_note(f"{model.name}: seeds {', '.join(map(str, seeds))} side by side, {at_once} at once with "
                        f"{alone} thread(s) each (the threads one run takes alone: each seed repeats its run alone)")
    request = {**request, "threads": threads}
    workers: set[Worker] = set()

    def one(index: int, seed: int) -> TrainResult:
        def say(line: str) -> None:  # side by side, each epoch's line says whose it is
            if on_note is not None:
                on_note(f"seed {seed}: {line}" if at_once > 1 and line.startswith(f"{model.name} epoch") else line)

        runs = len(seeds) if index == 0 else 0  # one estimate, before the first run, for them all
        with worker_for(project, model, training=True, timeout=timeout, on_note=say) as worker:
            workers.add(worker)
            result = worker.call(train_declared, TrainRequest(model, recipe_name, final_activation, seed,
                                                              estimate_runs=runs, estimate_at_once=at_once,
                                                              **request))
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
    from mnist_arch.loader import is_file_target
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


def bench_project(project: Project, models: Sequence[Declared], batch_sizes: Sequence[int] | None = None,
                  paths: Sequence[str] | None = None, device: str = "auto", min_time: float = 0.5, train: bool = False,
                  data_dir: str | None = None, weights: Mapping[str, str] | None = None, timeout: float | None = None,
                  threads: int | None = None, progress: Callable[[str], None] | None = None,
                  measure_peak: bool = True):
    """`mnist-arch bench`: the peak measured once in this process (`bench.set_up`, which imports torch here),
    then each declared model measured by `bench_declared` in its own worker, one after the other (so no two
    share the cores). `batch_sizes` default to the project's `bench_batch_sizes` (our registry:
    `bench.BATCH_SIZES`); `timeout` (default: the project's) applies to each row; workers run `threads`
    torch threads (default: this process's). A model or a row that cannot be measured leaves its reason in
    `errors`; the others still run. A `bench.BenchResult`."""
    import torch

    from mnist_arch import bench

    weights = dict(weights or {})
    data_dir = data_dir or str(project.mnist_root())  # the accuracy batch: MNIST's test images where they are
    names = [m.name for m in models]
    for name, checkpoint in weights.items():
        if name not in names:
            raise MnistArchError(f"Checkpoint {checkpoint} holds weights of {name!r}, which is not among the models "
                                 f"benchmarked ({', '.join(names) or 'none'}); name it: mnist-arch bench {name}.")
    say = progress or (lambda _msg: None)
    dev, paths, peaks = bench.set_up(device, paths, min_time, say, measure_peak)
    if train or any("compile" in p.split("+") for p in paths):
        expect_training()  # torch._dynamo in the fork server: set-up times the same with and without --train
    if batch_sizes is None:
        batch_sizes = project.bench_batch_sizes if project.path is not None else bench.BATCH_SIZES
    threads = threads or torch.get_num_threads()
    rows, errors = [], []
    for model in models:
        try:
            if model.error:
                raise MnistArchError(model.error)
            with worker_for(project, model, timeout=timeout, threads=threads, on_note=say) as worker:
                rows += worker.call(bench_declared, model, tuple(batch_sizes), paths, str(dev), min_time, peaks,
                                    train, data_dir, weights.get(model.name))
        except MnistArchError as exc:
            errors.append(str(exc))
    return bench.result_of(rows, errors, peaks, dev, min_time, weights, threads)


# ---------------------------------------------------------------------------------------------
# In the worker


def check_declared(model: Declared, changes: Mapping[str, Any] | None = None):
    """Build the model and judge it (a checks.Report)."""
    from mnist_arch.checks import check_model
    from mnist_arch.loader import load_model

    spec = model.spec.with_changes(changes or {})
    return check_model(load_model(model.target), spec, name=model.name, loss=model.loss)


def summary_rows(model: Declared, shape: Sequence[int]) -> list:
    """One row per module (plain picklable dataclasses, sent back to the parent)."""
    from mnist_arch.layer_table import layer_table
    from mnist_arch.loader import load_model

    return layer_table(load_model(model.target), shape, model.name)


def train_declared(request: TrainRequest) -> TrainResult:
    """One seeded run of a declared model's recipe, one note per epoch."""
    import torch

    from mnist_arch.data import load_mnist
    from mnist_arch.loader import load_model
    from mnist_arch.runs import epoch_line
    from mnist_arch.train import resolve_device, save_checkpoint, train_model

    model = request.model
    device = resolve_device(request.device)
    data = ours(f"loading MNIST from {request.data_dir} onto {device}", load_mnist, request.data_dir, device)
    torch.manual_seed(request.seed)  # the initial weights too: a seed repeats the whole run
    built = load_model(model.target)
    recipe = training_recipe(model, request.recipe_name, request.final_activation)
    phase("train")
    history: list = []

    def on_epoch(e) -> None:
        phase("train")  # the time limit applies to each epoch
        history.append(e)
        if request.epoch_records:
            note(e)
        note(epoch_line(model.name, history, request.epochs or recipe.epochs, recipe.min_accuracy, recipe.consecutive))

    def on_estimate(estimate) -> None:
        note(replace(estimate, runs=request.estimate_runs, at_once=request.estimate_at_once).line(model.name))

    result = train_model(built, recipe, data, name=model.name, recipe_name=request.recipe_name,
                         epochs=request.epochs, seed=request.seed, device=device, time_budget=request.time_budget,
                         progress=False, on_epoch=on_epoch, threads=request.threads,
                         on_estimate=on_estimate if request.estimate_runs else None)
    if request.plots:
        from mnist_arch.plots import save_plots

        ours(f"drawing the plots into {request.plots}", save_plots, result, data.test_images, data.test_labels,
             request.plots)
    if request.save:
        ours(f"saving the checkpoint to {request.save}", save_checkpoint, request.save, built, model.spec, result)
    return replace(result, test_predictions=None)  # the plots are drawn; the parent never needs torch


def seed_threads(model: Declared, recipe_name: str, final_activation: str | None, device: str) -> tuple[str, int]:
    """The device a run of the model's recipe trains on and, on a CPU, the threads it takes alone: those
    `train.choose_threads` picks, without its idle-core rule (the cores are the run's). Several seeds run side by
    side, each at these threads, as many at once as the cores hold, so each seed's run is the one it makes
    alone and a threshold measured one seed after another still holds (`train_runs`)."""
    import torch

    from mnist_arch.loader import load_model
    from mnist_arch.train import choose_threads, fit_recipe, resolve_device

    dev = resolve_device(device)
    if dev.type != "cpu":
        return dev.type, 0
    recipe, _ = fit_recipe(training_recipe(model, recipe_name, final_activation), dev)
    torch.manual_seed(0)
    built = load_model(model.target)
    return "cpu", choose_threads(built, recipe, tuple(model.spec.input_shape), idle=False)


def _built(model: Declared, weights: str | None = None):
    """A declared model built with seeded random weights (the seed `bench.prepare` gives a registered one), or
    a checkpoint's, ready to be measured: lazy layers get their weights on a first call first."""
    import torch

    from mnist_arch.bench import Subject, load_weights
    from mnist_arch.loader import load_model
    from mnist_arch.trace import example_input

    torch.manual_seed(0)
    built = load_model(model.target)
    if any(isinstance(m, torch.nn.modules.lazy.LazyModuleMixin) for m in built.modules()):
        phase("forward")
        with torch.no_grad():
            built.eval()(example_input(1, model.spec.input_shape))
    if weights is not None:
        ours(f"loading the weights of {weights} into {model.name}", load_weights, built, model.name, weights)
    return Subject(model.name, built, tuple(model.spec.input_shape), model.spec)


def bench_declared(model: Declared, batch_sizes: Sequence[int], paths: Sequence[str], device: str, min_time: float,
                   peaks: Any, train: bool, data_dir: str | None, weights: str | None) -> list:
    """Measure a declared model (`bench.run_benchmarks`): its rows."""
    from mnist_arch.bench import run_benchmarks

    return run_benchmarks([_built(model, weights)], batch_sizes, paths, device, min_time, train, data_dir,
                          progress=note, measure_peak=False, peaks=peaks).rows


_FORWARD: dict[str, Any] = {}  # the worker's prepared forward pass, between calls


def forward_repeats(batch_size: int) -> int:
    """Forward passes per timed call: at least 64 images, so the worker round trip stays small."""
    return max(1, math.ceil(64 / batch_size))


def load_for_forward(model: Declared, batch_size: int) -> None:
    """Build the model and prepare its eager forward pass on a fixed batch with `bench`'s own measuring
    code (`bench.prepare`: eval mode, inference mode, the same input the `bench` command times)."""
    from mnist_arch.bench import prepare

    subject = _built(model)
    phase("forward")
    _FORWARD["prepared"] = prepare(subject, "eager", batch_size, "cpu")
    _FORWARD["prepared"]()


def run_forwards(repeats: int) -> None:
    """`repeats` forward passes of the prepared model."""
    phase("forward")
    for _ in range(repeats):
        _FORWARD["prepared"]()
