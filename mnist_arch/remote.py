"""The jobs a worker runs, each taking one request of `mnist_arch.work` whole: build the declared model
(`mnist_arch.loader`) and judge, tabulate, train or time it with the library.

This is the worker's side of the wall, as pytest-xdist's `remote.py` is: the parent (`mnist_arch.jobs`) names a
job here by its name and never imports this module; what comes back is a plain record (`report.Report`,
`runs.TrainResult`, `layer_table.Row`, bench rows). It imports nothing of the parent's side.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from mnist_arch.channel import note, phase
from mnist_arch.errors import ours
from mnist_arch.work import (
    NO_RECIPE_FIXES,
    BenchRequest,
    CheckRequest,
    Declared,
    ForwardRequest,
    SummaryRequest,
    TrainRequest,
    training_recipe,
)


def check(request: CheckRequest):
    """Build the model and judge it (a `report.Report`)."""
    from mnist_arch.checks import check_model
    from mnist_arch.loader import load_model

    model = request.model
    spec = model.spec.with_changes(dict(request.changes))
    return check_model(load_model(model.target), spec, name=model.name, loss=model.loss)


def summary(request: SummaryRequest) -> list:
    """One row per module (plain picklable dataclasses, sent back to the parent)."""
    from mnist_arch.layer_table import layer_table
    from mnist_arch.loader import load_model

    return layer_table(load_model(request.model.target), request.shape, request.model.name)


def train(request: TrainRequest):
    """One seeded run of a declared model's recipe, one note per epoch (a `runs.TrainResult`)."""
    import torch

    from mnist_arch.checkpoint import save_checkpoint
    from mnist_arch.data import load_mnist
    from mnist_arch.loader import load_model
    from mnist_arch.machine import resolve_device
    from mnist_arch.runs import epoch_line
    from mnist_arch.train import OutputError, RunOptions, train_model

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

    options = RunOptions(name=model.name, recipe_name=request.recipe_name, epochs=request.epochs, seed=request.seed,
                         device=device, time_budget=request.time_budget, threads=request.threads, on_epoch=on_epoch,
                         on_estimate=on_estimate if request.estimate_runs else None)
    try:
        result = train_model(built, recipe, data, options)
    except OutputError as exc:  # the trainer knows no file: say whose output it is
        raise OutputError(f"Model {model.name} ({model.target}): {exc}") from None
    if request.plots:
        from mnist_arch.plots import save_plots

        ours(f"drawing the plots into {request.plots}", save_plots, result, data.test_images, data.test_labels,
             request.plots)
    if request.save:
        ours(f"saving the checkpoint to {request.save}", save_checkpoint, request.save, built, model.spec, result)
    return replace(result, test_predictions=None)  # the plots are drawn; the parent never needs torch


def trial(request: TrainRequest):
    """A `tune` trial's run: its process id first (the trial records it: a killed worker fails its trial), then the
    rule tier's run as `train` makes it, each epoch sent back as it ends (`TrainRequest.epoch_records`). Where it
    raises what no recipe can fix (`recipe_may_fix`), the `work.NO_RECIPE_FIXES` note goes first; the error itself
    reaches the parent as any run's does."""
    note(("pid", os.getpid()))
    try:
        return train(request)
    except BaseException as exc:
        if not recipe_may_fix(exc):
            note(NO_RECIPE_FIXES)
        raise


def recipe_may_fix(exc: BaseException) -> bool:
    """Whether another recipe of the search may not meet this error: a recipe field's own code raised
    (`train.RecipeError`), or memory ran out (the batch size). Anything else, every recipe meets the same:
    the model's code raised or exited (in its import, its build or a training step: `isolate` reports it as
    the model's), its output is not one of class scores, or the set-up of ours failed (MNIST, the device),
    whatever the recipe. A loss that is not a number, and a collapse, are not errors: they prune the trial."""
    from mnist_arch.train import RecipeError

    if isinstance(exc, (RecipeError, MemoryError)):
        return True
    words = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in words or "can't allocate memory" in words)


def seed_threads(request: TrainRequest) -> tuple[str, int]:
    """The device a run of the request's recipe trains on and, on a CPU, the threads it takes alone: those
    `machine.choose_threads` picks, without its idle-core rule (the cores are the run's). Several seeds run side by
    side, each at these threads, as many at once as the cores hold, so each seed's run is the one it makes
    alone and a threshold measured one seed after another still holds (`jobs.train_runs`)."""
    import torch

    from mnist_arch.loader import load_model
    from mnist_arch.machine import choose_threads, resolve_device
    from mnist_arch.train import fit_recipe

    dev = resolve_device(request.device)
    if dev.type != "cpu":
        return dev.type, 0
    model = request.model
    recipe, _ = fit_recipe(training_recipe(model, request.recipe_name, request.final_activation), dev)
    torch.manual_seed(0)
    built = load_model(model.target)
    return "cpu", choose_threads(built, recipe, tuple(model.spec.input_shape), idle=False)


def _built(model: Declared, weights: str | None = None):
    """A declared model built with seeded random weights (the seed `bench_prepare.prepare` gives a registered one),
    or a checkpoint's, ready to be measured: lazy layers get their weights on a first call first."""
    import torch

    from mnist_arch.bench_prepare import Subject, load_weights
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


def bench_checkpoint(request: BenchRequest) -> dict[str, str]:
    """`mnist-arch bench`'s set-up, first: the model the request's checkpoint belongs to, read where torch is
    (`bench.checkpoint_weights`), so that the parent says which models it may go to before the peak is measured."""
    from mnist_arch.bench import checkpoint_weights

    return checkpoint_weights(request.weights)


def bench_setup(request: BenchRequest):
    """`mnist-arch bench`'s set-up in a worker of its own, before the models' (`bench.set_up`): the threads (the
    request's, else the ones torch takes in a fresh process, as the fork server recorded them before it took one:
    `channel.TORCH_THREADS`), the device, the paths and the machine's peak. A `bench_results.SetUp`; every
    model's worker then runs with its threads."""
    import torch

    from mnist_arch import channel
    from mnist_arch.bench import set_up

    threads = request.threads or channel.TORCH_THREADS or torch.get_num_threads()
    return ours("the benchmark's set-up (the device, the paths, the machine's peak)", set_up,
                replace(request, threads=threads), note)


def bench(request: BenchRequest) -> list:
    """Measure a declared model on what the set-up found (`bench.measure_subject`): its rows."""
    from mnist_arch.bench import measure_subject

    return measure_subject(_built(request.model, request.weights), request, note)


_FORWARD: dict[str, Any] = {}  # the worker's prepared forward pass, between calls


def load_for_forward(request: ForwardRequest) -> None:
    """Build the model and prepare its eager forward pass on a fixed batch with `bench`'s own measuring
    code (`bench_prepare.prepare`: eval mode, inference mode, the same input the `bench` command times)."""
    from mnist_arch.bench_prepare import prepare

    subject = _built(request.model)
    phase("forward")
    _FORWARD["prepared"] = prepare(subject, "eager", request.batch_size, "cpu")
    _FORWARD["prepared"]()


def run_forwards(repeats: int) -> None:
    """`repeats` forward passes of the prepared model."""
    phase("forward")
    for _ in range(repeats):
        _FORWARD["prepared"]()
